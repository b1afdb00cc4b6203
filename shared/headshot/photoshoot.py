"""A photoshoot (`headshot generate`): styled pictures of the person, then finished and ranked by likeness.

It runs generate's prompts and poses through a `Sampler`, then finish's detailer, restoration and
ranking: it sits above both stages so neither imports the other.

Group photos (two or more identity LoRAs): the picture is drawn with a multi-person pose and
every LoRA at a shared, lowered weight, then each face, taken left to right, is repainted by the
detailer with its own person's LoRA alone. Limits: identities can still bleed into each other in
the first pass, the left-to-right assignment follows the pose (people are placed as the pose
says, not chosen), and faces the detector misses keep the blended look.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .finish.detailer import DetailerSettings
from .finish.results import Batch, Finishing, finish_image
from .sampling.protocol import LoraWeight, Sampler, TextToImage
from .train.lora_files import lora_subject

GROUP_POSES = {2: "two_people_side_by_side", 3: "three_people_group"}


@dataclass
class GenerateSettings:
    style: str
    count: int
    out_dir: Path
    loras: list[str] = field(default_factory=list)
    seed: int = 0
    size: tuple[int, int] | None = None
    steps: int | None = None
    top: int | None = None
    detailer: bool = False
    style_dirs: list[Path] = field(default_factory=list)
    trigger: str | None = None  # default: from the LoRA's metadata
    class_word: str | None = None


def generate(settings: GenerateSettings, sampler: Sampler, finishing: Finishing, progress=None) -> list[dict]:
    from .generate.pose import preset_pose, render_openpose
    from .generate.preflight import check_generate_options, check_loras_fit, parse_size
    from .generate.styles import build_prompt, get_style

    check_generate_options(style=settings.style, style_dirs=settings.style_dirs, count=settings.count,
                           seed=settings.seed, steps=settings.steps, trigger=settings.trigger,
                           class_word=settings.class_word, loras=settings.loras)
    if settings.size:
        parse_size("x".join(map(str, settings.size)))
    check_loras_fit(settings.loras, sampler.family)
    style = get_style(settings.style, settings.style_dirs).for_family(sampler.family)
    subjects = [lora_subject(p) for p in settings.loras]
    trigger = settings.trigger or (subjects[0][0] if subjects else None) or "ohwx"
    class_word = settings.class_word or (subjects[0][1] if subjects else None) or "person"
    group = len(settings.loras) > 1
    if group:
        names = " and ".join(f"{t or 'ohwx'} {c or 'person'}" for t, c in subjects)
        positive, negative = build_prompt(style, names, f"together, {len(subjects)} people")
        pose_name = GROUP_POSES.get(len(settings.loras), GROUP_POSES[3])
        weight = style.lora_weight / len(settings.loras)
        first_pass = [LoraWeight(p, weight) for p in settings.loras]
        finishing.detail_loras = [LoraWeight(p, style.lora_weight) for p in settings.loras]
        finishing.group = True
    else:
        positive, negative = build_prompt(style, trigger, class_word)
        pose_name = style.pose
        first_pass = [LoraWeight(p, style.lora_weight) for p in settings.loras]
        finishing.detail_loras = first_pass
    width, height = settings.size or (style.width, style.height)
    steps = settings.steps or style.steps
    # fitted to the canvas: the presets are drawn for a square and would stretch on a portrait
    control = render_openpose(preset_pose(pose_name, width, height), width, height) if pose_name else None
    if settings.detailer:
        finishing.detailer = finishing.detailer or DetailerSettings(steps=steps, cfg=style.cfg, sampler=style.sampler)
        finishing.detail_prompt = (positive, negative)
        finishing.sampler = sampler
    batch = Batch(settings.out_dir, finishing)
    for i in range(settings.count):
        seed = settings.seed + i
        if progress:
            progress(i, settings.count, f"picture {i + 1} of {settings.count} (seed {seed})")
        image = sampler.text_to_image(TextToImage(
            prompt=positive, negative=negative, width=width, height=height, steps=steps, cfg=style.cfg, seed=seed,
            sampler=style.sampler, loras=first_pass, control_image=control))
        image, done = finish_image(image, finishing, seed)
        batch.add(f"{style.name}_{seed:06d}", image, {
            "seed": seed, "style": style.name, "prompt": positive, "negative": negative, "width": width,
            "height": height, "steps": steps, "cfg": style.cfg, "sampler": style.sampler, "pose": pose_name,
            "loras": [l.path for l in first_pass], **done})
    return batch.write(settings.top)
