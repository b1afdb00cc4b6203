"""Training from the tab: the core's job folder (named after what decides the result, reused when finished,
resumed when stopped), a worker process in a Python that can train, the WebUI's model off the GPU
meanwhile, and the LoRA installed as an Extra Networks card when it is done.

One training at a time per WebUI: `SESSION` holds it, so the tab's Cancel and the generator that shows
progress see the same run, and a page reload finds it still running.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from headshot.errors import HeadshotError
from headshot.outputs import safe_name

from . import host, photos

PRESETS = ["fast", "balanced", "quality"]
POLL = 0.5
BAR_WIDTH = 30
TRAINER_ENV = "trainer-env"  # under models/headshot/: the overlay venv trainer_env builds when the WebUI can't train


def choices(
    output_name: str,
    preset: str,
    steps: int = 0,
    rank: int = 0,
    learning_rate: float = 0.0,
    resolution: int = 0,
    seed: int = 42,
    validation_images: int = -1,
    face_backend: str = "auto",
) -> dict:
    """The person's choices as TrainSettings fields (0 / -1 mean: from the preset)."""
    name = safe_name((output_name or "").strip(), "LoRA name")  # it names the LoRA file and the job folder
    return {
        "output_name": name,
        "preset": preset,
        "steps": int(steps) or None,
        "rank": int(rank) or None,
        "lr": float(learning_rate) or None,
        "resolution": int(resolution) or None,
        "seed": int(seed),
        "validation_images": None if int(validation_images) < 0 else int(validation_images),
        "face_backend": face_backend,
    }


def job_dir_for(chosen: dict, dataset: Path, checkpoint: Path, vae: Path | None = None) -> Path:
    """The core's job folder for these choices, under the WebUI's outputs (never a link out of it)."""
    from headshot.allowed_paths import confine
    from headshot.train.job_reuse import job_folder

    return confine(
        job_folder(host.jobs_root(), chosen, dataset, checkpoint, vae), host.allowed_roots(), "job folder", "the WebUI"
    )


def training_vae(checkpoint: Path) -> Path | None:
    """The VAE the WebUI draws `checkpoint` with (None: its own); a checkpoint saved without one, with none chosen,
    is refused here in the WebUI's words (the core's names a command-line option)."""
    from headshot.families import base_model_family

    vae = host.checkpoint_vae(checkpoint)
    if vae is not None and not vae.is_file():
        raise HeadshotError(
            f"the WebUI's VAE {vae} is not there any more; choose another and train again", "vae_not_found"
        )
    if vae is not None:
        return vae
    try:
        base_model_family(checkpoint, needs_vae=True)
    except HeadshotError as error:
        if error.code != "checkpoint_without_vae":
            raise
        where = (
            "the VAE / Text Encoder menu at the top"
            if host.is_forge()
            else "Settings → Stable Diffusion → SD VAE, or a file named after the checkpoint in models/VAE"
        )
        raise HeadshotError(
            f"{checkpoint.name} was saved without a VAE: choose the one it is meant for ({where}; the WebUI draws "
            "with it too), then train again",
            error.code,
        ) from None
    return None


def torch_device() -> str:
    devices = host.module("modules.devices")
    device = str(getattr(devices, "device", "") or "auto") if devices is not None else "auto"
    return device if device.split(":")[0] in ("cuda", "cpu", "mps") else "auto"


def build_settings(dataset: Path, checkpoint: Path, chosen: dict):
    from headshot.train.settings import TrainSettings

    vae = training_vae(checkpoint)
    return TrainSettings(
        dataset_dir=str(dataset),
        base_model=str(checkpoint),
        out_dir=str(job_dir_for(chosen, dataset, checkpoint, vae)),
        vae=None if vae is None else str(vae),
        device=torch_device(),
        face_model_dirs=[str(d) for d in host.face_model_dirs()],
        **chosen,
    )


def trainer_python(progress) -> str:
    """A Python that can run the worker: the WebUI's own, or the overlay venv built on first use."""
    try:
        from headshot.train.trainer_env import trainer_python as find
    except ImportError:  # an older core without trainer_env: the WebUI's own Python
        return sys.executable
    return find(host.models_dir() / "headshot" / TRAINER_ENV, progress)


