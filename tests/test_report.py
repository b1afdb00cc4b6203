"""`headshot report` on a small sweep folder made of real parts: a dataset prepared from real photos,
job folders written by the real JobFolder and loss log, pictures on disk, and evaluation.json files
written by evaluate's own writer. The HTML must hold the banded metrics table and inline pictures,
the PDF real pages."""

from __future__ import annotations

import json
import re

import pytest
from PIL import Image, ImageOps

from headshot.cli import main
from headshot.dataset.prepare import prepare_dataset
from headshot.dataset.prepare_settings import PrepareSettings
from headshot.errors import HeadshotError
from headshot.evaluate.evaluation import Evaluation, write_evaluation
from headshot.evaluate.report_sources import evaluation_json_of, load_report_source
from headshot.evaluate.report_writer import write_report
from headshot.outputs import atomic_write_json
from headshot.samples import astronaut_shots, insightface_image
from headshot.train.job import JobFolder
from headshot.train.loss_curve import draw_loss_curve
from headshot.train.settings import TrainSettings

SEEDS = (1, 2, 3)
RUNS = [  # lr, rank, face distance, CLIP score, faceless pictures
    (1e-4, 4, 0.71, 0.24, 0),
    (5e-4, 4, 0.62, 0.27, 1),
    (1e-3, 8, 0.55, 0.31, 1),
]


def _pictures(folder, tint, astronaut):
    """Three pictures named by style and seed, as generate names them: the same names in every run."""
    folder.mkdir(parents=True)
    for seed in SEEDS:
        image = ImageOps.colorize(astronaut.convert("L").resize((160, 160)), "black", tint)
        image.save(folder / f"studio_{seed:06d}.png")


def _evaluation(out, pictures, distance, clip, faceless):
    entries, thumbs = [], []
    for i, seed in enumerate(SEEDS):
        name = f"studio_{seed:06d}.png"
        found = i >= faceless
        entries.append(
            {
                "image": name,
                "prompt": "a studio headshot of a woman",
                "face_found": found,
                "face_distance": round(distance + 0.01 * i, 4) if found else None,
                "clip_score": round(clip + 0.005 * i, 4),
                "faceless": not found,
            }
        )
        thumbs.append(Image.open(pictures / name).convert("RGB"))
    evaluation = Evaluation(
        entries, [], thumbs, {"reference": {"photos": 3, "kind": "dataset"}, "face_backend": "dlib"}
    )
    write_evaluation(out, evaluation)
    return evaluation.summary()


def _job(folder, dataset, lr, rank, steps=30):
    job = JobFolder(folder)
    folder.mkdir(parents=True)
    settings = TrainSettings(
        dataset_dir=str(dataset), base_model="/models/tiny-sd", out_dir=str(folder), lr=lr, rank=rank, steps=steps
    )
    job.write({"state": "queued", "settings": settings.to_dict(), "steps_done": 0})
    job.emit("status", message=f"training {steps} steps from step 0 on cpu")
    lines = ["step,loss,lr"]
    for step in range(1, steps + 1):
        loss = 0.2 + 0.5 / step + (0.02 if step % 3 else 0.0) - 100 * lr * step / steps
        lines.append(f"{step},{loss:.6f},{lr:.3e}")
        job.emit("step", step=step, total=steps, loss=round(loss, 6), lr=lr)
    (folder / "loss.csv").write_text("\n".join(lines) + "\n")
    draw_loss_curve(folder / "loss.csv", folder / "loss.png")
    job.emit("done", lora=str(folder / "headshot_lora.safetensors"), step=steps)
    job.update(state="done", steps_done=steps, lora="headshot_lora.safetensors")
    return lines[-1].split(",")[1]


@pytest.fixture(scope="module")
def sweep_folder(tmp_path_factory, dlib_analyzer):
    root = tmp_path_factory.mktemp("sweep")
    photos = root / "photos"
    photos.mkdir()
    for name, image in astronaut_shots().items():
        image.save(photos / name)
    insightface_image("t1.jpg").save(photos / "group.jpg")  # several faces: rejected
    dataset = root / "dataset"
    prepare_dataset(photos, dataset, PrepareSettings(tagger="none"), analyzer=dlib_analyzer)
    astronaut = astronaut_shots()["astronaut.png"]
    runs = []
    for i, (lr, rank, distance, clip, faceless) in enumerate(RUNS, 1):
        job_dir = root / "runs" / f"run-{i}"
        final = _job(job_dir, dataset, lr, rank)
        _pictures(job_dir / "pictures", (200, 120 + 40 * i, 90), astronaut)
        summary = _evaluation(job_dir / "evaluation", job_dir / "pictures", distance, clip, faceless)
        runs.append(
            {
                "settings": {"lr": lr, "rank": rank, "alpha": rank, "steps": 30},
                "lora": str(job_dir / "headshot_lora.safetensors"),
                "job": f"runs/run-{i}",
                "images": f"runs/run-{i}/pictures",
                "metrics": {
                    k: summary[k] for k in ("images", "face_distance_mean", "clip_score_mean", "faceless_count")
                },
                "final_loss": float(final),
                "train_seconds": 12.5 * i,
            }
        )
    _pictures(root / "baseline", (120, 120, 220), astronaut)
    baseline = _evaluation(root / "baseline", root / "baseline", 0.93, 0.29, 2)
    sweep = {
        "dataset": "dataset",
        "runs": runs,
        "baseline": {
            "evaluation": "baseline",
            "metrics": {k: baseline[k] for k in ("face_distance_mean", "faceless_count")},
        },
    }
    atomic_write_json(root / "sweep.json", sweep)
    return root


