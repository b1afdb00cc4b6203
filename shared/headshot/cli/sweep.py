"""`headshot sweep`: train a LoRA per combination of settings, draw and measure each, and compare them."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..errors import HeadshotError
from ..faces import face_backend_choices
from ..train.presets import PRESETS
from .sweep_queue import add_queue_option, queue_submit


def add_sweep_command(sub) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "sweep", help="train one LoRA per combination of settings, draw the same pictures with each, and measure them"
    )
    p.add_argument("dataset", type=Path, help="what `headshot prepare` wrote (also the reference photos of the person)")
    p.add_argument("--base-model", required=True, help="a .safetensors checkpoint, a diffusers folder or a hub id")
    p.add_argument("--lr", help="learning rates, comma-separated (e.g. 1e-4,5e-4): with the lists below, a grid")
    p.add_argument("--rank", help="LoRA ranks, comma-separated (e.g. 4,16)")
    p.add_argument("--alpha", help="LoRA alphas, comma-separated")
    p.add_argument("--steps", help="training steps, comma-separated")
    p.add_argument(
        "--trigger-variants",
        dest="trigger",
        help="trigger words, comma-separated (the dataset's captions are rewritten)",
    )
    p.add_argument(
        "--runs", type=Path, metavar="FILE", help="exact combinations instead of a grid: TOML [[runs]] or a JSON list"
    )
    p.add_argument("--count", type=int, default=4, help="pictures per style or prompt (seeds --seed onward; default 4)")
    p.add_argument("--size", help="WIDTHxHEIGHT of the pictures (default: the style's)")
    p.add_argument("--sample-steps", type=int, help="sampling steps per picture (default: the style's)")
    p.add_argument("--styles", help="style names, comma-separated (default linkedin_corporate)")
    p.add_argument("--style-dir", action="append", default=[], type=Path, metavar="DIR", help="your own style folder")
    p.add_argument(
        "--prompts",
        type=Path,
        metavar="FILE",
        help="one prompt a line instead of styles ({subject}: trigger and class)",
    )
    p.add_argument("--seed", type=int, default=0, help="first picture seed (default 0)")
    p.add_argument("--clip-model", type=Path, metavar="DIR", help="CLIP model folder in transformers' format")
    p.add_argument(
        "--preset", choices=tuple(PRESETS), help="training preset for what a run does not set (default balanced)"
    )
    p.add_argument("--resolution", type=int, help="training size (default: the dataset's)")
    p.add_argument("--train-seed", type=int, default=42, help="training seed, the same for every run (default 42)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1, mps")
    p.add_argument("--face-backend", choices=face_backend_choices(), default="auto")
    p.add_argument("--face-models", action="append", default=[], metavar="DIR")
    p.add_argument("--tokenizer", action="append", default=[], metavar="DIR")
    p.add_argument(
        "--vae", metavar="FILE", help="a VAE file instead of the checkpoint's own, for every run and its pictures"
    )
    p.add_argument("--out", required=True, type=Path, help="sweep folder: jobs/, pictures/ and sweep.json")
    p.add_argument("--no-report", action="store_true", help="skip report.html/report.pdf in OUT/report")
    _add_method_options(p)
    add_queue_option(p)
    p.set_defaults(run=_sweep)


def _add_method_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--methods",
        help="a method study instead of a grid: methods, comma-separated, from adapter (FaceID, no training), "
        "single-photo-lora, lora (the full set), lora+adapter; each drawn with the same prompts and seeds",
    )
    p.add_argument(
        "--reference",
        type=Path,
        metavar="PHOTO",
        help="the one photo the adapter and single-photo-lora methods use (face distance is still to DATASET)",
    )
    p.add_argument(
        "--adapter",
        metavar="FILE",
        help="the IP-Adapter FaceID file: a path, or a name in --adapter-dir, $COMFYUI_PATH/models/ipadapter or "
        "$A1111_PATH/models/ControlNet (default: the family's usual file)",
    )
    p.add_argument("--adapter-dir", action="append", default=[], type=Path, metavar="DIR")
    p.add_argument("--adapter-weight", type=float, default=0.8, help="FaceID strength (default 0.8)")
    p.add_argument("--image-encoder", type=Path, metavar="DIR", help="CLIP image encoder folder (FaceID Plus)")


def sweep_runs(args) -> list[dict]:
    """The runs the options ask for: the grid of the comma lists, or the --runs file's combinations (a method
    study: the one setting its LoRA methods train with, the preset's where none is given)."""
    from ..evaluate.sweep_grid import OPTION, SETTING_KEYS, expand_grid, parse_values, read_runs_file

    lists = {key: parse_values(getattr(args, key), key) for key in SETTING_KEYS}
    if getattr(args, "methods", None):
        if args.runs is not None:
            raise HeadshotError("--runs lists a grid's runs; a method study (--methods) takes none", "bad_option")
        return expand_grid(lists) if any(lists.values()) else [{}]
    if args.runs is not None:
        given = [OPTION[key] for key, values in lists.items() if values]
        if given:
            raise HeadshotError(f"--runs lists every run's settings; leave out {', '.join(given)}", "bad_option")
        return read_runs_file(args.runs)
    if not lists["lr"]:
        raise HeadshotError(
            "a sweep compares learning rates: give --lr (e.g. --lr 1e-4,5e-4) or --runs FILE", "bad_option"
        )
    return expand_grid(lists)


