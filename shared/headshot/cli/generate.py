"""`headshot generate`, `headshot finish` and `headshot styles`."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import HeadshotError
from ..faces import face_backend_choices
from .progress import progress_printer


def _add_finishing_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, type=Path, help="folder for the pictures, results.json and contact sheet")
    p.add_argument("--base-model", help="checkpoint for sampling (needed for generate and --detailer)")
    p.add_argument("--vae", help="a VAE file (LDM layout, A1111's models/VAE) instead of the checkpoint's own")
    p.add_argument("--lora", action="append", default=[], help="identity LoRA (repeat for a group photo)")
    p.add_argument("--detailer", action="store_true", help="repaint each face at a higher resolution with the LoRA")
    p.add_argument("--denoise", type=float, default=0.4, help="detailer strength (0 keeps the face, 1 repaints it)")
    p.add_argument(
        "--restore",
        metavar="MODEL",
        help="face-restoration model (GFPGAN, CodeFormer, RestoreFormer): a path or a file name in --restore-models",
    )
    p.add_argument(
        "--restore-models",
        action="append",
        default=[],
        metavar="DIR",
        help="folder with restoration models (e.g. ComfyUI/models/facerestore_models)",
    )
    p.add_argument("--fidelity", type=float, default=0.5, help="CodeFormer fidelity: 0 = strongest restoration")
    p.add_argument("--identity", type=Path, help="identity file written by train (<lora>.identity.json)")
    p.add_argument(
        "--reference",
        type=Path,
        help="the person's photos (a folder, or one photo) to rank against instead; for generate, "
        "one photo without --lora is one-photo mode (IP-Adapter FaceID, no training)",
    )
    p.add_argument("--top", type=int, help="keep the K most alike; the rest go to below_top/")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int)
    p.add_argument("--face-backend", choices=face_backend_choices(), default="auto")
    p.add_argument("--face-models", action="append", default=[], metavar="DIR")
    p.add_argument("--tokenizer", action="append", default=[], metavar="DIR")
    p.add_argument("--device", default="auto")


def _add_generate_options(gen: argparse.ArgumentParser) -> None:
    gen.add_argument("--style", required=True, help="a style name (see `headshot styles`)")
    gen.add_argument("--count", type=int, default=4)
    gen.add_argument(
        "--controlnet",
        metavar="NAME",
        help="OpenPose ControlNet to follow the pose: a file or diffusers "
        "folder, or a name in --controlnet-dir, $COMFYUI_PATH/models/controlnet or "
        "$A1111_PATH/models/ControlNet",
    )
    gen.add_argument(
        "--controlnet-dir",
        action="append",
        default=[],
        type=Path,
        metavar="DIR",
        help="a folder of ControlNets to look --controlnet up in (repeatable)",
    )
    gen.add_argument(
        "--pose-image",
        type=Path,
        metavar="PHOTO",
        help="take the pose from this photo (needs "
        "controlnet_aux and its OpenPose weights in --annotator-dir) instead of the style's",
    )
    gen.add_argument(
        "--annotator-dir",
        type=Path,
        metavar="DIR",
        help="folder with controlnet_aux's OpenPose weights (body_pose_model.pth, hand_pose_model.pth, facenet.pth)",
    )
    gen.add_argument("--size", help="WIDTHxHEIGHT (default: the style's)")
    gen.add_argument(
        "--size-preset",
        metavar="NAME",
        help="an ID style's print size (e.g. passport_35x45; default: "
        "the style's first): the picture is cropped and scaled to it",
    )
    gen.add_argument("--dpi", type=int, default=300, help="pixels per inch of an ID style's print (default 300)")
    gen.add_argument("--styles", action="append", default=[], type=Path, metavar="DIR", help="your own style folder")
    gen.add_argument(
        "--adapter",
        nargs="?",
        const="",
        metavar="FILE",
        help="draw the --reference photo's face with IP-Adapter FaceID (a file, or a name in --adapter-dir, "
        "$COMFYUI_PATH/models/ipadapter or $A1111_PATH/models/ControlNet; alone: the family's usual file). "
        "On by itself with --reference PHOTO and no --lora; give it to combine with a --lora",
    )
    gen.add_argument("--adapter-dir", action="append", default=[], type=Path, metavar="DIR")
    gen.add_argument("--adapter-weight", type=float, default=0.8, help="FaceID strength (default 0.8)")
    gen.add_argument(
        "--image-encoder",
        type=Path,
        metavar="DIR",
        help="CLIP image encoder folder FaceID Plus reads the face with (h94/IP-Adapter's models/image_encoder)",
    )
    gen.add_argument("--trigger", help="default: from the LoRA's metadata")
    gen.add_argument("--class", dest="class_word", help="default: from the LoRA's metadata")


def _finishing(args, sampler):
    from ..faces import load_face_analyzer
    from ..finish.detail_and_restore import Finishing
    from ..finish.detailer import DetailerSettings
    from ..finish.ranking import identity_beside, identity_from_photos, load_identity

    analyzer = load_face_analyzer(args.face_backend, args.face_models)
    identity = None
    if args.identity:
        identity = load_identity(args.identity, analyzer)
    elif args.reference:
        identity = identity_from_photos(args.reference, analyzer)
    elif args.lora:
        identity = identity_beside(args.lora[0], analyzer)
    restorer = None
    if args.restore:
        from ..finish.restore import find_restore_model, load_restore_model

        restorer = load_restore_model(find_restore_model(args.restore, args.restore_models))
    detailer = DetailerSettings(denoise=args.denoise, steps=args.steps or 20) if args.detailer else None
    return Finishing(
        analyzer=analyzer,
        identity=identity,
        detailer=detailer,
        sampler=sampler,
        restorer=restorer,
        fidelity=args.fidelity,
    )


def _controlnet(args) -> Path | None:
    """--controlnet as a path: given, or found by name in the ControlNet folders (else the error lists them)."""
    from ..generate.controlnet_files import controlnet_dirs, find_controlnet

    name = getattr(args, "controlnet", None)
    return find_controlnet(name, controlnet_dirs(getattr(args, "controlnet_dir", []))) if name else None


def _sampler(args, controlnet: Path | None = None):
    from ..families import check_lora_families
    from ..sampling.diffusers_sampler import DiffusersSampler

    if not args.base_model:
        raise HeadshotError("--base-model is needed to draw pictures (and for --detailer)", "bad_option")
    check_lora_families(args.lora, args.base_model)  # before the weights load: a wrong pair fails in a second
    return DiffusersSampler(
        args.base_model,
        controlnet=str(controlnet) if controlnet else None,
        tokenizer_dirs=args.tokenizer,
        device=args.device,
        vae=getattr(args, "vae", None),
    )


def _print_results(results: list[dict], out: Path) -> None:
    for entry in results:
        if entry.get("skipped"):
            print(f"   -  skipped {entry['message']}")
            continue
        score = (
            "no face"
            if entry["faceless"]
            else (f"likeness {entry['identity_score']:.3f}" if entry["identity_score"] is not None else "not scored")
        )
        rank = f"#{entry['rank']}" if entry.get("rank") else "-"
        print(f"{rank:>4}  {entry['image']:<40} {score}")
    faceless = sum(bool(e["faceless"]) for e in results)
    skipped = sum(bool(e.get("skipped")) for e in results)
    print(
        f"\n{len(results) - skipped} pictures, {faceless} without a face"
        + (f", {skipped} skipped (see each reason above)" if skipped else "")
        + f"; results: {out / 'results.json'}, "
        f"contact sheet: {out / 'contact_sheet.jpg'}"
    )


def _generate(args) -> int:
    from ..finish.preflight import check_finishing_options
    from ..generate.preflight import check_generate_options, parse_size
    from ..outputs import FolderLock
    from ..photoshoot import GenerateSettings, generate

    # every option is checked before the first model loads
    size = parse_size(args.size)
    if args.pose_image and not args.controlnet:
        raise HeadshotError(
            "--pose-image needs --controlnet: the pose reaches the picture through an OpenPose ControlNet", "bad_option"
        )
    check_generate_options(
        style=args.style,
        style_dirs=args.styles,
        count=args.count,
        seed=args.seed,
        steps=args.steps,
        trigger=args.trigger,
        class_word=args.class_word,
        loras=args.lora,
        pose_image=args.pose_image,
        annotator_dir=args.annotator_dir,
        size_preset=args.size_preset,
        dpi=args.dpi,
    )
    controlnet = _controlnet(args)
    one_photo = _one_photo_mode(args)
    check_finishing_options(
        out=args.out,
        top=args.top,
        denoise=args.denoise,
        fidelity=args.fidelity,
        seed=args.seed,
        count=args.count,
        identity=args.identity,
        reference=args.reference,
        restore=args.restore,
        restore_dirs=args.restore_models,
        loras=args.lora,
    )
    with FolderLock(args.out, "output folder"):
        identity = None
        if one_photo:
            finishing = _finishing(args, None)
            # the reference photo is screened before the base model loads: a refused photo fails in seconds
            identity = _identity(args, finishing.analyzer)
            sampler = finishing.sampler = _sampler(args, controlnet)
        else:  # the sampler's checks (a LoRA of another family) come before any model loads
            sampler = _sampler(args, controlnet)
            finishing = _finishing(args, sampler)
        settings = GenerateSettings(
            style=args.style,
            count=args.count,
            out_dir=args.out,
            loras=args.lora,
            seed=args.seed,
            size=size,
            steps=args.steps,
            top=args.top,
            detailer=args.detailer,
            style_dirs=args.styles,
            trigger=args.trigger,
            class_word=args.class_word,
            pose_image=args.pose_image,
            annotator_dir=args.annotator_dir,
            size_preset=args.size_preset,
            dpi=args.dpi,
            identity=identity,
        )
        results = generate(settings, sampler, finishing, progress=progress_printer())
    _print_results(results, args.out)
    return 0


def _one_photo_mode(args) -> bool:
    """Whether to draw the --reference photo's face with FaceID: one photo, and no LoRA or --adapter given."""
    photo = args.reference is not None and args.reference.is_file()
    if args.adapter is not None and not photo:
        raise HeadshotError(
            "--adapter draws one photo's face: give that photo with --reference PHOTO (a file, not a folder)",
            "bad_option",
        )
    if not photo:
        return False
    if args.adapter is None and args.lora:
        return False  # a LoRA with a photo to rank against, as before; --adapter combines both
    from ..generate.adapter_files import ADAPTER_SUFFIXES, adapter_dirs, find_adapter

    if args.adapter and Path(args.adapter).suffix.lower() not in ADAPTER_SUFFIXES + ("",):
        raise HeadshotError(f"--adapter {args.adapter}: give a .safetensors or .bin FaceID file", "bad_option")
    if args.image_encoder is not None and not args.image_encoder.is_dir():
        raise HeadshotError(f"--image-encoder {args.image_encoder}: not a folder", "not_found")
    from ..families.checkpoint_detection import base_model_family

    family = base_model_family(args.base_model) if args.base_model else None
    args.adapter_path = find_adapter(
        args.adapter or None, adapter_dirs(args.adapter_dir), family.name if family else ""
    )
    return True


