"""The tab builds with real gradio, when this environment has it. The project's .venv does not (gradio would move
packages the suite pins): tools/gradio_tab_check.sh, run by .ci/run, runs this file with A1111 1.10's gradio 3.41.2
and Forge's 4.40.0, each in a venv of its own."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.test_a1111_glue import webui  # noqa: F401  (the fixture)

if importlib.util.find_spec("gradio") is None:
    pytest.skip(
        "gradio is not installed here; tools/gradio_tab_check.sh builds the tab with it", allow_module_level=True
    )


def test_tab_builds_with_every_sub_tab(webui):  # noqa: F811
    from a1111_extension.tab import on_ui_tabs

    ((blocks, title, elem_id),) = on_ui_tabs()
    assert title == "Headshot Studio" and elem_id == "headshot_studio"
    labels = {getattr(block, "label", None) for block in blocks.blocks.values()}
    assert {"Photos → dataset", "Train", "Generate", "Finish"} <= labels


def test_the_reference_photo_upload_survives_forges_save_pil_to_cache(webui, tmp_path, monkeypatch):  # noqa: F811
    """Forge (gradio 4.40) replaces gradio's save_pil_to_cache with its own save_pil_to_file(pil_image,
    cache_dir=None, format="png"), without `name`: a gr.Image(type="filepath") upload then fails inside gradio
    before the tab's code runs (found on a real Forge). The reference input must hand over the file as it is."""
    import gradio
    from PIL import Image

    if int(gradio.__version__.split(".")[0]) < 4:
        pytest.skip("Forge ships gradio 4; A1111 1.10's gradio 3.41 keeps its own save function")
    from gradio import processing_utils
    from gradio.data_classes import FileData

    saved = iter(range(10**6))

    def forge_save_pil_to_file(pil_image, cache_dir=None, format="png"):  # Forge's signature (modules/ui_tempdir.py)
        path = tmp_path / f"forge-cache-{next(saved)}.{format}"
        pil_image.save(path)
        return str(path)

    monkeypatch.setattr(processing_utils, "save_pil_to_cache", forge_save_pil_to_file)
    from a1111_extension.tab import on_ui_tabs

    ((blocks, _, _),) = on_ui_tabs()
    (reference,) = [b for b in blocks.blocks.values() if getattr(b, "label", None) == "Reference photo (one face)"]
    photo = tmp_path / "me.png"
    Image.new("RGB", (64, 64), (200, 150, 120)).save(photo)
    received = reference.preprocess(FileData(path=str(photo), orig_name="me.png"))
    assert Path(str(getattr(received, "name", received))).read_bytes() == photo.read_bytes()
