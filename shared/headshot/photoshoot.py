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

from dataclasses import dataclass, field, replace
from pathlib import Path

from .finish.detail_and_restore import Finishing, finish_image
from .finish.detailer import DetailerSettings
from .finish.ranked_results import Batch
from .sampling.protocol import IdentityAdapter, LoraWeight, MaskedImageToImage, Sampler, TextToImage
from .train.lora_files import lora_subject


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
    pose_image: Path | None = None  # a photo whose pose the pictures take (controlnet_aux's OpenPose)
    annotator_dir: Path | None = None  # the folder with controlnet_aux's OpenPose weights
    size_preset: str | None = None  # an ID style's print size; default: the style's first
    dpi: int = 300  # the print's pixels per inch, for ID styles
    identity: IdentityAdapter | None = None  # one-photo mode (IP-Adapter FaceID), alone or beside the LoRAs


class IdentitySampler:
    """A sampler whose every request, first pass and detailer repaint alike, carries the same FaceID identity."""

    def __init__(self, sampler: Sampler, identity: IdentityAdapter):
        self.sampler, self.identity, self.family = sampler, identity, sampler.family

    def text_to_image(self, request: TextToImage, progress=None):
        return self.sampler.text_to_image(replace(request, identity=request.identity or self.identity), progress)

    def masked_image_to_image(self, request: MaskedImageToImage, progress=None):
        return self.sampler.masked_image_to_image(
            replace(request, identity=request.identity or self.identity), progress
        )


def generate(settings: GenerateSettings, sampler: Sampler, finishing: Finishing, progress=None) -> list[dict]:
    from .families import check_loras_fit
    from .generate.id_photo import to_print
    from .generate.picture_plan import picture_subjects, plan_picture
    from .generate.preflight import check_generate_options, parse_size
    from .generate.styles import get_style

    check_generate_options(
        style=settings.style,
        style_dirs=settings.style_dirs,
        count=settings.count,
        seed=settings.seed,
        steps=settings.steps,
        trigger=settings.trigger,
        class_word=settings.class_word,
        loras=settings.loras,
        pose_image=settings.pose_image,
        annotator_dir=settings.annotator_dir,
        size_preset=settings.size_preset,
    )
    if settings.size:
        parse_size("x".join(map(str, settings.size)))
    check_loras_fit(settings.loras, sampler.family)
    if settings.identity is not None:
        sampler = IdentitySampler(sampler, settings.identity)
        if finishing.sampler is not None:
            finishing.sampler = IdentitySampler(finishing.sampler, settings.identity)
    subjects = picture_subjects(
        settings.trigger, settings.class_word, recorded=[lora_subject(p) for p in settings.loras]
    )
    photo_pose = None
    if settings.pose_image:
        from .generate.pose_detect import photo_pose as read_pose
        from .photos import read_photo

        photo_pose = read_pose(read_photo(settings.pose_image).image, settings.annotator_dir)
    plan = plan_picture(
        get_style(settings.style, settings.style_dirs),
        sampler.family,
        subjects,
        size=settings.size,
        steps=settings.steps,
        photo_pose=photo_pose,
        size_preset=settings.size_preset,
    )
    first_pass = [LoraWeight(p, plan.lora_weight) for p in settings.loras]
    # the detailer repaints each face with its own LoRA at the style's full weight
    finishing.detail_loras = [LoraWeight(p, plan.style.lora_weight) for p in settings.loras]
    finishing.group = plan.group
    control = plan.control_image()
    if settings.detailer:
        finishing.detailer = finishing.detailer or DetailerSettings(
            steps=plan.steps, cfg=plan.cfg, sampler=plan.sampler
        )
        finishing.detail_prompt = (plan.positive, plan.negative)
        finishing.sampler = sampler
    batch = Batch(settings.out_dir, finishing)
    for i in range(settings.count):
        seed = settings.seed + i
        if progress:
            progress(i, settings.count, f"picture {i + 1} of {settings.count} (seed {seed})")
        image = sampler.text_to_image(
            TextToImage(
                prompt=plan.positive,
                negative=plan.negative,
                width=plan.width,
                height=plan.height,
                steps=plan.steps,
                cfg=plan.cfg,
                seed=seed,
                sampler=plan.sampler,
                loras=first_pass,
                control_image=control,
            )
        )
        image, done = finish_image(image, finishing, seed)
        entry = {
            "seed": seed,
            "style": plan.style.name,
            "prompt": plan.positive,
            "negative": plan.negative,
            "width": plan.width,
            "height": plan.height,
            "steps": plan.steps,
            "cfg": plan.cfg,
            "sampler": plan.sampler,
            "pose": plan.pose,
            "loras": [lora.path for lora in first_pass],
            "triggers": [trigger for trigger, _ in subjects],  # evaluate takes them out of the prompt for CLIP
            **(
                {"identity_adapter": settings.identity.adapter, "adapter_weight": settings.identity.weight}
                if settings.identity
                else {}
            ),
            **done,
        }
        if plan.size_preset is not None:  # an ID photo: cropped to the print's aspect and pixels
            image = to_print(image, plan.size_preset, settings.dpi)
            entry.update(size_preset=plan.size_preset.name, print_size=list(image.size), dpi=settings.dpi)
        batch.add(f"{plan.style.name}_{seed:06d}", image, entry)
    return batch.write(settings.top)
