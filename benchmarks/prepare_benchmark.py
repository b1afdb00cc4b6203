"""Benchmark: prepare 20 photos of about 12 megapixels with the dlib backend.

Target (issue "Prepare"): at most 30 s on a 2-core CPU machine, model loading included.
The photos are the sample shots (real photos from installed packages) enlarged and placed at
different positions and sizes on 4000x3000 canvases, saved as JPEG like a phone would.

    .venv/bin/python benchmarks/prepare_benchmark.py [--keep-photos DIR]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from headshot.dataset.prepare import prepare_dataset
from headshot.dataset.prepare_settings import PrepareSettings
from headshot.samples import astronaut_shots, insightface_image

SIZE = (4000, 3000)


def make_photos(folder: Path, count: int = 20) -> list[Path]:
    rng = np.random.default_rng(7)
    people = list(astronaut_shots().values()) + [
        insightface_image("t1.jpg").crop((20, 210, 260, 450)),
        insightface_image("t1.jpg").crop((1060, 210, 1280, 430)),
    ]
    paths = []
    for i in range(count):
        person = people[i % len(people)]
        # a soft random backdrop, then the person at a random size and place
        backdrop = Image.fromarray((rng.random((30, 40, 3)) * 255).astype(np.uint8)).resize(SIZE, Image.BICUBIC)
        backdrop = backdrop.filter(ImageFilter.GaussianBlur(40))
        height = int(rng.uniform(1800, 2800))
        subject = person.resize((round(height * person.width / person.height), height), Image.LANCZOS)
        if i % 2:
            subject = subject.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        x = int(rng.uniform(0, SIZE[0] - subject.width))
        y = int(rng.uniform(0, SIZE[1] - subject.height))
        backdrop.paste(subject, (x, y))
        path = folder / f"IMG_{i:04d}.jpg"
        backdrop.save(path, quality=92)
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep-photos", type=Path, help="write the photos here instead of a temporary folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        photos = args.keep_photos or Path(tmp) / "photos"
        photos.mkdir(parents=True, exist_ok=True)
        paths = make_photos(photos)
        megapixels = np.mean([Image.open(p).width * Image.open(p).height for p in paths]) / 1e6
        started = time.perf_counter()
        result = prepare_dataset(
            photos, Path(tmp) / "out", PrepareSettings(face_backend="dlib", tagger="none", class_word="woman")
        )
        elapsed = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"photos: {len(paths)} of {megapixels:.1f} MP (JPEG), backend dlib")
    print(f"kept {len(result.kept)}, rejected {len(result.photos) - len(result.kept)}")
    print(f"prepare wall time: {elapsed:.1f} s ({elapsed / len(paths):.2f} s per photo); target <= 30 s")
    print(f"peak resident memory: {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
