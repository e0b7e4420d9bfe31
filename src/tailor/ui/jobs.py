"""The UI's jobs: stage commands run in subprocesses, their state on disk so nothing is lost with the browser tab
or the UI process.

A job is a command line (`python -m tailor.cli train RECIPE`, the same stage function the CLI runs) started by
`tailor.ui.worker` in its own session at a lower CPU priority. Its folder (WORKSPACE/jobs/ID) holds job.json
(what to run), log.txt (everything it printed) and exit.json (written by the worker when the command ends). The
job table (WORKSPACE/jobs.db, SQLite) lists jobs and their state; a restarted UI reads it again and re-attaches
to workers still running. A worker that vanished without exit.json (killed) is marked failed, its log kept.

Scheduling: a job with a `device` takes that device's slot (one at a time by default, the rest queued in order);
a job with `after` waits for that job to finish and fails when it fails.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tailor.errors import TailorError

STATES = ("queued", "running", "done", "failed", "stopped")
ACTIVE = ("queued", "running")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    title TEXT NOT NULL,
    argv TEXT NOT NULL,
    device TEXT,
    after INTEGER,
    state TEXT NOT NULL DEFAULT 'queued',
    pid INTEGER,
    rc INTEGER,
    stop_requested INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    run_dir TEXT,
    meta TEXT NOT NULL DEFAULT '{}',
    note TEXT
)"""


@dataclass
class Job:
    id: int
    kind: str
    title: str
    argv: list[str]
    device: str | None
    after: int | None
    state: str
    pid: int | None
    rc: int | None
    stop_requested: bool
    created: float
    started: float | None
    finished: float | None
    run_dir: str | None
    meta: dict = field(default_factory=dict)
    note: str | None = None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def to_dict(self) -> dict:
        return asdict(self)


def _row(r: sqlite3.Row) -> Job:
    d = dict(r)
    d["argv"] = json.loads(d["argv"])
    d["meta"] = json.loads(d["meta"] or "{}")
    d["stop_requested"] = bool(d["stop_requested"])
    return Job(**d)


