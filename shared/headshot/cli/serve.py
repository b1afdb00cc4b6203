"""`headshot serve` (the HTTP API, with worker processes) and `headshot worker` (one more worker, on any machine
that sees the same queue, database and --data folder)."""

from __future__ import annotations

import argparse
from pathlib import Path


def _add_service_options(p: argparse.ArgumentParser, needs_model: bool = True) -> None:
    p.add_argument("--data", required=True, type=Path, help="folder for photos, models, pictures, and the SQLite files")
    p.add_argument(
        "--base-model", required=needs_model, help="the checkpoint every job trains and draws with (.safetensors)"
    )
    p.add_argument(
        "--vae",
        metavar="FILE",
        help="a VAE file (LDM layout) used in place of the checkpoint's own for training and drawing; needed "
        "when the checkpoint was saved without one",
    )
    p.add_argument("--queue", help="redis://HOST:PORT/DB for workers on several machines (default: SQLite in --data)")
    p.add_argument("--database", help="SQLAlchemy URL, e.g. postgresql://… (default: SQLite in --data)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1, mps")
    p.add_argument("--face-backend", default="auto", help="auto, insightface or dlib")
    p.add_argument("--face-models", action="append", default=[], metavar="DIR")
    p.add_argument("--tokenizer", action="append", default=[], metavar="DIR")
    p.add_argument("--styles", action="append", default=[], metavar="DIR", help="your own style folder")
    p.add_argument("--restore", metavar="MODEL", help="a face-restoration model file: restore faces of every picture")
    p.add_argument(
        "--adapter",
        metavar="FILE",
        help="IP-Adapter FaceID file for one-photo jobs (reference_image): a path or a name in --adapter-dir, "
        "$COMFYUI_PATH/models/ipadapter or $A1111_PATH/models/ControlNet (default: the family's usual file)",
    )
    p.add_argument("--adapter-dir", action="append", default=[], metavar="DIR", help="a folder of FaceID files")
    p.add_argument("--image-encoder", metavar="DIR", help="CLIP image encoder folder FaceID Plus needs")
    p.add_argument("--max-attempts", type=int, default=3, help="tries before a crashing job is failed (default 3)")
    p.add_argument(
        "--checkpoint-every",
        type=int,
        metavar="STEPS",
        help="training steps between checkpoints (default: the preset's); a killed worker's job resumes from the last",
    )
    p.add_argument("--max-body-mb", type=float, default=50.0, help="largest request body (default 50 MB)")
    p.add_argument("--max-photo-mb", type=float, default=20.0, help="largest photo (default 20 MB)")
    p.add_argument("--max-photo-mp", type=float, default=50.0, help="most megapixels of a photo decoded (default 50)")
    p.add_argument("--max-images", type=int, default=100, help="most pictures per generation job (default 100)")
    p.add_argument("--max-jobs", type=int, default=2, help="a user's jobs queued or running at once (default 2)")
    p.add_argument("--daily-jobs", type=int, default=50, help="jobs a user may start in 24 hours (default 50)")
    p.add_argument(
        "--allow-private-webhooks",
        action="store_true",
        help="let webhooks call loopback and private-network addresses (default: public addresses only)",
    )


def service_config(args: argparse.Namespace, needs_model: bool = True):
    from ..service.config import Limits, ServiceConfig, check_config

    limits = Limits(
        max_body_bytes=int(args.max_body_mb * 1024 * 1024),
        max_photo_bytes=int(args.max_photo_mb * 1024 * 1024),
        max_photo_pixels=int(args.max_photo_mp * 1_000_000),
        max_images=args.max_images,
        max_concurrent_jobs=args.max_jobs,
        daily_jobs=args.daily_jobs,
    )
    config = ServiceConfig(
        data_dir=args.data,
        base_model=str(Path(args.base_model).expanduser().resolve()) if args.base_model else "",
        vae=str(Path(args.vae).expanduser().resolve()) if args.vae else None,
        database_url=args.database,
        queue_url=args.queue,
        limits=limits,
        max_attempts=args.max_attempts,
        checkpoint_every=args.checkpoint_every,
        private_webhooks=args.allow_private_webhooks,
        device=args.device,
        face_backend=args.face_backend,
        face_model_dirs=tuple(args.face_models),
        tokenizer_dirs=tuple(args.tokenizer),
        style_dirs=tuple(args.styles),
        restore_model=args.restore,
        adapter=args.adapter,
        adapter_dirs=tuple(args.adapter_dir),
        image_encoder=args.image_encoder,
    )
    return check_config(config, needs_model)


def _serve(args) -> int:
    import uvicorn

    from ..service.app import create_app
    from ..service.db import Store
    from ..service.runner import recover
    from ..service.tasks import JobQueue
    from ..service.worker import start_workers, stop_workers

    config = service_config(args)
    store = Store(config.database)
    queue = JobQueue(config, store)
    requeued = recover(config, store, queue.enqueue)  # jobs a killed server's workers left running
    if requeued:
        print(f"re-queued {len(requeued)} job(s) left running by a stopped worker: {', '.join(requeued)}")
    workers = start_workers(config, args.workers, config.data_dir / "logs" / "workers.log") if args.workers else []
    print(f"Headshot service on http://{args.host}:{args.port} (docs at /docs); {len(workers)} worker process(es)")
    try:
        uvicorn.run(create_app(config, store, queue), host=args.host, port=args.port, log_level="info")
    finally:
        stop_workers(workers)
    return 0


def _worker(args) -> int:
    from ..service.worker import run_worker

    run_worker(service_config(args))
    return 0


def add_serve_commands(sub) -> None:
    serve = sub.add_parser("serve", help="the HTTP API: train and draw for many users, jobs queued to workers")
    _add_service_options(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--workers", type=int, default=1, help="worker processes to start here (0: workers run elsewhere)"
    )
    serve.set_defaults(run=_serve)
    worker = sub.add_parser("worker", help="a worker taking jobs from the queue of `headshot serve`")
    _add_service_options(worker)
    worker.set_defaults(run=_worker)
