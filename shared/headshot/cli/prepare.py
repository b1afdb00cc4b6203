"""`headshot prepare` and `headshot demo`."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..dataset.tagging import tagger_choices
from ..faces import face_backend_choices
from .progress import progress_printer


def _add_prepare_options(p: argparse.ArgumentParser) -> None:
    # each dest is a PrepareSettings field: _prepare_settings takes them from the parsed arguments as they are
    p.add_argument("--out", required=True, type=Path, help="folder for the dataset, report.json and contact sheet")
    p.add_argument("--trigger", default="ohwx", help="the rare word the LoRA binds the person to (default: ohwx)")
    p.add_argument(
        "--class", dest="class_word", help="class word: man, woman, person… (default: detected, else person)"
    )
    p.add_argument("--resolution", type=int, default=512, help="crop size: 512 for SD1.5, 768, 1024 for SDXL")
    p.add_argument("--face-share", type=float, default=1 / 3, help="face width as a share of the crop (default 1/3)")
    p.add_argument("--face-backend", choices=face_backend_choices(), default="auto")
    p.add_argument(
        "--face-models",
        dest="face_model_dirs",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="folder with insightface's buffalo_l files (repeatable)",
    )
    p.add_argument("--tagger", choices=tagger_choices(), default="auto")
    p.add_argument(
        "--tagger-models",
        dest="tagger_dirs",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="folder with a WD14 or DeepDanbooru ONNX model (repeatable)",
    )
    p.add_argument("--tag-rules", type=Path, help="your own tag-cleaning rules (TOML; see the packaged tag_rules.toml)")
    p.add_argument("--repeats", type=int, help="kohya repeats per image (default: about 160 images per epoch)")
    p.add_argument("--min-face", dest="min_face_px", type=int, help="smallest face width in pixels to accept")
    p.add_argument(
        "--keep",
        action="append",
        default=[],
        metavar="FILE",
        help="keep this photo (file name) even if screening rejects it (repeatable)",
    )
    p.add_argument(
        "--reference",
        type=Path,
        action="append",
        default=[],
        metavar="PHOTO",
        help="a photo that defines who the person is (repeatable)",
    )


def add_single_photo_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--single-photo",
        action="store_true",
        help="INPUT is one photo: write a dataset of its framed, mirrored and relit variants "
        "(for `headshot train --preset single_photo`; weaker than 10 photos)",
    )


def _prepare_settings(args):
    from ..dataset.prepare_settings import PrepareSettings

    return PrepareSettings(
        **{name: value for name, value in vars(args).items() if name in PrepareSettings.field_names()}
    )


def _prepare(args) -> int:
    from ..dataset.prepare import prepare_dataset
    from ..dataset.prepare_report import prepare_summary

    if getattr(args, "single_photo", False):  # `demo` has no such option
        from ..dataset.single_photo import prepare_single_photo

        result = prepare_single_photo(args.input_dir, args.out, _prepare_settings(args), progress=progress_printer())
    else:
        result = prepare_dataset(args.input_dir, args.out, _prepare_settings(args), progress=progress_printer())
    print(prepare_summary(result))
    return 0


def _demo(args) -> int:
    from ..samples import write_sample_photos

    _prepare_settings(args).validate()  # a bad option fails before the sample photos are written
    photos_dir = args.out / "photos"
    written = write_sample_photos(photos_dir)
    print(f"wrote {len(written)} sample photos to {photos_dir} (astronaut variants, other people, a group, junk)")
    root = args.out
    args.input_dir = photos_dir
    args.out = root / "dataset"
    status = _prepare(args)
    if status or not args.base_model:
        print(
            f"\nnext: train an identity LoRA on it with\n  headshot train {args.out} --base-model "
            f"YOUR_CHECKPOINT.safetensors --out {root / 'lora'} --preset fast"
        )
        return status
    from . import build_parser
    from .train import _train

    vae = ["--vae", args.vae] if args.vae else []
    train_args = build_parser().parse_args(
        ["train", str(args.out), "--base-model", args.base_model, *vae, "--out", str(root / "lora"), "--preset", "fast"]
    )
    return _train(train_args)
