"""Shared fixtures: real photos that ship in installed packages, and the offline dlib backend."""

from __future__ import annotations

import pytest
from PIL import Image

from headshot.samples import astronaut, insightface_image


@pytest.fixture(scope="session")
def astronaut_img() -> Image.Image:
    """NASA's portrait of Eileen Collins, from scikit-image (512x512, face about 91 px wide)."""
    return astronaut()


@pytest.fixture(scope="session")
def group_img() -> Image.Image:
    """insightface's t1.jpg: six people side by side."""
    return insightface_image("t1.jpg")


@pytest.fixture(scope="session")
def dlib_analyzer():
    from headshot.faces.dlib_backend import DlibFaceAnalyzer

    return DlibFaceAnalyzer()
