"""Face Restore: GFPGAN / CodeFormer / RestoreFormer from models/facerestore_models, through the core."""

from __future__ import annotations

from . import host
from .common import CATEGORY, face_analyzer, face_backend_input
from .images import image_batch_to_pils, pil_to_image_batch

_loaded: dict = {}  # (path, device) -> descriptor: one model kept, as ComfyUI's loaders cache theirs


def restore_model_names() -> list[str]:
    from headshot.finish.restore import MODEL_SUFFIXES

    return [n for n in host.file_list("facerestore_models") if n.lower().endswith(MODEL_SUFFIXES)]


def load_model(name: str):
    from headshot.finish.restore import find_restore_model, load_restore_model

    path = find_restore_model(name, host.folder_dirs("facerestore_models"))
    key = (str(path), host.torch_device())
    if key not in _loaded:
        _loaded.clear()
        _loaded[key] = load_restore_model(path, device=key[1])
    return _loaded[key]


class HeadshotFaceRestore:
    DESCRIPTION = (
        "Restores every face with a face-restoration model (GFPGAN, CodeFormer, RestoreFormer) run "
        "through spandrel, aligned on the FFHQ template and pasted back through a feathered mask; "
        "pixels outside the faces stay as they were."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The pictures whose faces are restored."}),
                "model_name": (
                    restore_model_names(),
                    {
                        "tooltip": "A model file in models/facerestore_models "
                        "(GFPGANv1.4.pth, codeformer-v0.1.0.pth, RestoreFormer.pth). CodeFormer needs "
                        "pip install spandrel_extra_arches."
                    },
                ),
                "fidelity": (
                    "FLOAT",
                    {
                        "default": 0.5,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.05,
                        "tooltip": "CodeFormer only: 0 restores most, 1 stays closest to the input.",
                    },
                ),
                "strength": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.05,
                        "tooltip": "Blend of the restored faces over the originals.",
                    },
                ),
                "face_backend": face_backend_input(),
            },
        }

    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("image", "report")
    OUTPUT_TOOLTIPS = ("The pictures with restored faces.", "Faces found and restored per picture.")
    FUNCTION = "restore"
    CATEGORY = f"{CATEGORY}/finish"

    def restore(self, image, model_name: str, fidelity: float, strength: float, face_backend: str):
        from headshot.finish.restore import restoration_summary, restore_faces

        model = load_model(model_name)
        analyzer = face_analyzer(face_backend)
        out, lines = [], []
        for b, picture in enumerate(image_batch_to_pils(image)):
            host.raise_if_interrupted()
            restored, infos = restore_faces(picture, model, analyzer, fidelity=fidelity, strength=strength)
            lines.append(f"picture {b + 1}: {restoration_summary(infos)}")
            out.append(restored)
        return (pil_to_image_batch(out), "\n".join(lines))
