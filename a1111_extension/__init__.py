"""AUTOMATIC1111 / Forge glue for Headshot Studio (tab and API routes). Nothing registered yet."""
