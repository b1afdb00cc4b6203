"""Durable records (SQLAlchemy): users and their hashed keys, jobs, models, pictures, measured speeds.

Job state lives here and not in a process's memory, so a killed server or worker loses nothing: a job
found running with no live worker is queued again (see `recovery`). SQLite under --data by default;
any SQLAlchemy URL (postgresql://…) when workers run on several machines.
"""

from __future__ import annotations

import json
import time
import uuid
from contextlib import contextmanager
from typing import Any, Iterator

from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    select,
    update,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from ..errors import HeadshotError

ACTIVE = ("queued", "running")
FINISHED = ("succeeded", "failed", "cancelled")


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    webhook_secret: Mapped[str] = mapped_column(String(128))
    created: Mapped[float] = mapped_column(Float, default=time.time)


class ApiKey(Base):
    __tablename__ = "api_keys"
    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    salt: Mapped[str] = mapped_column(String(64))
    digest: Mapped[str] = mapped_column(String(128))
    created: Mapped[float] = mapped_column(Float, default=time.time)


class Model(Base):
    __tablename__ = "models"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(64), index=True)
    instance_name: Mapped[str] = mapped_column(String(64))
    class_type: Mapped[str] = mapped_column(String(64))
    trigger: Mapped[str] = mapped_column(String(64))
    base_model: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="training")  # training | ready | failed
    lora: Mapped[str | None] = mapped_column(Text, nullable=True)  # relative to --data
    training_job_id: Mapped[str] = mapped_column(String(64))
    created: Mapped[float] = mapped_column(Float, default=time.time)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (UniqueConstraint("user_id", "idempotency_key"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # train | generate
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    model_id: Mapped[str] = mapped_column(String(64), index=True)
    request: Mapped[str] = mapped_column(Text)  # JSON, without the photos
    result: Mapped[str] = mapped_column(Text, default="{}")  # JSON: rejected photos, chosen step …
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    step: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int] = mapped_column(Integer, default=0)
    eta_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    webhook_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    worker: Mapped[str | None] = mapped_column(String(255), nullable=True)  # host:pid of the running worker
    heartbeat: Mapped[float | None] = mapped_column(Float, nullable=True)
    created: Mapped[float] = mapped_column(Float, default=time.time, index=True)
    finished: Mapped[float | None] = mapped_column(Float, nullable=True)


class Picture(Base):
    __tablename__ = "pictures"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(64), index=True)
    user_id: Mapped[str] = mapped_column(String(64), index=True)
    model_id: Mapped[str] = mapped_column(String(64), index=True)
    path: Mapped[str] = mapped_column(Text)  # relative to --data
    seed: Mapped[int] = mapped_column(Integer)
    identity_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    faceless: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    position: Mapped[int] = mapped_column(Integer)  # 0 = best; faceless ones last


class Measure(Base):
    """A running mean this server measured (seconds per training step), for estimates."""

    __tablename__ = "measures"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[float] = mapped_column(Float)
    count: Mapped[int] = mapped_column(Integer, default=0)


def _create_tables(engine, tries: int = 5) -> None:
    """create_all, tolerating another process (a second worker starting) creating the same tables meanwhile."""
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    for attempt in range(tries):
        try:
            Base.metadata.create_all(engine)  # checks first: a table already there is left alone
            return
        except (OperationalError, ProgrammingError, IntegrityError) as exc:  # PostgreSQL: a duplicate pg_type key
            if not any(word in str(exc) for word in ("already exists", "duplicate key")) or attempt + 1 == tries:
                raise
            time.sleep(0.1 * (attempt + 1))  # the other process's DDL has finished by the next check


class Store:
    """One database: sessions, and the few operations that must be atomic (claiming a job)."""

    def __init__(self, url: str):
        url = engine_url(url)
        sqlite = url.startswith("sqlite")
        try:
            self.engine = create_engine(url, connect_args={"timeout": 30} if sqlite else {}, pool_pre_ping=True)
        except ModuleNotFoundError as exc:
            raise HeadshotError(
                f"--database {url.split('://')[0]}://…: its driver {exc.name} is not installed; for PostgreSQL: "
                "pip install 'psycopg[binary]' (or `pip install headshot-studio[service]`)",
                "backend_unavailable",
            ) from None
        if sqlite:  # the API and worker processes share the file: WAL lets readers go on while one writes
            event.listen(self.engine, "connect", _sqlite_pragmas)
        _create_tables(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session

    def job(self, job_id: str) -> Job | None:
        with self.session() as s:
            return s.get(Job, job_id)

    def model(self, model_id: str) -> Model | None:
        with self.session() as s:
            return s.get(Model, model_id)

    def update_job(self, job_id: str, **fields: Any) -> None:
        with self.session() as s:
            s.execute(update(Job).where(Job.id == job_id).values(**fields))

    def claim(self, job_id: str, worker: str) -> Job | None:
        """Mark a queued job running for `worker` and count the try; None when it is not queued (another worker
        took it, it was cancelled, or a duplicate message)."""
        now = time.time()
        with self.session() as s:
            done = s.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == "queued")
                .values(status="running", attempts=Job.attempts + 1, worker=worker, heartbeat=now)
            )
            return s.get(Job, job_id) if getattr(done, "rowcount", 0) == 1 else None

    def finish(self, job_id: str, status: str, code: str | None = None, message: str | None = None, **fields) -> None:
        self.update_job(
            job_id, status=status, error_code=code, error_message=message, finished=time.time(), eta_s=0, **fields
        )

    def requeue(self, job_id: str, code: str, message: str) -> None:
        """Back in the queue after a crash, the error kept for the record (and for the final failure)."""
        self.update_job(job_id, status="queued", worker=None, heartbeat=None, error_code=code, error_message=message)

    def active_count(self, user_id: str) -> int:
        with self.session() as s:
            query = select(func.count()).select_from(Job).where(Job.user_id == user_id, Job.status.in_(ACTIVE))
            return int(s.scalar(query) or 0)

    def started_since(self, user_id: str, since: float) -> list[float]:
        with self.session() as s:
            query = select(Job.created).where(Job.user_id == user_id, Job.created >= since).order_by(Job.created)
            return list(s.scalars(query))

    def measure(self, name: str, value: float) -> None:
        with self.session() as s:
            row = s.get(Measure, name)
            if row is None:
                s.add(Measure(name=name, value=value, count=1))
            else:
                row.count += 1
                row.value += (value - row.value) / min(row.count, 20)  # recent runs weigh more

    def measured(self, name: str) -> float | None:
        with self.session() as s:
            row = s.get(Measure, name)
            return row.value if row is not None else None


def engine_url(url: str) -> str:
    """`postgresql://…` means psycopg 3, the driver the service extra installs (SQLAlchemy alone picks psycopg2)."""
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain) :]
    return url


def _sqlite_pragmas(connection, _record) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def loads(text: str | None) -> dict:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
