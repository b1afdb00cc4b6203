"""The `headshot` command."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .errors import HeadshotError


def _progress_printer(stream=sys.stderr):
    started = time.monotonic()

    def show(done: int, total: int, message: str) -> None:
        stream.write(f"[{time.monotonic() - started:6.1f}s] {done}/{total} {message}\n")
        stream.flush()

    return show


def _add_prepare_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, type=Path, help="folder for the dataset, report.json and contact sheet")
    p.add_argument("--trigger", default="ohwx", help="the rare word the LoRA binds the person to (default: ohwx)")
    p.add_argument("--class", dest="class_word", help="class word: man, woman, person… (default: detected, else person)")
    p.add_argument("--resolution", type=int, default=512, help="crop size: 512 for SD1.5, 768, 1024 for SDXL")
    p.add_argument("--face-share", type=float, default=1 / 3, help="face width as a share of the crop (default 1/3)")
    p.add_argument("--face-backend", choices=("auto", "insightface", "dlib"), default="auto")
    p.add_argument("--face-models", type=Path, action="append", default=[], metavar="DIR",
                   help="folder with insightface's buffalo_l files (repeatable)")
    p.add_argument("--tagger", choices=("auto", "wd14", "deepdanbooru", "none"), default="auto")
    p.add_argument("--tagger-models", type=Path, action="append", default=[], metavar="DIR",
                   help="folder with a WD14 or DeepDanbooru ONNX model (repeatable)")
    p.add_argument("--tag-rules", type=Path, help="your own tag-cleaning rules (TOML; see the packaged tag_rules.toml)")
    p.add_argument("--repeats", type=int, help="kohya repeats per image (default: about 160 images per epoch)")
    p.add_argument("--min-face", type=int, help="smallest face width in pixels to accept")
    p.add_argument("--keep", action="append", default=[], metavar="FILE",
                   help="keep this photo (file name) even if screening rejects it (repeatable)")
    p.add_argument("--reference", type=Path, action="append", default=[], metavar="PHOTO",
                   help="a photo that defines who the person is (repeatable)")


def _prepare(args) -> int:
    from .dataset.prepare import PrepareSettings, prepare_dataset

    settings = PrepareSettings(
        trigger=args.trigger,
        class_word=args.class_word,
        resolution=args.resolution,
        face_share=args.face_share,
        face_backend=args.face_backend,
        face_model_dirs=args.face_models,
        tagger=args.tagger,
        tagger_dirs=args.tagger_models,
        tag_rules=args.tag_rules,
        repeats=args.repeats,
        keep=set(args.keep),
        reference=args.reference,
        min_face_px=args.min_face,
    )
    result = prepare_dataset(args.input_dir, args.out, settings, progress=_progress_printer())
    _print_summary(result)
    return 0


def _print_summary(result) -> None:
    for photo in result.photos:
        mark = "kept    " if photo.status == "kept" else f"rejected"
        detail = photo.caption if photo.status == "kept" else f"{photo.reason}: {photo.message}"
        print(f"{mark}  {photo.source:<32} {detail}")
    for warning in result.warnings:
        print(f"warning: {warning}")
    print(
        f"\n{len(result.kept)} of {len(result.photos)} photos kept as '{result.class_word}'; "
        f"dataset: {result.subset_dir}\nreport: {result.out_dir / 'report.json'}   "
        f"contact sheet: {result.out_dir / 'contact_sheet.jpg'}"
    )


def _demo(args) -> int:
    from .samples import write_sample_photos

    photos_dir = args.out / "photos"
    written = write_sample_photos(photos_dir)
    print(f"wrote {len(written)} sample photos to {photos_dir} (astronaut variants, other people, a group, junk)")
    args.input_dir = photos_dir
    args.out = args.out / "dataset"
    return _prepare(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="headshot", description="Headshot Studio: personalised headshots from selfies")
    sub = parser.add_subparsers(dest="command", required=True)
    prepare = sub.add_parser("prepare", help="screen, frame and caption selfies into a kohya dataset")
    prepare.add_argument("input_dir", type=Path, help="folder of 3–20 photos of one person")
    _add_prepare_options(prepare)
    prepare.set_defaults(run=_prepare)
    demo = sub.add_parser("demo", help="prepare a dataset from sample photos that ship with installed packages")
    _add_prepare_options(demo)
    demo.set_defaults(run=_demo, class_word="woman")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except HeadshotError as exc:
        print(f"error ({exc.code}): {exc}", file=sys.stderr)
        return 1
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cancelled", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
