"""Generate and Finish from the tab: headshot.photoshoot.generate and headshot.finish.batch with the WebUI's
own sampler (WebUISampler), restoration models from models/GFPGAN and models/Codeformer, ranking by the
LoRA's identity file. No second pipeline: the same calls the CLI and ComfyUI make."""

from __future__ import annotations

import time
import zipfile
from pathlib import Path

from headshot.errors import HeadshotError

from . import host
from .photos import face_analyzer

ZIP_NAME = "headshots.zip"
DETAIL_DENOISE = 0.4


def style_names() -> list[str]:
    from headshot.generate.styles import load_styles

    return sorted(load_styles())


def style_previews(family: str = "sd1") -> list[tuple[object, str]]:
    """(picture, caption) per style: its pose skeleton at its size (what ControlNet will follow), titled."""
    from headshot.generate.picture_plan import plan_picture
    from headshot.generate.styles import load_styles

    previews = []
    for name, style in sorted(load_styles().items()):
        try:
            plan = plan_picture(style, family, [("ohwx", "person")])
            picture = plan.control_image()
        except HeadshotError:
            picture = None
        if picture is not None:
            picture = picture.copy()
            picture.thumbnail((256, 256))
            previews.append((picture, f"{name}: {style.title}"))
    return previews


NO_LORA = "none"  # the dropdown's last choice: one photo alone, or pictures ranked against that photo


def lora_choices() -> list[str]:
    """LoRA files under models/Lora as paths relative to it, newest first (a LoRA just trained on top), then none."""
    root = host.lora_dir()
    return [p.relative_to(root).as_posix() for p in host.lora_files()] + [NO_LORA]


def lora_path(choice: str | None) -> Path | None:
    """The chosen LoRA file (confined to the Lora folder), or None for no choice or "none"."""
    from headshot.allowed_paths import confine

    if not choice or choice == NO_LORA:
        return None
    return confine(host.lora_dir() / choice, [host.lora_dir().resolve()], "LoRA", "the WebUI")


def restore_choices() -> list[str]:
    from headshot.finish.restore import available_restore_models

    return available_restore_models(host.restore_model_dirs())


def finishing(
    lora: Path | None,
    backend: str,
    restore: str,
    fidelity: float,
    sampler=None,
    detailer: bool = False,
    reference: Path | None = None,
):
    """The core's Finishing: analyzer, identity from the LoRA's .identity.json (else the reference photo),
    restorer, detailer."""
    from headshot.finish.detail_and_restore import Finishing
    from headshot.finish.detailer import DetailerSettings
    from headshot.finish.ranking import identity_beside, identity_from_photos

    analyzer = face_analyzer(backend)
    identity = identity_beside(lora, analyzer) if lora is not None else None
    if identity is None and reference is not None:
        identity = identity_from_photos(reference, analyzer)
    restorer = None
    if restore and restore != "none":
        from headshot.finish.restore import find_restore_model, load_restore_model

        restorer = load_restore_model(find_restore_model(restore, host.restore_model_dirs()))
    return Finishing(
        analyzer=analyzer,
        identity=identity,
        detailer=DetailerSettings(denoise=DETAIL_DENOISE) if detailer else None,
        sampler=sampler,
        restorer=restorer,
        fidelity=float(fidelity),
    )


def store_reference(upload) -> Path:
    """The uploaded reference photo copied to <jobs>/references/ (gradio's temporary file goes away); a name
    already there gets -2, -3… (nothing replaced)."""
    import shutil

    from .photos import upload_path

    source = upload_path(upload)
    folder = host.jobs_root() / "references"
    folder.mkdir(parents=True, exist_ok=True)
    target, n = folder / source.name, 1
    while target.exists() or target.is_symlink():
        n += 1
        target = folder / f"{source.stem}-{n}{source.suffix}"
    shutil.copyfile(source, target)
    return target


def new_out_dir(kind: str) -> Path:
    folder = host.jobs_root() / kind / time.strftime("%Y%m%d-%H%M%S")
    n = 1
    while folder.exists():
        n += 1
        folder = folder.with_name(f"{time.strftime('%Y%m%d-%H%M%S')}-{n}")
    return folder


