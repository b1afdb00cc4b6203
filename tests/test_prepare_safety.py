"""prepare never writes outside --out, never touches files it did not write, and fails early and whole.

Real photos (scikit-image's astronaut, the insightface wheel's images) and dlib's real models, offline.
Disk full is simulated by making the atomic writer's rename fail with ENOSPC: filling a real disk
is not something a test suite may do.
"""

from __future__ import annotations

import errno
import gc
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image

from headshot.dataset.prepare import prepare_dataset
from headshot.dataset.prepare_settings import PrepareSettings
from headshot.errors import HeadshotError
from headshot.outputs import FolderLock
from headshot.samples import astronaut_shots, write_sample_photos

SHOTS = ("astronaut.png", "astronaut_closeup.jpg", "astronaut_wide.jpg")


@pytest.fixture
def photos(tmp_path):
    """Three shots of one person: a set that keeps photos, so every writing path runs."""
    folder = tmp_path / "photos"
    folder.mkdir()
    shots = astronaut_shots()
    for name in SHOTS:
        shots[name].save(folder / name, quality=95)
    return folder


def _run(folder, out, analyzer, progress=None, **options):
    options.setdefault("class_word", "woman")
    return prepare_dataset(folder, out, PrepareSettings(tagger="none", **options), analyzer=analyzer, progress=progress)


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _headshot(*args):
    return subprocess.run([sys.executable, "-m", "headshot", *args], capture_output=True, text=True, timeout=180)


@contextmanager
def _deadline(seconds: float):
    """Fail instead of hanging: opening a FIFO blocks until a writer comes, which no one will."""

    def expired(signum, frame):
        raise TimeoutError(f"still running after {seconds}s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# --- item 2: user strings that become paths ------------------------------------------------------


@pytest.mark.parametrize(
    "option, value",
    [
        ("class_word", "/../../../X"),
        ("class_word", "man/woman"),
        ("trigger", "a" * 101),  # one word, but longer than any file name part may be
    ],
)
def test_names_that_would_leave_the_folder_are_refused(photos, tmp_path, dlib_analyzer, option, value):
    with pytest.raises(HeadshotError) as caught:
        _run(photos, tmp_path / "out", dlib_analyzer, **{option: value})
    assert caught.value.code == "bad_name"
    assert {"class_word": "--class", "trigger": "--trigger"}[option] in str(caught.value)
    assert not (tmp_path / "out").exists() and not (tmp_path / "X").exists()


def test_cli_class_with_dot_dot_writes_nothing_outside_out(photos, tmp_path):
    run = _headshot(
        "prepare",
        str(photos),
        "--out",
        str(tmp_path / "out"),
        "--class",
        "/../../../X",
        "--face-backend",
        "dlib",
        "--tagger",
        "none",
    )
    assert run.returncode == 1
    assert "--class" in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]


# --- item 8: options checked before any model loads ------------------------------------------------


@pytest.mark.parametrize(
    "options, option, code",
    [
        ({"face_share": 0.0}, "--face-share", "bad_option"),
        ({"face_share": 1.5}, "--face-share", "bad_option"),
        ({"face_share": float("nan")}, "--face-share", "bad_option"),
        ({"repeats": 0}, "--repeats", "bad_option"),
        ({"min_face_px": 0}, "--min-face", "bad_option"),
        ({"resolution": 100_000}, "--resolution", "bad_option"),
        ({"resolution": 500}, "--resolution", "bad_option"),
        ({"reference": [Path("/nowhere/me.jpg")]}, "--reference", "not_found"),
        ({"keep": {"not_in_the_folder.jpg"}}, "--keep", "bad_option"),
    ],
)
def test_bad_option_fails_before_any_model_loads(photos, tmp_path, options, option, code):
    """The insightface backend has no model files here: reaching the model load would fail differently."""
    with pytest.raises(HeadshotError) as caught:  # building the settings checks the values, prepare the files
        settings = PrepareSettings(tagger="none", face_backend="insightface", face_model_dirs=[tmp_path], **options)
        prepare_dataset(photos, tmp_path / "out", settings)
    assert (caught.value.code, str(caught.value).split(" ")[0]) == (code, option), str(caught.value)
    assert "\n" not in str(caught.value)
    if code == "not_found":
        assert "not found" in str(caught.value)
    assert not (tmp_path / "out").exists()


