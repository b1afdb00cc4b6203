"""Benchmark: time to the first picture of a generation job on a warm worker against a cold start.

A worker process of the service keeps the base model (and the face analyzer) loaded between jobs and swaps only
the person's LoRA. This measures it on a tiny random SD1 model through the real queue and worker:

1. one LoRA is trained through the service (a training job on a worker that is then stopped), and a second
   person's model is registered with a copy of that file under its own path (so the worker must swap LoRAs);
2. a fresh worker process is started: "worker start" is the time until its consumer takes jobs;
3. job A (person 1) on that fresh worker: the cold start (base model, face analyzer and LoRA loaded in the job);
4. job B (person 2) next on the same worker: warm, the base model stays, person 1's LoRA is unhooked and
   person 2's loaded;
5. job C (person 1 again): warm, swapped back.

"First picture" is the moment the job records its first finished picture (drawn, finished, ranked: the
progress the API shows), measured from the job's submission. Each figure is the median over --rounds fresh
workers. Run it with nothing else running for figures worth comparing:

    .venv/bin/python benchmarks/service_warm_worker.py [--rounds 1] [--size 128] [--steps 4] [--work-dir DIR]
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "shared")]


def _wait(store, job_id: str, until, timeout: float = 900.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = store.job(job_id)
        if until(job):
            return job
        if job.status in ("failed", "cancelled"):
            raise SystemExit(f"job {job_id} {job.status}: {job.error_message}")
        time.sleep(0.05)
    raise SystemExit(f"job {job_id} did not get there within {timeout} s")


def _trained_models(config, store, queue, log: Path) -> tuple[str, str]:
    """Two ready models of two people: one trained through the service, one registered with a copy of its LoRA."""
    from service_kit import b64_png

    from headshot.samples import astronaut_shots
    from headshot.service.auth import add_user
    from headshot.service.db import Model
    from headshot.service.schemas import TrainingOptions, TrainRequest
    from headshot.service.submit import submit_training
    from headshot.service.worker import start_workers, stop_workers

    for user in ("ann", "ben"):
        add_user(store, user)
    photos = [b64_png(image) for image in list(astronaut_shots().values())[:4]]
    request = TrainRequest(user_id="ann", instance_name="ann", images=photos, class_type="woman",
                           training=TrainingOptions(steps=1, resolution=64, rank=4))  # fmt: skip
    job, _, _ = submit_training(config, store, "ann", request, None)
    queue.enqueue("train", job.id)
    workers = start_workers(config, 1, log)
    try:
        _wait(store, job.id, lambda j: j.status == "succeeded")
    finally:
        stop_workers(workers)
    first = store.model(job.model_id)
    copy = Path(config.data_dir) / "models" / "mdl_ben" / "ben.safetensors"
    copy.parent.mkdir(parents=True)
    source = config.data_dir / first.lora
    shutil.copyfile(source, copy)
    if source.with_suffix(".identity.json").is_file():  # the likeness reference ranking reads
        shutil.copyfile(source.with_suffix(".identity.json"), copy.with_suffix(".identity.json"))
    with store.session() as s:
        s.add(Model(id="mdl_ben", user_id="ben", instance_name="ben", class_type="man", trigger=first.trigger,
                    base_model=first.base_model, status="ready", lora=str(copy.relative_to(config.data_dir)),
                    training_job_id="none"))  # fmt: skip
    return first.id, "mdl_ben"


def _consumer_ready(log: Path, offset: int, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "Huey consumer started" in log.read_text(errors="replace")[offset:]:
            return
        time.sleep(0.05)
    raise SystemExit(f"the worker did not start within {timeout} s; see {log}")


def _first_picture(config, store, queue, user: str, model_id: str, args) -> tuple[float, float]:
    """(seconds to the first picture, seconds to the whole job) of one generation job, from its submission."""
    from headshot.service.schemas import GenerateRequest
    from headshot.service.submit import submit_generation

    request = GenerateRequest(model_id=model_id, style_template="linkedin_corporate", num_images=args.images,
                              width=args.size, height=args.size, steps=args.steps, seed=1)  # fmt: skip
    started = time.monotonic()
    job, _ = submit_generation(config, store, user, request, None)
    queue.enqueue("generate", job.id)
    _wait(store, job.id, lambda j: j.step >= 1 and j.status in ("running", "succeeded"))
    first = time.monotonic() - started
    _wait(store, job.id, lambda j: j.status == "succeeded")
    return first, time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1, help="fresh workers measured (1–10)")
    parser.add_argument("--images", type=int, default=2, help="pictures per job")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--work-dir", type=Path)
    args = parser.parse_args()
    if not 1 <= args.rounds <= 10:
        parser.error("--rounds: 1–10")

    import tiny_models

    from headshot.service.config import Limits, ServiceConfig
    from headshot.service.db import Store
    from headshot.service.tasks import JobQueue
    from headshot.service.worker import start_workers, stop_workers

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="headshot-warm-"))
    base_model = tiny_models.make_tiny_sd1(work / "tiny_sd1")
    config = ServiceConfig(data_dir=work / "data", base_model=str(base_model), device="cpu", face_backend="dlib",
                           validation_images=0, limits=Limits(max_concurrent_jobs=10, daily_jobs=500))  # fmt: skip
    config.data_dir.mkdir(parents=True)
    store = Store(config.database)
    queue = JobQueue(config, store)
    log = work / "workers.log"
    ann, ben = _trained_models(config, store, queue, log)
    figures: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        offset = len(log.read_text(errors="replace"))
        started = time.monotonic()
        workers = start_workers(config, 1, log)
        try:
            _consumer_ready(log, offset)
            figures.setdefault("worker start (process, imports, consumer)", []).append(time.monotonic() - started)
            print(f"worker started in {time.monotonic() - started:.2f} s", flush=True)
            for label, user, model in (
                ("cold: first job on a fresh worker (person 1)", "ann", ann),
                ("warm: next job, LoRA swapped (person 2)", "ben", ben),
                ("warm: next job, LoRA swapped back (person 1)", "ann", ann),
            ):
                first, whole = _first_picture(config, store, queue, user, model, args)
                print(f"{label}: first picture {first:.2f} s, whole job {whole:.2f} s", flush=True)  # as it goes
                figures.setdefault(label + " - first picture", []).append(first)
                figures.setdefault(label + " - whole job", []).append(whole)
        finally:
            stop_workers(workers)
    print(f"tiny SD1 on the CPU, {args.images} pictures of {args.size}x{args.size}, {args.steps} steps, "
          f"median of {args.rounds} fresh worker(s); seconds from submission:")  # fmt: skip
    for label, values in figures.items():
        print(f"  {label:<62} {statistics.median(values):7.2f}   ({', '.join(f'{v:.2f}' for v in values)})")
    print("repeat: " + shlex.join([".venv/bin/python", "benchmarks/service_warm_worker.py", *sys.argv[1:]]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
