"""ComfyUI glue for Headshot Studio. Nodes are thin adapters over the `headshot` core."""
NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
