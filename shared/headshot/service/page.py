"""The page for people at `/` (plain HTML, CSS and JS from `static/`: no build step, nothing fetched from
elsewhere) and the three small API calls only it needs: whose key this is, a training job's loss points, and
a generation job's pictures as one zip (built here, so the browser saves one file through one request)."""

from __future__ import annotations

import csv
import io
import tempfile
import zipfile
from pathlib import Path
from typing import Callable, Iterator

from fastapi import Depends, FastAPI
from fastapi.responses import HTMLResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from sqlalchemy import select

from .config import MODELS, ServiceConfig
from .db import Picture, Store
from .limits import ServiceError
from .submit import owned_job

STATIC = Path(__file__).with_name("static")
MAX_LOSS_POINTS = 500  # enough for a curve on a page; a long run is thinned evenly, its last point kept
#: the page runs only its own files: no inline script, nothing from another origin; pictures are blob: URLs
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class UploadLimits(BaseModel):
    """What one training request may carry: the page fits people's photos to it before sending them."""

    max_body_bytes: int
    max_photo_bytes: int
    max_photo_pixels: int
    min_photos: int
    max_photos: int


class Me(BaseModel):
    user_id: str
    uploads: UploadLimits


class LossPoint(BaseModel):
    step: int
    loss: float


class LossCurve(BaseModel):
    job_id: str
    points: list[LossPoint]


def loss_points(csv_path: Path, limit: int = MAX_LOSS_POINTS) -> list[dict]:
    """(step, loss) rows of the trainer's loss.csv, thinned to at most `limit`; rows being written are skipped."""
    if not csv_path.is_file():
        return []
    points = []
    for row in csv.reader(io.StringIO(csv_path.read_text(encoding="utf-8", errors="replace"))):
        try:
            points.append({"step": int(row[0]), "loss": float(row[1])})
        except (IndexError, ValueError):  # the header, or a line cut short
            continue
    if len(points) > limit:
        stride = -(-len(points) // limit)
        points = points[::stride] + ([points[-1]] if (len(points) - 1) % stride else [])
    return points


def _zip_pictures(config: ServiceConfig, pictures: list[Picture]) -> Iterator[bytes]:
    """The pictures best first (01_…, 02_…) and ranking.csv; PNGs are stored, not compressed again. Spooled to
    disk past 32 MB, so a job of 100 large pictures does not sit in memory."""
    with tempfile.SpooledTemporaryFile(max_size=32 * 1024 * 1024) as spool:
        ranking = io.StringIO()
        table = csv.writer(ranking)
        table.writerow(["rank", "file", "seed", "identity_score", "faceless"])
        with zipfile.ZipFile(spool, "w", compression=zipfile.ZIP_STORED) as archive:
            for rank, picture in enumerate(pictures, 1):
                name = f"{rank:02d}_seed{picture.seed}.png"
                archive.write(config.data_dir / picture.path, name)
                table.writerow([rank, name, picture.seed, picture.identity_score, picture.faceless])
            archive.writestr("ranking.csv", ranking.getvalue(), compress_type=zipfile.ZIP_DEFLATED)
        spool.seek(0)
        while chunk := spool.read(1024 * 1024):
            yield chunk


def _inside(data_dir: Path, path: Path) -> bool:
    return path.is_file() and data_dir.resolve() in path.resolve().parents


def add_page(app: FastAPI, config: ServiceConfig, store: Store, user: Callable[..., str]) -> None:
    """Serve the page and its files, and register its API calls; `user` is the app's key check."""
    page = (STATIC / "index.html").read_text(encoding="utf-8")
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index():
        return HTMLResponse(page, headers=PAGE_HEADERS)

    @app.get("/v1/me", response_model=Me)
    def me(user_id: str = Depends(user)):
        limits = config.limits
        uploads = {name: getattr(limits, name) for name in UploadLimits.model_fields}
        return {"user_id": user_id, "uploads": uploads}

    @app.get("/v1/jobs/{job_id}/loss", response_model=LossCurve)
    def loss(job_id: str, user_id: str = Depends(user)):
        job = owned_job(store, user_id, job_id)
        if job.kind != "train":
            raise ServiceError(f"job {job_id} draws pictures; only a training job has a loss curve", "wrong_job_kind")
        csv_path = config.folder(MODELS, job.model_id) / "training" / "loss.csv"
        return {"job_id": job_id, "points": loss_points(csv_path)}

    @app.get(
        "/v1/jobs/{job_id}/images.zip",
        response_class=StreamingResponse,
        responses={200: {"content": {"application/zip": {}}, "description": "the pictures, best first"}},
    )
    def images_zip(job_id: str, user_id: str = Depends(user)):
        job = owned_job(store, user_id, job_id)
        if job.kind != "generate":
            raise ServiceError(f"job {job_id} trains a model; only a generation job has pictures", "wrong_job_kind")
        with store.session() as s:
            query = select(Picture).where(Picture.job_id == job.id).order_by(Picture.position)
            pictures = [p for p in s.scalars(query) if _inside(config.data_dir, config.data_dir / p.path)]
        if not pictures:
            raise ServiceError(
                f"job {job_id} has no pictures (status {job.status}); download once it has succeeded",
                "no_pictures_yet",
                409,
            )
        return StreamingResponse(
            _zip_pictures(config, pictures),
            media_type="application/zip",
            headers={"Content-Disposition": f'attachment; filename="{job_id}.zip"'},
        )
