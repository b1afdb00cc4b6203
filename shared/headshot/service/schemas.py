"""The API's requests and responses (pydantic 2: the service is never loaded inside a host that pins 1.10)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
MAX_SEED = 2**32 - 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrainingOptions(_Strict):
    steps: int | None = Field(default=None, ge=1, description="optimizer steps (default: the preset's for the photos)")
    resolution: int | None = Field(default=None, ge=64, le=2048, description="training size in pixels")
    rank: int | None = Field(default=None, ge=1, le=256)
    preset: Literal["fast", "balanced", "quality"] | None = None


class TrainRequest(_Strict):
    user_id: str = Field(max_length=64)
    instance_name: str = Field(max_length=64, description="a plain name for the model: letters, digits, _ and -")
    images: list[str] = Field(description="3–20 photos of one person, each a base64 JPEG/PNG/WebP")
    class_type: str = Field(default="person", max_length=32, description="man, woman, person …")
    training: TrainingOptions | None = None
    webhook_url: str | None = Field(default=None, max_length=2000)


class GenerateRequest(_Strict):
    model_id: str | None = Field(default=None, max_length=64, description="a trained model (or reference_image)")
    reference_image: str | None = Field(
        default=None,
        description="instead of model_id: ONE photo of the person, base64 JPEG/PNG/WebP; drawn with the identity "
        "adapter (IP-Adapter FaceID), no training. Looser likeness than a model trained on 10 photos",
    )
    style_template: str = Field(max_length=100, description="a style name from GET /v1/styles")
    num_images: int = Field(ge=1, description="1–100 pictures")
    width: int | None = Field(default=None, ge=64, le=4096)
    height: int | None = Field(default=None, ge=64, le=4096)
    steps: int | None = Field(default=None, ge=1, le=150)
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    webhook_url: str | None = Field(default=None, max_length=2000)


class TrainAccepted(BaseModel):
    training_job_id: str
    status: JobStatus
    estimated_time: int = Field(description="seconds, from this server's measured speed")
    model_id: str


class GenerateAccepted(BaseModel):
    generation_job_id: str
    status: JobStatus


class Progress(BaseModel):
    step: int
    total: int
    eta_s: float | None


class ErrorInfo(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorInfo


class PictureView(BaseModel):
    image_id: str
    url: str
    seed: int
    identity_score: float | None
    faceless: bool | None


class RejectedPhoto(BaseModel):
    photo: str
    reason: str | None
    message: str


class JobView(BaseModel):
    job_id: str
    kind: Literal["train", "generate"]
    status: JobStatus
    progress: Progress
    error: ErrorInfo | None
    model_id: str | None = Field(description="null for a one-photo generation (reference_image)")
    attempts: int
    created: float
    finished: float | None
    images: list[PictureView] | None = Field(default=None, description="generation: best first, faceless last")
    kept_photos: int | None = None
    rejected_photos: list[RejectedPhoto] | None = Field(default=None, description="training: photos not used, why")


class CancelView(BaseModel):
    job_id: str
    status: JobStatus
    cancel_requested: bool


class ModelView(BaseModel):
    model_id: str
    instance_name: str
    trigger: str
    class_type: str
    base_model: str
    status: Literal["training", "ready", "failed", "cancelled"]
    created: float
    download_url: str | None


class ModelList(BaseModel):
    models: list[ModelView]


class Erased(BaseModel):
    model_id: str
    deleted: bool
    files_removed: int
    jobs_cancelled: int


class JobErased(BaseModel):
    job_id: str
    deleted: bool
    pictures_removed: int
    files_removed: int


class StyleView(BaseModel):
    name: str
    title: str
    category: str


class StyleList(BaseModel):
    styles: list[StyleView]
