"""Writing safely: user strings as file names, atomic files, one writer per folder, our own files only.

Every stage writes through these four pieces, so the rules hold everywhere at once:
  safe_name        a user string that becomes part of a path (trigger, class word, --name, style)
  atomic_write_*   temporary name in the same folder, fsync, rename: a reader never sees half a file
  FolderLock       one writing process per dataset or job folder; says who holds it
  OutputManifest   the files we created in a folder: a re-run replaces only those, never the user's
"""

from __future__ import annotations

import errno
import json
import os
import sys
import tempfile
import time
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping

from .errors import BackendUnavailable, HeadshotError

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (A1111's)
    try:
        import tomli as tomllib
    except ModuleNotFoundError:  # a host that skipped requirements.txt: said when a TOML file is read
        tomllib = None

if TYPE_CHECKING:
    from filelock import BaseFileLock

MAX_NAME_LENGTH = 100


def _current_umask() -> int:
    mask = os.umask(0o022)  # read once at import: os.umask can only be read by setting it
    os.umask(mask)
    return mask


# mkstemp makes 0600 files; a LoRA or picture we write should get the mode any other new file gets
FILE_MODE = 0o666 & ~_current_umask()
_FORBIDDEN = set('/\\:*?"<>|')


def safe_name(value: str, option: str) -> str:
    """`value` unchanged when it can be one path component; otherwise a HeadshotError naming `option`."""

    def bad(why: str) -> HeadshotError:
        return HeadshotError(f"{option} {value!r}: {why}", "bad_name")

    if not isinstance(value, str) or not value.strip():
        raise bad("must not be empty")
    if len(value) > MAX_NAME_LENGTH:
        raise bad(f"is {len(value)} characters long; use at most {MAX_NAME_LENGTH}")
    if value.strip(" .") == "" or value in (".", ".."):
        raise bad("is not a name")
    if ".." in value:
        raise bad("must not contain '..'")
    found = sorted(c for c in set(value) if c in _FORBIDDEN)
    if found:
        raise bad(f"must not contain {' '.join(found)} (it becomes part of a file name)")
    if any(not c.isprintable() or unicodedata.category(c).startswith("C") for c in value):
        raise bad("must contain only printable characters")
    if value != value.strip():
        raise bad("must not start or end with a space")
    return value


def _disk_error(path: Path, exc: OSError) -> HeadshotError:
    if exc.errno == errno.ENOSPC:
        return HeadshotError(
            f"the disk is full while writing {path}: free some space and run again (the previous file is unchanged)",
            "disk_full",
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return HeadshotError(
            f"cannot write {path}: the folder is read-only or not yours ({exc.strerror}); choose another output folder",
            "not_writable",
        )
    return HeadshotError(f"cannot write {path}: {exc.strerror or exc}", "write_failed")


def atomic_save(path: str | Path, write: Callable[[Path], object], private: bool = False, durable: bool = True) -> Path:
    """Call `write(tmp)` to write a temporary file beside `path`, then rename it over `path`.

    On any failure the temporary file is removed and whatever `path` held before is unchanged.
    `private` keeps the file readable by its owner only (a service's uploaded photos). `durable=False`
    skips the fsync, for a staged file that is synced when it is placed.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem[:40]}.", suffix=".tmp" + path.suffix, dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise _disk_error(path, exc) from exc
    tmp = Path(tmp_name)
    try:
        write(tmp)
        if durable:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o600 if private else FILE_MODE)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _disk_error(path, exc) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes, private: bool = False) -> Path:
    return atomic_save(path, lambda tmp: tmp.write_bytes(data), private=private)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, data) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def check_writable(folder: str | Path, option: str = "--out") -> Path:
    """Create `folder` if needed and prove a file can be written there, before any long work starts."""
    folder = Path(folder)
    try:
        if folder.exists() and not folder.is_dir():
            raise HeadshotError(f"{option} {folder} is a file, not a folder", "not_a_folder")
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".headshot-write-check.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise HeadshotError(
            f"{option} {folder} cannot be written ({exc.strerror or exc}): choose a folder you can write to",
            "not_writable",
        ) from exc
    return folder


class FolderBusy(HeadshotError):
    code = "folder_busy"


class FolderLock:
    """An exclusive lock on a folder for the life of one process (filelock; the OS frees it when the holder dies).

    `<folder>/.headshot.lock` is the lock; `.headshot.lock.json` says who holds it, for the message.
    """

    LOCK_NAME = ".headshot.lock"

    def __init__(self, folder: str | Path, what: str = "folder"):
        self.folder, self.what = Path(folder), what
        self._lock: BaseFileLock | None = None

    @property
    def info_path(self) -> Path:
        return self.folder / (self.LOCK_NAME + ".json")

    def holder(self) -> dict | None:
        try:
            return json.loads(self.info_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def acquire(self) -> FolderLock:
        from filelock import FileLock, Timeout

        self.folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.folder / self.LOCK_NAME))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            holder = self.holder() or {}
            who = f"process {holder['pid']} ({holder.get('command', '?')})" if holder.get("pid") else "another process"
            raise FolderBusy(
                f"{self.folder} is in use by {who}: wait for it to finish or stop it, "
                f"then run again (one writer per {self.what})"
            ) from None
        self._lock = lock
        atomic_write_json(self.info_path, {"pid": os.getpid(), "command": " ".join(sys.argv[:3]), "since": time.time()})
        return self

    def release(self) -> None:
        if self._lock is not None:
            self.info_path.unlink(missing_ok=True)
            self._lock.release()
            self._lock = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    if sys.platform == "win32":
        return _windows_pid_alive(int(pid))
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _windows_pid_alive(pid: int) -> bool:
    # os.kill(pid, 0) on Windows terminates the process: ask for its exit code instead
    import ctypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined,unused-ignore]
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return ctypes.get_last_error() == 5  # type: ignore[attr-defined,unused-ignore]  # access denied: another user's
    try:
        code = ctypes.c_ulong()
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
            return True
        return code.value == 259  # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)


class OutputManifest:
    """The files this project wrote into a folder (relative paths), so a re-run touches only those."""

    NAME = ".headshot-manifest.json"

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / self.NAME
        try:
            self.files: set[str] = set(json.loads(self.path.read_text(encoding="utf-8")).get("files", []))
        except (OSError, ValueError):
            self.files = set()

    def relative(self, path: str | Path) -> str:
        return Path(os.path.relpath(Path(path), self.folder)).as_posix()

    def owns(self, path: str | Path) -> bool:
        return self.relative(path) in self.files

    def claim(self, path: str | Path) -> Path:
        """`path` may be (over)written: it is new or ours. Someone else's file -> HeadshotError, nothing touched."""
        path = Path(path)
        rel = self.relative(path)
        if rel.startswith("../"):
            raise HeadshotError(f"{path} is outside the output folder {self.folder}", "outside_output")
        if (path.exists() or path.is_symlink()) and rel not in self.files:
            raise HeadshotError(
                f"{path} already exists and was not written by Headshot Studio; move it away or "
                "choose another output folder (nothing was overwritten)",
                "would_overwrite",
            )
        self.files.add(rel)
        return path

    def save(self) -> None:
        atomic_write_json(self.path, {"files": sorted(self.files)})

    def forget_missing(self) -> None:
        self.files = {f for f in self.files if (self.folder / f).exists()}


def toml_text(data: Mapping, comment: str | None = None) -> str:
    """`data` as TOML (tomli-w, the one TOML writer here). None values are left out (TOML has no null), Paths
    become their text; `comment` goes on top as # lines. A value TOML cannot hold is refused by name."""
    import tomli_w

    try:
        text = tomli_w.dumps(_toml_ready(data))
    except (TypeError, ValueError) as exc:
        raise HeadshotError(f"cannot write this as TOML: {exc}", "bad_option") from None
    head = "".join(f"# {line}\n" for line in comment.splitlines()) if comment else ""
    return head + text


def parse_toml(text: str) -> dict:
    """`text` read as TOML. Bad syntax raises a ValueError (tomllib's TOMLDecodeError) whose message ends "(at line
    N, column M)"."""
    if tomllib is None:
        raise BackendUnavailable("Reading TOML on Python 3.10 needs tomli: pip install tomli")
    return tomllib.loads(text)


def write_toml(path: str | Path, data: Mapping, comment: str | None = None) -> Path:
    """`data` written as TOML at `path`, atomically (see toml_text)."""
    return atomic_write_text(path, toml_text(data, comment))


def _toml_ready(value):
    if isinstance(value, Mapping):
        return {str(key): _toml_ready(item) for key, item in value.items() if item is not None}
    if isinstance(value, (list, tuple)):
        return [_toml_ready(item) for item in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value
