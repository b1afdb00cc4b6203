"""Training the same thing twice trains once: job folders named after what decides the result.

A host that trains from a graph (ComfyUI runs the whole graph again on every queue) names the job
folder after the dataset's files, the base model file and the chosen settings. Running again with
nothing changed finds the finished job and reuses it; a job stopped by Cancel or a crash resumes
from its last checkpoint; anything changed gives another folder.

Job folders are data: the LoRA is the folder's own file (never a path job.json names), and
validation.json's image paths are shown only when they lie inside the folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import HeadshotError
from ..outputs import safe_name
from .job import JobFolder
from .launch import TrainingRun, start_training
from .settings import TrainSettings

#: the part of the job folder's name taken from the fingerprint
KEY_LENGTH = 12


def dataset_digest(dataset: Path) -> str:
    """Hash of what training reads: every file under img/ (bytes and relative path) and dataset.toml."""
    digest = hashlib.sha256()
    root = dataset / "img" if (dataset / "img").is_dir() else dataset
    files = sorted(p for p in root.rglob("*") if p.is_file())
    if (dataset / "dataset.toml").is_file():
        files.append(dataset / "dataset.toml")
    for path in files:
        digest.update(path.relative_to(dataset).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def checkpoint_identity(path: Path) -> list:
    """Name, size and modification time: enough to notice another file, without reading gigabytes."""
    stat = path.stat()
    return [path.name, stat.st_size, stat.st_mtime_ns]


def fingerprint(*parts) -> str:
    """A stable hash of JSON-able values."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def job_folder(jobs_root: Path, chosen: dict, dataset: Path, base_model: Path, vae: Path | None = None) -> Path:
    """The job folder for these choices (TrainSettings fields), named `<output_name>-<key>` after what decides
    the result, so a run with nothing changed finds it again. `vae`: a VAE file used in place of the model's own
    (it encodes the photos); without one the key is what it was before the option existed."""
    name = safe_name(str(chosen.get("output_name") or "headshot_lora"), "output_name")
    parts = [chosen, dataset_digest(dataset), checkpoint_identity(base_model)]
    if vae is not None:
        parts.append(checkpoint_identity(vae))
    key = fingerprint(*parts)[:KEY_LENGTH]
    return Path(jobs_root) / "jobs" / f"{name}-{key}"


@dataclass
class TrainedLora:
    """What a finished (or reused) job left: its record, its LoRA file, where it is, and whether it was reused."""

    record: dict
    lora: Path
    job_dir: Path
    reused: bool

    @property
    def loss_curve(self) -> Path | None:
        path = self.job_dir / "loss.png"
        return path if path.is_file() else None

    def samples(self) -> list[Path]:
        """The chosen checkpoint's validation images (every sample when no checkpoint is named)."""
        return chosen_samples(self.job_dir, self.record.get("chosen_step"))

    def trigger(self) -> str:
        """The trigger phrase the A1111 sidecar names ("" when there is none)."""
        sidecar = self.lora.with_suffix(".json")
        try:
            text = json.loads(sidecar.read_text(encoding="utf-8")).get("activation text", "")
        except (OSError, ValueError, AttributeError):
            return ""
        return text if isinstance(text, str) else ""

    def summary(self, lora_name: str) -> str:
        """What happened, for people: the LoRA, reused or trained, steps, the chosen checkpoint and why."""
        record, trigger = self.record, self.trigger()
        choice = record.get("choice") or {}
        lines = [
            f"LoRA: {lora_name}" + (f"  (put '{trigger}' in the prompt)" if trigger else ""),
            ("reused the finished job (nothing changed since it was trained)" if self.reused else "trained")
            + f": {self.job_dir}",
            f"steps: {record.get('steps_done', '?')}; chosen checkpoint: step {record.get('chosen_step')}"
            + (f" ({choice['reason']})" if choice.get("reason") else ""),
        ]
        if record.get("identity"):
            lines.append(f"identity reference: {record['identity']}")
        if record.get("worker_exit_warning") and not self.reused:
            lines.append(f"warning: {record['worker_exit_warning']}")
        return "\n".join(lines)


