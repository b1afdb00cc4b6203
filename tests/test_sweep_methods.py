"""`headshot sweep --methods`: the method study (one-photo adapter, single-photo LoRA, full-set LoRA, LoRA +
adapter) on the same prompts and seeds as the baseline, recorded in sweep.json, reused when run again, and
compared side by side in the report.

Tiny SD1 model, a tiny FaceID adapter in the real key layout and stand-in buffalo_l ONNX graphs
(tests/faceid_fixtures.py); two training steps at 64 px, one picture per run. They prove the wiring (each
method draws what it should with what it should, and is measured), not which method is better.
"""

from __future__ import annotations

import json
import re

import pytest

pytest.importorskip("diffusers")

import tiny_models  # noqa: E402
from faceid_fixtures import faceid_state, make_buffalo_pack, save_adapter  # noqa: E402

from headshot.cli import main  # noqa: E402
from headshot.samples import astronaut, astronaut_shots  # noqa: E402
from headshot.train import job_reuse  # noqa: E402

METHODS = ("adapter", "single-photo-lora", "lora", "lora+adapter")
FACE_AT = (281, 150, 140)  # where the stand-in detector reports the face, whatever the picture


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    from diffusers import UNet2DConditionModel

    root = tmp_path_factory.mktemp("method_study")
    base = tiny_models.make_tiny_sd1(root / "sd1")
    adapter = save_adapter(
        faceid_state(UNet2DConditionModel.from_pretrained(base / "unet")), root / "ip-adapter-faceid_sd15.safetensors"
    )
    make_buffalo_pack(root / "insightface" / "models" / "buffalo_l", [FACE_AT])
    subset = root / "data" / "img" / "10_ohwx woman"
    subset.mkdir(parents=True)
    for i, name in enumerate(["astronaut.png", "astronaut_closeup.jpg"]):
        astronaut_shots()[name].convert("RGB").resize((128, 128)).save(subset / f"{i}.png")
        (subset / f"{i}.txt").write_text("ohwx woman, smile")
    astronaut().save(root / "me.png")
    return {
        "base": base,
        "adapter": adapter,
        "faces": root / "insightface",
        "data": root / "data",
        "photo": root / "me.png",
    }


def _args(kit, out, *extra):
    return [
        "sweep", str(kit["data"]), "--base-model", str(kit["base"]), "--methods", ",".join(METHODS),
        "--reference", str(kit["photo"]), "--adapter", str(kit["adapter"]),
        "--steps", "2", "--rank", "4", "--lr", "1e-4", "--resolution", "64",
        "--count", "1", "--size", "64x64", "--sample-steps", "2", "--device", "cpu",
        "--face-backend", "insightface", "--face-models", str(kit["faces"]), "--out", str(out), *extra,
    ]  # fmt: skip


@pytest.mark.parametrize(
    "change, words",
    [
        ({"--methods": "adapter,dreambooth"}, "unknown method 'dreambooth'"),
        ({"--methods": "lora,lora"}, "listed twice"),
        ({"--lr": "1e-4,1e-3"}, "one setting"),
        ({"--reference": None}, "--reference PHOTO"),
        ({"--adapter": "no_such_faceid.bin"}, "no_such_faceid.bin not found"),
        ({"--adapter-weight": "3"}, "--adapter-weight 3"),
    ],
)
def test_a_method_study_checks_its_options_before_any_model_loads(kit, tmp_path, capsys, change, words):
    args = _args(kit, tmp_path / "out")
    for option, value in change.items():
        if option not in args:
            args += [option, value]
        elif value is None:
            del args[args.index(option) : args.index(option) + 2]
        else:
            args[args.index(option) + 1] = value
    assert main(args) == 1
    assert words in capsys.readouterr().err
    assert not (tmp_path / "out" / "sweep.json").exists()


def test_adapter_options_without_methods_are_refused(kit, tmp_path, capsys):
    args = _args(kit, tmp_path / "out")
    del args[args.index("--methods") : args.index("--methods") + 2]
    assert main(args) == 1 and "add --methods" in capsys.readouterr().err


