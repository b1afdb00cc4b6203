"""Style Template and Pose Skeleton: the core's style data and OpenPose drawing for ComfyUI graphs."""
from __future__ import annotations

import json
import logging

from . import host
from .common import CATEGORY
from .images import pil_to_image_batch

FAMILIES = ["sd1", "sd2", "sdxl"]
STYLE_POSE = "from style"
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


def pose_names() -> list[str]:
    from headshot.generate.pose import POSE_PRESETS

    return list(POSE_PRESETS)


def parse_people(text: str, width: int, height: int) -> list:
    """People from keypoints JSON: our normalised list (one person or several), or OpenPose's JSON.

    OpenPose's format is {"people": [{"pose_keypoints_2d": [x, y, c, ...54 numbers]}], "canvas_width": W,
    "canvas_height": H} in pixels (the canvas size defaults to width x height); ours is a list of people, each
    18 points [x, y] or [x, y, confidence] in 0..1, or null for a point not seen.
    """
    from headshot.errors import HeadshotError

    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise HeadshotError(f"keypoints JSON does not parse: {exc}", "invalid_pose") from None
    if isinstance(data, dict):
        if not isinstance(data.get("people"), list):
            raise HeadshotError("keypoints JSON object needs a 'people' list (OpenPose's format)", "invalid_pose")
        cw, ch = float(data.get("canvas_width") or width), float(data.get("canvas_height") or height)
        people = []
        for n, person in enumerate(data["people"]):
            flat = person.get("pose_keypoints_2d") if isinstance(person, dict) else None
            if not isinstance(flat, list) or len(flat) != 54:
                raise HeadshotError(f"person {n}: pose_keypoints_2d must hold 54 numbers (18 points x, y, "
                                    "confidence)", "invalid_pose")
            pixels = any(abs(v) > 1.5 for v in flat[0::3] + flat[1::3])
            sx, sy = (cw, ch) if pixels else (1.0, 1.0)
            people.append([[flat[i] / sx, flat[i + 1] / sy, flat[i + 2]] for i in range(0, 54, 3)])
        return people
    if isinstance(data, list) and len(data) == 18 and all(p is None or (isinstance(p, list) and p and all(
            isinstance(v, (int, float)) for v in p)) for p in data):
        return [data]  # one person
    return data  # checked (and explained when wrong) by the core


