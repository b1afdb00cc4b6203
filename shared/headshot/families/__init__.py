"""What is known about each base-model family (sd1, sd2, sdxl), one module each, and one registry."""