def test_four_methods_run_on_the_same_seeds_are_recorded_reused_and_reported(kit, tmp_path, monkeypatch, capsys):
    out = tmp_path / "study"
    launched = []
    real_start = job_reuse.start_training

    def spy(settings, *args, **kwargs):
        launched.append(settings.dataset_dir)
        return real_start(settings, *args, **kwargs)

    monkeypatch.setattr(job_reuse, "start_training", spy)
    assert main(_args(kit, out)) == 0, capsys.readouterr().err
    first = json.loads((out / "sweep.json").read_text())
    runs = first["runs"]
    assert [r["method"] for r in runs] == list(METHODS) and first["methods"] == list(METHODS)
    # two trainings: the full set once (lora and lora+adapter share it) and the single photo's dataset
    assert len(launched) == 2 and str(kit["data"]) in launched
    single = next(d for d in launched if d != str(kit["data"]))
    assert "single-photo" in single and (out / "datasets").is_dir()
    by = {r["method"]: r for r in runs}
    assert by["adapter"]["lora"] is None and by["adapter"]["job"] is None and by["adapter"]["train_seconds"] is None
    assert by["lora+adapter"]["lora"] == by["lora"]["lora"] and by["single-photo-lora"]["lora"] != by["lora"]["lora"]
    for method in ("adapter", "lora+adapter"):
        assert by[method]["adapter"] == kit["adapter"].name and by[method]["adapter_weight"] == 0.8
    for run in runs:
        assert run["state"] == "done" and run["metrics"]["images"] == 1
        assert {"face_distance_mean", "clip_score_mean", "faceless_count"} <= set(run["metrics"])
    # the same prompt and seed as the baseline, and the picture each method drew with what it says
    baseline = json.loads((out / first["baseline"]["evaluation"]).read_text())
    names = [e["image"] for e in baseline["images"]]
    for run in runs:
        evaluation = json.loads((out / run["evaluation"]).read_text())
        assert [e["image"] for e in evaluation["images"]] == names
        results = json.loads((out / run["pictures"] / "linkedin_corporate" / "results.json").read_text())
        entry = results[0] if isinstance(results, list) else results["pictures"][0]
        assert entry["seed"] == 0
        assert bool(entry.get("identity_adapter")) == (run["method"] in ("adapter", "lora+adapter"))
        assert bool(entry["loras"]) == (run["method"] != "adapter")
    assert len({r["pictures"] for r in runs}) == len(METHODS)

    report = (out / "report" / "report.html").read_text()
    assert "Methods side by side" in report and "Methods compared" in report
    assert all(method in report for method in METHODS)
    # the analysis states each method's numbers (tiny random pictures show no face: faceless is what is measured)
    for method in METHODS:
        assert re.search(rf"{re.escape(method)} \(run \d\): faceless pictures \d", report), method
    assert re.search(r"Faceless pictures by method, best first: [\w+-]+ \d", report)
    assert _pdf_pages((out / "report" / "report.pdf").read_bytes()) >= 3
    pictures = sorted(p for p in out.rglob("*.png") if "pictures" in p.parts)
    capsys.readouterr()

    assert main(_args(kit, out)) == 0  # everything finished: nothing trains or draws again
    assert len(launched) == 2
    second = json.loads((out / "sweep.json").read_text())
    assert [r["metrics"] for r in second["runs"]] == [r["metrics"] for r in runs]
    assert [r["train_seconds"] for r in second["runs"]] == [r["train_seconds"] for r in runs]
    assert sorted(p for p in out.rglob("*.png") if "pictures" in p.parts) == pictures
    assert "reused" in capsys.readouterr().err


def _pdf_pages(data: bytes) -> int:
    try:
        from pypdf import PdfReader
    except ImportError:
        return len(re.findall(rb"/Type\s*/Page(?![s\w])", data))
    import io

    return len(PdfReader(io.BytesIO(data)).pages)
