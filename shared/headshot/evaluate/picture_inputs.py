"""The pictures to evaluate: a folder of pictures, or a `results.json` from `headshot generate`
(each picture with the prompt it was drawn with and the trigger word to take out of it)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import HeadshotError
from ..finish.batch import list_inputs
from ..finish.ranked_results import RESULTS_NAME, printable


@dataclass
class PictureInput:
    path: Path
    name: str  # as the report shows it: relative to the folder or results.json
    prompt: str | None = None  # the prompt it was drawn with, when known
    triggers: list[str] = field(default_factory=list)  # trigger words in that prompt


def pictures_to_evaluate(images: str | Path, out_dir: str | Path) -> list[PictureInput]:
    """The pictures of IMAGES: a results.json (or a folder holding one) lists them with their prompts;
    otherwise every visible file of the folder (files an earlier run wrote into OUT excluded)."""
    images = Path(images)
    if images.is_file() and images.suffix.lower() == ".json":
        return _from_results(images)
    if images.is_dir() and (images / RESULTS_NAME).is_file():
        return _from_results(images / RESULTS_NAME)
    base = images if images.is_dir() else images.parent
    return [PictureInput(path, printable(path.relative_to(base))) for path in list_inputs(images, out_dir)]


def _from_results(results: Path) -> list[PictureInput]:
    try:
        entries = json.loads(results.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise HeadshotError(
            f"{results} cannot be read as JSON ({exc}); give the results.json `headshot generate` wrote, "
            "or a folder of pictures",
            "unreadable",
        ) from None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise HeadshotError(
            f"{results} is not a results.json from `headshot generate` (expected a list of pictures)", "unreadable"
        )
    pictures = []
    for entry in entries:
        if entry.get("skipped") or not isinstance(entry.get("image"), str):
            continue  # generate could not make this picture: there is nothing to measure
        prompt = entry.get("prompt") if isinstance(entry.get("prompt"), str) else None
        pictures.append(PictureInput(results.parent / entry["image"], entry["image"], prompt, _triggers(entry)))
    if not pictures:
        raise HeadshotError(f"{results} lists no pictures; generate some first", "no_images")
    return pictures


def _triggers(entry: dict) -> list[str]:
    """The trigger words of a results entry: recorded by generate, else read from its LoRAs' metadata."""
    recorded = entry.get("triggers")
    if isinstance(recorded, list):
        return [t for t in recorded if isinstance(t, str) and t]
    from ..train.lora_files import lora_subject

    triggers = []
    for lora in entry.get("loras") or []:
        try:
            trigger, _ = lora_subject(str(lora))
        except HeadshotError:  # the LoRA moved since: the reference's trigger may still apply
            continue
        if trigger:
            triggers.append(trigger)
    return triggers
