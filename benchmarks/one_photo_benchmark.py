"""Benchmark: time from a reference photo to the first picture, one-photo mode against LoRA training.

On the tiny test models (tests/tiny_models.py, tests/faceid_fixtures.py: random weights, real layouts),
so the figures show where the time goes, not what a GPU takes (the README and the issue note carry the
on-paper SD1.5 estimate). Both paths share the base-model load, which is timed separately:
  one photo:  screen + embed the photo (insightface stand-ins) -> load the FaceID file -> first picture
  LoRA:       train TRAIN_STEPS steps on the astronaut's shots -> load the LoRA -> first picture

    .venv/bin/python benchmarks/one_photo_benchmark.py [TRAIN_STEPS]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from faceid_fixtures import faceid_state, make_buffalo_pack, save_adapter  # noqa: E402
from tiny_models import make_tiny_sd1  # noqa: E402

from headshot.faces.insightface_onnx import InsightFaceAnalyzer  # noqa: E402
from headshot.samples import astronaut, astronaut_shots  # noqa: E402
from headshot.sampling.diffusers_sampler import DiffusersSampler  # noqa: E402
from headshot.sampling.identity_reference import identity_from_photo  # noqa: E402
from headshot.sampling.protocol import LoraWeight, TextToImage  # noqa: E402

TRAIN_STEPS = int(sys.argv[1]) if len(sys.argv) > 1 else 100


def _picture(sampler, **request):
    return sampler.text_to_image(TextToImage("ohwx woman", "", 64, 64, 20, 5.0, 0, **request))


def main() -> None:
    from headshot.train.engine import LoraTrainer
    from headshot.train.launch import create_job
    from headshot.train.settings import TrainSettings

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base = make_tiny_sd1(root / "sd1")
        start = time.perf_counter()
        sampler = DiffusersSampler(str(base), device="cpu")
        base_load = time.perf_counter() - start
        adapter = save_adapter(faceid_state(sampler.base.unet), root / "ip-adapter-faceid_sd15.safetensors")
        astronaut().save(root / "me.png")
        analyzer = InsightFaceAnalyzer(make_buffalo_pack(root / "buffalo_l", [(281, 150, 140)]))

        start = time.perf_counter()
        identity = identity_from_photo(root / "me.png", analyzer, adapter)
        screened = time.perf_counter() - start
        _picture(sampler, identity=identity)
        one_photo = time.perf_counter() - start

        data = root / "data" / "img" / "10_ohwx woman"
        data.mkdir(parents=True)
        for i, shot in enumerate(astronaut_shots().values()):
            shot.convert("RGB").resize((512, 512)).save(data / f"{i}.png")
            (data / f"{i}.txt").write_text("ohwx woman")
        settings = TrainSettings(
            dataset_dir=str(root / "data"),
            base_model=str(base),
            out_dir=str(root / "lora"),
            output_name="jane",
            steps=TRAIN_STEPS,
            resolution=32,
            rank=4,
            alpha=4.0,
            validation_images=0,
            face_backend="dlib",
            device="cpu",
            gradient_checkpointing=False,
        )
        start = time.perf_counter()
        LoraTrainer(settings, create_job(settings)).run()
        trained = time.perf_counter() - start
        fresh = DiffusersSampler(str(base), device="cpu")  # no adapter hooks in the LoRA path's timing
        start_picture = time.perf_counter()
        _picture(fresh, loras=[LoraWeight(str(root / "lora" / "jane.safetensors"), 1.0)])
        lora_path = trained + time.perf_counter() - start_picture

    print(f"base model load (both paths):        {base_load:6.2f} s")
    print(f"one photo: screen + embed the photo  {screened:6.2f} s")
    print(f"one photo: photo -> first picture    {one_photo:6.2f} s")
    print(f"LoRA: train {TRAIN_STEPS} steps              {trained:6.2f} s")
    print(f"LoRA: photos -> first picture        {lora_path:6.2f} s  ({lora_path / one_photo:.0f}x one photo)")


if __name__ == "__main__":
    main()
