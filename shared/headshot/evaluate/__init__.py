"""Evaluate: how well pictures keep the person and follow the prompt (identity distance, CLIP score, faceless)."""
