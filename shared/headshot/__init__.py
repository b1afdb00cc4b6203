"""Headshot Studio core: prepare selfies, train an identity LoRA, generate and finish headshots.

Host-independent: never imports ComfyUI, A1111 or gradio. Heavy optional libraries are imported
where they are used.
"""

__version__ = "0.1.0"
