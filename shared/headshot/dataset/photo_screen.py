"""Screening each photo on its own (decode, find the face, frame, measure), here or in worker processes."""

from __future__ import annotations

import math
import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import PhotoRejected
from ..faces import Face, FaceAnalyzer, load_face_analyzer
from ..faces.framing import (
    QUARTER_TURNS,
    UprightResult,
    crop_detail_scale,
    find_upright,
    frame_headshot,
    scaled_face,
    turned,
)
from ..faces.subject import pick_subject
from ..photos import Photo, downscaled, read_photo
from .prepare_settings import PrepareSettings
from .screening import ScreeningSettings, difference_hash, face_exposure, face_sharpness

#: a JPEG is decoded for detection at a DCT scale whose long side is at least this share of detect_side:
#: a 4000 px photo then decodes at 1/4 (1000 px) rather than 1/2, for no loss a detector notices
DETECT_DRAFT_SHARE = 0.9
#: fewer photos than this are screened in this process: starting workers would cost more than it saves
POOL_FROM_PHOTOS = 4
#: worker processes at most, beside this process (each holds one photo and dlib's models, about 150 MB)
MAX_POOL_WORKERS = 3
#: finished photos this process may hold while the next one in order is still in a worker: it screens more
#: instead of waiting (a worker's first photo is slow, the worker still starting); each is a crop (0.8 MB at 512 px)
RUN_AHEAD = 8
#: the longest copy a second search (no face at detect_side) looks at: its cost grows with the pixels
#: (dlib: 0.9 s at 4096 px on one core); faces narrower than it can see stay unsearched, and it says so
CLOSER_LOOK_MAX_SIDE = 4096


@dataclass
class Examined:
    """What screening one photo by itself found, as plain data a worker process can send back."""

    rejection: tuple[str, str] | None = None  # (code, message) when a check of the photo alone failed
    details: dict = field(default_factory=dict)
    crop: np.ndarray | None = None  # the headshot crop (the centre square when no face), 8-bit RGB
    embedding: np.ndarray | None = None
    photo_hash: np.ndarray | None = None


def examine_photos(
    photos: list[tuple[Path, str]],
    analyzer: FaceAnalyzer,
    settings: PrepareSettings,
    pooled: bool,
    scratch: Path | None = None,
) -> Iterator[Examined]:
    """Each (path, name)'s Examined, in order; with `pooled` and enough photos, on every core.

    dlib's detector uses one core: this process and a worker process per other core each decode and
    screen whole photos, and only plain data comes back, so memory stays a few photos whatever the
    count. `scratch` (a private folder) lets the workers read the analyzer's detector rather than rebuild it.
    """
    if not pooled or len(photos) < POOL_FROM_PHOTOS:
        for path, name in photos:
            yield examine_photo(path, name, analyzer, settings)
        return
    share = getattr(analyzer, "share", None)
    shared = share(scratch) if share is not None and scratch is not None else {}
    workers = _worker_count()
    # spawn: a host may hold threads or a GPU context that a forked child must not inherit
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(workers, context, _start_worker, (analyzer.name, settings, shared))
    try:
        yield from _screen_beside_workers(photos, pool, 2 * workers, analyzer, settings)
    finally:
        pool.shutdown(cancel_futures=True)


def _worker_count() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 2
    return max(1, min(MAX_POOL_WORKERS, cores - 1))


def _screen_beside_workers(
    photos: list[tuple[Path, str]], pool: ProcessPoolExecutor, depth: int, analyzer, settings: PrepareSettings
) -> Iterator[Examined]:
    """Photos handed out in order, `depth` at a time to the workers; while the next result is still being
    made (the workers are starting, or busy), this process screens the next photo no one has yet, holding
    at most RUN_AHEAD finished ones, so memory does not grow with the count when a worker is slow on one photo."""
    queued: dict[int, Future] = {}
    ready: dict[int, Examined] = {}
    handed = 0
    for wanted in range(len(photos)):
        while wanted not in ready:
            while handed < len(photos) and sum(not f.done() for f in queued.values()) < depth:
                queued[handed] = pool.submit(_examine_in_worker, photos[handed])
                handed += 1
            # this process waits rather than run further ahead: results held here stay at most RUN_AHEAD
            if queued[wanted].done() or handed == len(photos) or len(ready) >= RUN_AHEAD:
                ready[wanted] = queued.pop(wanted).result()
            else:
                ready[handed] = examine_photo(*photos[handed], analyzer, settings)
                handed += 1
        yield ready.pop(wanted)


