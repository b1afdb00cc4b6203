"""Style Template and Pose Skeleton: the core's style data and OpenPose drawing for ComfyUI graphs."""

from __future__ import annotations

import logging
from pathlib import Path

from PIL import Image

from . import host
from .common import CATEGORY
from .images import image_batch_to_pils, pil_to_image_batch

STYLE_POSE = "from style"  # as headshot.generate.picture_plan's
NO_POSE = "none"

log = logging.getLogger(__name__)


def style_dirs() -> list:
    """Folders of a person's own style files: ComfyUI's 'headshot_styles' folders (models/headshot_styles)."""
    return [d for d in host.folder_dirs("headshot_styles") if d.is_dir()]


def style_names() -> list[str]:
    from headshot.generate.styles import load_styles

    def skip(error) -> None:  # one bad file of a person's must not hide every style
        log.warning("Headshot Studio: style file skipped: %s", error)

    return sorted(load_styles(style_dirs(), missing_ok=True, on_error=skip))


def family_names() -> list[str]:
    from headshot.families import family_names as registered

    return list(registered())


def annotator_dirs() -> list[Path]:
    """Where ComfyUI keeps controlnet_aux's OpenPose weights: models/annotators, then the
    comfyui_controlnet_aux pack's own download folder."""
    fp = host.folder_paths()
    if fp is None:
        return []
    dirs = [Path(fp.models_dir) / "annotators"]
    pack = Path("comfyui_controlnet_aux", "ckpts", "lllyasviel", "Annotators")
    dirs += [d / pack for d in host.folder_dirs("custom_nodes")]
    return dirs


def pose_names() -> list[str]:
    from headshot.generate.pose_presets import POSE_PRESETS

    return list(POSE_PRESETS)


class HeadshotStyleTemplate:
    DESCRIPTION = (
        "A style template's settings for the graph: prompts with the LoRA's trigger in place, size, "
        "steps, CFG, KSampler's sampler and scheduler, the identity LoRA's weight and the OpenPose "
        "skeleton of the style's pose."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "style": (
                    style_names(),
                    {
                        "default": "linkedin_corporate",
                        "tooltip": "A style template (packaged, or a .toml file of yours in models/headshot_styles).",
                    },
                ),
                "model_family": (
                    family_names(),
                    {
                        "default": "sd1",
                        "tooltip": "The checkpoint's family: picks the "
                        "style's sizes and prompt variant for it (sd1 = SD1.x, sdxl = SDXL).",
                    },
                ),
                "trigger": (
                    "STRING",
                    {
                        "default": "",
                        "tooltip": "The LoRA's trigger word; empty: read from the LoRA chosen below, else 'ohwx'.",
                    },
                ),
                "class_word": (
                    "STRING",
                    {
                        "default": "",
                        "tooltip": "man, woman, person…; empty: read from the LoRA chosen below, else 'person'.",
                    },
                ),
                "pose": (
                    [STYLE_POSE, NO_POSE] + pose_names(),
                    {
                        "default": STYLE_POSE,
                        "tooltip": "The skeleton "
                        "drawn for ControlNet OpenPose: the style's own pose, none (a black image), or a preset.",
                    },
                ),
                "width": (
                    "INT",
                    {"default": 0, "min": 0, "max": 8192, "step": 8, "tooltip": "Picture width; 0: the style's."},
                ),
                "height": (
                    "INT",
                    {"default": 0, "min": 0, "max": 8192, "step": 8, "tooltip": "Picture height; 0: the style's."},
                ),
            },
            "optional": {
                "lora_name": (
                    ["none"] + host.file_list("loras"),
                    {
                        "default": "none",
                        "tooltip": "An identity LoRA whose recorded trigger and class fill the empty fields above.",
                    },
                ),
                "extra": (
                    "STRING",
                    {
                        "default": "",
                        "multiline": True,
                        "tooltip": "Words appended to the positive prompt (taken literally).",
                    },
                ),
                "extra_negative": (
                    "STRING",
                    {"default": "", "multiline": True, "tooltip": "Words appended to the negative prompt."},
                ),
                "group_subjects": (
                    "STRING",
                    {
                        "default": "",
                        "multiline": True,
                        "tooltip": "Group photo: one "
                        "'trigger class' a line (e.g. 'ohwx man' and 'sks woman'); two or "
                        "more lines give a group prompt, a group pose and a shared lower "
                        "LoRA weight.",
                    },
                ),
                "pose_photo": (
                    "IMAGE",
                    {
                        "tooltip": "Take the pose from this photo instead (needs controlnet_aux "
                        "and its OpenPose weights in models/annotators)."
                    },
                ),
            },
        }

    RETURN_TYPES = ("STRING", "STRING", "INT", "INT", "INT", "FLOAT", *host.sampler_output_types(), "IMAGE", "FLOAT")
    RETURN_NAMES = (
        "positive",
        "negative",
        "width",
        "height",
        "steps",
        "cfg",
        "sampler_name",
        "scheduler",
        "pose_image",
        "lora_weight",
    )
    OUTPUT_TOOLTIPS = (
        "Positive prompt with the subject in place: connect to CLIPTextEncode's text.",
        "Negative prompt.",
        "Width for EmptyLatentImage.",
        "Height for EmptyLatentImage.",
        "Steps for KSampler.",
        "CFG for KSampler.",
        "KSampler's sampler_name.",
        "KSampler's scheduler.",
        "OpenPose skeleton at width x height, for ControlNetApplyAdvanced.",
        "The identity LoRA's weight for this style (LoraLoader's strengths).",
    )
    FUNCTION = "template"
    CATEGORY = f"{CATEGORY}/generate"

    def template(
        self,
        style: str,
        model_family: str,
        trigger: str,
        class_word: str,
        pose: str,
        width: int,
        height: int,
        lora_name: str = "none",
        extra: str = "",
        extra_negative: str = "",
        group_subjects: str = "",
        pose_photo=None,
    ):
        from headshot.generate.picture_plan import parse_subject_lines, picture_subjects, plan_picture
        from headshot.generate.styles import get_style
        from headshot.outputs import safe_name
        from headshot.sampling.schedulers import comfy_sampler
        from headshot.train.lora_files import lora_subject

        # a style name is looked up as a file in the style folders: a name, never a path
        chosen = get_style(safe_name(style, "Style Template style"), style_dirs())
        recorded = []
        if lora_name and lora_name != "none":
            recorded = [lora_subject(str(host.full_path("loras", lora_name)))]
        subjects = picture_subjects(
            trigger.strip(), class_word.strip(), recorded=recorded, group=parse_subject_lines(group_subjects)
        )
        size = None
        if width or height:
            own = chosen.for_family(model_family)
            size = (width or own.width, height or own.height)
        photo = None
        if pose_photo is not None:
            from headshot.generate.pose_detect import photo_pose

            found = [d for d in annotator_dirs() if (d / "body_pose_model.pth").is_file()] or annotator_dirs()
            photo = photo_pose(image_batch_to_pils(pose_photo)[0], found[0] if found else None)
        plan = plan_picture(
            chosen,
            model_family,
            subjects,
            extra=extra,
            extra_negative=extra_negative,
            size=size,
            pose=pose,
            photo_pose=photo,
        )
        skeleton = plan.control_image() or Image.new("RGB", (plan.width, plan.height))
        sampler_name, scheduler = comfy_sampler(plan.sampler)
        return (
            plan.positive,
            plan.negative,
            plan.width,
            plan.height,
            plan.steps,
            float(plan.cfg),
            sampler_name,
            scheduler,
            pil_to_image_batch([skeleton]),
            float(plan.lora_weight),
        )