def _sweep(args) -> int:
    from ..generate.preflight import parse_size
    from ..sweep.methods import parse_methods
    from ..sweep.plan import SweepOptions, plan_sweep
    from ..sweep.runner import run_sweep

    # every option is checked before a model loads
    methods = parse_methods(args.methods) if args.methods else []
    if not methods and (args.reference or args.adapter or args.adapter_dir or args.image_encoder):
        raise HeadshotError(
            "--reference, --adapter, --adapter-dir and --image-encoder belong to a method study: add --methods "
            "(e.g. --methods adapter,lora)",
            "bad_option",
        )
    options = SweepOptions(
        dataset=args.dataset,
        base_model=args.base_model,
        out=args.out,
        runs=sweep_runs(args),
        styles=[s.strip() for s in args.styles.split(",")] if args.styles else [],
        prompts_file=args.prompts,
        style_dirs=args.style_dir,
        count=args.count,
        size=parse_size(args.size),
        sample_steps=args.sample_steps,
        seed=args.seed,
        clip_model=args.clip_model,
        device=args.device,
        preset=args.preset,
        resolution=args.resolution,
        train_seed=args.train_seed,
        face_backend=args.face_backend,
        face_model_dirs=args.face_models,
        tokenizer_dirs=args.tokenizer,
        vae=args.vae,
        methods=methods,
        reference=args.reference,
        adapter=args.adapter,
        adapter_dirs=args.adapter_dir,
        adapter_weight=args.adapter_weight,
        image_encoder=args.image_encoder,
    )
    submit = queue_submit(args.queue) if args.queue else None
    plan = plan_sweep(options)
    print(
        f"sweep: {len(plan.runs)} run(s) and a baseline, {plan.pictures_per_run} pictures each; {args.out}",
        file=sys.stderr,
    )
    if submit is not None:
        from ..sweep.queued import run_queued_sweep

        document, warnings = run_queued_sweep(plan, submit, progress=_progress_line(sys.stderr))
    else:
        document, warnings = run_sweep(plan, progress=_progress_line(sys.stderr))
    for line in warnings:
        print(f"warning: {line}", file=sys.stderr)
    _print_table(document)
    if not args.no_report:
        _write_report(args.out)
    return 1 if any(run.get("state") != "done" for run in document["runs"]) else 0


def _write_report(out: Path) -> None:
    """The sweep's report (report.html, report.pdf) in OUT/report; a sweep without it is still a sweep."""
    from ..errors import HeadshotError
    from ..evaluate.report_writer import write_report
    from ..evaluate.sweep_record import SWEEP_NAME

    try:
        html, pdf = write_report(out / SWEEP_NAME, out / "report")
    except HeadshotError as exc:
        print(
            f"warning: no report ({exc.code}): {exc}; make it later with headshot report {out / SWEEP_NAME} --out DIR",
            file=sys.stderr,
        )
        return
    print(f"report: {html} and {pdf}")


def _progress_line(stream):
    from ..evaluate.sweep_progress import eta_text

    started = time.monotonic()

    def show(fraction: float, message: str, eta: float | None) -> None:
        stream.write(f"[{time.monotonic() - started:6.1f}s] {fraction:4.0%} {message}  ({eta_text(eta)})\n")
        stream.flush()

    return show


def _print_table(document: dict) -> None:
    def number(value) -> str:
        return "n/a" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)

    print(f"{'run':<36} {'face dist':>9} {'CLIP':>7} {'faceless':>8} {'loss':>8}")
    rows = [("baseline (no LoRA)", document.get("baseline") or {})]
    rows += [
        (" ".join([run.get("method") or "", ", ".join(f"{k}={v}" for k, v in run["settings"].items())]).strip(), run)
        for run in document["runs"]
    ]
    for name, entry in rows:
        if entry.get("state") == "failed":
            print(f"{name:<36} failed: {entry.get('error')}")
            continue
        metrics = entry.get("metrics") or {}
        print(
            f"{name:<36} {number(metrics.get('face_distance_mean')):>9} {number(metrics.get('clip_score_mean')):>7} "
            f"{number(metrics.get('faceless_count')):>8} {number(entry.get('final_loss')):>8}"
        )