class JobTable:
    """The job table in SQLite: one short transaction per call, safe from several threads and processes."""

    def __init__(self, workspace: str | Path):
        self.workspace = Path(workspace)
        self.jobs_dir = self.workspace / "jobs"
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.workspace / "jobs.db"
        with self._db() as db:
            db.execute(_SCHEMA)

    def _db(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        return _Closing(db)

    def add(self, kind: str, title: str, argv: list[str], *, device: str | None = None, after: int | None = None,
            run_dir: str | Path | None = None, meta: dict | None = None) -> Job:
        """Queue a job; the runner starts it when its device slot (and the job it waits for) allow."""
        with self._db() as db:
            cur = db.execute("INSERT INTO jobs (kind, title, argv, device, after, created, run_dir, meta) VALUES "
                             "(?, ?, ?, ?, ?, ?, ?, ?)", (kind, title, json.dumps(argv), device, after, time.time(),
                                                           str(run_dir) if run_dir else None, json.dumps(meta or {})))
            job_id = cur.lastrowid
        return self.get(job_id)

    def get(self, job_id: int) -> Job:
        with self._db() as db:
            r = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if r is None:
            raise TailorError(f"no job {job_id}", where="job table " + str(self.path), fix="pick a job from the Jobs page")
        return _row(r)

    def list(self, kind: str | None = None, states: tuple[str, ...] | None = None, limit: int = 200) -> list[Job]:
        q, args = "SELECT * FROM jobs WHERE 1=1", []
        if kind:
            q, args = q + " AND kind = ?", args + [kind]
        if states:
            q += " AND state IN (%s)" % ",".join("?" * len(states))
            args += list(states)
        with self._db() as db:
            rows = db.execute(q + " ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
        return [_row(r) for r in rows]

    def update(self, job_id: int, **values) -> None:
        if "meta" in values:
            values["meta"] = json.dumps(values["meta"])
        cols = ", ".join(f"{k} = ?" for k in values)
        with self._db() as db:
            db.execute(f"UPDATE jobs SET {cols} WHERE id = ?", (*values.values(), job_id))

    def dir(self, job_id: int) -> Path:
        return self.jobs_dir / str(job_id)

    def log_tail(self, job_id: int, lines: int = 40) -> str:
        """The last lines the job printed (progress bars' carriage returns folded)."""
        path = self.dir(job_id) / "log.txt"
        if not path.is_file():
            return ""
        with path.open("rb") as fh:
            fh.seek(max(0, path.stat().st_size - 64_000))
            text = fh.read().decode("utf-8", errors="replace")
        out = [line.rsplit("\r", 1)[-1] for line in text.replace("\r\n", "\n").split("\n")]
        return "\n".join(out[-lines:]).strip("\n")


class _Closing:
    """sqlite3 connection used as `with`: closed afterwards (sqlite3's own context manager only commits)."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        return self.db

    def __exit__(self, *exc) -> None:
        self.db.close()


def _alive(pid: int, job_dir: Path) -> bool:
    """True while the worker of this job runs (a reused pid or a zombie does not count)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    proc = Path(f"/proc/{pid}")
    if proc.is_dir():
        try:
            if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return False
            return str(job_dir) in (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            return False
    return True


def lock_workspace(workspace: str | Path):
    """Hold WORKSPACE/ui.lock for this process's life: two UIs on one job table would start its jobs twice.

    Returns the open lock file (keep a reference); a TailorError when another process holds it."""
    import fcntl

    path = Path(workspace) / "ui.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = path.open("a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise TailorError(f"another `tailor ui` is already running on the workspace {Path(workspace).resolve()}",
                          where="--workspace", fix="open that UI's address, stop it first, or pass another --workspace") from None
    return fh


class Runner:
    """Starts queued jobs, watches running ones, and keeps the table true to what the processes did."""

    def __init__(self, table: JobTable, slots_per_device: int = 1, nice: int = 10, env: dict | None = None):
        self.table = table
        self.slots = slots_per_device
        self.nice = nice
        self.env = env or {}
        self._children: dict[int, subprocess.Popen] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the loop --------------------------------------------------------------------------------
    def start(self, interval: float = 0.5) -> None:
        self.tick()
        self._thread = threading.Thread(target=self._loop, args=(interval,), name="tailor-ui-jobs", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)

    def _loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - the loop must outlive one bad tick; the next retries
                import logging

                logging.getLogger("tailor").exception("job runner tick failed")

    def tick(self) -> None:
        """One pass: record finished or vanished jobs, then start what the slots allow."""
        with self._lock:
            for job in self.table.list(states=("running",)):
                self._check(job)
            running = self.table.list(states=("running",))
            busy: dict[str, int] = {}
            for job in running:
                if job.device:
                    busy[job.device] = busy.get(job.device, 0) + 1
            for job in sorted(self.table.list(states=("queued",)), key=lambda j: j.id):
                if job.after is not None:
                    dep = self.table.get(job.after)
                    if dep.state in ACTIVE:
                        continue
                    if dep.state != "done":
                        self.table.update(job.id, state="failed", finished=time.time(),
                                          note=f"not started: job {dep.id} ({dep.title}) {dep.state}")
                        continue
                if job.device and busy.get(job.device, 0) >= self.slots:
                    continue
                self._launch(job)
                if job.device:
                    busy[job.device] = busy.get(job.device, 0) + 1

    def _launch(self, job: Job) -> None:
        d = self.table.dir(job.id)
        d.mkdir(parents=True, exist_ok=True)
        (d / "job.json").write_text(json.dumps({"argv": job.argv, "nice": self.nice, "cwd": str(Path.cwd())}),
                                    encoding="utf-8")
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        # Own session: the job outlives the UI process, and stop() signals its whole process group.
        proc = subprocess.Popen([sys.executable, "-m", "tailor.ui.worker", str(d)], start_new_session=True,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        self._children[job.id] = proc
        self.table.update(job.id, state="running", pid=proc.pid, started=time.time())

    def _check(self, job: Job) -> None:
        d = self.table.dir(job.id)
        child = self._children.get(job.id)
        if child is not None and child.poll() is None:
            return
        if child is None and job.pid and _alive(job.pid, d):
            return  # started by an earlier UI process: re-attached, still running
        self._children.pop(job.id, None)
        exit_file = d / "exit.json"
        if exit_file.is_file():
            rc = json.loads(exit_file.read_text(encoding="utf-8"))["rc"]
            state = "done" if rc == 0 else "stopped" if job.stop_requested else "failed"
            self.table.update(job.id, state=state, rc=rc, finished=time.time())
        else:
            self.table.update(job.id, state="stopped" if job.stop_requested else "failed", finished=time.time(),
                              note=None if job.stop_requested else "the job's process ended without an exit status "
                              "(killed, out of memory or the machine restarted); its last log lines are below")

    # -- actions ---------------------------------------------------------------------------------
    def stop(self, job_id: int) -> Job:
        """Stop a queued or running job (SIGTERM to its process group; checkpoints already written stay)."""
        with self._lock:
            job = self.table.get(job_id)
            if job.state == "queued":
                self.table.update(job_id, state="stopped", finished=time.time(), stop_requested=1)
            elif job.state == "running":
                self.table.update(job_id, stop_requested=1)
                try:
                    os.killpg(job.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        return self.table.get(job_id)

    def wait(self, job_id: int, timeout: float = 600.0, poll: float = 0.2) -> Job:
        """Block until the job is no longer queued or running (for tests and scripts)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.tick()
            job = self.table.get(job_id)
            if not job.active:
                return job
            time.sleep(poll)
        raise TimeoutError(f"job {job_id} still {self.table.get(job_id).state} after {timeout}s")
