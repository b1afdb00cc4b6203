"""The tab builds with real gradio, when this environment has it. The project's .venv does not (gradio would move
packages the suite pins): tools/gradio_tab_check.sh, run by .ci/run, runs this file with A1111 1.10's gradio 3.41.2
and Forge's 4.40.0, each in a venv of its own."""

from __future__ import annotations

import importlib.util

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