_worker: tuple[FaceAnalyzer, PrepareSettings] | None = None


def _start_worker(backend: str, settings: PrepareSettings, shared: dict) -> None:
    global _worker
    if backend == "dlib" and shared:
        from ..faces.dlib_backend import DlibFaceAnalyzer

        _worker = (DlibFaceAnalyzer(**shared), settings)
    else:
        _worker = (load_face_analyzer(backend, settings.face_model_dirs), settings)


def _examine_in_worker(photo: tuple[Path, str]) -> Examined:
    assert _worker is not None  # set by _start_worker
    return examine_photo(photo[0], photo[1], *_worker)


def examine_photo(path: Path, name: str, analyzer: FaceAnalyzer, settings: PrepareSettings) -> Examined:
    """Every check that needs only this photo; the duplicate and identity checks need the whole set."""
    screen = ScreeningSettings(settings.resolution, settings.face_share, settings.min_face_px)
    try:
        photo = read_photo(path, draft_side=math.ceil(DETECT_DRAFT_SHARE * settings.detect_side))
    except PhotoRejected as exc:
        return Examined((exc.code, str(exc)))
    upright = find_upright(photo.image, analyzer, settings.detect_side, screening=True)
    photo, upright = look_closer(photo, upright, analyzer, settings)
    found = Examined(details={"turned_degrees": upright.turned_degrees, "exif_rotated": photo.exif_rotated})
    found.photo_hash = difference_hash(upright.image)
    subject, rivals = pick_subject(upright.faces)
    if subject is None:  # the centre square only for --keep and the sheet
        try:
            whole, _ = _upright_at(photo, upright, settings.resolution / (min(upright.image.size) * photo.scale))
        except PhotoRejected:
            whole = upright.image  # changed since it was read: the sheet still shows what was screened
        found.crop = np.asarray(_centre_square(whole, settings.resolution))
        found.rejection = ("no_face", f"{name}: no face found{_why_unseen(photo, analyzer, settings, screen)}")
        return found
    found.embedding = upright.embed(subject)
    try:
        source, face = _crop_source(photo, upright, subject, settings)
    except PhotoRejected as exc:  # the file changed or went away since it was first read
        found.rejection = (exc.code, str(exc))
        return found
    subject = scaled_face(subject, photo.scale)  # full-resolution pixels, for the report and the size check
    del photo, upright  # the crop source is all that is needed from here
    crop, framing = frame_headshot(source, face, settings.resolution, settings.face_share)
    del source
    found.crop = np.asarray(crop)
    found.details.update(
        face_box=[round(v, 1) for v in subject.box],
        face_width_px=round(subject.width),
        roll_degrees=round(framing.roll_degrees, 1),
        filled_border=framing.padded,
    )
    if rivals:
        found.rejection = (
            "multiple_faces",
            f"{name}: {rivals + 1} faces of similar size; use a photo of the person alone "
            "(or crop it so their face is clearly the largest)",
        )
        return found
    if subject.width < screen.min_face:
        found.rejection = (
            "face_too_small",
            f"{name}: face too small: {subject.width:.0f} px wide, need at least {screen.min_face} px; "
            "use a closer or higher-resolution photo",
        )
        return found
    highlights, clipped = face_exposure(crop, screen)
    found.details.update(face_highlights=round(highlights, 1), face_clipped_share=round(clipped, 3))
    if highlights < screen.min_face_highlights or clipped > screen.max_face_clipped_share:
        found.rejection = (
            "badly_exposed",
            f"{name}: the face is too dark (its brightest parts {highlights:.0f} of 255, need "
            f"{screen.min_face_highlights:.0f}); use a photo in better light"
            if highlights < screen.min_face_highlights
            else f"{name}: the face is washed out ({clipped:.0%} of it pure white); use a photo that is not "
            "overexposed",
        )
        return found
    score = face_sharpness(crop, subject.width, screen)
    found.details["sharpness"] = round(score, 4)
    if score < screen.min_sharpness:
        found.rejection = (
            "blurry",
            f"{name}: the face is blurry (sharpness {score:.3f}, need {screen.min_sharpness:.3f}); "
            "use a photo in focus",
        )
    return found


