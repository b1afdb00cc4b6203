"""Which face in a picture is the person: one rule for prepare, training selection, finish and ranking."""

from __future__ import annotations

from .base import Face

# A second face counts as a rival of the largest one when it is at least this share of its width
# and its detection is at least this share as confident; smaller or fainter ones are bystanders
# (or the detector seeing a face in a pattern) and the largest face is used.
RIVAL_WIDTH_SHARE = 0.6
RIVAL_SCORE_SHARE = 0.4


def confident_faces(faces: list[Face]) -> list[Face]:
    """Faces detected with at least RIVAL_SCORE_SHARE of the best score (the rest are likely patterns)."""
    if not faces:
        return []
    best_score = max(f.score for f in faces)
    return [f for f in faces if f.score >= RIVAL_SCORE_SHARE * best_score]


def pick_subject(faces: list[Face]) -> tuple[Face | None, int]:
    """The face to use and how many faces rival it (0: the subject is clear).

    Faint detections (a fraction of the best score) neither become the subject nor rival it:
    HOG sees faces in hands and fabric at low scores.
    """
    if not faces:
        return None, 0
    confident = confident_faces(faces)
    subject = max(confident, key=lambda f: f.width)
    rivals = [f for f in confident if f is not subject and f.width >= RIVAL_WIDTH_SHARE * subject.width]
    return subject, len(rivals)


def people_from_left(faces: list[Face], count: int) -> list[Face]:
    """The `count` best-scored faces, leftmost first: in a group photo of `count` people the i-th
    person's LoRA goes to the i-th face. A faint hit (fabric, hands) loses its place to any real
    face, yet a real face HOG scores low is kept when nothing better is there."""
    best = sorted(faces, key=lambda f: f.score, reverse=True)[:count]
    return sorted(best, key=lambda f: f.center[0])