def generate(
    style: str,
    lora: str,
    count: int,
    seed: int,
    width: int = 0,
    height: int = 0,
    pose: bool = True,
    detailer: bool = False,
    restore: str = "none",
    top: int = 0,
    backend: str = "auto",
    fidelity: float = 0.5,
    steps: int = 0,
    progress=None,
    reference: Path | None = None,
    adapter_weight: float = 0.8,
) -> tuple[list[dict], Path]:
    """A photoshoot through the WebUI: results.json entries (best first) and the folder they are in.

    `reference`: one photo of the person, drawn in with IP-Adapter FaceID (alone, or beside the LoRA) and
    ranked against when the LoRA has no identity file."""
    from headshot.photoshoot import GenerateSettings
    from headshot.photoshoot import generate as run

    from .controlnet import OpenPoseUnit
    from .identity_adapter import FaceIDUnit, screen_reference
    from .sampler import WebUISampler

    family = host.model_family()
    faceid = None
    if reference is not None:  # checked before any picture: a refused photo fails in seconds
        screen_reference(reference, face_analyzer(backend))
        faceid = FaceIDUnit.for_photo(reference, family, float(adapter_weight))
    unit = OpenPoseUnit.find(family) if pose else None
    sampler = WebUISampler(family, control_unit=unit, identity_unit=faceid)
    path = lora_path(lora)
    out = new_out_dir("photoshoots")
    settings = GenerateSettings(
        style=style,
        count=int(count),
        out_dir=out,
        loras=[str(path)] if path else [],
        seed=int(seed),
        size=(int(width), int(height)) if width and height else None,
        top=int(top) or None,
        detailer=bool(detailer),
        steps=int(steps) or None,  # 0: the style's
    )
    finish = finishing(path, backend, restore, fidelity, sampler, detailer, reference)
    with host.generation_lock("headshot photoshoot"):
        results = run(settings, sampler, finish, progress=progress)
    return results, out


def finish_folder(
    source: Path,
    lora: str = "",
    detailer: bool = False,
    restore: str = "none",
    top: int = 0,
    backend: str = "auto",
    fidelity: float = 0.5,
    seed: int = 0,
    progress=None,
    reference: Path | None = None,
    pictures: list[Path] | None = None,
) -> tuple[list[dict], Path]:
    """Detail, restore and rank pictures a person has (a folder, or the last photoshoot's: `pictures`, its
    results.json's, so its contact sheet and zip are not taken for pictures); ranked against `reference`
    (a photo) when the LoRA has no identity file."""
    from headshot.finish.batch import detail_with_loras, finish_pictures, list_inputs

    from .sampler import WebUISampler

    out = new_out_dir("finished")
    paths = pictures or list_inputs(source, out)
    path = lora_path(lora)
    if detailer and path is None:
        raise HeadshotError("the detailer repaints faces with the identity LoRA: choose one", "bad_option")
    sampler = WebUISampler() if detailer else None
    finish = finishing(path, backend, restore, fidelity, sampler, detailer, reference)
    if detailer:
        detail_with_loras(finish, [str(path)])
    with host.generation_lock("headshot finish"):
        results = finish_pictures(paths, out, finish, seed=int(seed), top=int(top) or None, progress=progress)
    return results, out


def gallery(results: list[dict], out: Path, numbers: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """(picture, caption), best first as results.json orders them; faceless and skipped ones last. `numbers`:
    each picture's evaluation (image name -> its measures), added to its caption."""
    from headshot.finish.ranking import describe_likeness

    items = []
    for entry in results:
        if entry.get("skipped") or not entry.get("image"):
            continue
        rank = f"#{entry['rank']} " if entry.get("rank") else ""
        measured = (numbers or {}).get(entry["image"])
        caption = rank + describe_likeness(entry) + (f" · {measured}" if measured else "")
        items.append((str(out / entry["image"]), caption))
    return items


def batch_pictures(results: list[dict], out: Path) -> list[Path]:
    """The pictures a batch made (faceless ones too), as its results.json lists them."""
    return [out / e["image"] for e in results if e.get("image") and not e.get("skipped")]


def zip_results(results: list[dict], out: Path) -> Path:
    """Every picture of the batch (best first, with results.json) as out/headshots.zip, written atomically."""
    from headshot.outputs import atomic_save

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
            for entry in results:
                if entry.get("image") and (out / entry["image"]).is_file():
                    archive.write(out / entry["image"], entry["image"])
            if (out / "results.json").is_file():
                archive.write(out / "results.json", "results.json")

    return atomic_save(out / ZIP_NAME, write)
