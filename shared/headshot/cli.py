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


def _prepare_settings(args):
    from .dataset.prepare import PrepareSettings

    return PrepareSettings(
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


def _prepare(args) -> int:
    from .dataset.prepare import prepare_dataset

    result = prepare_dataset(args.input_dir, args.out, _prepare_settings(args), progress=_progress_printer())
    _print_summary(result)
    return 0


def _print_summary(result) -> None:
    for photo in result.photos:
        mark = "kept    " if photo.status == "kept" else "rejected"
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

    _prepare_settings(args).validate()  # a bad option fails before the sample photos are written
    photos_dir = args.out / "photos"
    written = write_sample_photos(photos_dir)
    print(f"wrote {len(written)} sample photos to {photos_dir} (astronaut variants, other people, a group, junk)")
    root = args.out
    args.input_dir = photos_dir
    args.out = root / "dataset"
    status = _prepare(args)
    if status or not args.base_model:
        print(f"\nnext: train an identity LoRA on it with\n  headshot train {args.out} --base-model "
              f"YOUR_CHECKPOINT.safetensors --out {root / 'lora'} --preset fast")
        return status
    train_args = build_parser().parse_args(["train", str(args.out), "--base-model", args.base_model, "--out",
                                            str(root / "lora"), "--preset", "fast"])
    return _train(train_args)


def _add_train_options(p: argparse.ArgumentParser) -> None:
    # defaults are None ("not given") and filled in _train, so --resume can tell what the person changed
    p.add_argument("dataset_dir", type=Path, help="what `headshot prepare` wrote (or any kohya train_data_dir)")
    p.add_argument("--base-model", required=True, help="a .safetensors/.ckpt checkpoint, a diffusers folder, or a hub id")
    p.add_argument("--out", required=True, type=Path, help="job folder; the LoRA is written here")
    p.add_argument("--name", help="LoRA file name (without .safetensors; default headshot_lora)")
    p.add_argument("--preset", choices=("fast", "balanced", "quality"), help="default balanced")
    p.add_argument("--steps", type=int, help="total optimizer steps (default: photos x the preset's factor, clamped)")
    p.add_argument("--resolution", type=int, help="training size (default: the dataset's)")
    p.add_argument("--rank", type=int)
    p.add_argument("--alpha", type=float)
    p.add_argument("--lr", type=float, help="UNet learning rate")
    p.add_argument("--text-encoder-lr", type=float, help="also train the text encoder(s) at this rate")
    p.add_argument("--optimizer", choices=("adamw", "adamw8bit", "prodigy"))
    p.add_argument("--scheduler", choices=("constant", "constant_with_warmup", "cosine", "linear"))
    p.add_argument("--warmup-steps", type=int)
    p.add_argument("--checkpoint-every", type=int)
    p.add_argument("--seed", type=int, help="0 to 4294967295 (default 42)")
    p.add_argument("--mixed-precision", choices=("auto", "no", "fp16", "bf16"), help="default auto")
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:1, mps")
    p.add_argument("--no-flip", action="store_true", help="no mirror augmentation (asymmetric faces, text)")
    p.add_argument("--validation-images", type=int, help="images per checkpoint to score likeness (default 4 on GPU, 0 on CPU)")
    p.add_argument("--validation-prompt")
    p.add_argument("--face-backend", choices=("auto", "insightface", "dlib"), help="default auto")
    p.add_argument("--face-models", action="append", metavar="DIR")
    p.add_argument("--tokenizer", action="append", metavar="DIR",
                   help="folder with CLIP tokenizer files (vocab.json, merges.txt), e.g. ComfyUI's comfy/sd1_tokenizer")
    p.add_argument("--class-images", help="folder of class images for prior preservation")
    p.add_argument("--class-image-count", type=int, help="generate this many class images once (prior preservation)")
    p.add_argument("--prior-loss-weight", type=float, help="default 1.0")
    p.add_argument("--backend", choices=("builtin", "sd-scripts"), help="default builtin")
    p.add_argument("--sd-scripts", help="path of a kohya sd-scripts checkout (with --backend sd-scripts)")
    p.add_argument("--sd-scripts-python", help="the Python of the sd-scripts venv")
    p.add_argument("--resume", action="store_true", help="continue the job in --out from its last checkpoint; "
                   "options given again may change steps, checkpoints, validation, device and precision")


def _train(args) -> int:
    import signal

    from .train.api import start_training
    from .train.settings import TrainSettings

    chosen = dict(
        dataset_dir=str(args.dataset_dir), base_model=args.base_model, out_dir=str(args.out), output_name=args.name,
        preset=args.preset, backend=args.backend, steps=args.steps, resolution=args.resolution, rank=args.rank,
        alpha=args.alpha, lr=args.lr, text_encoder_lr=args.text_encoder_lr, optimizer=args.optimizer,
        scheduler=args.scheduler, warmup_steps=args.warmup_steps, checkpoint_every=args.checkpoint_every,
        seed=args.seed, mixed_precision=args.mixed_precision, device=args.device, flip=False if args.no_flip else None,
        validation_images=args.validation_images, validation_prompt=args.validation_prompt,
        face_backend=args.face_backend, face_model_dirs=args.face_models, tokenizer_dirs=args.tokenizer,
        class_images_dir=args.class_images, class_image_count=args.class_image_count,
        prior_loss_weight=args.prior_loss_weight, sd_scripts_repo=args.sd_scripts,
        sd_scripts_python=args.sd_scripts_python,
    )
    given = {name for name, value in chosen.items() if value is not None}
    settings = TrainSettings(**{name: chosen[name] for name in given})  # the rest: TrainSettings' defaults
    run = start_training(settings, resume=args.resume, given=given)
    print(f"training in a worker process; job folder {args.out} (Ctrl-C stops after saving a checkpoint)")

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
        print(f"done: {run.job.lora_path(record)} (checkpoint of step {record['chosen_step']}: "
              f"{record['choice']['reason']})")
        return 0
    if state == "cancelled":
        print(f"cancelled at step {record.get('steps_done')}; continue with: headshot train {args.dataset_dir} "
              f"--base-model {settings.base_model} --out {args.out} --resume")
        return 128 + int(stopped_by or signal.SIGINT)
    print(f"error: {record.get('error', 'training failed')} (details: {args.out / 'worker.log'})", file=sys.stderr)
    return 1


def _print_event(event: dict) -> None:
    kind = event.get("type")
    if kind == "step":
        eta = event.get("eta_s") or 0
        print(f"step {event['step']}/{event['total']}  loss {event['loss']:.4f}  lr {event['lr']:.2e}  "
              f"{event['it_per_s']:.3f} it/s  eta {int(eta // 60)}m{int(eta % 60):02d}s", flush=True)
    elif kind in ("status", "resumed", "checkpoint", "validation", "cancelled"):
        detail = event.get("message") or ", ".join(f"{k}={v}" for k, v in event.items() if k not in ("type", "time"))
        print(f"[{kind}] {detail}", flush=True)
    elif kind == "error":
        print(f"[error] {event.get('message')}", file=sys.stderr, flush=True)


def _add_finishing_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, type=Path, help="folder for the pictures, results.json and contact sheet")
    p.add_argument("--base-model", help="checkpoint for sampling (needed for generate and --detailer)")
    p.add_argument("--lora", action="append", default=[], help="identity LoRA (repeat for a group photo)")
    p.add_argument("--detailer", action="store_true", help="repaint each face at a higher resolution with the LoRA")
    p.add_argument("--denoise", type=float, default=0.4, help="detailer strength (0 keeps the face, 1 repaints it)")
    p.add_argument("--restore", metavar="MODEL", help="face-restoration model (GFPGAN, CodeFormer, RestoreFormer): a path "
                   "or a file name in --restore-models")
    p.add_argument("--restore-models", action="append", default=[], metavar="DIR",
                   help="folder with restoration models (e.g. ComfyUI/models/facerestore_models)")
    p.add_argument("--fidelity", type=float, default=0.5, help="CodeFormer fidelity: 0 = strongest restoration")
    p.add_argument("--identity", type=Path, help="identity file written by train (<lora>.identity.json)")
    p.add_argument("--reference", type=Path, help="folder of the person's photos to rank against instead")
    p.add_argument("--top", type=int, help="keep the K most alike; the rest go to below_top/")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int)
    p.add_argument("--face-backend", choices=("auto", "insightface", "dlib"), default="auto")
    p.add_argument("--face-models", action="append", default=[], metavar="DIR")
    p.add_argument("--tokenizer", action="append", default=[], metavar="DIR")
    p.add_argument("--device", default="auto")