def preview_source(job_dir: Path, samples: list[Path], dataset: Path) -> Path | None:
    """The card's picture: a validation sample of the chosen checkpoint, else the first training crop."""
    if samples:
        return samples[0]
    crops = sorted(p for p in (dataset / "img").rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    return crops[0] if crops else None


def install_lora(lora: Path, output_name: str, preview: Path | None) -> Path:
    """The LoRA, its A1111 sidecar <name>.json and a <name>.preview.png into models/Lora/headshot/, under a name
    no file of anyone's has (an earlier install of the same LoRA is reused), then the card list refreshed."""
    from PIL import Image

    from headshot.outputs import atomic_save
    from headshot.train.job_reuse import install_copy, install_name

    folder = host.lora_dir() / host.LORA_SUBFOLDER
    name = install_name(lora, folder, output_name)
    target = install_copy(lora, folder, name, keep_existing=True)
    card = target.with_suffix(".preview.png")
    if preview is not None and not (card.exists() or card.is_symlink()):
        with Image.open(preview) as img:
            picture = img.convert("RGB")
        picture.thumbnail((512, 512))
        atomic_save(card, lambda tmp: picture.save(tmp, format="PNG"))
    host.refresh_loras()
    return target


def free_webui_memory() -> None:
    """Before a training worker starts: the WebUI's model off the GPU and the tab's face analyzers dropped."""
    photos.release_face_analyzers()
    host.unload_model()


@dataclass
class Progress:
    """What the tab shows while a job runs; replaced as a whole, so a reader never sees half an update."""

    state: str = "idle"  # idle | preparing | running | done | failed | cancelled
    message: str = ""
    step: int = 0
    total: int = 0
    eta_s: float | None = None
    job_dir: Path | None = None
    lora: Path | None = None
    samples: list[Path] = field(default_factory=list)

    @property
    def loss_curve(self) -> Path | None:
        path = self.job_dir / "loss.png" if self.job_dir is not None else None
        return path if path is not None and path.is_file() else None

    def text(self) -> str:
        lines = [f"{self.state}: {self.message}".rstrip(": ")]
        if self.total:
            filled = BAR_WIDTH * self.step // self.total  # a bar in text: the same in gradio 3 and 4
            bar = "█" * filled + "░" * (BAR_WIDTH - filled)
            lines.append(f"{bar} step {self.step} of {self.total} ({100 * self.step // self.total}%)")
        if self.eta_s is not None and self.state == "running":
            lines.append(f"about {int(self.eta_s // 60)} min {int(self.eta_s % 60)} s left")
        if self.job_dir is not None:
            lines.append(f"job folder: {self.job_dir}")
        return "\n".join(lines)


class TrainingSession:
    def __init__(self):
        self.progress = Progress()
        self._thread: threading.Thread | None = None
        self._run = None
        self._cancel = threading.Event()

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, settings, dataset: Path, resume: bool = False) -> None:
        """Train (or reuse, or resume) in a background thread; `resume` insists on a stopped job to go on with."""
        from headshot.train.job import JobFolder

        if self.busy:
            raise HeadshotError("a training job is already running: wait for it, or press Cancel", "training_running")
        job = JobFolder(settings.out_dir)
        if resume and (not job.exists() or job.read().get("state") == "done"):
            raise HeadshotError(
                "nothing to resume for this dataset, model and settings (no stopped job in "
                f"{settings.out_dir}); choose the ones the stopped job used, or press Start",
                "nothing_to_resume",
            )
        self._cancel.clear()
        self.progress = Progress("preparing", "starting", job_dir=Path(settings.out_dir))
        self._thread = threading.Thread(target=self._work, args=(settings, dataset), daemon=True, name="headshot-train")
        self._thread.start()

    def cancel(self) -> str:
        if not self.busy:
            return "no training is running"
        self._cancel.set()
        if self._run is not None:
            self._run.cancel()
        return "cancel requested: the worker saves a checkpoint, then stops (Resume goes on from it)"

    def wait(self, timeout: float | None = None) -> Progress:
        if self._thread is not None:
            self._thread.join(timeout)
        return self.progress

    def _note(self, message: str) -> None:
        self.progress = Progress(**{**self.progress.__dict__, "message": str(message)})

    def _follow(self, run) -> dict:
        self._run = run
        offset, first = 0, None
        while True:
            events, offset = run.job.events(offset)
            for event in events:
                if event.get("type") == "status" and self.progress.state == "preparing":
                    self._note(event.get("message", ""))  # loading the model, caching latents: minutes on a CPU
                if event.get("type") == "step" and event.get("total"):
                    step, total = int(event["step"]), int(event["total"])
                    first = first or (time.time(), step)
                    done = step - first[1]
                    # the worker's own estimate until this session has seen two steps of its own
                    eta = (time.time() - first[0]) / done * (total - step) if done > 0 else event.get("eta_s")
                    self.progress = Progress(
                        "running", "training", step, total, eta, run.job.path, samples=self._samples(run.job.path)
                    )
            if self._cancel.is_set():
                run.cancel()
            if not run.running:
                break
            time.sleep(POLL)
        return run.wait(_log_warning)

    @staticmethod
    def _samples(job_dir: Path) -> list[Path]:
        folder = job_dir / "samples"
        return sorted(folder.rglob("*.png"))[-8:] if folder.is_dir() else []

    def _work(self, settings, dataset: Path) -> None:
        from headshot.train.job_reuse import train_or_reuse

        job_dir = Path(settings.out_dir)
        try:
            python = trainer_python(self._note)
            self._note("the WebUI's model is moved off the GPU while training")
            free_webui_memory()
            try:
                trained = train_or_reuse(settings, self._follow, python=python)
            finally:
                host.reload_model()
            samples = trained.samples()
            lora = install_lora(trained.lora, settings.output_name, preview_source(job_dir, samples, dataset))
            record = trained.record
            self.progress = Progress(
                "done",
                f"LoRA {lora.name} is in {lora.parent} (Extra Networks → Lora); {trained.summary(lora.stem)}",
                int(record.get("steps_done") or 0),
                int(record.get("steps_done") or 0),
                None,
                job_dir,
                lora,
                samples,
            )
        except HeadshotError as exc:
            from headshot.train.job import JobFolder

            stopped = JobFolder(job_dir).exists() and JobFolder(job_dir).read().get("state") == "cancelled"
            state = "cancelled" if self._cancel.is_set() or stopped else "failed"
            self.progress = Progress(state, str(exc), self.progress.step, self.progress.total, None, job_dir)
        except Exception as exc:  # a bug: the tab shows it, the WebUI keeps running
            self.progress = Progress("failed", f"{type(exc).__name__}: {exc}", job_dir=job_dir)
        finally:
            self._run = None


def _log_warning(event: dict) -> None:
    """A worker's warning (a crash after it recorded its end) in the WebUI's console; the tab's message has it too."""
    if event.get("type") == "warning":
        logging.getLogger(__name__).warning("[Headshot Studio] %s", event.get("message"))


SESSION = TrainingSession()
