"""The Face Restore and Face Detailer nodes: restoration for real, and the detailer's sampling wired to ComfyUI.

Face Restore runs a random GFPGAN from facerestore_models through the real core. The Face
Detailer's sampling is the one place where ComfyUI does the work (its VAE and sampler); there
the stand-ins record what our sampler adapter hands to ComfyUI and play a simple VAE and sampler,
so the tests prove the wiring and that nothing outside the faces changes, not ComfyUI's sampling
(checked by hand against a real ComfyUI, see the report). The other host modules are the
stand-ins of comfy_host_standin (see its docstring).
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from comfy_host_standin import (
    _check_outputs,
    comfy_host,  # noqa: F401  (a fixture)
)

from comfy_nodes import NODE_CLASS_MAPPINGS
from comfy_nodes.images import image_batch_to_pils, pil_to_image_batch
from headshot.samples import astronaut_shots, insightface_image


def test_face_restore_from_facerestore_models(comfy_host):
    pytest.importorskip("spandrel")
    from spandrel.architectures.GFPGAN import GFPGAN

    folder = Path(comfy_host.folder_paths.get_folder_paths("facerestore_models")[0])
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save({"params_ema": GFPGAN().state_dict()}, folder / "GFPGANv1.4.pth")  # random weights, real layout
    (folder / "README.txt").write_text("not a model")
    cls = NODE_CLASS_MAPPINGS["HeadshotFaceRestore"]
    assert cls.INPUT_TYPES()["required"]["model_name"][0] == ["GFPGANv1.4.pth"]
    photo = astronaut_shots()["astronaut.png"]
    result = cls().restore(pil_to_image_batch([photo]), "GFPGANv1.4.pth", 0.5, 1.0, "dlib")
    _check_outputs(cls, result)
    image, report = result
    assert "1 face(s) found, 1 restored" in report
    changed = np.any(np.asarray(image_batch_to_pils(image)[0]) != np.asarray(photo), axis=-1)
    ys, xs = np.nonzero(changed)
    assert changed.any() and xs.min() > 100 and ys.max() < 260  # only around the face


# ---------------------------------------------------------------------------------------------
# Face Detailer: our Sampler adapter hands ComfyUI's VAE and sampler the right things


class StandInVAE:
    """STAND-IN for a ComfyUI VAE: encode [B,H,W,3] -> [B,4,H/8,W/8], decode back (blocky)."""

    def __init__(self):
        self.encoded = []

    def encode(self, pixels):
        self.encoded.append(tuple(pixels.shape))
        latent = torch.nn.functional.avg_pool2d(pixels.movedim(-1, 1), 8)
        return torch.cat([latent, torch.zeros_like(latent[:, :1])], dim=1)

    def decode(self, latent):
        return torch.nn.functional.interpolate(latent[:, :3], scale_factor=8, mode="nearest").movedim(1, -1).clamp(0, 1)


@pytest.fixture
def comfy_sampling(comfy_host, monkeypatch):
    """STAND-IN for comfy.sample: records the call and brightens the masked latent by `denoise`."""
    calls = []
    sample = types.ModuleType("comfy.sample")
    sample.fix_empty_latent_channels = lambda model, latent: latent
    sample.prepare_noise = lambda latent, seed, inds=None: torch.randn(latent.shape, generator=torch.manual_seed(seed))

    def run(
        model,
        noise,
        steps,
        cfg,
        sampler_name,
        scheduler,
        positive,
        negative,
        latent_image,
        denoise=1.0,
        noise_mask=None,
        callback=None,
        disable_pbar=False,
        seed=None,
        **rest,
    ):
        calls.append(
            dict(
                model=model,
                steps=steps,
                cfg=cfg,
                sampler_name=sampler_name,
                scheduler=scheduler,
                positive=positive,
                negative=negative,
                denoise=denoise,
                seed=seed,
                mask=noise_mask,
                latent_shape=tuple(latent_image.shape),
                noise_shape=tuple(noise.shape),
            )
        )
        for step in range(steps):
            callback(step, latent_image, latent_image, steps)
        mask = torch.nn.functional.interpolate(noise_mask, size=latent_image.shape[-2:], mode="bilinear")
        return latent_image + denoise * mask

    sample.sample = run
    monkeypatch.setitem(sys.modules, "comfy.sample", sample)
    return calls


def test_face_detailer_drives_comfy_sampling_and_leaves_the_rest_untouched(comfy_sampling):
    from comfy_nodes.detailer import ComfySampler
    from headshot.sampling.protocol import Sampler

    model = types.SimpleNamespace(model=types.SimpleNamespace(model_config=type("SD15", (), {})()))
    positive, negative, vae = [["cond+", {}]], [["cond-", {}]], StandInVAE()
    assert isinstance(ComfySampler(model, positive, negative, vae, "euler", "normal"), Sampler)
    photo = astronaut_shots()["astronaut.png"]
    cls = NODE_CLASS_MAPPINGS["HeadshotFaceDetailer"]
    result = cls().detail(
        pil_to_image_batch([photo, photo]),
        model,
        positive,
        negative,
        vae,
        7,
        12,
        6.5,
        "dpmpp_2m",
        "karras",
        0.45,
        256,
        "largest",
        0,
        "dlib",
    )
    _check_outputs(cls, result)
    image, report = result
    assert report.splitlines() == ["picture 1: 1 face(s) found, 1 repainted", "picture 2: 1 face(s) found, 1 repainted"]
    first, second = comfy_sampling
    assert first["model"] is model and first["positive"] is positive and first["negative"] is negative
    assert (first["steps"], first["cfg"], first["sampler_name"], first["scheduler"]) == (12, 6.5, "dpmpp_2m", "karras")
    assert (first["denoise"], first["seed"], second["seed"]) == (0.45, 7, 8)  # seed + picture index
    assert vae.encoded == [(1, 256, 256, 3)] * 2 and first["latent_shape"] == first["noise_shape"] == (1, 4, 32, 32)
    mask = first["mask"]
    assert mask.shape == (1, 1, 256, 256) and set(torch.unique(mask).tolist()) == {0.0, 1.0}
    out = np.asarray(image_batch_to_pils(image)[0]).astype(int)
    changed = np.any(out != np.asarray(photo), axis=-1)
    ys, xs = np.nonzero(changed)
    face_center = (220, 120)  # dlib's astronaut face box is about (175, 76)-(266, 167)
    assert changed.sum() > 1000 and abs(xs.mean() - face_center[0]) < 20 and abs(ys.mean() - face_center[1]) < 20
    assert not changed[:, :150].any() and not changed[230:].any()  # nothing far from the face moved


def test_face_detailer_nth_from_left_picks_one_face_of_a_group(comfy_sampling):
    from headshot.faces.dlib_backend import DlibFaceAnalyzer
    from headshot.faces.subject import confident_faces
    from headshot.finish.detailer import choose_faces

    group = insightface_image("t1.jpg")
    faces = confident_faces(DlibFaceAnalyzer().detect(np.asarray(group)))
    assert len(faces) >= 2
    leftmost = min(faces, key=lambda f: f.center[0])
    assert choose_faces(faces, "nth from left", 0) == [leftmost]
    assert choose_faces(faces, "nth from left", 99) == [] and len(choose_faces(faces, "all", 0)) == len(faces)


def test_face_detailer_reads_its_lora_file_once_for_all_faces_of_the_batch(comfy_sampling, monkeypatch):
    """Group photo, every face repainted with lora_name: one read of the file (ComfyUI's load_torch_file)
    and one patched model for the whole run, not one per face."""
    reads, patched = [], []
    utils = sys.modules["comfy.utils"]
    monkeypatch.setattr(
        utils, "load_torch_file", lambda path, safe_load=False: reads.append(path) or {"w": path}, raising=False
    )
    sd = types.ModuleType("comfy.sd")  # STAND-IN: LoraLoader's load_lora_for_models gives a patched clone

    def load_lora_for_models(model, clip, lora, strength_model, strength_clip):
        patched.append((model, lora["w"], strength_model))
        return types.SimpleNamespace(base=model, lora=lora["w"]), clip

    sd.load_lora_for_models = load_lora_for_models
    monkeypatch.setitem(sys.modules, "comfy.sd", sd)
    loras = Path(sys.modules["folder_paths"].folder_names_and_paths["loras"][0][0])
    (loras / "person.safetensors").write_bytes(b"stand-in: only its path is used")
    model = types.SimpleNamespace(model=types.SimpleNamespace(model_config=type("SD15", (), {})()))
    group = insightface_image("t1.jpg").convert("RGB")
    cls = NODE_CLASS_MAPPINGS["HeadshotFaceDetailer"]
    assert "person.safetensors" in cls.INPUT_TYPES()["optional"]["lora_name"][0]
    _, report = cls().detail(
        pil_to_image_batch([group, group]),
        model,
        [["c+", {}]],
        [["c-", {}]],
        StandInVAE(),
        0,
        2,
        5.0,
        "euler",
        "normal",
        0.4,
        256,
        "all",
        0,
        "dlib",
        lora_name="person.safetensors",
        lora_strength=0.7,
    )
    repainted = [int(line.split(", ")[1].split()[0]) for line in report.splitlines()]
    assert repainted[0] >= 2 and len(comfy_sampling) == sum(repainted)  # several faces, each sampled ...
    assert reads == [str(loras / "person.safetensors")] and patched == [(model, reads[0], 0.7)]  # ... one read
    assert {id(call["model"]) for call in comfy_sampling} == {id(comfy_sampling[0]["model"])}
    assert comfy_sampling[0]["model"].lora == reads[0]  # the faces were sampled with the LoRA applied