def train_or_reuse(
    settings: TrainSettings,
    follow: Callable[[TrainingRun], dict],
    free_host_models: Callable[[], None] | None = None,
    python: str | None = None,
) -> TrainedLora:
    """The finished job in settings.out_dir when there is one; otherwise train, resuming what a stop left.

    `follow` waits for the run (a host shows progress and passes its Cancel on) and returns the final record.
    `python`: the interpreter for the worker (start_training's).
    """
    job_dir = Path(settings.out_dir)
    job = JobFolder(job_dir)
    record = job.read() if job.exists() else None
    reused = bool(record and record.get("state") == "done")
    lora = job_dir / f"{settings.output_name}.safetensors"
    if reused and not lora.is_file():
        raise HeadshotError(
            f"the finished job in {job_dir} has lost its LoRA file {lora}; delete that folder to train again",
            "lora_missing",
        )
    if not reused:
        # resuming is the core's (its checkpoint format, its checks): a job left by a stop goes on from there
        run = start_training(settings, resume=record is not None, free_host_models=free_host_models, python=python)
        record = follow(run)
    assert record is not None
    if record.get("state") != "done":
        raise HeadshotError(
            f"training {record.get('state')}: {record.get('error') or 'see worker.log'} (job folder {job_dir})",
            record.get("error_code") or "training_failed",
        )
    if not lora.is_file():
        raise HeadshotError(f"training finished but {lora} is missing (job folder {job_dir})", "lora_missing")
    return TrainedLora(record, lora, job_dir, reused)


def chosen_samples(job_dir: Path, chosen_step) -> list[Path]:
    """The validation samples of the chosen checkpoint (all samples when the choice names none).

    validation.json is data: a path in it is shown only when it lies inside the job folder, and a damaged
    file means no samples rather than a failed run.
    """
    record_path = job_dir / "validation.json"
    if record_path.is_file():
        try:
            data = json.loads(record_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        inside = Path(os.path.realpath(job_dir))
        checkpoints = data.get("checkpoints", []) if isinstance(data, dict) else []
        for checkpoint in checkpoints if isinstance(checkpoints, list) else []:
            if isinstance(checkpoint, dict) and checkpoint.get("step") == chosen_step:
                images = checkpoint.get("images", [])
                paths = [
                    Path(os.path.realpath(str(image["path"])))
                    for image in images
                    if isinstance(images, list) and isinstance(image, dict) and "path" in image
                ]
                return [p for p in paths if p.is_relative_to(inside) and p.is_file()]
    return sorted((job_dir / "samples").rglob("*.png")) if (job_dir / "samples").is_dir() else []


#: files installed beside a LoRA under its name (A1111's sidecar and card picture, our identity file)
INSTALLED_SIDECARS = (".json", ".identity.json", ".preview.png")


def install_name(lora: Path, target_dir: Path, output_name: str) -> str:
    """`output_name`, or `<output_name>-2`, -3…: the first name under which `target_dir` holds either this very
    LoRA (an earlier install of it) or nothing at all, so an install never replaces a LoRA or card of anyone's."""
    number = 1
    while True:
        name = output_name if number == 1 else f"{output_name}-{number}"
        target = target_dir / f"{name}.safetensors"
        if target.is_file() and _same_file(lora, target):
            return name
        taken = [target, *(target.with_suffix(suffix) for suffix in INSTALLED_SIDECARS)]
        if not any(path.exists() or path.is_symlink() for path in taken):
            return name
        number += 1


def install_copy(lora: Path, target_dir: Path, output_name: str, keep_existing: bool = False) -> Path:
    """Copy the LoRA and its .json / .identity.json sidecars into `target_dir` as `<output_name>.*`; a loader
    never sees half a file, and an identical copy already there is left alone. Returns the LoRA's new path.
    `keep_existing`: a sidecar already there is never replaced (a person may have edited it, e.g. in A1111's
    card editor); use with install_name so the LoRA itself is new or identical."""
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / f"{output_name}.safetensors"
    for source, dest in (
        (lora, target),
        (lora.with_suffix(".json"), target.with_suffix(".json")),
        (lora.with_suffix(".identity.json"), target.with_suffix(".identity.json")),
    ):
        if keep_existing and (dest.exists() or dest.is_symlink()):
            continue
        if source.is_file() and not (dest.is_file() and _same_file(source, dest)):
            # not atomic_save: its temporary name ends in .safetensors, and a loader's file list would show it
            tmp = dest.with_name(dest.name + ".partial")
            shutil.copyfile(source, tmp)
            os.replace(tmp, dest)
    return target


def _same_file(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    return hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()