def _identity(args, analyzer):
    """The reference photo's FaceID identity (screened as prepare screens photos), with its adapter file."""
    from ..sampling.identity_reference import identity_from_photo

    return identity_from_photo(
        args.reference, analyzer, args.adapter_path, weight=args.adapter_weight, image_encoder=args.image_encoder
    )


def _finish(args) -> int:
    from ..finish.batch import detail_with_loras, finish_pictures, list_inputs
    from ..finish.preflight import check_finishing_options
    from ..outputs import FolderLock

    paths = list_inputs(args.images, args.out)
    check_finishing_options(
        out=args.out,
        top=args.top,
        denoise=args.denoise,
        fidelity=args.fidelity,
        steps=args.steps,
        seed=args.seed,
        count=len(paths),
        identity=args.identity,
        reference=args.reference,
        restore=args.restore,
        restore_dirs=args.restore_models,
        loras=args.lora,
        detailer=args.detailer,
        base_model=args.base_model,
    )
    with FolderLock(args.out, "output folder"):
        sampler = _sampler(args) if args.detailer else None
        finishing = _finishing(args, sampler)
        if args.detailer:
            detail_with_loras(finishing, args.lora)
        results = finish_pictures(paths, args.out, finishing, seed=args.seed, top=args.top, progress=progress_printer())
    _print_results(results, args.out)
    return 0


def _styles(args) -> int:
    from ..generate.styles import load_styles

    for style in load_styles(args.styles).values():
        print(f"{style.name:<28} {style.category:<13} {style.title}")
    return 0
