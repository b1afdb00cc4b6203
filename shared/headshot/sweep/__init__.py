"""`headshot sweep`: train one LoRA per combination of settings, draw the same prompts with the same seeds
with each (and with none: the baseline), measure every batch, and record it all in sweep.json.

It sits above photoshoot (it draws pictures) and below the adapters; the pure parts (the grid, sweep.json)
live in headshot.evaluate.
"""
