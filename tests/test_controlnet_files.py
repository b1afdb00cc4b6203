"""`--controlnet NAME`: found in --controlnet-dir, ComfyUI's models/controlnet, A1111's models/ControlNet."""

from __future__ import annotations

import pytest

from headshot.errors import HeadshotError
from headshot.generate.controlnet_files import controlnet_dirs, find_controlnet


def test_the_folders_searched_are_the_options_then_the_hosts_then_under_the_current_folder(tmp_path):
    dirs = controlnet_dirs(
        [tmp_path / "mine"], environ={"COMFYUI_PATH": "/comfy", "A1111_PATH": "/webui"}, cwd=tmp_path
    )
    assert [str(d) for d in dirs] == [
        str(tmp_path / "mine"),
        "/comfy/models/controlnet",
        "/webui/models/ControlNet",
        str(tmp_path / "models/controlnet"),
        str(tmp_path / "models/ControlNet"),
    ]


def test_names_match_files_with_or_without_extension_and_diffusers_folders(tmp_path):
    comfy = tmp_path / "ComfyUI" / "models" / "controlnet"
    webui = tmp_path / "webui" / "models" / "ControlNet"
    for folder in (comfy, webui):
        folder.mkdir(parents=True)
    (comfy / "control_v11p_sd15_openpose.safetensors").write_bytes(b"x")
    (webui / "openpose_sdxl").mkdir()
    (webui / "openpose_sdxl" / "config.json").write_text("{}")
    (webui / "notes.txt").write_text("not a model")
    dirs = controlnet_dirs(
        environ={"COMFYUI_PATH": str(tmp_path / "ComfyUI"), "A1111_PATH": str(tmp_path / "webui")}, cwd=tmp_path
    )
    assert find_controlnet("control_v11p_sd15_openpose", dirs) == comfy / "control_v11p_sd15_openpose.safetensors"
    assert find_controlnet("CONTROL_V11P_SD15_OPENPOSE.safetensors", dirs).parent == comfy
    assert find_controlnet("openpose_sdxl", dirs) == webui / "openpose_sdxl"
    assert find_controlnet(str(webui / "openpose_sdxl"), []) == webui / "openpose_sdxl"  # a path as is
    with pytest.raises(HeadshotError) as info:
        find_controlnet("notes", dirs)
    message = str(info.value)
    assert info.value.code == "controlnet_missing" and str(comfy) in message and str(webui) in message
    assert "control_v11p_sd15_openpose.safetensors, openpose_sdxl" in message and "notes.txt" not in message
    assert "--controlnet-dir" in message and "(does not exist)" in message  # the cwd folders are not there