# --- item 3: only our own files --------------------------------------------------------------------


def test_a_report_we_did_not_write_is_refused_before_screening(photos, tmp_path, dlib_analyzer):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text("my own notes")
    calls = []
    with pytest.raises(HeadshotError) as caught:
        _run(photos, out, dlib_analyzer, progress=lambda *a: calls.append(a))
    assert caught.value.code == "would_overwrite" and "report.json" in str(caught.value)
    assert (out / "report.json").read_text() == "my own notes"
    assert calls == []  # refused before any photo was read


def test_files_of_the_user_under_img_are_never_deleted(photos, tmp_path, dlib_analyzer):
    mine = tmp_path / "out" / "img" / "5_my set" / "holiday.png"
    mine.parent.mkdir(parents=True)
    astronaut_shots()["astronaut.png"].save(mine)
    before = mine.read_bytes()
    with pytest.raises(HeadshotError) as caught:
        _run(photos, tmp_path / "out", dlib_analyzer)
    assert caught.value.code == "would_overwrite" and "holiday.png" in str(caught.value)
    assert mine.read_bytes() == before


def test_a_rerun_replaces_its_own_files_and_keeps_the_users(photos, tmp_path, dlib_analyzer):
    out = tmp_path / "out"
    _run(photos, out, dlib_analyzer, repeats=10)
    (out / "my_notes.txt").write_text("keep me")
    _run(photos, out, dlib_analyzer, repeats=12)
    assert [p.name for p in (out / "img").iterdir()] == ["12_ohwx woman"]
    assert (out / "my_notes.txt").read_text() == "keep me"
    assert json.loads((out / "report.json").read_text())["dataset_dir"] == "img/12_ohwx woman"


def test_a_manifest_naming_files_outside_the_folder_is_not_followed(photos, tmp_path, dlib_analyzer):
    """The manifest is data from the folder: a tampered one must not make a re-run delete elsewhere.
    (A guard for the manifest itself; the old code had none to tamper with.)"""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / ".headshot-manifest.json").write_text(json.dumps({"files": ["../victim.txt"]}))
    _run(photos, out, dlib_analyzer)
    assert victim.read_text() == "precious"


def test_out_equal_to_input_leaves_the_photos_alone_and_never_judges_its_own_files(photos, dlib_analyzer):
    before = _digest(photos)
    _run(photos, photos, dlib_analyzer)
    second = _run(photos, photos, dlib_analyzer)
    assert sorted(p.source for p in second.photos) == sorted(SHOTS)  # not report.json, the sheet or dataset.toml
    assert {name: digest for name, digest in _digest(photos).items() if name in before} == before
    assert len(second.kept) == len(SHOTS)


def test_sample_photos_never_overwrite_a_users_photo(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "astronaut.png").write_bytes(b"my own picture")
    with pytest.raises(HeadshotError) as caught:
        write_sample_photos(folder)
    assert caught.value.code == "would_overwrite"
    assert (folder / "astronaut.png").read_bytes() == b"my own picture"
    assert sorted(p.name for p in folder.iterdir()) == ["astronaut.png"]  # refused before writing any


# --- item 4: atomic outputs, early checks ----------------------------------------------------------


def test_disk_full_while_writing_the_report_leaves_the_previous_one_whole(photos, tmp_path, dlib_analyzer, monkeypatch):
    out = tmp_path / "out"
    _run(photos, out, dlib_analyzer, repeats=10)
    previous = (out / "report.json").read_bytes()
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if Path(dst).name == "report.json":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(HeadshotError) as caught:
        _run(photos, out, dlib_analyzer, repeats=12)
    assert caught.value.code == "disk_full"
    assert (out / "report.json").read_bytes() == previous
    assert not [p for p in out.rglob("*") if ".tmp" in p.name or p.name.startswith(".headshot-staging")]


def test_an_output_folder_that_cannot_be_written_fails_before_screening(photos, tmp_path, dlib_analyzer):
    (tmp_path / "a_file").write_text("x")
    calls = []
    with pytest.raises(HeadshotError) as caught:
        _run(photos, tmp_path / "a_file" / "out", dlib_analyzer, progress=lambda *a: calls.append(a))
    assert caught.value.code == "not_writable" and "--out" in str(caught.value)
    assert calls == []


