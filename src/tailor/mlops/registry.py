"""The model registry: versions of named models with their lineage, metrics and stage, plus an audit log.

One database holds it (registry_db): SQLite by default (a file, `runs/registry.db`, or
`$TAILOR_REGISTRY`), or any SQLAlchemy URL (postgresql://user@host/db) through the same SQLAlchemy Core
code, so several machines can share one registry. A version records its artefact path (a model
directory or a peft adapter directory and the base it applies to), the recipe it was trained with, a
fingerprint of its data, its parent version, metrics, and a stage: candidate, production (at most one
per name), archived or rejected. Every change writes an event (who changed what, when and why) in the
same transaction, which first locks the model's row, so concurrent writers queue instead of racing.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tailor.errors import TailorError
from tailor.mlops.registry_db import BUSY_TIMEOUT_S, EVENTS, MODELS, VERSIONS, Database, jsonable, utc_now

STAGES = ("candidate", "production", "archived", "rejected")
DEFAULT_PATH = "runs/registry.db"
_NAME = re.compile(r"^[\w][\w.\-/]{0,199}$")


def default_url() -> str:
    """$TAILOR_REGISTRY when set, else the SQLite file runs/registry.db (relative to the working directory)."""
    return os.environ.get("TAILOR_REGISTRY") or DEFAULT_PATH


@dataclass
class ModelVersion:
    """One registered version of a named model."""

    name: str
    version: int
    stage: str  # candidate | production | archived | rejected
    path: str  # model directory, or adapter directory
    base_path: str | None  # the base model an adapter applies to (None for full models)
    recipe: dict = field(default_factory=dict)
    data_fingerprint: str | None = None
    parent: int | None = None
    metrics: dict = field(default_factory=dict)
    created_at: str = ""
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise TailorError(f"invalid model name {name!r}", where="model name",
                          fix="use letters, digits, '.', '-', '_' or '/' (at most 200 characters), e.g. support-bot")
    return name


class Registry:
    """A model registry in the database at `url` (a file path means SQLite; default: `default_url()`).

    With create=False a missing registry is an error instead of a new, empty one (for commands that only read
    or change existing versions: a mistyped path should not look like an empty registry).
    """

    def __init__(self, url: str | Path | None = None, busy_timeout: float = BUSY_TIMEOUT_S, create: bool = True):
        self._db = Database(url if url is not None else default_url(), busy_timeout, create)
        self.url, self.where, self._sa = self._db.url, self._db.where, self._db.sa

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "Registry":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _bump(self, conn, name: str) -> None:
        conn.execute(MODELS.update().where(MODELS.c.name == name).values(revision=MODELS.c.revision + 1))

    def _event(self, conn, name: str, action: str, version: int | None = None, from_stage: str | None = None,
               to_stage: str | None = None, reason: str = "", details: dict | None = None) -> None:
        conn.execute(EVENTS.insert().values(name=name, version=version, action=action, from_stage=from_stage,
                                            to_stage=to_stage, reason=reason or "", created_at=utc_now(),
                                            details=jsonable(details, "event details")))

    def _get(self, conn, name: str, version: int) -> ModelVersion:
        sa = self._sa
        row = conn.execute(sa.select(VERSIONS).where(VERSIONS.c.name == name, VERSIONS.c.version == version)).mappings().first()
        if row is None:
            known = conn.execute(sa.select(VERSIONS.c.version).where(VERSIONS.c.name == name).order_by(VERSIONS.c.version)).scalars().all()
            raise TailorError(f"{name} has no version {version}", where=self.where,
                              fix=f"known versions: {', '.join(map(str, known))}" if known else
                              f"no versions of {name!r} are registered; `tailor registry list` shows what is")
        return ModelVersion(**dict(row))

    def _production(self, conn, name: str) -> ModelVersion | None:
        sa = self._sa
        rows = conn.execute(sa.select(VERSIONS).where(VERSIONS.c.name == name, VERSIONS.c.stage == "production")).mappings().all()
        if len(rows) > 1:  # the unique index makes this impossible; say so loudly if a database lacks it
            raise TailorError(f"{name} has {len(rows)} production versions", where=self.where,
                              fix="the registry's unique index is missing; archive all but one by hand")
        return ModelVersion(**dict(rows[0])) if rows else None

    def _set_stage(self, conn, mv: ModelVersion, stage: str) -> None:
        conn.execute(VERSIONS.update().where(VERSIONS.c.name == mv.name, VERSIONS.c.version == mv.version).values(stage=stage))

    def _check_path(self, mv: ModelVersion) -> None:
        if not Path(mv.path).exists():
            raise TailorError(f"{mv.name} v{mv.version}'s files are gone: {mv.path}", where=self.where,
                              fix="restore the directory, or choose another version")

    def _make_production(self, conn, mv: ModelVersion, action: str, reason: str, restore: int | None,
                         details: dict | None) -> None:
        """Archive the current production version (if any) and make `mv` production; one event each, revision + 1."""
        current = self._production(conn, mv.name)
        if current is not None:
            self._set_stage(conn, current, "archived")
            self._event(conn, mv.name, "archive", current.version, "production", "archived",
                        f"{'rolled back' if action == 'rollback' else 'replaced'}: v{mv.version} is production now")
        self._set_stage(conn, mv, "production")
        self._event(conn, mv.name, action, mv.version, mv.stage, "production", reason,
                    {**(details or {}), "previous": current.version if current else None, "restore": restore})
        self._bump(conn, mv.name)

    # -- the API ------------------------------------------------------------------------------------

    def register(self, name: str, path: str | Path, *, base_path: str | Path | None = None, recipe: dict | None = None,
                 data_fingerprint: str | None = None, parent: int | None = None, metrics: dict | None = None,
                 stage: str = "candidate", note: str = "", reason: str = "", details: dict | None = None,
                 expect_production: int | None = None) -> ModelVersion:
        """Add the next version of `name` (created on first use); all in one transaction.

        stage="production" promotes it at once (the previous production version is archived),
        stage="rejected" records it as rejected with `reason`. `details` go into the event that sets
        the final stage. With `expect_production`, nothing is written unless that version is still
        production (a refresh gated against it must not replace a version promoted meanwhile).
        """
        _check_name(name)
        if stage not in STAGES:
            raise TailorError(f"unknown stage {stage!r}", where="stage", fix=f"use one of: {', '.join(STAGES)}")
        if stage == "rejected" and not reason:
            raise TailorError("a rejected version needs a reason", where="reason", fix="say why it was rejected")
        path = Path(path).expanduser()
        if not path.exists():
            raise TailorError(f"the model path does not exist: {path}", where="path",
                              fix="register a model or adapter directory that is on disk")
        if base_path is not None and not Path(base_path).exists():
            raise TailorError(f"the base model path does not exist: {base_path}", where="base_path",
                              fix="pass the directory of the base model the adapter applies to")
        recipe, metrics = jsonable(recipe, "recipe"), jsonable(metrics, "metrics")
        with self._db.write() as conn:
            self._db.lock(conn, name)
            if parent is not None:
                self._get(conn, name, parent)
            current = self._production(conn, name)
            if expect_production is not None and (current.version if current else None) != expect_production:
                raise TailorError(f"{name}'s production version changed to "
                                  f"{'v' + str(current.version) if current else 'none'} while this was prepared "
                                  f"against v{expect_production}; nothing was registered", where=self.where,
                                  fix="run the command again: it starts from the new production version")
            last = conn.execute(self._sa.select(self._sa.func.max(VERSIONS.c.version)).where(VERSIONS.c.name == name)).scalar()
            mv = ModelVersion(name, (last or 0) + 1, "candidate", str(path.resolve()),
                              str(Path(base_path).expanduser().resolve()) if base_path is not None else None,
                              recipe, data_fingerprint, parent, metrics, utc_now(), note or "")
            conn.execute(VERSIONS.insert().values(**mv.to_dict()))
            self._event(conn, name, "register", mv.version, None, "candidate", note,
                        details if stage == "candidate" else {"parent": parent, "data_fingerprint": data_fingerprint})
            if stage == "production":
                self._make_production(conn, mv, "promote", reason, current.version if current else None, details)
            elif stage in ("rejected", "archived"):
                self._set_stage(conn, mv, stage)
                self._event(conn, name, "reject" if stage == "rejected" else "archive", mv.version, "candidate", stage,
                            reason, details)
            mv.stage = stage
        return mv

    def get(self, name: str, version: int) -> ModelVersion:
        """One version; a TailorError naming the known versions when it does not exist."""
        with self._db.read() as conn:
            return self._get(conn, name, int(version))

    def versions(self, name: str | None = None) -> list[ModelVersion]:
        """Every version (of `name`, or of all models), oldest first."""
        sa = self._sa
        q = sa.select(VERSIONS).order_by(VERSIONS.c.name, VERSIONS.c.version)
        if name is not None:
            q = q.where(VERSIONS.c.name == name)
        with self._db.read() as conn:
            return [ModelVersion(**dict(r)) for r in conn.execute(q).mappings()]

    def production(self, name: str) -> ModelVersion | None:
        """The version whose stage is production, or None."""
        with self._db.read() as conn:
            return self._production(conn, name)

    def promote(self, name: str, version: int, reason: str = "", details: dict | None = None) -> ModelVersion:
        """Make `version` production (the previous production version is archived); records an event.

        Promoting the current production version changes nothing; a rejected version cannot be promoted.
        """
        with self._db.write() as conn:
            self._db.lock(conn, name)
            mv = self._get(conn, name, int(version))
            if mv.stage == "production":
                return mv
            if mv.stage == "rejected":
                why = conn.execute(self._sa.select(EVENTS.c.reason).where(
                    EVENTS.c.name == name, EVENTS.c.version == mv.version, EVENTS.c.action == "reject")
                    .order_by(EVENTS.c.id.desc())).scalar()
                raise TailorError(f"{name} v{mv.version} was rejected ({why or 'no reason recorded'}) and cannot be promoted",
                                  where=self.where, fix="promote another version; to overrule the gate, register the same "
                                  "directory again (`tailor registry register`) and promote that version")
            self._check_path(mv)
            current = self._production(conn, name)
            self._make_production(conn, mv, "promote", reason, current.version if current else None, details)
            mv.stage = "production"
        return mv

    def rollback(self, name: str, reason: str = "", to: int | None = None) -> ModelVersion:
        """Archive the production version and make the version it replaced production again (or version `to`).

        Rolling back repeatedly walks back through the promotion history.
        """
        with self._db.write() as conn:
            self._db.lock(conn, name)
            current = self._production(conn, name)
            if current is None:
                raise TailorError(f"{name} has no production version to roll back", where=self.where,
                                  fix="promote a version: tailor registry promote NAME VERSION")
            if to is None:
                to = self._restore_of(conn, name, current.version)
                if to is None:
                    raise TailorError(f"{name} v{current.version} did not replace an earlier production version",
                                      where=self.where, fix="name the version to restore: tailor registry rollback NAME --to V")
            target = self._get(conn, name, int(to))
            if target.version == current.version:
                raise TailorError(f"v{target.version} is already production", where="--to", fix="name another version")
            if target.stage == "rejected":
                raise TailorError(f"{name} v{target.version} was rejected; rolling back to it is refused", where="--to",
                                  fix="name a version that was production or archived")
            self._check_path(target)
            self._make_production(conn, target, "rollback", reason or f"rolled back from v{current.version}",
                                  self._restore_of(conn, name, target.version), {})
            target.stage = "production"
        return target

    def _restore_of(self, conn, name: str, version: int) -> int | None:
        """The version that was production before `version` last became production."""
        sa = self._sa
        details = conn.execute(sa.select(EVENTS.c.details).where(
            EVENTS.c.name == name, EVENTS.c.version == version, EVENTS.c.to_stage == "production")
            .order_by(EVENTS.c.id.desc())).scalar()
        return (details or {}).get("restore")

    def reject(self, name: str, version: int, reason: str, details: dict | None = None) -> ModelVersion:
        """Mark a candidate rejected, with the reason (e.g. the gate's numbers)."""
        if not reason:
            raise TailorError("a rejection needs a reason", where="reason", fix="say why the version is rejected")
        with self._db.write() as conn:
            self._db.lock(conn, name)
            mv = self._get(conn, name, int(version))
            if mv.stage != "candidate":
                raise TailorError(f"{name} v{mv.version} is {mv.stage}; only candidates can be rejected", where=self.where)
            self._set_stage(conn, mv, "rejected")
            self._event(conn, name, "reject", mv.version, "candidate", "rejected", reason, details)
            mv.stage = "rejected"
        return mv

    def set_metrics(self, name: str, version: int, metrics: dict) -> None:
        """Add or update metrics of a version (other keys are kept); records an event."""
        new = jsonable(metrics, "metrics")
        with self._db.write() as conn:
            self._db.lock(conn, name)
            mv = self._get(conn, name, int(version))
            conn.execute(VERSIONS.update().where(VERSIONS.c.name == name, VERSIONS.c.version == mv.version)
                         .values(metrics={**mv.metrics, **new}))
            self._event(conn, name, "metrics", mv.version, reason="metrics updated", details={"keys": sorted(new)})

    def log_event(self, name: str, action: str, reason: str = "", version: int | None = None,
                  details: dict | None = None) -> None:
        """Record an event that changes no version (e.g. a drift check that found nothing to do)."""
        _check_name(name)
        with self._db.write() as conn:
            self._db.lock(conn, name)
            self._event(conn, name, action, version, reason=reason, details=details)

    def events(self, name: str | None = None, version: int | None = None) -> list[dict]:
        """The audit log, oldest first: id, name, version, action, from_stage, to_stage, reason, details, time."""
        sa = self._sa
        q = sa.select(EVENTS).order_by(EVENTS.c.id)
        if name is not None:
            q = q.where(EVENTS.c.name == name)
        if version is not None:
            q = q.where(EVENTS.c.version == version)
        with self._db.read() as conn:
            rows = [dict(r) for r in conn.execute(q).mappings()]
        for r in rows:
            r["time"] = r.pop("created_at")
        return rows

    def revision(self, name: str) -> int:
        """A counter that increases on every change of `name`'s production alias (0 when unknown): cheap to poll."""
        with self._db.read() as conn:
            return int(conn.execute(self._sa.select(MODELS.c.revision).where(MODELS.c.name == name)).scalar() or 0)

    def names(self) -> list[str]:
        """Every model name in the registry."""
        with self._db.read() as conn:
            return list(conn.execute(self._sa.select(MODELS.c.name).order_by(MODELS.c.name)).scalars())

