"""A batch measured: identity distance of each face to the person, faceless count, CLIP score."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from ..finish.ranking import score_pictures
from .bands import BANDS
from .identity_source import ResolvedIdentity


def likeness_report(
    pictures: list[Image.Image],
    person: ResolvedIdentity,
    *,
    prompt: str = "",
    clip_model_dir: Path | None = None,
    progress=None,
) -> dict:
    """The measurements as JSON-able data; the CLIP score only with both a model folder and a prompt."""
    analyzer = person.analyzer
    entries = score_pictures(pictures, analyzer, person.identity, progress)
    distances = [e["identity_distance"] for e in entries if e["identity_distance"] is not None]
    faceless = sum(1 for e in entries if e["faceless"])
    limit = analyzer.same_person_distance
    report = {
        "images": entries,
        "count": len(entries),
        "faces": len(entries) - faceless,
        "faceless": faceless,
        "face_backend": analyzer.name,
        "identity": person.source,
        "same_person_distance": limit,
        "mean_distance": round(sum(distances) / len(distances), 4) if distances else None,
        "same_person_share": round(sum(d < limit for d in distances) / len(distances), 4) if distances else None,
    }
    if clip_model_dir is None:
        report["clip_score"] = {"computed": False, "reason": "no CLIP model folder given (clip_model_dir)"}
    elif not prompt.strip():
        report["clip_score"] = {"computed": False, "reason": "no prompt given to compare the pictures with"}
    else:
        from .clip_score import clip_scores

        scores = clip_scores(pictures, prompt, clip_model_dir)
        report["clip_score"] = {
            "computed": True,
            "model": str(clip_model_dir),
            "prompt": prompt,
            "mean": round(sum(scores) / len(scores), 3),
            "per_image": scores,
        }
    return report


def report_text(report: dict) -> str:
    """The report of likeness_report in words."""
    lines = [
        f"{report['count']} picture(s): {report['faces']} with a face, {report['faceless']} without"
        f"{_graded('faceless_count', report['faceless'])}"
    ]
    if report["identity"] is None:
        lines.append("identity distance: not computed (no identity given: a LoRA, reference photos or a file)")
    elif report["mean_distance"] is None:
        lines.append("identity distance: not computed (no face found)")
    else:
        lines.append(
            f"identity distance: mean {report['mean_distance']:.3f} ({report['face_backend']}; same person "
            f"below {report['same_person_distance']:.2f}: {report['same_person_share']:.0%} of the faces)"
            # the bands are written on dlib's L2 scale; other backends' distances are not comparable to them
            + (_graded("face_distance_mean", report["mean_distance"]) if report["face_backend"] == "dlib" else "")
        )
    clip = report["clip_score"]
    lines.append(
        f"CLIP score: mean {clip['mean']:.2f}{_graded('clip_score_mean', clip['mean'])}"
        if clip["computed"]
        else f"CLIP score: not computed ({clip['reason']})"
    )
    return "\n".join(lines)


def _graded(metric: str, value: float | None) -> str:
    """ " - good (0.25–0.30)": the value's band in the course brief's grading, or nothing without a value."""
    band = BANDS[metric].band_of(value)
    return f" - {band.grade} ({band.text})" if band else ""
