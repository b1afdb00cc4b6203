#!/usr/bin/env python
"""Check one photo (IP-Adapter FaceID through the WebUI's ControlNet) on a real AUTOMATIC1111 built by the team's
shared/hosts/a1111_setup.sh, offline on the CPU. It is not a test: it needs the built host.

1. Stand-in model files, random weights in the real layouts (wiring, not likeness), outside this repository:

       .venv/bin/python tools/webui_faceid_check.py models --webui /tmp/a1111 [--plus]

   writes models/ControlNet/ip-adapter-faceid_sd15.bin (full-size SD1.5: cross_attention_dim 768, the nested
   {"image_proj", "ip_adapter"} torch file sd-webui-controlnet's IPAdapterModel.load reads), with --plus also
   ip-adapter-faceid-plusv2_sd15.bin and annotator/downloads/clip_vision/clip_h.pth (CLIP-H vision, random,
   fp16 to halve the file: the extension loads it with strict=False and casts), and the buffalo_l ONNX
   stand-ins (one fixed face + an ArcFace-shaped recognizer) in the extension's
   annotator/downloads/insightface/models/buffalo_l. The extension's FaceID preprocessor needs the insightface
   package in the WebUI's venv: /tmp/a1111v/bin/pip install insightface==0.7.3 onnxruntime (builds here).

   On Forge (shared/hosts/a1111_setup.sh forge) add --forge: the same FaceID file (fp16, as h94's) in
   models/ControlNet, buffalo_l in models/insightface/models/buffalo_l (its InsightFaceLoader's root) and a random
   CLIP-H at models/ControlNetPreprocessor/CLIP-ViT-H-14.safetensors (its "InsightFace+CLIP-H (IPAdapter)"
   preprocessor loads it for plain FaceID too, and would download it from Hugging Face when absent). Forge's venv
   needs insightface as well: /tmp/forgev/bin/pip install --no-deps --only-binary=:all: onnx==1.14.1, then
   "onnxruntime<1.21" easydict prettytable cython scikit-learn albumentations==1.4.3 with a constraints file
   of its pip freeze, then --no-deps insightface==0.7.3 (protobuf stays 3.20.0; onnx only warns).

2. With the WebUI running (shared/hosts/a1111_server.sh start --skip-install), press the tab's own buttons:

       .venv/bin/python tools/webui_tab_walkthrough.py --one-photo PHOTO_A --one-photo PHOTO_B --out /tmp/x
       .venv/bin/python tools/webui_faceid_check.py compare /tmp/x

   The walkthrough generates one picture per reference photo at FaceID weight 2 and one with PHOTO_A at
   weight 0 (the unit is sent, its model contributes nothing); `compare` prints the mean pixel differences
   and `log` greps the WebUI log for the extension's FaceID lines:

       .venv/bin/python tools/webui_faceid_check.py log /tmp/a1111-run.log

   On Forge: --url http://127.0.0.1:7862 --prefix forge, and the log is /tmp/forge-run.log. The stand-in detector
   reports one face of 160 px on its 640 px canvas whatever the photo, and our own screening finds that pack too on
   Forge (models/insightface): give reference photos of 512 px or more, or a small photo is refused as too small.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FACE = (320.0, 260.0, 160.0)  # the stand-in detector's one face (x, y, width) on its 640 px canvas


def sd15_unet():
    """The full-size SD1.5 UNet (diffusers layout) on the meta device: only its attention shapes are read."""
    import torch
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        return UNet2DConditionModel(cross_attention_dim=768, attention_head_dim=8, sample_size=64)


def fp16(state: dict) -> dict:
    """h94's FaceID files hold fp16 tensors (ip-adapter-faceid_sd15.bin: 48 M values, 96 MB). It matters on Forge
    on the CPU: it builds the adapter's Linear layers inside torch.inference_mode and assigns the loaded tensors
    to .weight.data; an fp16 file is cast there (new inference tensors), an fp32 one is kept as is, and torch
    2.14 then fails with "Inference tensors do not track version counter"."""
    return {k: v.half() for k, v in state.items()}


def make_models(webui: Path, plus: bool) -> None:
    sys.path[:0] = [str(REPO / "tests"), str(REPO)]
    import torch
    from faceid_fixtures import faceid_state, make_buffalo_pack, save_adapter

    ext = webui / "extensions" / "sd-webui-controlnet"
    if not ext.is_dir():
        raise SystemExit(f"{ext} is missing: install sd-webui-controlnet there first")
    unet = sd15_unet()
    models = webui / "models" / "ControlNet"
    print(save_adapter(fp16(faceid_state(unet, seed=1)), models / "ip-adapter-faceid_sd15.bin"))
    pack = make_buffalo_pack(ext / "annotator" / "downloads" / "insightface" / "models" / "buffalo_l", [FACE])
    print(pack, sorted(p.name for p in pack.iterdir()))
    if plus:
        print(
            save_adapter(
                fp16(faceid_state(unet, plus=True, clip_width=1280, seed=2)),
                models / "ip-adapter-faceid-plusv2_sd15.bin",
            )
        )
        target = ext / "annotator" / "downloads" / "clip_vision" / "clip_h.pth"
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.save(clip_h_state(), str(target))
        print(target)


def make_forge_models(webui: Path, plus: bool) -> None:
    """Forge's places: its InsightFaceLoader runs FaceAnalysis("buffalo_l", root=models/insightface), and its
    "InsightFace+CLIP-H (IPAdapter)" preprocessor loads models/ControlNetPreprocessor/CLIP-ViT-H-14.safetensors
    (downloaded from h94/IP-Adapter when absent) even for plain FaceID, so the encoder is always written."""
    sys.path[:0] = [str(REPO / "tests"), str(REPO)]
    from faceid_fixtures import faceid_state, make_buffalo_pack, save_adapter
    from safetensors.torch import save_file

    if not (webui / "modules_forge").is_dir():
        raise SystemExit(f"{webui} is not a Forge checkout (no modules_forge/)")
    unet = sd15_unet()
    models = webui / "models" / "ControlNet"
    print(save_adapter(fp16(faceid_state(unet, seed=1)), models / "ip-adapter-faceid_sd15.bin"))
    if plus:
        print(
            save_adapter(
                fp16(faceid_state(unet, plus=True, clip_width=1280, seed=2)),
                models / "ip-adapter-faceid-plusv2_sd15.bin",
            )
        )
    pack = make_buffalo_pack(webui / "models" / "insightface" / "models" / "buffalo_l", [FACE])
    print(pack, sorted(p.name for p in pack.iterdir()))
    target = webui / "models" / "ControlNetPreprocessor" / "CLIP-ViT-H-14.safetensors"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        save_file(clip_h_state(), str(target) + ".part")
        Path(str(target) + ".part").replace(target)
    print(target)


def clip_h_state() -> dict:
    """A random CLIP ViT-H/14 image encoder (h94/IP-Adapter's models/image_encoder: transformers'
    CLIPVisionModelWithProjection keys), fp16 to halve the file; built from the shapes on the meta device, so
    it takes seconds. Layer norms start at 1/0, everything else small noise."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(  # annotator/clipvision's config_clip_h, Forge's CLIP_VISION_H
        hidden_size=1280,
        intermediate_size=5120,
        num_hidden_layers=32,
        num_attention_heads=16,
        image_size=224,
        patch_size=14,
        projection_dim=1024,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
    )
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in CLIPVisionModelWithProjection(config).state_dict().items()}
    g = torch.Generator().manual_seed(3)
    state = {}
    for key, shape in shapes.items():
        if "position_ids" in key:
            continue
        if "norm" in key or "layrnorm" in key:
            value = torch.ones(shape) if key.endswith("weight") else torch.zeros(shape)
        else:
            value = torch.randn(shape, generator=g) * 0.02
        state[key] = value.half().contiguous()
    return state