@pytest.fixture(scope="module")
def rendered(sweep_folder):
    html_path, pdf_path = write_report(sweep_folder / "sweep.json", sweep_folder / "report")
    return html_path.read_text(encoding="utf-8"), pdf_path.read_bytes()


def _pdf_pages(data: bytes) -> int:
    try:
        from pypdf import PdfReader
    except ImportError:
        return len(re.findall(rb"/Type\s*/Page(?![s\w])", data))
    import io

    return len(PdfReader(io.BytesIO(data)).pages)


def test_evaluation_is_found_by_its_own_path_or_in_the_job_folder(tmp_path):
    assert evaluation_json_of({"evaluation": "e/evaluation.json"}, tmp_path) == tmp_path / "e/evaluation.json"
    assert evaluation_json_of({"job": "runs/a"}, tmp_path) == tmp_path / "runs/a/evaluation/evaluation.json"
    assert evaluation_json_of({}, tmp_path) is None


def test_sweep_source_reads_every_run_its_job_pictures_and_the_dataset(sweep_folder):
    source = load_report_source(sweep_folder)
    assert [len(r.loss) for r in source.runs] == [30, 30, 30]
    assert [r.job["state"] for r in source.runs] == ["done"] * 3
    assert all(len(r.pictures) == 3 for r in source.runs) and len(source.baseline.pictures) == 3
    assert source.baseline.metrics["clip_score_mean"] == pytest.approx(0.295)  # from its evaluation.json
    assert source.dataset.report["summary"]["rejected"] >= 1
    assert source.notes == []


def test_html_holds_banded_metrics_inline_pictures_and_measured_analysis(rendered):
    html, _ = rendered
    table = html[html.index("<h2>Metrics</h2>") :]
    assert "0.635 (excellent, &lt; 0.8)" in table  # run 2: the two pictures with a face, 0.63 and 0.64
    assert "0.315 (excellent, ≥ 0.30)" in table and "0.245 (fair, 0.20–0.25)" in table
    assert "0.95 (good, 0.8–1.0)" in table  # the baseline: one face found
    assert "2 (excellent, ≤ 2)" in table  # the baseline's faceless pictures
    assert html.count('src="data:image/jpeg;base64,') >= 12 + 1  # 4 rows × 3 seeds, and the contact sheet
    assert html.count('src="data:image/png;base64,') >= 3  # loss per run, overlaid, lr and rank plots
    assert 'src="http' not in html and 'src="/' not in html  # self-contained
    for heading in ("Method and settings", "Data processing", "Training", "Pictures", "Hyper-parameters", "Analysis"):
        assert f"<h2>{heading}" in html
    assert "The lowest face distance: run 3 (lr=1e-03, rank=8, alpha=8), 0.565 (band excellent" in html
    assert "The baseline without a LoRA measured 0.95" in html
    assert "Face distance (mean) fell with every step up in lr (mean per lr, 1e-04: 0.72, 5e-04: 0.635" in html
    assert "rank and alpha changed together in every run" in html
    assert "The learning rate took" not in html  # three values: what the brief asks for
    assert "multiple_faces" in html or "several" in html  # the rejected group photo and why


def test_pdf_has_real_pages(rendered, tmp_path):
    _, pdf = rendered
    assert pdf.startswith(b"%PDF")
    assert _pdf_pages(pdf) >= 4


def test_text_from_files_is_escaped(sweep_folder, tmp_path):
    folder = tmp_path / "evaluated"
    folder.mkdir()
    Image.new("RGB", (64, 64), "white").save(folder / "<script>odd&co.png")
    entry = {
        "image": "<script>odd&co.png",
        "face_found": False,
        "face_distance": None,
        "clip_score": None,
        "faceless": True,
    }
    write_evaluation(folder, Evaluation([entry], [], [Image.new("RGB", (64, 64))], {}))
    html_path, pdf_path = write_report(folder / "evaluation.json", tmp_path / "out")
    html = html_path.read_text(encoding="utf-8")
    assert "<script>" not in html and "&lt;script&gt;odd&amp;co.png" in html
    assert "4 (good, 3–4)" not in html and "1 (excellent, ≤ 2)" in html
    assert _pdf_pages(pdf_path.read_bytes()) >= 1


def test_a_single_job_makes_a_smaller_report(sweep_folder, tmp_path):
    html_path, _ = write_report(sweep_folder / "runs" / "run-2", tmp_path / "out")
    html = html_path.read_text(encoding="utf-8")
    assert "<h2>Training" in html and "<h2>Data processing" in html and "<h2>Metrics" in html
    assert "One run only" not in html  # it has measured facts to state
    assert "Hyper-parameters" not in html


def test_cli_refuses_a_file_that_is_no_report_source_and_never_overwrites(sweep_folder, tmp_path, capsys):
    (tmp_path / "other.json").write_text(json.dumps({"hello": 1}))
    assert main(["report", str(tmp_path / "other.json"), "--out", str(tmp_path / "out")]) == 1
    assert "bad_option" in capsys.readouterr().err
    out = tmp_path / "mine"
    out.mkdir()
    (out / "report.html").write_text("my own notes")
    assert main(["report", str(sweep_folder / "sweep.json"), "--out", str(out)]) == 1
    assert (out / "report.html").read_text() == "my own notes"
    assert main(["report", str(sweep_folder / "sweep.json"), "--out", str(tmp_path / "fresh")]) == 0
    assert (tmp_path / "fresh" / "report.pdf").stat().st_size > 0


def test_missing_source_is_a_clear_error(tmp_path):
    with pytest.raises(HeadshotError) as caught:
        load_report_source(tmp_path)
    assert caught.value.code == "not_found"