def _why_unseen(photo: Photo, analyzer: FaceAnalyzer, settings: PrepareSettings, screen: ScreeningSettings) -> str:
    """What to say after "no face found": the photo's size when that alone rules out a face wide enough to keep
    (a thumbnail), else what to try."""
    width, height = (round(side * photo.scale) for side in photo.size)
    if min(width, height) < screen.min_face:
        return (
            f"; at {width}x{height} px the photo is too small to hold a face {screen.min_face} px wide, the least a "
            f"{settings.resolution} px crop needs; use the full-size photo, not a thumbnail or a preview"
        )
    narrowest = _narrowest_searched(photo, analyzer, settings)
    unseen = (
        f" (faces narrower than {narrowest:.0f} px are not searched for in a photo this large: crop it closer)"
        if narrowest and narrowest > screen.min_face
        else ""
    )
    return f"{unseen}; use a photo where the face is clearly visible"


def _narrowest_searched(photo: Photo, analyzer: FaceAnalyzer, settings: PrepareSettings) -> float | None:
    """About the narrowest face, in full-resolution pixels, that screening `photo` looked for (None: unknown)."""
    smallest, as_is = getattr(analyzer, "smallest_face_px", None), getattr(analyzer, "as_is_face_px", None)
    full_side = max(photo.size) * photo.scale
    if not smallest or full_side <= settings.detect_side:
        return None  # searched at full size: nothing narrower was left out by its size
    narrowest = smallest * full_side / settings.detect_side
    if as_is:
        narrowest = min(narrowest, as_is * full_side / min(full_side, CLOSER_LOOK_MAX_SIDE))
    return narrowest


def look_closer(
    photo: Photo, upright: UprightResult, analyzer: FaceAnalyzer, settings: PrepareSettings
) -> tuple[Photo, UprightResult]:
    """Where `upright` found no face at detect_side in a photo so large that a face wide enough to keep could
    be narrower there than the backend finds (a 24 MP half-body shot), search once more, a quarter turn at a
    time as the first search does (EXIF applied), on a copy where such a face is as wide as the backend's
    unenlarged search needs; unchanged where faces were found, where that cannot help, or where it finds
    nothing."""
    smallest, as_is = getattr(analyzer, "smallest_face_px", None), getattr(analyzer, "as_is_face_px", None)
    if upright.faces or not smallest or not as_is:
        return photo, upright
    full_side = max(photo.size) * photo.scale
    min_face = ScreeningSettings(settings.resolution, settings.face_share, settings.min_face_px).min_face
    if min_face * min(full_side, settings.detect_side) / full_side >= smallest:
        return photo, upright  # every face wide enough to keep was large enough to be found
    side = min(full_side, CLOSER_LOOK_MAX_SIDE, math.ceil(full_side * as_is / min_face))
    if side <= settings.detect_side:
        return photo, upright
    try:
        again = photo if photo.scale == 1.0 else read_photo(photo.source, draft_side=math.ceil(side))
    except PhotoRejected:  # changed since it was first read: keep what was screened
        return photo, upright
    small, factor = downscaled(again.image, math.ceil(side))
    for degrees in QUARTER_TURNS:  # a sideways photo without an EXIF turn: seconds only where none is found
        rgb = np.asarray(turned(small, degrees))
        faces = analyzer.detect_as_is(rgb)  # type: ignore[attr-defined]  # present with as_is_face_px
        if faces:
            full = [scaled_face(f, factor) for f in faces]
            return again, UprightResult(turned(again.image, degrees), degrees, full, analyzer, rgb, factor)
    return photo, upright


def _crop_source(
    photo: Photo, upright: UprightResult, face: Face, settings: PrepareSettings
) -> tuple[Image.Image, Face]:
    """The upright image to cut `face`'s crop from, and the face in its pixels."""
    needed = crop_detail_scale(face.width * photo.scale, settings.resolution, settings.face_share)
    image, factor = _upright_at(photo, upright, needed)
    return image, scaled_face(face, factor)


def _upright_at(photo: Photo, upright: UprightResult, needed: float) -> tuple[Image.Image, float]:
    """The upright photo with at least `needed` of its full resolution, and the factor to its pixels.

    The reduced decode when it holds that much detail (a large face); else the photo decoded
    again, reduced only as far as allowed, and turned the same way.
    """
    if needed * photo.scale <= 1.0:
        return upright.image, 1.0
    full_long_side = max(photo.size) * photo.scale
    again = read_photo(photo.source, draft_side=math.ceil(needed * full_long_side))
    return turned(again.image, upright.turned_degrees), photo.scale / again.scale


def _centre_square(img: Image.Image, resolution: int) -> Image.Image:
    side = min(img.size)
    left, top = (img.width - side) // 2, (img.height - side) // 2
    return img.resize((resolution, resolution), Image.Resampling.LANCZOS, box=(left, top, left + side, top + side))
