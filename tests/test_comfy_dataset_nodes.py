"""The Load Photos and Prepare Dataset nodes, run for real through the core.

Load Photos reads a folder (a relative name in ComfyUI's input folder) or an image batch, and its
IS_CHANGED follows the folder's photos; Prepare Dataset runs the real prepare stage (dlib faces)
on the sample photos and reports what it kept and rejected in the CLI's words. ComfyUI's host
modules are the stand-ins of comfy_host_standin (see its docstring).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from comfy_host_standin import (
    _check_outputs,
    comfy_host,  # noqa: F401  (a fixture)
)
from PIL import Image

from comfy_nodes import NODE_CLASS_MAPPINGS
from comfy_nodes.images import pil_to_image_batch
from headshot.samples import astronaut_shots, insightface_image


def test_load_photos_from_a_folder_and_from_an_image_batch(comfy_host, tmp_path):
    folder = comfy_host.base / "input" / "selfies"  # a relative name is looked up in ComfyUI's input folder
    folder.mkdir()
    shots = astronaut_shots()
    for name in ("astronaut.png", "astronaut_wide.jpg", "astronaut_portrait.webp"):
        shots[name].save(folder / name)
    (folder / "notes.txt").write_text("not a photo")
    cls = NODE_CLASS_MAPPINGS["HeadshotLoadPhotos"]
    result = cls().load("selfies", 640)
    _check_outputs(cls, result)
    batch, names, photos_folder = result
    assert names.splitlines() == ["astronaut.png", "astronaut_portrait.webp", "astronaut_wide.jpg"]
    assert batch.shape[0] == 3 and max(batch.shape[1:3]) == 640
    assert Path(photos_folder) == folder.resolve()
    first = cls.IS_CHANGED(folder="selfies", max_side=640)
    assert cls.IS_CHANGED(folder="selfies", max_side=640) == first  # nothing changed: ComfyUI reuses the output
    assert cls.IS_CHANGED(folder="selfies", max_side=512) != first
    shots["astronaut_closeup.jpg"].save(folder / "astronaut_closeup.jpg")
    added = cls.IS_CHANGED(folder="selfies", max_side=640)
    assert added != first
    shots["astronaut_mirrored.jpg"].save(folder / "astronaut.png", format="PNG")  # a photo edited in place
    edited = cls.IS_CHANGED(folder="selfies", max_side=640)
    assert edited not in (first, added)
    (folder / "astronaut_closeup.jpg").unlink()
    assert cls.IS_CHANGED(folder="selfies", max_side=640) not in (first, added, edited)

    given = pil_to_image_batch([shots["astronaut.png"], shots["astronaut_mirrored.jpg"]])
    batch, names, photos_folder = cls().load("", 1024, images=given)
    written = sorted(Path(photos_folder).iterdir())
    assert [p.name for p in written] == names.splitlines() == ["photo_000.png", "photo_001.png"]
    assert np.array_equal(np.asarray(Image.open(written[1])), np.asarray(shots["astronaut_mirrored.jpg"]))


def test_prepare_dataset_on_sample_photos_with_dlib(comfy_host):
    from headshot.dataset.prepare import REPORT_NAME

    photos = comfy_host.base / "input" / "mixed"
    photos.mkdir()
    shots = astronaut_shots()
    for name in ("astronaut.png", "astronaut_closeup.jpg", "astronaut_mirrored.jpg", "astronaut_tilted.jpg"):
        shots[name].save(photos / name)
    insightface_image("Tom_Hanks_54745.png").resize((448, 448)).save(photos / "other_person.png")
    Image.fromarray((np.random.default_rng(0).random((300, 400, 3)) * 255).astype(np.uint8)).save(photos / "noise.png")
    cls = NODE_CLASS_MAPPINGS["HeadshotPrepareDataset"]
    result = cls().prepare(str(photos), "astronaut", "ohwx", "woman", 512, "dlib", "none")
    _check_outputs(cls, result)
    dataset_path, crops, report, sheet = result
    dataset = Path(dataset_path)
    assert dataset == Path(comfy_host.folder_paths.get_output_directory()) / "headshot_jobs" / "datasets" / "astronaut"
    assert (dataset / "dataset.toml").is_file()
    record = json.loads((dataset / REPORT_NAME).read_text())
    assert crops.shape == (record["summary"]["kept"], 512, 512, 3) and record["summary"]["kept"] == 4
    rejected = {line.split()[1]: line.split()[2] for line in report.splitlines() if line.startswith("rejected")}
    assert rejected == {"noise.png": "no_face:", "other_person.png": "different_person:"}
    assert "4 of 6 photos kept as 'woman'" in report  # the CLI's words (headshot.dataset.prepare_report)
    assert sheet.shape[0] == 1 and comfy_host.updates  # ComfyUI's progress bar moved
