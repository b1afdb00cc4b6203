"""`headshot train`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import HeadshotError
from ..faces import face_backend_choices
from ..train.presets import PRESETS
from ..train.settings import BACKENDS, MIXED_PRECISIONS, OPTIMIZERS, SCHEDULERS, TrainSettings

#: where `headshot train PHOTO --single-photo` puts the variants it makes, inside the job folder
SINGLE_PHOTO_DATASET = "dataset"


def _add_train_options(p: argparse.ArgumentParser) -> None:
    # Each dest is a TrainSettings field, so _train builds the settings from the parsed arguments as they are.
    # Defaults are None ("not given"): TrainSettings' own apply, and --resume can tell what the person changed.
    p.add_argument(
        "dataset_dir",
        type=Path,
        help="what `headshot prepare` wrote (or any kohya train_data_dir); with --single-photo, one photo",
    )
    p.add_argument(
        "--single-photo",
        action="store_true",
        help="train from ONE photo: its framed, mirrored and relit variants go to OUT/dataset, and a short preset "
        "runs (weaker than 10 photos; better than nothing where no identity-adapter file is available)",
    )
    p.add_argument("--trigger", help="with --single-photo: the LoRA's trigger word (default ohwx)")
    p.add_argument("--class", dest="class_word", help="with --single-photo: man, woman, person… (default: detected)")
    p.add_argument(
        "--base-model", required=True, help="a .safetensors/.ckpt checkpoint, a diffusers folder, or a hub id"
    )
    p.add_argument(
        "--vae",
        help="a VAE file (.safetensors/.ckpt, LDM layout) to use instead of the checkpoint's own, as kohya's --vae; "
        "needed for a checkpoint saved without one",
    )
    p.add_argument("--out", dest="out_dir", required=True, type=Path, help="job folder; the LoRA is written here")
    p.add_argument("--name", dest="output_name", help="LoRA file name (without .safetensors; default headshot_lora)")
    p.add_argument("--preset", choices=tuple(PRESETS), help="default balanced")
    p.add_argument("--steps", type=int, help="total optimizer steps (default: photos x the preset's factor, clamped)")
    p.add_argument("--resolution", type=int, help="training size (default: the dataset's)")
    p.add_argument("--rank", type=int)
    p.add_argument("--alpha", type=float)
    p.add_argument("--lr", type=float, help="UNet learning rate")
    p.add_argument("--text-encoder-lr", type=float, help="also train the text encoder(s) at this rate")
    p.add_argument("--optimizer", choices=OPTIMIZERS)
    p.add_argument("--scheduler", choices=SCHEDULERS)
    p.add_argument("--warmup-steps", type=int)
    p.add_argument("--checkpoint-every", type=int)
    p.add_argument("--seed", type=int, help="0 to 4294967295 (default 42)")
    p.add_argument("--mixed-precision", choices=MIXED_PRECISIONS, help="default auto")
    p.add_argument(
        "--no-half-vae",
        action="store_true",
        default=None,
        help="encode the photos with the VAE in fp32 (default: half precision where it is faster, as kohya)",
    )
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:1, mps")
    p.add_argument(
        "--no-flip",
        dest="flip",
        action="store_false",
        default=None,
        help="no mirror augmentation (asymmetric faces, text)",
    )
    p.add_argument(
        "--validation-images", type=int, help="images per checkpoint to score likeness (default 4 on GPU, 0 on CPU)"
    )
    p.add_argument("--validation-prompt")
    p.add_argument("--face-backend", choices=face_backend_choices(), help="default auto")
    p.add_argument("--face-models", dest="face_model_dirs", action="append", metavar="DIR")
    p.add_argument(
        "--tokenizer",
        dest="tokenizer_dirs",
        action="append",
        metavar="DIR",
        help="folder with CLIP tokenizer files (vocab.json, merges.txt), e.g. ComfyUI's comfy/sd1_tokenizer",
    )
    p.add_argument("--class-images", dest="class_images_dir", help="folder of class images for prior preservation")
    p.add_argument("--class-image-count", type=int, help="generate this many class images once (prior preservation)")
    p.add_argument("--prior-loss-weight", type=float, help="default 1.0")
    p.add_argument("--backend", choices=BACKENDS, help="default builtin")
    p.add_argument(
        "--sd-scripts", dest="sd_scripts_repo", help="path of a kohya sd-scripts checkout (with --backend sd-scripts)"
    )
    p.add_argument("--sd-scripts-python", help="the Python of the sd-scripts venv")
    p.add_argument(
        "--cache-dir",
        type=Path,
        help="keep encoded latents and text embeddings here, to reuse across runs (default: OUT/input-cache)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the job in --out from its last checkpoint; "
        "options given again may change steps, checkpoints, validation, device and precision",
    )


def chosen_settings(args: argparse.Namespace) -> dict:
    """The TrainSettings fields the person gave on the command line (an option left out is not there)."""
    return {
        name: value for name, value in vars(args).items() if name in TrainSettings.field_names() and value is not None
    }


def _train(args) -> int:
    import signal

    from ..train.launch import start_training

    if args.single_photo:
        args.dataset_dir = _single_photo_dataset(args)
    elif args.trigger or args.class_word:
        raise HeadshotError(
            "--trigger and --class name the words of a dataset made here: give them with --single-photo, or to "
            "`headshot prepare` (a prepared dataset already holds them)",
            "bad_option",
        )
    chosen = chosen_settings(args)
    settings = TrainSettings(**chosen)  # the rest: TrainSettings' defaults
    run = start_training(settings, resume=args.resume, given=set(chosen))
    print(f"training in a worker process; job folder {args.out_dir} (Ctrl-C stops after saving a checkpoint)")

    class Stopped(Exception):
        pass

    def stop(signum, frame):
        raise Stopped(signum)

    import threading

    main_thread = threading.current_thread() is threading.main_thread()  # only it may set signal handlers
    stop_signals = [getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n) and main_thread]
    previous = {sig: signal.signal(sig, stop) for sig in stop_signals}
    stopped_by = None
    try:
        try:
            record = run.wait(_print_event)
        except (KeyboardInterrupt, Stopped) as exc:
            stopped_by = exc.args[0] if isinstance(exc, Stopped) else signal.SIGINT
            for sig in stop_signals:
                signal.signal(sig, signal.SIG_IGN)  # already stopping: let the worker finish saving
            run.cancel()
            print("\nstopping: saving a checkpoint…", file=sys.stderr)
            record = run.wait(_print_event)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    state = record.get("state")
    if state == "done":
        print(
            f"done: {run.job.lora_path(record)} (checkpoint of step {record['chosen_step']}: "
            f"{record['choice']['reason']})"
        )
        return 0
    if state == "cancelled":
        print(
            f"cancelled at step {record.get('steps_done')}; continue with: headshot train {args.dataset_dir} "
            f"--base-model {settings.base_model}{f' --vae {settings.vae}' if settings.vae else ''} "
            f"--out {args.out_dir} --resume"
        )
        return 128 + int(stopped_by or signal.SIGINT)
    print(f"error: {record.get('error', 'training failed')} (details: {args.out_dir / 'worker.log'})", file=sys.stderr)
    return 1


def _single_photo_dataset(args) -> Path:
    """OUT/dataset made from the one photo (kept as it is when resuming), and the single_photo preset unless
    --preset was given. The photo is only read; the dataset never goes beside it."""
    from ..dataset.prepare_report import prepare_summary
    from ..dataset.prepare_settings import PrepareSettings
    from ..dataset.single_photo import check_single_photo, prepare_single_photo
    from .progress import progress_printer

    photo = check_single_photo(args.dataset_dir)
    TrainSettings(**{**chosen_settings(args), "dataset_dir": str(photo)})  # a bad option fails before any work
    if args.preset is None:
        args.preset = "single_photo"
    dataset = args.out_dir / SINGLE_PHOTO_DATASET
    if args.resume and (dataset / "report.json").is_file():
        return dataset  # the variants it started with: a resume must not change its dataset
    # the crops need a size prepare makes (a multiple of 64 from 256); training may then scale them down
    size = args.resolution or 512
    resolution = min(2048, max(256, -(-size // 64) * 64))
    settings = PrepareSettings(
        trigger=args.trigger or "ohwx",
        class_word=args.class_word,
        resolution=resolution,
        face_backend=args.face_backend or "auto",
        face_model_dirs=args.face_model_dirs or [],
    )
    result = prepare_single_photo(photo, dataset, settings, progress=progress_printer())
    print(prepare_summary(result))
    return dataset


def _print_event(event: dict) -> None:
    kind = event.get("type")
    if kind == "step":
        eta = event.get("eta_s") or 0
        print(
            f"step {event['step']}/{event['total']}  loss {event['loss']:.4f}  lr {event['lr']:.2e}  "
            f"{event['it_per_s']:.3f} it/s  eta {int(eta // 60)}m{int(eta % 60):02d}s",
            flush=True,
        )
    elif kind in ("status", "resumed", "checkpoint", "validation", "cancelled"):
        detail = event.get("message") or ", ".join(f"{k}={v}" for k, v in event.items() if k not in ("type", "time"))
        print(f"[{kind}] {detail}", flush=True)
    elif kind in ("error", "warning"):
        print(f"[{kind}] {event.get('message')}", file=sys.stderr, flush=True)