def compare(folder: Path) -> None:
    import numpy as np
    from PIL import Image

    pictures = sorted(folder.glob("*.png"))
    arrays = {p.stem: np.asarray(Image.open(p).convert("RGB"), dtype=np.float64) for p in pictures}
    names = sorted(arrays)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if arrays[a].shape == arrays[b].shape:
                print(f"mean |{a} - {b}| = {np.abs(arrays[a] - arrays[b]).mean():.2f} (of 255)")


def log(path: Path) -> None:
    keys = ("ip-adapter", "ipadapter", "faceid", "face_id", "insightface", "controlnet", "applied", "error")
    for line in path.read_text(errors="replace").splitlines():
        if any(k in line.lower() for k in keys):
            print(line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("models")
    m.add_argument("--webui", type=Path, default=Path("/tmp/a1111"))
    m.add_argument("--plus", action="store_true", help="also Plus v2 (and on A1111 the CLIP-H encoder, 1.3 GB)")
    m.add_argument("--forge", action="store_true", help="Forge's places (models/insightface, CLIP-H always)")
    sub.add_parser("compare").add_argument("folder", type=Path)
    sub.add_parser("log").add_argument("path", type=Path)
    args = parser.parse_args()
    if args.cmd == "models":
        (make_forge_models if args.forge else make_models)(args.webui, args.plus)
    elif args.cmd == "compare":
        compare(args.folder)
    else:
        log(args.path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
