"""`headshot evaluate`: likeness and prompt-following numbers for a batch of pictures."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..faces import face_backend_choices
from .progress import progress_printer


def add_evaluate_command(sub) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "evaluate", help="measure pictures: face distance to the person, CLIP score, faceless count"
    )
    p.add_argument("images", type=Path, help="a folder of pictures, or the results.json of `headshot generate`")
    p.add_argument(
        "--reference",
        required=True,
        type=Path,
        metavar="REF",
        help="the person: a folder of photos, a prepared dataset, an .identity.json, or a LoRA with its identity file",
    )
    p.add_argument("--prompt", help="the prompt for every picture (default: each picture's own, from results.json)")
    p.add_argument(
        "--clip-model",
        type=Path,
        metavar="DIR",
        help="CLIP model folder in transformers' format, or an open_clip checkpoint (ViT-B-32.safetensors, or a file "
        "beside its open_clip_config.json); default: the Hugging Face cache, then the hosts' folders",
    )
    p.add_argument(
        "--face-backend",
        choices=face_backend_choices(),
        default="auto",
        help="dlib always measures face distance; auto or insightface add ArcFace similarity (buffalo_l)",
    )
    p.add_argument("--face-models", action="append", default=[], metavar="DIR", help="folder with buffalo_l")
    p.add_argument("--out", required=True, type=Path, help="folder for evaluation.json and the contact sheet")
    p.set_defaults(run=_evaluate)


def _evaluate(args) -> int:
    from ..evaluate.clip_model import find_clip_model, load_clip_scorer
    from ..evaluate.evaluation import evaluate_pictures, write_evaluation
    from ..evaluate.identity_source import recorded_backend
    from ..evaluate.picture_inputs import pictures_to_evaluate
    from ..evaluate.reference_faces import load_reference
    from ..faces import FACE_BACKENDS, load_face_analyzer
    from ..finish.ranking import identity_file_of
    from ..outputs import FolderLock, check_writable

    # every option is checked before a model loads
    check_writable(args.out)
    pictures = pictures_to_evaluate(args.images, args.out)
    clip_dir, where = find_clip_model(args.clip_model)
    backend = args.face_backend
    suffix = args.reference.suffix.lower()
    identity_file = (
        args.reference if suffix == ".json" else identity_file_of(args.reference) if suffix == ".safetensors" else None
    )
    if backend == "auto" and identity_file is not None:
        backend = recorded_backend(identity_file) or "auto"  # an insightface identity needs insightface
    warnings = []
    with FolderLock(args.out, "output folder"):
        dlib = load_face_analyzer("dlib")
        dirs = [Path(d).expanduser() for d in args.face_models]
        arcface = None if backend == "dlib" else FACE_BACKENDS["insightface"](dirs, backend == "insightface")
        reference = load_reference(args.reference, dlib, arcface)
        if clip_dir is None:
            warnings.append(f"no CLIP model found (searched {where}); clip_score is null. Give --clip-model DIR")
            clip = None
        else:
            clip = load_clip_scorer(clip_dir)
        for line in warnings:
            print(f"warning: {line}", file=sys.stderr)
        evaluation = evaluate_pictures(
            pictures, reference, dlib, arcface, clip, prompt=args.prompt, progress=progress_printer(sys.stderr)
        )
        evaluation.warnings[:0] = warnings
        for line in evaluation.warnings[len(warnings) :]:
            print(f"warning: {line}", file=sys.stderr)
        json_path, sheet_path = write_evaluation(args.out, evaluation)
    _print_summary(evaluation.as_json(), json_path, sheet_path)
    return 0


def _print_summary(report: dict, json_path: Path, sheet_path: Path) -> None:
    from ..evaluate.evaluation import tile_note

    for entry in report["images"]:
        print(f"{entry['image']:<40} {tile_note(entry)}")
    summary = report["summary"]
    print(f"\n{summary['images']} picture(s), {summary['unreadable']} unreadable")
    for metric, graded in summary["bands"].items():
        value = "n/a" if graded["value"] is None else graded["value"]
        print(
            f"  {metric:<20} {value}  {graded['grade'] or ''} {('(' + graded['band'] + ')') if graded['band'] else ''}"
        )
    print(f"evaluation: {json_path}, contact sheet: {sheet_path}")
