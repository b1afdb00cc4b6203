"""The tab builds with real gradio, when this environment has it (the project's .venv does not: gradio would
move packages the suite pins). The real check is on A1111 1.10 (gradio 3.41) and Forge (gradio 4.40)."""

from __future__ import annotations

import importlib.util

import pytest

from tests.test_a1111_glue import webui  # noqa: F401  (the fixture)

if importlib.util.find_spec("gradio") is None:
    pytest.skip("gradio is not installed here; the tab is checked inside A1111 and Forge", allow_module_level=True)


def test_tab_builds_with_every_sub_tab(webui):  # noqa: F811
    from a1111_extension.tab import on_ui_tabs

    ((blocks, title, elem_id),) = on_ui_tabs()
    assert title == "Headshot Studio" and elem_id == "headshot_studio"
    labels = {getattr(block, "label", None) for block in blocks.blocks.values()}
    assert {"Photos → dataset", "Train", "Generate", "Finish"} <= labels
