"""Benchmark: prepare 20 photos of about 12 megapixels with the dlib backend.

Target (issue 13, "Prepare"): at most 8 s on a 2-core CPU machine, model loading included, and
peak memory that does not grow with the number of photos (compare --count 5 with --count 20).
The photos are the sample shots (real photos from installed packages) enlarged and placed at
different positions and sizes on 4000x3000 canvases, saved as JPEG like a phone would.

    .venv/bin/python benchmarks/prepare_benchmark.py [--count N] [--keep-photos DIR]
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import psutil
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


class TreeMemory:
    """Peak resident memory of this process and its worker processes together, sampled every 20 ms."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(0.02):
            total = 0
            for process in [me, *me.children(recursive=True)]:
                try:
                    total += process.memory_info().rss
                except psutil.Error:  # a worker that just ended
                    pass
            self.peak = max(self.peak, total)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep-photos", type=Path, help="write the photos here instead of a temporary folder")
    parser.add_argument("--count", type=int, default=20, help="how many photos (peak memory should not grow with it)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        photos = args.keep_photos or Path(tmp) / "photos"
        photos.mkdir(parents=True, exist_ok=True)
        # made in another process, so the peak memory below is prepare's own
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            paths = pool.submit(make_photos, photos, args.count).result()
        megapixels = np.mean([Image.open(p).width * Image.open(p).height for p in paths]) / 1e6
        started = time.perf_counter()
        with TreeMemory() as memory:
            result = prepare_dataset(
                photos, Path(tmp) / "out", PrepareSettings(face_backend="dlib", tagger="none", class_word="woman")
            )
        elapsed = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"photos: {len(paths)} of {megapixels:.1f} MP (JPEG), backend dlib")
    print(f"kept {len(result.kept)}, rejected {len(result.photos) - len(result.kept)}")
    print(f"prepare wall time: {elapsed:.1f} s ({elapsed / len(paths):.2f} s per photo); target <= 8 s")
    print(f"peak resident memory: {peak_mb:.0f} MB in this process (the photos are made in another)")
    print(f"peak resident memory with worker processes: {memory.peak / 2**20:.0f} MB (sampled every 20 ms)")


if __name__ == "__main__":
    main()
