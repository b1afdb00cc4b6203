"""Benchmark: how the API holds up under polling, on loopback only.

Starts a real `headshot serve` on 127.0.0.1 (a tiny random SD1 model as its base model, `--workers 0` by
default so nothing but the API uses the CPU), makes users, submits training jobs through the API (three photos
each, base64 in the JSON body, as clients send them), then runs concurrent clients (asyncio + httpx) that each
poll GET /v1/jobs/{id} of one of their user's jobs, one request after another, for a fixed time. Prints p50 / p95
/ p99 latency, requests per second and errors, and the command to repeat the run. Bounded: at most 1000 clients,
600 s and --max-requests requests; it talks only to the server it started on 127.0.0.1.

    .venv/bin/python benchmarks/service_load.py [--submissions 20] [--clients 200] [--seconds 60]
        [--interval 0] [--workers 0] [--base-model DIR] [--work-dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "shared")]
USERS = 4  # submissions are spread over this many users (each user's share of jobs is a server limit)


def _photos() -> list[str]:
    import base64

    from headshot.samples import astronaut_shots

    photos = []
    for image in list(astronaut_shots().values())[:3]:
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="JPEG", quality=90)
        photos.append(base64.b64encode(buffer.getvalue()).decode())
    return photos


def _submit(url: str, keys: dict[str, str], count: int) -> list[tuple[str, str]]:
    """`count` training jobs spread over the users; [(key, job id)]."""
    import httpx

    photos, jobs = _photos(), []
    users = list(keys)
    with httpx.Client(base_url=url, timeout=60) as client:
        for number in range(count):
            user = users[number % len(users)]
            body = {"user_id": user, "instance_name": f"person{number}", "images": photos, "class_type": "person"}
            body["training"] = {"steps": 2, "resolution": 64, "rank": 4}
            response = client.post("/v1/models/train", json=body, headers={"Authorization": f"Bearer {keys[user]}"})
            if response.status_code != 202:
                raise SystemExit(f"submission {number} was refused: {response.status_code} {response.text}")
            jobs.append((keys[user], response.json()["training_job_id"]))
    return jobs


async def _poll(url: str, jobs: list[tuple[str, str]], clients: int, seconds: float, interval: float, cap: int):
    import httpx

    latencies: list[float] = []
    errors: dict[str, int] = {}
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:

        async def one_client(number: int) -> None:
            key, job_id = jobs[number % len(jobs)]
            headers = {"Authorization": f"Bearer {key}"}
            while time.monotonic() < deadline and len(latencies) + sum(errors.values()) < cap:
                started = time.perf_counter()
                try:
                    response = await client.get(f"/v1/jobs/{job_id}", headers=headers)
                    if response.status_code == 200 and response.json()["job_id"] == job_id:
                        latencies.append(time.perf_counter() - started)
                    else:
                        errors[str(response.status_code)] = errors.get(str(response.status_code), 0) + 1
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                if interval:
                    await asyncio.sleep(interval)

        started = time.monotonic()
        await asyncio.gather(*(one_client(n) for n in range(clients)))
        elapsed = time.monotonic() - started
    return latencies, errors, elapsed


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submissions", type=int, default=20)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--interval", type=float, default=0.0, help="pause between a client's polls (0: none)")
    parser.add_argument("--max-requests", type=int, default=500_000)
    parser.add_argument("--workers", type=int, default=0, choices=(0, 1), help="worker processes beside the API")
    parser.add_argument("--base-model", type=Path, help="a diffusers folder (default: a tiny random SD1, built)")
    parser.add_argument("--work-dir", type=Path)
    args = parser.parse_args()
    if not (1 <= args.clients <= 1000 and 0 < args.seconds <= 600 and 1 <= args.submissions <= 100):
        parser.error("bounded run: 1–1000 clients, up to 600 s, 1–100 submissions")

    from serve_process import ServeProcess, make_user

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="headshot-load-"))
    base_model = args.base_model
    if base_model is None:
        import tiny_models

        base_model = tiny_models.make_tiny_sd1(work / "tiny_sd1")
    data = work / "data"
    keys = {f"user{n}": make_user(data, f"user{n}") for n in range(USERS)}
    share = str(-(-args.submissions // USERS))
    extra = ["--max-jobs", share, "--daily-jobs", str(max(50, int(share)))]
    with ServeProcess(data, base_model, workers=args.workers, extra=extra) as server:
        started = time.monotonic()
        jobs = _submit(server.url, keys, args.submissions)
        submit_s = time.monotonic() - started
        latencies, errors, elapsed = asyncio.run(
            _poll(server.url, jobs, args.clients, args.seconds, args.interval, args.max_requests)
        )
    ms = [1000 * v for v in latencies]
    print(f"submitted {len(jobs)} training jobs (3 photos each) in {submit_s:.1f} s "
          f"({1000 * submit_s / len(jobs):.0f} ms each)")  # fmt: skip
    print(f"{args.clients} clients polled GET /v1/jobs/{{id}} for {elapsed:.1f} s (interval {args.interval} s, "
          f"{args.workers} worker process(es))")  # fmt: skip
    print(f"requests answered: {len(ms)}  requests/s: {len(ms) / elapsed:.1f}  errors: {sum(errors.values())} {errors}")
    if ms:
        print(f"latency ms: p50 {_percentile(ms, 0.50):.1f}  p95 {_percentile(ms, 0.95):.1f}  "
              f"p99 {_percentile(ms, 0.99):.1f}  max {max(ms):.1f}  mean {statistics.fmean(ms):.1f}")  # fmt: skip
    print("repeat: " + shlex.join([".venv/bin/python", "benchmarks/service_load.py", *sys.argv[1:]]))
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
