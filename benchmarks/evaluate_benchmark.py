"""Benchmark: `headshot evaluate` on 50 pictures of 512x512 with dlib and a ViT-B/32-sized CLIP.

Target (issue 11): at most 60 s on this CPU, model loading included. The pictures are made from the
sample photos (real photos from installed packages): the astronaut's shots, other people, and a few
without a face, with per-picture prompts in a results.json like `headshot generate` writes. The CLIP
has openai/clip-vit-base-patch32's shapes and random weights (nothing is downloaded), saved with
save_pretrained into a temporary folder.

    .venv/bin/python benchmarks/evaluate_benchmark.py
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from headshot.cli import main as headshot
from headshot.samples import GROUP_MEMBERS, astronaut_shots, insightface_image

COUNT = 50
SIDE = 512
PROMPTS = ("ohwx woman, corporate headshot, navy blazer", "ohwx woman, outdoor portrait, golden hour")


def make_pictures(folder: Path) -> None:
    rng = np.random.default_rng(11)
    group = insightface_image("t1.jpg")
    sources = list(astronaut_shots().values()) + [
        insightface_image("Tom_Hanks_54745.png"),
        *(group.crop(box) for box in GROUP_MEMBERS.values()),
    ]
    results = []
    for i in range(COUNT):
        if i % 10 == 9:  # some pictures without a face
            picture = Image.fromarray((rng.random((SIDE, SIDE, 3)) * 255).astype(np.uint8))
        else:
            picture = sources[i % len(sources)].convert("RGB").resize((SIDE, SIDE), Image.Resampling.LANCZOS)
            if i % 2:
                picture = picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        name = f"picture_{i:03d}.png"
        picture.save(folder / name)
        results.append({"image": name, "prompt": PROMPTS[i % len(PROMPTS)], "triggers": ["ohwx"], "seed": i})
    (folder / "results.json").write_text(json.dumps(results))


def make_clip(folder: Path) -> None:
    import torch
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig(
        text_config=dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8),
        vision_config=dict(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            image_size=224,
            patch_size=32,
        ),
        projection_dim=512,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)


def run() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for sub in ("pictures", "reference", "clip"):
            (root / sub).mkdir()
        make_pictures(root / "pictures")
        for name in ("astronaut.png", "astronaut_closeup.jpg", "astronaut_mirrored.jpg"):
            astronaut_shots()[name].convert("RGB").save(root / "reference" / Path(name).with_suffix(".png").name)
        make_clip(root / "clip")
        argv = [
            "evaluate",
            str(root / "pictures" / "results.json"),
            "--reference",
            str(root / "reference"),
            "--clip-model",
            str(root / "clip"),
            "--face-backend",
            "dlib",
            "--out",
            str(root / "out"),
        ]
        started = time.perf_counter()
        code = headshot(argv)
        seconds = time.perf_counter() - started
        summary = json.loads((root / "out" / "evaluation.json").read_text())["summary"]
    print(
        f"\nexit {code}: {summary['images']} pictures of {SIDE}x{SIDE} evaluated in {seconds:.1f} s "
        f"(target <= 60 s); faceless {summary['faceless_count']}, "
        f"face distance mean {summary['face_distance_mean']}, CLIP mean {summary['clip_score_mean']}"
    )


if __name__ == "__main__":
    run()