def _finishing(args, sampler):
    from .faces import load_face_analyzer
    from .finish.detailer import DetailerSettings
    from .finish.ranking import identity_from_photos, load_identity
    from .finish.results import Finishing

    analyzer = load_face_analyzer(args.face_backend, args.face_models)
    identity = None
    if args.identity:
        identity = load_identity(args.identity, analyzer)
    elif args.reference:
        identity = identity_from_photos(args.reference, analyzer)
    elif args.lora and Path(args.lora[0]).with_suffix(".identity.json").exists():
        identity = load_identity(Path(args.lora[0]).with_suffix(".identity.json"), analyzer)
    restorer = None
    if args.restore:
        from .finish.restore import find_restore_model, load_restore_model

        restorer = load_restore_model(find_restore_model(args.restore, args.restore_models))
    detailer = DetailerSettings(denoise=args.denoise, steps=args.steps or 20) if args.detailer else None
    return Finishing(analyzer=analyzer, identity=identity, detailer=detailer, sampler=sampler, restorer=restorer,
                     fidelity=args.fidelity)


def _sampler(args):
    from .generate.preflight import check_lora_families
    from .generate.sampler import DiffusersSampler

    if not args.base_model:
        raise HeadshotError("--base-model is needed to draw pictures (and for --detailer)", "bad_option")
    controlnet = getattr(args, "controlnet", None)
    if controlnet and not Path(controlnet).exists():
        raise HeadshotError(f"--controlnet {controlnet}: not found; give an OpenPose ControlNet file or diffusers "
                            "folder", "controlnet_missing")
    check_lora_families(args.lora, args.base_model)  # before the weights load: a wrong pair fails in a second
    return DiffusersSampler(args.base_model, controlnet=getattr(args, "controlnet", None),
                            tokenizer_dirs=args.tokenizer, device=args.device)


