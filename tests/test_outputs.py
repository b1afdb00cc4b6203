"""The one path validator, atomic writer, folder lock and output manifest every stage writes through."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from headshot.errors import HeadshotError
from headshot.outputs import (
    FolderBusy,
    FolderLock,
    OutputManifest,
    atomic_save,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    check_writable,
    pid_alive,
    safe_name,
)


@pytest.mark.parametrize("value", ["ohwx", "man", "Jane Doe", "headshot_lora-v2", "été", "a.b"])
def test_safe_name_accepts_plain_names(value):
    assert safe_name(value, "--name") == value


@pytest.mark.parametrize(
    "value, why",
    [
        ("../../victim", "'..'"),
        ("/../../../X", "'..'"),
        ("a/b", "/"),
        ("a\\b", "\\"),
        ("..", "not a name"),
        ("", "empty"),
        ("   ", "empty"),
        ("x" * 101, "at most 100"),
        ("tab\there", "printable"),
        ("nul\x00", "printable"),
        (" padded", "space"),
        ("C:evil", ":"),
    ],
)
def test_safe_name_refuses_path_tricks_naming_the_option(value, why):
    with pytest.raises(HeadshotError) as info:
        safe_name(value, "--class")
    assert info.value.code == "bad_name"
    assert str(info.value).startswith("--class ")
    assert why in str(info.value)


def test_atomic_save_keeps_the_old_file_when_the_disk_is_full(tmp_path):
    target = tmp_path / "report.json"
    atomic_write_json(target, {"version": 1})

    def half_then_full(tmp: Path) -> None:
        tmp.write_text('{"version": 2, "photos": [')
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(HeadshotError) as info:
        atomic_save(target, half_then_full)
    assert info.value.code == "disk_full"
    assert json.loads(target.read_text()) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no temporary left behind


def test_atomic_save_cleans_up_after_any_failure(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        atomic_save(
            tmp_path / "x.bin", lambda tmp: (tmp.write_bytes(b"part"), (_ for _ in ()).throw(KeyboardInterrupt))
        )
    assert list(tmp_path.iterdir()) == []


def test_check_writable_refuses_a_file_and_an_impossible_folder(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("mine")
    with pytest.raises(HeadshotError, match="is a file"):
        check_writable(blocker, "--out")
    with pytest.raises(HeadshotError) as info:
        check_writable(blocker / "sub", "--out")
    assert info.value.code == "not_writable" and "--out" in str(info.value)
    assert blocker.read_text() == "mine"
    assert check_writable(tmp_path / "new" / "deep") == tmp_path / "new" / "deep"


def test_second_writer_is_refused_naming_the_holder(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(Path(__file__).resolve().parents[1] / "shared")!r})
        from headshot.outputs import FolderLock
        lock = FolderLock({str(tmp_path)!r}, "job folder").acquire()
        print("held", flush=True)
        time.sleep(60)
    """),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderBusy) as info:
            FolderLock(tmp_path, "job folder").acquire()
        assert f"process {holder.pid}" in str(info.value)
    finally:
        holder.kill()
        holder.wait()
    # the OS freed the lock with its dead holder: no stale lock to clean by hand
    with FolderLock(tmp_path, "job folder"):
        pass


def test_manifest_refuses_to_overwrite_a_file_it_did_not_write(tmp_path):
    (tmp_path / "report.json").write_text("the user's own")
    manifest = OutputManifest(tmp_path)
    with pytest.raises(HeadshotError) as info:
        manifest.claim(tmp_path / "report.json")
    assert info.value.code == "would_overwrite"
    assert (tmp_path / "report.json").read_text() == "the user's own"
    with pytest.raises(HeadshotError, match="outside"):
        manifest.claim(tmp_path.parent / "elsewhere.txt")


def test_manifest_lets_a_rerun_replace_only_its_own_files(tmp_path):
    manifest = OutputManifest(tmp_path)
    atomic_write_json(manifest.claim(tmp_path / "img" / "01.png"), {})
    manifest.save()
    again = OutputManifest(tmp_path)
    assert again.owns(tmp_path / "img" / "01.png")
    assert again.claim(tmp_path / "img" / "01.png") == tmp_path / "img" / "01.png"
    assert os.path.basename(again.path) == ".headshot-manifest.json"


def test_atomic_files_get_the_mode_of_any_new_file(tmp_path):
    # mkstemp alone makes 0600: a LoRA in models/Lora would then be unreadable to the WebUI's other users
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    written = atomic_write_text(tmp_path / "atomic.txt", "x")
    assert stat.S_IMODE(written.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)


def test_pid_alive_tells_a_running_process_from_an_ended_one():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert pid_alive(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    assert not pid_alive(proc.pid)


def test_private_atomic_files_are_readable_by_their_owner_only(tmp_path):
    written = atomic_write_bytes(tmp_path / "photo-01.jpg", b"x", private=True)
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