class HeadshotPoseSkeleton:
    DESCRIPTION = (
        "Draws an OpenPose body skeleton (BODY_18, the image ControlNet OpenPose models were trained "
        "on) from a preset fitted to the picture's size, or from keypoints JSON."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "preset": (
                    pose_names() + ["custom"],
                    {
                        "default": "headshot_front",
                        "tooltip": "A pose preset, "
                        "fitted to width x height without stretching; custom: the keypoints JSON below.",
                    },
                ),
                "width": ("INT", {"default": 512, "min": 64, "max": 8192, "step": 8, "tooltip": "Image width."}),
                "height": ("INT", {"default": 512, "min": 64, "max": 8192, "step": 8, "tooltip": "Image height."}),
                "mirror": ("BOOLEAN", {"default": False, "tooltip": "Mirror the pose (left and right swapped)."}),
                "stick_width": (
                    "INT",
                    {
                        "default": 4,
                        "min": 1,
                        "max": 64,
                        "tooltip": "Half-width of the limbs in pixels (the annotator draws 4).",
                    },
                ),
            },
            "optional": {
                "keypoints_json": (
                    "STRING",
                    {
                        "default": "",
                        "multiline": True,
                        "tooltip": "For preset 'custom': "
                        "a list of people, each 18 points [x, y] in 0..1 (null: not seen), "
                        'or OpenPose\'s JSON ({"people": [{"pose_keypoints_2d": '
                        "[...]}]}).",
                    },
                ),
            },
        }

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("pose_image",)
    OUTPUT_TOOLTIPS = ("The skeleton image, for ControlNetApplyAdvanced's image.",)
    FUNCTION = "render"
    CATEGORY = f"{CATEGORY}/generate"

    def render(self, preset: str, width: int, height: int, mirror: bool, stick_width: int, keypoints_json: str = ""):
        from headshot.errors import HeadshotError
        from headshot.generate.pose import mirror_pose
        from headshot.generate.pose_keypoints import people_from_json
        from headshot.generate.pose_presets import preset_pose
        from headshot.generate.pose_render import render_openpose

        if preset == "custom":
            if not keypoints_json.strip():
                raise HeadshotError(
                    "Preset 'custom' draws the keypoints JSON, which is empty; paste the keypoints or pick a preset.",
                    "invalid_pose",
                )
            people = people_from_json(keypoints_json, width, height)
        else:
            people = preset_pose(preset, width, height)
        if mirror:
            people = mirror_pose(people)
        return (pil_to_image_batch([render_openpose(people, width, height, stick_width=stick_width)]),)