def _print_results(results: list[dict], out: Path) -> None:
    for entry in results:
        if entry.get("skipped"):
            print(f"   -  skipped {entry['message']}")
            continue
        score = "no face" if entry["faceless"] else (
            f"likeness {entry['identity_score']:.3f}" if entry["identity_score"] is not None else "not scored")
        rank = f"#{entry['rank']}" if entry.get("rank") else "-"
        print(f"{rank:>4}  {entry['image']:<40} {score}")
    faceless = sum(bool(e["faceless"]) for e in results)
    skipped = sum(bool(e.get("skipped")) for e in results)
    print(f"\n{len(results) - skipped} pictures, {faceless} without a face"
          + (f", {skipped} skipped (see each reason above)" if skipped else "") + f"; results: {out / 'results.json'}, "
          f"contact sheet: {out / 'contact_sheet.jpg'}")


def _generate(args) -> int:
    from .finish.preflight import check_finishing_options
    from .generate.preflight import check_generate_options, parse_size
    from .generate.run import GenerateSettings, generate
    from .outputs import FolderLock

    # every option is checked before the first model loads
    size = parse_size(args.size)
    check_generate_options(style=args.style, style_dirs=args.styles, count=args.count, seed=args.seed,
                           steps=args.steps, trigger=args.trigger, class_word=args.class_word, loras=args.lora)
    check_finishing_options(out=args.out, top=args.top, denoise=args.denoise, fidelity=args.fidelity, seed=args.seed,
                            count=args.count, identity=args.identity, reference=args.reference, restore=args.restore,
                            restore_dirs=args.restore_models, loras=args.lora)
    with FolderLock(args.out, "output folder"):
        sampler = _sampler(args)
        settings = GenerateSettings(style=args.style, count=args.count, out_dir=args.out, loras=args.lora,
                                    seed=args.seed, size=size, steps=args.steps, top=args.top, detailer=args.detailer,
                                    style_dirs=args.styles, trigger=args.trigger, class_word=args.class_word)
        results = generate(settings, sampler, _finishing(args, sampler), progress=_progress_printer())
    _print_results(results, args.out)
    return 0


