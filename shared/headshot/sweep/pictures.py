"""Drawing a sweep's pictures: the same styles (or prompts) and seeds for every run, with its LoRA or, for the
baseline, none (and, in a method study, the FaceID identity where the method uses it). Styles go through the
photoshoot (its prompts, sizes and results.json); --prompts lines are drawn as written, {subject} standing for
the trigger and class."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..evaluate.picture_inputs import PictureInput, pictures_to_evaluate
from ..faces import FaceAnalyzer
from ..finish.detail_and_restore import Finishing
from ..outputs import atomic_save
from ..photoshoot import GenerateSettings, generate
from ..sampling.protocol import IdentityAdapter, LoraWeight, Sampler, TextToImage

PROMPT_CFG = 7.0
PROMPT_STEPS = 30
PROMPT_SAMPLER = "dpmpp_2m"
PROMPT_NEGATIVE = "blurry, lowres, deformed, watermark, text"


def prompt_text(prompt: str, trigger: str, class_word: str) -> str:
    subject = f"{trigger} {class_word}"
    return prompt.replace("{subject}", subject) if "{subject}" in prompt else f"{subject}, {prompt}"


def draw_pictures(
    sampler: Sampler,
    analyzer: FaceAnalyzer,
    folder: Path,
    *,
    styles: list[str],
    prompts: list[str],
    lora: Path | None,
    trigger: str,
    class_word: str,
    count: int,
    seed: int,
    size: tuple[int, int] | None,
    steps: int | None,
    style_dirs: list[Path],
    on_picture: Callable[[str], None],
    identity: IdentityAdapter | None = None,
) -> list[PictureInput]:
    """Every picture of one run in `folder`, as the pictures evaluate measures (names relative to `folder`)."""
    loras = [str(lora)] if lora else []
    pictures: list[PictureInput] = []
    for style in styles:
        out = folder / style
        settings = GenerateSettings(
            style=style,
            count=count,
            out_dir=out,
            loras=loras,
            seed=seed,
            size=size,
            steps=steps,
            style_dirs=style_dirs,
            trigger=trigger,
            class_word=class_word,
            identity=identity,
        )

        def progress(done: int, total: int, message: str, style=style) -> None:
            on_picture(f"{style}: {message}")

        generate(settings, sampler, Finishing(analyzer=analyzer), progress=progress)
        for picture in pictures_to_evaluate(out, out):
            picture.name = f"{style}/{picture.name}"
            pictures.append(picture)
    if prompts:
        from ..families import get_family

        side = get_family(sampler.family).default_resolution
        width, height = size or (side, side)
        out = folder / "prompts"
        out.mkdir(parents=True, exist_ok=True)
        for number, prompt in enumerate(prompts, 1):
            text = prompt_text(prompt, trigger, class_word)
            for picture_seed in range(seed, seed + count):
                on_picture(f"prompt {number} of {len(prompts)} (seed {picture_seed})")
                image = sampler.text_to_image(
                    TextToImage(
                        prompt=text,
                        negative=PROMPT_NEGATIVE,
                        width=width,
                        height=height,
                        steps=steps or PROMPT_STEPS,
                        cfg=PROMPT_CFG,
                        seed=picture_seed,
                        sampler=PROMPT_SAMPLER,
                        loras=[LoraWeight(path) for path in loras],
                        identity=identity,
                    )
                )
                name = f"prompt{number:02d}_{picture_seed:06d}.png"
                _save_png(out / name, image)
                pictures.append(PictureInput(out / name, f"prompts/{name}", text, [trigger]))
    return pictures


def _save_png(path: Path, image) -> None:
    atomic_save(path, lambda tmp: image.save(tmp, format="PNG"))
