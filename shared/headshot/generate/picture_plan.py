"""One picture's recipe from a style: prompts, size, sampler settings, LoRA weight and pose.

Every host asks this one function (the CLI's photoshoot, ComfyUI's Style Template), so the rules
live in one place:
- one person: "<trigger> <class>" in the style's prompt, the style's pose and LoRA weight;
- a group (two or more people): "<a> and <b>, together, N people", a group pose, and the
  style's LoRA weight shared out (each identity LoRA at weight / N in the first pass);
- an ID style's size preset: the preset's generation size, and the pose framed so the head has
  the preset's share of the height (`id_photo`); the print crop comes after sampling.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from PIL import Image

from ..errors import HeadshotError
from .id_photo import frame_head
from .pose import People
from .pose_keypoints import PhotoPose, photo_pose_on_canvas
from .pose_presets import POSE_PRESETS, preset_pose
from .pose_render import render_openpose
from .prompt_syntax import build_prompt
from .style_schema import SizePreset, Style

GROUP_POSES = {2: "two_people_side_by_side", 3: "three_people_group"}
STYLE_POSE, NO_POSE = "from style", "none"
DEFAULT_TRIGGER, DEFAULT_CLASS = "ohwx", "person"

Subject = tuple[str, str]  # (trigger, class word)


def picture_subjects(
    trigger: str | None = None,
    class_word: str | None = None,
    recorded: Sequence[tuple[str | None, str | None]] = (),
    group: Sequence[Subject] = (),
) -> list[Subject]:
    """Who the picture shows, as (trigger, class) pairs, by one rule for every host.

    `group` (two or more people, as written by the person) wins; else each identity LoRA's recorded
    subject when there are several; else one person: the given trigger and class, then what the
    LoRA recorded, then "ohwx person".
    """
    if len(group) >= 2:
        return [(t or DEFAULT_TRIGGER, c or DEFAULT_CLASS) for t, c in group]
    if len(recorded) > 1:
        return [(t or DEFAULT_TRIGGER, c or DEFAULT_CLASS) for t, c in recorded]
    first_trigger, first_class = recorded[0] if recorded else (None, None)
    return [(trigger or first_trigger or DEFAULT_TRIGGER, class_word or first_class or DEFAULT_CLASS)]


def parse_subject_lines(text: str) -> list[Subject]:
    """ "ohwx man\nsks woman" -> [("ohwx", "man"), ("sks", "woman")]: one person per line, trigger first."""
    subjects = []
    for line in text.splitlines():
        words = line.split(None, 1)
        if words:
            subjects.append((words[0], words[1].strip() if len(words) > 1 else ""))
    return subjects


@dataclass
class PicturePlan:
    style: Style  # resolved for the family
    positive: str
    negative: str
    width: int
    height: int
    steps: int
    cfg: float
    sampler: str
    lora_weight: float  # each identity LoRA's weight in the first pass
    pose: str | None  # a preset name, "photo", or None
    people: People = field(default_factory=list)  # the skeleton's points, fitted to the canvas
    group: bool = False
    size_preset: SizePreset | None = None

    def control_image(self) -> Image.Image | None:
        """The OpenPose skeleton for the canvas, or None without a pose."""
        return render_openpose(self.people, self.width, self.height) if self.people else None


def plan_picture(
    style: Style,
    family: str,
    subjects: Sequence[tuple[str, str]],
    *,
    extra: str = "",
    extra_negative: str = "",
    size: tuple[int, int] | None = None,
    steps: int | None = None,
    pose: str = STYLE_POSE,
    photo_pose: PhotoPose | None = None,
    size_preset: str | None = None,
) -> PicturePlan:
    """The recipe for `style` on a `family` model with `subjects` ((trigger, class) each; two or
    more make a group photo). `pose`: the style's (or group's) own, "none", or a preset name;
    `photo_pose` (a pose read from a photo, `pose_detect.photo_pose`) wins over it. `size_preset`:
    one of the style's print sizes; a style that has presets uses its first when none is named
    (and `size` is not given)."""
    if not subjects:
        raise HeadshotError(
            "A picture needs a subject: give a trigger word (or an identity LoRA that records one).", "invalid_trigger"
        )
    resolved = style.for_family(family)
    preset = None
    if size_preset:
        preset = style.size_preset(size_preset)
    elif style.size_presets and size is None:
        preset = next(iter(style.size_presets.values()))
    group = len(subjects) > 1
    pose_name: str | None
    if group:
        names = " and ".join(f"{t} {c}".strip() for t, c in subjects)
        positive, negative = build_prompt(
            resolved, names, f"together, {len(subjects)} people", extra=extra, extra_negative=extra_negative
        )
        pose_name = GROUP_POSES.get(len(subjects), GROUP_POSES[3])
        lora_weight = resolved.lora_weight / len(subjects)
    else:
        positive, negative = build_prompt(resolved, *subjects[0], extra=extra, extra_negative=extra_negative)
        pose_name = resolved.pose
        lora_weight = resolved.lora_weight
    if pose != STYLE_POSE:
        if pose != NO_POSE and pose not in POSE_PRESETS:
            preset_pose(pose, 64, 64)  # raises naming close presets
        pose_name = None if pose == NO_POSE else pose
    width, height = size or (preset.generation_size(family) if preset else (resolved.width, resolved.height))
    head_share = preset.head_share if preset else None
    if photo_pose is not None:
        pose_name = "photo"
        if head_share and not group:
            people = frame_head(
                photo_pose.people[:1], width, height, head_share, source_aspect=photo_pose.size[0] / photo_pose.size[1]
            )
        else:
            people = photo_pose_on_canvas(photo_pose.people, photo_pose.size, width, height)
    elif pose_name and head_share and not group:
        people = frame_head(POSE_PRESETS[pose_name], width, height, head_share)
    else:
        # fitted to the canvas: the presets are drawn for a square and would stretch on a portrait
        people = preset_pose(pose_name, width, height) if pose_name else []
    return PicturePlan(
        style=resolved,
        positive=positive,
        negative=negative,
        width=width,
        height=height,
        steps=steps or resolved.steps,
        cfg=resolved.cfg,
        sampler=resolved.sampler,
        lora_weight=lora_weight,
        pose=pose_name,
        people=people,
        group=group,
        size_preset=preset,
    )
