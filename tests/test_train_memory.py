"""Loading a single-file checkpoint lazily: each tensor read once, converted as it is read, no map of the file kept.

The models are tiny and randomly initialised (tests/tiny_models.py): these tests prove that the lazy
reader returns the file's exact values and that loading leaves no memory map of the checkpoint behind
(its touched pages would count in the process's memory on top of the built models). The full-size
figures are measured by benchmarks/load_benchmark.py, not here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import tiny_models
import torch
from safetensors.torch import load_file, save_file

from headshot.families.checkpoint_file import LazySafetensors
from headshot.train.base_model_loading import load_base_model


@pytest.fixture(scope="module")
def sd1_single(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lazy_sd1")
    return tiny_models.save_single_file(tiny_models.make_tiny_sd1(root / "folder"), root / "sd1.safetensors", "sd1")


def test_lazy_reader_returns_every_dtype_exactly(tmp_path):
    """Every dtype a checkpoint holds comes back bit for bit; a cast applies to floating tensors only."""
    g = torch.Generator().manual_seed(0)
    tensors = {
        "f16": torch.randn((3, 5), generator=g).half(),
        "bf16": torch.randn((4, 2, 2), generator=g).bfloat16(),
        "f32": torch.randn((7,), generator=g),
        "f64": torch.randn((2, 2), generator=g).double(),
        "i64": torch.arange(77)[None],
        "i32": torch.tensor(3, dtype=torch.int32),  # a 0-dim scalar, as model_ema.num_updates is
        "bool": torch.tensor([True, False, True]),
        "empty": torch.zeros((0, 4)),
    }
    path = tmp_path / "mixed.safetensors"
    save_file(tensors, str(path), metadata={"note": "kept"})
    lazy = LazySafetensors(path)
    assert lazy.metadata == {"note": "kept"}
    assert set(lazy) == set(tensors)
    for key, expected in tensors.items():
        got = lazy[key]
        assert got.dtype == expected.dtype and got.shape == expected.shape and torch.equal(got, expected), key
        assert lazy.shape_of(key) == tuple(expected.shape)
    cast = dict(lazy.tensors(list(tensors), dtype=torch.float32))
    for key, expected in tensors.items():
        if expected.is_floating_point():
            assert cast[key].dtype == torch.float32 and torch.equal(cast[key], expected.float()), key
        else:
            assert cast[key].dtype == expected.dtype and torch.equal(cast[key], expected), key


def test_lazy_reader_names_a_truncated_file(tmp_path):
    path = tmp_path / "cut.safetensors"
    save_file({"a": torch.ones(1000)}, str(path))
    lazy = LazySafetensors(path)
    with open(path, "r+b") as f:  # cut after opening: the header still promises 4000 bytes
        f.truncate(path.stat().st_size - 100)
    with pytest.raises(OSError, match="ends inside tensor a"):
        lazy["a"]


def test_a_file_replaced_after_opening_still_reads_as_the_one_opened(tmp_path):
    """The deferred UNet is read minutes after the header: a checkpoint swapped on disk meanwhile must not
    be read with the old file's offsets."""
    path, other = tmp_path / "model.safetensors", tmp_path / "other.safetensors"
    save_file({"a": torch.arange(8.0)}, str(path))
    save_file({"b": torch.ones(2), "a": torch.full((8,), -1.0)}, str(other))
    lazy = LazySafetensors(path)
    other.replace(path)
    assert torch.equal(lazy["a"], torch.arange(8.0))


def _mapped(path: Path) -> bool:
    target = str(path.resolve())
    with open("/proc/self/maps") as maps:
        return any(line.rstrip().endswith(target) for line in maps)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps (Linux)")
def test_loading_keeps_no_map_of_the_checkpoint(sd1_single):
    """Neither while the UNet waits to be loaded (the engine's order) nor after: the file is not mapped."""
    base = load_base_model(sd1_single, defer_unet=True)
    assert base.unet is None and not _mapped(sd1_single)
    base.ensure_unet()
    assert not _mapped(sd1_single)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_loaded_weights_equal_the_files_tensors(sd1_single, dtype):
    """Converted while read, in the precision asked for: each parameter is the file's tensor in that dtype."""
    file = load_file(str(sd1_single))
    base = load_base_model(sd1_single, dtype=dtype)
    pairs = {
        "model.diffusion_model.input_blocks.0.0.weight": base.unet.conv_in.weight,
        "model.diffusion_model.out.2.bias": base.unet.conv_out.bias,
        "first_stage_model.encoder.conv_in.weight": base.vae.encoder.conv_in.weight,
        "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": (
            base.text_encoders[0].get_input_embeddings().weight
        ),
    }
    for key, param in pairs.items():
        assert param.dtype == dtype and torch.equal(param, file[key].to(dtype)), key
    for module in (base.unet, base.vae, *base.text_encoders):
        assert {p.dtype for p in module.parameters()} == {dtype}