class HeadshotStyleTemplate:
    DESCRIPTION = ("A style template's settings for the graph: prompts with the LoRA's trigger in place, size, "
                   "steps, CFG, KSampler's sampler and scheduler, the identity LoRA's weight and the OpenPose "
                   "skeleton of the style's pose.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "style": (style_names(), {"default": "linkedin_corporate", "tooltip": "A style template (packaged, "
                          "or a .toml file of yours in models/headshot_styles)."}),
                "model_family": (FAMILIES, {"default": "sd1", "tooltip": "The checkpoint's family: picks the style's "
                                 "sizes and prompt variant for it (sd1 = SD1.x, sdxl = SDXL)."}),
                "trigger": ("STRING", {"default": "", "tooltip": "The LoRA's trigger word; empty: read from the "
                                       "LoRA chosen below, else 'ohwx'."}),
                "class_word": ("STRING", {"default": "", "tooltip": "man, woman, person…; empty: read from the "
                                          "LoRA chosen below, else 'person'."}),
                "pose": ([STYLE_POSE, NO_POSE] + pose_names(), {"default": STYLE_POSE, "tooltip": "The skeleton "
                         "drawn for ControlNet OpenPose: the style's own pose, none (a black image), or a preset."}),
                "width": ("INT", {"default": 0, "min": 0, "max": 8192, "step": 8, "tooltip": "Picture width; 0: "
                                  "the style's."}),
                "height": ("INT", {"default": 0, "min": 0, "max": 8192, "step": 8, "tooltip": "Picture height; 0: "
                                   "the style's."}),
            },
            "optional": {
                "lora_name": (["none"] + host.file_list("loras"), {"default": "none", "tooltip": "An identity "
                              "LoRA whose recorded trigger and class fill the empty fields above."}),
                "extra": ("STRING", {"default": "", "multiline": True, "tooltip": "Words appended to the positive "
                                     "prompt (taken literally)."}),
                "extra_negative": ("STRING", {"default": "", "multiline": True, "tooltip": "Words appended to the "
                                              "negative prompt."}),
                "group_subjects": ("STRING", {"default": "", "multiline": True, "tooltip": "Group photo: one "
                                              "'trigger class' a line (e.g. 'ohwx man' and 'sks woman'); two or "
                                              "more lines give a group prompt, a group pose and a shared lower "
                                              "LoRA weight."}),
            },
        }

    RETURN_TYPES = ("STRING", "STRING", "INT", "INT", "INT", "FLOAT", *host.sampler_output_types(), "IMAGE", "FLOAT")
    RETURN_NAMES = ("positive", "negative", "width", "height", "steps", "cfg", "sampler_name", "scheduler",
                    "pose_image", "lora_weight")
    OUTPUT_TOOLTIPS = ("Positive prompt with the subject in place: connect to CLIPTextEncode's text.",
                       "Negative prompt.", "Width for EmptyLatentImage.", "Height for EmptyLatentImage.",
                       "Steps for KSampler.", "CFG for KSampler.", "KSampler's sampler_name.", "KSampler's scheduler.",
                       "OpenPose skeleton at width x height, for ControlNetApplyAdvanced.",
                       "The identity LoRA's weight for this style (LoraLoader's strengths).")
    FUNCTION = "template"
    CATEGORY = f"{CATEGORY}/generate"

    def template(self, style: str, model_family: str, trigger: str, class_word: str, pose: str, width: int,
                 height: int, lora_name: str = "none", extra: str = "", extra_negative: str = "",
                 group_subjects: str = ""):
        from headshot.generate.pose import preset_pose, render_openpose
        from headshot.photoshoot import GROUP_POSES
        from headshot.train.lora_files import lora_subject
        from headshot.generate.styles import build_prompt, comfy_sampler, get_style
        from headshot.outputs import safe_name

        # a style name is looked up as a file in the style folders: a name, never a path
        chosen = get_style(safe_name(style, "Style Template style"), style_dirs()).for_family(model_family)
        trigger, class_word = trigger.strip(), class_word.strip()
        if lora_name and lora_name != "none" and not (trigger and class_word):
            recorded = lora_subject(str(host.full_path("loras", lora_name)))
            trigger, class_word = trigger or recorded[0] or "", class_word or recorded[1] or ""
        trigger, class_word = trigger or "ohwx", class_word or "person"
        people = [line.strip() for line in group_subjects.splitlines() if line.strip()]
        if len(people) >= 2:  # as the core's `generate` draws a group
            positive, negative = build_prompt(chosen, " and ".join(people), f"together, {len(people)} people",
                                              extra=extra, extra_negative=extra_negative)
            pose_name = GROUP_POSES.get(len(people), GROUP_POSES[3])
            lora_weight = chosen.lora_weight / len(people)
        else:
            positive, negative = build_prompt(chosen, trigger, class_word, extra=extra, extra_negative=extra_negative)
            pose_name = chosen.pose
            lora_weight = chosen.lora_weight
        if pose != STYLE_POSE:
            pose_name = None if pose == NO_POSE else pose
        width, height = width or chosen.width, height or chosen.height
        people_pose = preset_pose(pose_name, width, height) if pose_name else []
        skeleton = render_openpose(people_pose, width, height)
        sampler_name, scheduler = comfy_sampler(chosen.sampler)
        return (positive, negative, width, height, chosen.steps, float(chosen.cfg), sampler_name, scheduler,
                pil_to_image_batch([skeleton]), float(lora_weight))


class HeadshotPoseSkeleton:
    DESCRIPTION = ("Draws an OpenPose body skeleton (BODY_18, the image ControlNet OpenPose models were trained "
                   "on) from a preset fitted to the picture's size, or from keypoints JSON.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "preset": (pose_names() + ["custom"], {"default": "headshot_front", "tooltip": "A pose preset, "
                           "fitted to width x height without stretching; custom: the keypoints JSON below."}),
                "width": ("INT", {"default": 512, "min": 64, "max": 8192, "step": 8, "tooltip": "Image width."}),
                "height": ("INT", {"default": 512, "min": 64, "max": 8192, "step": 8, "tooltip": "Image height."}),
                "mirror": ("BOOLEAN", {"default": False, "tooltip": "Mirror the pose (left and right swapped)."}),
                "stick_width": ("INT", {"default": 4, "min": 1, "max": 64, "tooltip": "Half-width of the limbs in "
                                        "pixels (the annotator draws 4)."}),
            },
            "optional": {
                "keypoints_json": ("STRING", {"default": "", "multiline": True, "tooltip": "For preset 'custom': "
                                              "a list of people, each 18 points [x, y] in 0..1 (null: not seen), "
                                              "or OpenPose's JSON ({\"people\": [{\"pose_keypoints_2d\": "
                                              "[...]}]})."}),
            },
        }

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("pose_image",)
    OUTPUT_TOOLTIPS = ("The skeleton image, for ControlNetApplyAdvanced's image.",)
    FUNCTION = "render"
    CATEGORY = f"{CATEGORY}/generate"

    def render(self, preset: str, width: int, height: int, mirror: bool, stick_width: int, keypoints_json: str = ""):
        from headshot.errors import HeadshotError
        from headshot.generate.pose import mirror_pose, preset_pose, render_openpose

        if preset == "custom":
            if not keypoints_json.strip():
                raise HeadshotError("preset 'custom' draws the keypoints JSON, which is empty", "invalid_pose")
            people = parse_people(keypoints_json, width, height)
        else:
            people = preset_pose(preset, width, height)
        if mirror:
            people = mirror_pose(people)
        return (pil_to_image_batch([render_openpose(people, width, height, stick_width=stick_width)]),)
