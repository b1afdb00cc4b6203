"""The page at `/` and the API calls only it needs (whose key this is, a training job's loss points, a generation
job's pictures as one zip), then the whole page in real headless Chromium: Debian's chromium, driven by
playwright with `executable_path` (no browser is downloaded), against a real `headshot serve` with one worker
process and a tiny random SD1 model. The tiny model draws no faces, so every picture is faceless and unscored,
and the page must say so."""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import zipfile
from pathlib import Path

import pytest
import tiny_models
from fastapi.testclient import TestClient
from PIL import Image
from serve_process import ServeProcess, make_user
from service_kit import bearer

from headshot.samples import astronaut_shots
from headshot.service.app import create_app
from headshot.service.auth import add_user
from headshot.service.config import ServiceConfig
from headshot.service.db import Job, Model, Picture, Store
from headshot.service.tasks import JobQueue

CHROMIUM = os.environ.get("HEADSHOT_CHROMIUM") or next(
    filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None
)
SLOW = 600_000  # ms: each stage takes seconds on an idle machine, minutes on a crowded one (a bound, not a wait)
SCREENSHOT = os.environ.get("HEADSHOT_PAGE_SCREENSHOT")  # where to keep the run's screenshot (docs/ is made so)


@pytest.fixture
def service(tmp_path):
    config = ServiceConfig(data_dir=tmp_path, base_model=str(tmp_path), face_backend="dlib")
    store = Store(config.database)
    keys = {name: add_user(store, name)[0] for name in ("alice", "bob")}
    client = TestClient(create_app(config, store, JobQueue(config, store)), raise_server_exceptions=False)
    return config, store, client, keys


def _add_job(store: Store, job_id: str, kind: str, model_id: str = "mdl_a", user: str = "alice") -> None:
    with store.session() as s:
        if s.get(Model, model_id) is None:
            s.add(Model(id=model_id, user_id=user, instance_name="jane", class_type="woman", trigger="ohwx",
                        base_model="base", status="ready", training_job_id="job_train"))  # fmt: skip
        s.add(Job(id=job_id, user_id=user, kind=kind, model_id=model_id, request="{}", status="succeeded"))


def test_the_page_and_its_files_are_served_with_a_policy_that_runs_only_them(service):
    config, _, client, keys = service
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src" not in page.headers["content-security-policy"]  # default-src 'self' covers scripts
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert '<script src="/static/app.js"' in page.text and "<script>" not in page.text
    for name in ("photo_fit.js", "app.js"):  # each script the page loads, none fetching from elsewhere
        assert f'<script src="/static/{name}"' in page.text
        script = client.get(f"/static/{name}")
        assert script.status_code == 200 and "javascript" in script.headers["content-type"]
        assert "http" not in script.text.replace("http://www.w3.org/2000/svg", "")
    assert "sessionStorage" in client.get("/static/app.js").text
    assert client.get("/static/style.css").headers["content-type"].startswith("text/css")
    missing = client.get("/static/nothing.js")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert "/" not in client.get("/openapi.json").json()["paths"]
    me = client.get("/v1/me", headers=bearer(keys["bob"])).json()
    assert me["user_id"] == "bob"  # and what the page fits photos to before sending them:
    assert me["uploads"] == {name: getattr(config.limits, name) for name in me["uploads"]}
    assert set(me["uploads"]) == {"max_body_bytes", "max_photo_bytes", "max_photo_pixels", "min_photos", "max_photos"}
    assert client.get("/v1/me").status_code == 401


def test_loss_points_come_from_the_trainers_loss_log_thinned_to_a_page_sized_curve(service):
    config, store, client, keys = service
    _add_job(store, "job_train", "train")
    log = config.data_dir / "models" / "mdl_a" / "training" / "loss.csv"
    log.parent.mkdir(parents=True)
    rows = "".join(f"{step},{1 / step:.6f},0.0001\n" for step in range(1, 1201))
    log.write_text("step,loss,lr\n" + rows + "1201,", encoding="utf-8")  # the last line cut mid-write
    points = client.get("/v1/jobs/job_train/loss", headers=bearer(keys["alice"])).json()["points"]
    assert 400 <= len(points) <= 500 and points[0] == {"step": 1, "loss": 1.0}
    assert points[-1]["step"] == 1200 and [p["step"] for p in points] == sorted(p["step"] for p in points)
    assert client.get("/v1/jobs/job_train/loss", headers=bearer(keys["bob"])).status_code == 404
    _add_job(store, "job_draw", "generate")
    wrong = client.get("/v1/jobs/job_draw/loss", headers=bearer(keys["alice"]))
    assert wrong.status_code == 422 and wrong.json()["error"]["code"] == "wrong_job_kind"