def test_a_name_that_is_not_utf8_gets_a_reason_and_a_valid_report(photos, tmp_path, dlib_analyzer):
    odd = photos / os.fsdecode(b"caf\xe9.jpg")  # Latin-1 bytes, as old cameras and zip files write them
    astronaut_shots()["astronaut_mirrored.jpg"].save(odd)
    result = _run(photos, tmp_path / "out", dlib_analyzer)
    report = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    entry = next(p for p in report["photos"] if p["source"].startswith("caf"))
    assert (entry["source"], entry["status"], entry["reason"]) == ("caf\ufffd.jpg", "rejected", "bad_file_name")
    assert "rename" in entry["message"]
    assert len(result.kept) == len(SHOTS)


# --- item 5: one writer per folder ---------------------------------------------------------------


def test_a_busy_dataset_folder_is_refused_naming_the_holder(photos, tmp_path, dlib_analyzer):
    calls = []
    with FolderLock(tmp_path / "out", "dataset folder"):
        with pytest.raises(HeadshotError) as caught:
            _run(photos, tmp_path / "out", dlib_analyzer, progress=lambda *a: calls.append(a))
    assert caught.value.code == "folder_busy" and f"process {os.getpid()}" in str(caught.value)
    assert calls == [] and not (tmp_path / "out" / "report.json").exists()


def test_cli_prepare_into_a_folder_another_process_holds_fails_at_once(photos, tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
        import sys, time
        from headshot.outputs import FolderLock
        with FolderLock({str(tmp_path / "out")!r}, "dataset folder"):
            print("holding", flush=True)
            sys.stdin.read()
        """),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        run = _headshot(
            "prepare",
            str(photos),
            "--out",
            str(tmp_path / "out"),
            "--face-backend",
            "dlib",
            "--tagger",
            "none",
            "--class",
            "woman",
        )
    finally:
        holder.communicate("", timeout=30)
    assert run.returncode == 1
    assert "folder_busy" in run.stderr and f"process {holder.pid}" in run.stderr
    assert not (tmp_path / "out" / "report.json").exists()


# --- item 9: odd entries reported, crops streamed --------------------------------------------------


def test_links_pipes_and_sockets_are_reported_with_a_reason(photos, tmp_path, dlib_analyzer):
    os.symlink("loop.jpg", photos / "loop.jpg")
    os.symlink(tmp_path / "gone.jpg", photos / "gone.jpg")
    os.mkfifo(photos / "pipe.jpg")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(photos / "sock.jpg"))
    try:
        with _deadline(120):
            result = _run(photos, tmp_path / "out", dlib_analyzer)
    finally:
        server.close()
    reasons = {p.source: p.reason for p in result.photos}
    assert {k: reasons.get(k) for k in ("loop.jpg", "gone.jpg", "pipe.jpg", "sock.jpg")} == {
        "loop.jpg": "symlink_loop",
        "gone.jpg": "broken_link",
        "pipe.jpg": "not_a_file",
        "sock.jpg": "not_a_file",
    }
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert {p["source"] for p in report["photos"]} >= {"loop.jpg", "gone.jpg", "pipe.jpg", "sock.jpg"}
    assert len(result.kept) == len(SHOTS)


def test_crops_are_on_disk_not_in_memory_while_screening(photos, tmp_path, dlib_analyzer):
    """500 photos at 1024 px held 2.2 GB: at the end of screening no full-size crop may be alive."""

    def full_size_images() -> set[int]:
        gc.collect()
        return {id(o) for o in gc.get_objects() if isinstance(o, Image.Image) and o.size == (512, 512)}

    before, alive = full_size_images(), []  # other tests' fixtures may hold 512 px photos

    def progress(done, total, message):
        if message == "screening done":
            alive.append(len(full_size_images() - before))

    result = _run(photos, tmp_path / "out", dlib_analyzer, progress=progress)
    assert alive == [0]
    for outcome in result.kept:  # the kept crops are the dataset's images, readable on demand
        assert outcome.crop.size == (512, 512) and (tmp_path / "out" / outcome.image).is_file()
        assert max(outcome.thumb.size) <= 192
