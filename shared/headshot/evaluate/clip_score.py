"""CLIP score: how well pictures match a prompt, with a local Hugging Face CLIP model folder."""

from __future__ import annotations

from pathlib import Path

from PIL import Image


def clip_scores(pictures: list[Image.Image], prompt: str, model_dir: str | Path) -> list[float]:
    """CLIPScore (100 x cosine of image and text embeddings, floored at 0) with a local CLIP model folder."""
    import torch
    from transformers import CLIPImageProcessor, CLIPModel

    from ..train.clip_tokenizers import find_clip_tokenizer

    model_dir = Path(model_dir)
    # safetensors only: a pickled pytorch_model.bin in a shared folder could run code
    model = CLIPModel.from_pretrained(str(model_dir), local_files_only=True, use_safetensors=True).eval()
    tokenizer = find_clip_tokenizer([model_dir])
    if (model_dir / "preprocessor_config.json").is_file():
        processor = CLIPImageProcessor.from_pretrained(str(model_dir), local_files_only=True)
    else:
        side = model.config.vision_config.image_size
        processor = CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
    with torch.no_grad():
        pixels = processor(images=[p.convert("RGB") for p in pictures], return_tensors="pt")["pixel_values"]
        tokens = tokenizer([prompt], padding="max_length", truncation=True, max_length=77, return_tensors="pt")
        image_emb = _features(model.get_image_features(pixel_values=pixels))
        text_emb = _features(model.get_text_features(input_ids=tokens["input_ids"]))
    image_emb = torch.nn.functional.normalize(image_emb.float(), dim=-1)
    text_emb = torch.nn.functional.normalize(text_emb.float(), dim=-1)
    return [round(100.0 * max(0.0, float(v)), 3) for v in (image_emb @ text_emb.T)[:, 0]]


def _features(output):
    """The projected embeddings, whether transformers returns a tensor or an output object."""
    if hasattr(output, "pooler_output") and not hasattr(output, "shape"):
        return output.pooler_output
    return output