def test_the_zip_holds_a_jobs_pictures_best_first_with_their_ranking_and_only_for_their_owner(service):
    config, store, client, keys = service
    _add_job(store, "job_draw", "generate")
    folder = config.data_dir / "images" / "job_draw"
    folder.mkdir(parents=True)
    with store.session() as s:
        for position, (seed, score, faceless) in enumerate([(7, 0.81, False), (3, 0.42, False), (9, None, True)]):
            Image.new("RGB", (8, 8), (seed * 20, 0, 0)).save(folder / f"{seed}.png")
            s.add(Picture(id=f"img_{seed}", job_id="job_draw", user_id="alice", model_id="mdl_a",
                          path=f"images/job_draw/{seed}.png", seed=seed, identity_score=score, faceless=faceless,
                          position=position))  # fmt: skip
    response = client.get("/v1/jobs/job_draw/images.zip", headers=bearer(keys["alice"]))
    assert response.status_code == 200 and response.headers["content-type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    assert archive.namelist() == ["01_seed7.png", "02_seed3.png", "03_seed9.png", "ranking.csv"]
    assert Image.open(archive.open("01_seed7.png")).getpixel((0, 0)) == (140, 0, 0)
    ranking = list(csv.DictReader(io.StringIO(archive.read("ranking.csv").decode())))
    assert [(r["file"], r["identity_score"], r["faceless"]) for r in ranking] == [
        ("01_seed7.png", "0.81", "False"),
        ("02_seed3.png", "0.42", "False"),
        ("03_seed9.png", "", "True"),
    ]
    assert client.get("/v1/jobs/job_draw/images.zip", headers=bearer(keys["bob"])).status_code == 404
    _add_job(store, "job_empty", "generate")
    empty = client.get("/v1/jobs/job_empty/images.zip", headers=bearer(keys["alice"]))
    assert empty.status_code == 409 and empty.json()["error"]["code"] == "no_pictures_yet"
    _add_job(store, "job_train", "train")
    assert client.get("/v1/jobs/job_train/images.zip", headers=bearer(keys["alice"])).status_code == 422


@pytest.fixture(scope="module")
def tiny_sd1(tmp_path_factory):
    return tiny_models.make_tiny_sd1(tmp_path_factory.mktemp("tiny_sd1"))


def _photos(folder: Path) -> list[Path]:
    """Four framings of one face, and a photo with no face (noise) that screening must reject with its reason."""
    import numpy as np

    folder.mkdir()
    paths = []
    for name, image in list(astronaut_shots().items())[:4]:
        paths.append(folder / (Path(name).stem + ".png"))
        image.convert("RGB").save(paths[-1])
    paths.append(folder / "noise.png")
    Image.fromarray((np.random.default_rng(1).random((200, 200, 3)) * 255).astype("uint8")).save(paths[-1])
    return paths


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (apt-get install chromium, or set HEADSHOT_CHROMIUM)")
def test_a_person_trains_then_draws_through_the_page_in_headless_chromium(tiny_sd1, tmp_path):
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra")
    key = make_user(tmp_path / "data", "alice")
    photos = _photos(tmp_path / "photos")
    # 1.5 MB a request: the five photos (1.9 MB, 2.6 MB as base64) fit only once the page has made some smaller
    serve = ServeProcess(tmp_path / "data", tiny_sd1, workers=1, extra=["--max-body-mb", "1.5"])
    with serve as server, playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        problems: list[str] = []
        page.on("pageerror", lambda exc: problems.append(str(exc)))
        # a refused call shows in the console as "Failed to load resource"; anything else logged as an error counts
        page.on("console", lambda m: m.type == "error" and "load resource" not in m.text and problems.append(m.text))
        page.set_default_timeout(120_000)
        page.goto(server.url + "/")

        page.fill("#api-key", "hsk_000000000000_not-a-key")
        page.click("#key-form button[type=submit]")  # the API's own sentence, not a generic failure
        page.wait_for_selector("#key-error:has-text('this API key is not valid')")
        page.fill("#api-key", key)
        page.click("#key-form button[type=submit]")
        page.wait_for_selector("#key-status:has-text('Signed in as alice')")
        assert page.evaluate("sessionStorage.getItem('headshot.apiKey')") == key

        page.set_input_files("#photos", [str(p) for p in photos[:2]])
        page.click("#train-button")
        page.wait_for_selector("#train-error:has-text('2 photo(s) sent; send 3–20 photos')")
        page.set_input_files("#photos", [str(p) for p in photos[2:]])
        assert page.locator("#photo-list li").count() == 5
        page.fill("#instance-name", "jane")
        page.select_option("#class-type", "woman")
        page.click("#train-section summary")
        page.fill("#train-steps", "5")
        page.fill("#train-resolution", "64")
        page.fill("#train-rank", "4")
        page.click("#train-button")

        page.wait_for_selector("#photo-count:has-text('sent smaller, as JPEG')")
        assert re.search(r"5 photo\(s\) chosen, 1\.\d MB\. [1-4] sent smaller", page.inner_text("#photo-count"))
        page.wait_for_selector("#rejected-photos li:has-text('noise.png')", timeout=SLOW)  # the file's own name
        assert "photo-05.png: no face found" in page.inner_text("#rejected-photos")
        assert "[no_face]" in page.inner_text("#rejected-photos")
        assert "4 photo(s) kept for training, 1 not used" in page.inner_text("#kept-photos")
        page.wait_for_function(  # a step of the run shown while it trains, the bar following it
            "() => /Training: step [1-9][0-9]* of 5/.test(document.getElementById('training-status').textContent)"
            " && document.getElementById('training-progress').value > 0",
            timeout=SLOW,
        )
        page.wait_for_selector("#training-status:has-text('Training finished'), #training-error", timeout=SLOW)
        trained = page.inner_text("#training-status")
        assert "your model is ready" in trained, (trained, page.inner_text("#training-error"), server.log())
        assert page.evaluate("() => document.getElementById('training-progress').value") == 5
        assert page.locator("#loss-curve polyline").count() == 1
        assert "at step 5" in page.inner_text("#loss-caption")
        assert page.inner_text("#model option:checked") == "jane (ready)"

        page.select_option("#style", "linkedin_corporate")
        page.fill("#num-images", "2")
        page.click("#generate-section summary")
        for field, value in (("#gen-width", "64"), ("#gen-height", "64"), ("#gen-steps", "2"), ("#gen-seed", "5")):
            page.fill(field, value)
        page.click("#generate-button")
        page.wait_for_selector("#generate-status:has-text('2 picture(s) ready')", timeout=SLOW)
        page.wait_for_function("() => [...document.querySelectorAll('#gallery img')].every(i => i.naturalWidth === 64)")
        captions = page.locator("#gallery figcaption").all_inner_texts()
        assert [c.split(" · ")[0] for c in captions] == ["#1", "#2"]
        assert all("no face found, set aside" in c for c in captions) and {c[-1] for c in captions} == {"5", "6"}

        with page.expect_download() as download:
            page.click("#download-zip")
        archive = zipfile.ZipFile(download.value.path())
        assert sorted(archive.namelist())[-1] == "ranking.csv" and len(archive.namelist()) == 3
        shot = tmp_path / "service-page.png"
        page.screenshot(path=str(shot), full_page=True)
        if SCREENSHOT:
            shutil.copyfile(shot, SCREENSHOT)

        page.once("dialog", lambda dialog: dialog.accept())
        page.click("#delete-model")
        page.wait_for_selector("#delete-status:has-text('Deleted \"jane\"')")
        assert page.inner_text("#model option") == "no models yet: train one above"
        assert page.locator("#gallery li").count() == 0
        browser.close()
        assert problems == [], problems
    assert not list((tmp_path / "data" / "models").glob("mdl_*")), server.log()
