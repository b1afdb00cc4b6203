"""tools/make_random_sd15_checkpoint.py writes what a released SD1.5 or SDXL base file holds.

Built on PyTorch's meta device (shapes only, no memory, no random numbers), the tool's state dict must have
exactly the keys and shapes of the published architectures (tiny_models.full_size_ldm_shapes, which the
loader tests check against diffusers' conversion) and be detected as its family by our own detection.
The train benchmark and the host checks rely on this file being a real-layout checkpoint.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from tiny_models import full_size_ldm_shapes  # noqa: E402

from headshot.families.checkpoint_detection import detect_checkpoint  # noqa: E402

TOOL = Path(__file__).resolve().parents[1] / "tools" / "make_random_sd15_checkpoint.py"


def _tool():
    spec = importlib.util.spec_from_file_location("make_random_checkpoint", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_random_checkpoint_has_the_released_layout(family):
    with torch.device("meta"):
        written = _tool().build_state_dict(dtype=torch.float16, log=lambda _: None, family=family)
    expected = full_size_ldm_shapes(family)
    # released files also carry CLIP-L's position ids buffer, which newer transformers no longer saves
    prefix = "cond_stage_model.transformer." if family == "sd1" else "conditioner.embedders.0.transformer."
    position_ids = prefix + "text_model.embeddings.position_ids"
    assert set(written) - set(expected) <= {position_ids}
    assert set(expected) - set(written) == set()
    assert {k: tuple(v.shape) for k, v in written.items() if k in expected} == {
        k: tuple(v.shape) for k, v in expected.items()
    }
    assert all(v.dtype == torch.float16 for k, v in written.items() if k.endswith(".weight"))
    assert detect_checkpoint(written)[0].name == family