def _finish(args) -> int:
    from .finish.batch import detail_with_loras, finish_pictures, list_inputs
    from .finish.preflight import check_finishing_options
    from .outputs import FolderLock

    paths = list_inputs(args.images, args.out)
    check_finishing_options(out=args.out, top=args.top, denoise=args.denoise, fidelity=args.fidelity,
                            steps=args.steps, seed=args.seed, count=len(paths), identity=args.identity,
                            reference=args.reference, restore=args.restore, restore_dirs=args.restore_models,
                            loras=args.lora, detailer=args.detailer, base_model=args.base_model)
    with FolderLock(args.out, "output folder"):
        sampler = _sampler(args) if args.detailer else None
        finishing = _finishing(args, sampler)
        if args.detailer:
            detail_with_loras(finishing, args.lora)
        results = finish_pictures(paths, args.out, finishing, seed=args.seed, top=args.top,
                                  progress=_progress_printer())
    _print_results(results, args.out)
    return 0


def _styles(args) -> int:
    from .generate.styles import load_styles

    for style in load_styles(args.styles).values():
        print(f"{style.name:<28} {style.category:<13} {style.title}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="headshot", description="Headshot Studio: personalised headshots from selfies")
    sub = parser.add_subparsers(dest="command", required=True)
    prepare = sub.add_parser("prepare", help="screen, frame and caption selfies into a kohya dataset")
    prepare.add_argument("input_dir", type=Path, help="folder of 3–20 photos of one person")
    _add_prepare_options(prepare)
    prepare.set_defaults(run=_prepare)
    demo = sub.add_parser("demo", help="prepare a dataset from sample photos that ship with installed packages "
                          "(and train on it with --base-model)")
    _add_prepare_options(demo)
    demo.add_argument("--base-model", help="also train a LoRA on the sample dataset with this checkpoint")
    demo.set_defaults(run=_demo, class_word="woman")
    train = sub.add_parser("train", help="train an identity LoRA (kohya format) from a prepared dataset")
    _add_train_options(train)
    train.set_defaults(run=_train)
    styles = sub.add_parser("styles", help="list the style templates")
    styles.add_argument("--styles", action="append", default=[], type=Path, metavar="DIR", help="your own style folder")
    styles.set_defaults(run=_styles)
    gen = sub.add_parser("generate", help="draw styled pictures with an identity LoRA, finished and ranked")
    _add_finishing_options(gen)
    gen.add_argument("--style", required=True, help="a style name (see `headshot styles`)")
    gen.add_argument("--count", type=int, default=4)
    gen.add_argument("--controlnet", help="OpenPose ControlNet (file or diffusers folder) to follow the style's pose")
    gen.add_argument("--size", help="WIDTHxHEIGHT (default: the style's)")
    gen.add_argument("--styles", action="append", default=[], type=Path, metavar="DIR", help="your own style folder")
    gen.add_argument("--trigger", help="default: from the LoRA's metadata")
    gen.add_argument("--class", dest="class_word", help="default: from the LoRA's metadata")
    gen.set_defaults(run=_generate)
    fin = sub.add_parser("finish", help="detail, restore and rank pictures you already have")
    fin.add_argument("images", help="a picture or a folder of pictures")
    _add_finishing_options(fin)
    fin.set_defaults(run=_finish)
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
