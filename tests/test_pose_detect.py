"""The pose detector wrapper: controlnet_aux's OpenPose body model behind pose_from_image.

Without controlnet_aux it says what to install; with a stand-in at that import boundary (the
annotator body model's interface) it loads only a local annotator folder, never the hub, gives
the model BGR pixels, and returns people sorted left to right in image fractions, drawable as is.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
from PIL import Image

from headshot.errors import BackendUnavailable
from headshot.generate.pose import NECK, NOSE, R_SHOULDER
from headshot.generate.pose_detect import pose_from_image
from headshot.generate.pose_render import render_openpose


def test_pose_from_image_without_controlnet_aux_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "controlnet_aux", None)  # import fails
    with pytest.raises(BackendUnavailable) as info:
        pose_from_image(Image.new("RGB", (64, 64)), tmp_path)
    message = str(info.value)
    assert "pip install controlnet_aux" in message and "body_pose_model.pth" in message
    assert info.value.code == "backend_unavailable"


class _FakeBody:
    """The annotator body model's interface: BGR uint8 in, (candidate, subset) out."""

    def __init__(self):
        self.seen = None

    def __call__(self, bgr):
        self.seen = bgr
        # candidate rows: x, y, score, id (pixels of the array given); subset: 18 indices, score, count
        candidate = np.array(
            [[300, 50, 0.9, 0], [300, 100, 0.9, 1], [60, 40, 0.9, 2], [60, 90, 0.9, 3]], dtype=np.float64
        )
        subset = -np.ones((2, 20))
        subset[0, [0, 1]] = [0, 1]  # the right-hand person: nose, neck
        subset[1, [0, 1]] = [2, 3]  # the left-hand person
        return candidate, subset


def _fake_controlnet_aux(monkeypatch, calls):
    module = types.ModuleType("controlnet_aux")

    class OpenposeDetector:
        def __init__(self):
            self.body_estimation = _FakeBody()

        @classmethod
        def from_pretrained(cls, path, *args, **kwargs):
            calls.append(path)
            return cls()

    module.OpenposeDetector = OpenposeDetector
    monkeypatch.setitem(sys.modules, "controlnet_aux", module)


def test_pose_from_image_reads_a_local_annotator_folder_and_normalises(monkeypatch, tmp_path):
    calls = []
    _fake_controlnet_aux(monkeypatch, calls)
    (tmp_path / "body_pose_model.pth").write_bytes(b"stand-in")
    photo = Image.new("RGB", (400, 200), (255, 0, 0))
    people = pose_from_image(photo, tmp_path)
    assert calls == [str(tmp_path)]
    assert len(people) == 2 and all(len(p) == 18 for p in people)
    # sorted left to right, coordinates divided by the image size
    assert people[0][NOSE] == pytest.approx((60 / 400, 40 / 200))
    assert people[1][NECK] == pytest.approx((300 / 400, 100 / 200))
    assert people[0][R_SHOULDER] is None
    render_openpose(people, 400, 200)  # the result is drawable as is


def test_pose_from_image_gives_the_detector_bgr_and_accepts_a_loaded_one():
    detector = types.SimpleNamespace(body_estimation=_FakeBody())
    pose_from_image(Image.new("RGB", (300, 200), (255, 0, 0)), detector=detector)
    bgr = detector.body_estimation.seen
    assert bgr.shape == (200, 300, 3) and bgr.dtype == np.uint8
    assert tuple(bgr[0, 0]) == (0, 0, 255)


def test_pose_from_image_never_asks_the_hub_for_a_missing_folder(monkeypatch, tmp_path):
    calls = []
    _fake_controlnet_aux(monkeypatch, calls)
    with pytest.raises(BackendUnavailable, match="does not exist"):
        pose_from_image(Image.new("RGB", (64, 64)), tmp_path / "lllyasviel" / "Annotators")
    with pytest.raises(BackendUnavailable, match="body_pose_model.pth"):
        pose_from_image(Image.new("RGB", (64, 64)), tmp_path)  # exists, but empty
    assert calls == []
