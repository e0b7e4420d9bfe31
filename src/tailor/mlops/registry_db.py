"""Where the model registry lives: its tables, the database connection and transactions.

Concurrent writers (several processes, or machines on PostgreSQL) cannot corrupt it: every write is
one transaction that first locks the model's row in `tailor_models` (SQLite: `BEGIN IMMEDIATE` takes
the database's write lock up front, in WAL mode so readers never wait, with a busy timeout so writers
queue instead of failing; PostgreSQL: `SELECT ... FOR UPDATE` under READ COMMITTED). Version numbers
are allocated inside that transaction (by tailor.mlops.registry), and a partial unique index makes a
second production version of one name impossible even for a writer that bypasses this module.
"""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from tailor.errors import TailorError

SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 60.0


def _tables():
    """The registry's tables; prefixed so that the registry can share a database with an optuna study."""
    from sqlalchemy import (JSON, CheckConstraint, Column, ForeignKey, Index, Integer, MetaData, String, Table, Text,
                            text)

    md = MetaData()
    models = Table("tailor_models", md,
                   Column("name", String(200), primary_key=True),
                   Column("revision", Integer, nullable=False),  # bumped whenever the production alias moves
                   Column("created_at", String(40), nullable=False))
    versions = Table("tailor_versions", md,
                     Column("name", String(200), ForeignKey("tailor_models.name"), primary_key=True),
                     Column("version", Integer, primary_key=True),
                     Column("stage", String(20), nullable=False),
                     Column("path", Text, nullable=False),
                     Column("base_path", Text),
                     Column("recipe", JSON, nullable=False),
                     Column("data_fingerprint", String(128)),
                     Column("parent", Integer),
                     Column("metrics", JSON, nullable=False),
                     Column("created_at", String(40), nullable=False),
                     Column("note", Text, nullable=False),
                     CheckConstraint("stage IN ('candidate', 'production', 'archived', 'rejected')", name="known_stage"))
    # Partial index: SQLite and PostgreSQL have them; elsewhere a plain unique index on name would be wrong.
    Index("tailor_one_production", versions.c.name, unique=True, sqlite_where=text("stage = 'production'"),
          postgresql_where=text("stage = 'production'")).ddl_if(dialect=("sqlite", "postgresql"))
    events = Table("tailor_events", md,
                   Column("id", Integer, primary_key=True, autoincrement=True),
                   Column("name", String(200), nullable=False, index=True),
                   Column("version", Integer),
                   Column("action", String(40), nullable=False),
                   Column("from_stage", String(20)),
                   Column("to_stage", String(20)),
                   Column("reason", Text, nullable=False),
                   Column("details", JSON, nullable=False),
                   Column("created_at", String(40), nullable=False))
    meta = Table("tailor_registry_meta", md,
                 Column("key", String(50), primary_key=True),
                 Column("value", Text, nullable=False))
    return md, models, versions, events, meta


_MD, MODELS, VERSIONS, EVENTS, META = _tables()


def utc_now() -> str:
    """The current UTC time as the ISO string the registry stores."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def jsonable(obj, what: str):
    """A JSON-safe copy (paths as strings, NaN as null: PostgreSQL's JSON rejects NaN)."""
    def clean(x):
        if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
            return None
        if isinstance(x, dict):
            return {str(k): clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x

    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise TailorError(f"{what} must be a mapping, got {type(obj).__name__}", where=what)
    return clean(json.loads(json.dumps(obj, default=str)))


def _sqlalchemy():
    try:
        import sqlalchemy
    except ImportError:
        raise TailorError("the model registry needs SQLAlchemy", fix="pip install 'tailor[mlops]' (or sqlalchemy>=2)") from None
    return sqlalchemy


def _make_url(url: str | Path):
    sa = _sqlalchemy()
    from sqlalchemy.engine import make_url

    text_url = str(url)
    if "://" not in text_url:  # a plain path means a SQLite file
        text_url = "sqlite:///" + str(Path(text_url).expanduser().resolve())
    try:
        return make_url(text_url)
    except sa.exc.ArgumentError as exc:
        raise TailorError(f"cannot read the registry URL {text_url!r}: {exc}", where="--url / refresh.registry / TAILOR_REGISTRY",
                          fix="use a file path (runs/registry.db), sqlite:///path.db or postgresql://user@host/db") from None


class Database:
    """The registry's database at a SQLAlchemy URL (a plain path means a SQLite file), tables created on first use.

    With create=False a missing registry is an error instead of a new, empty one.
    """

    def __init__(self, url: str | Path, busy_timeout: float = BUSY_TIMEOUT_S, create: bool = True):
        sa = _sqlalchemy()
        self.url = _make_url(url)
        self.where = self.url.render_as_string(hide_password=True)
        self.sa = sa
        db = self.url.database if self.url.get_backend_name() == "sqlite" else None
        if not create and db and db != ":memory:" and not db.startswith("file:") and not Path(db).exists():
            raise TailorError(f"there is no registry at {db} (the file does not exist)",
                              where="--url / refresh.registry / serve.registry / TAILOR_REGISTRY",
                              fix="pass the registry's path or URL, or register a model first (tailor registry register)")
        self._engine = self._connect(busy_timeout)
        try:
            found = self._schema_version()
            if found is None and not create:
                raise TailorError("the database holds no model registry", where=self.where,
                                  fix="pass the registry's URL, or register a model first (tailor registry register)")
            if found is None:
                self._create_tables()
                found = str(SCHEMA_VERSION)
            if int(found) != SCHEMA_VERSION:
                raise TailorError(f"the registry has schema version {found}, this tailor reads version {SCHEMA_VERSION}",
                                  where=self.where, fix="use the tailor version that created it, or a new registry")
        except TailorError:
            self._engine.dispose()
            raise

    def _create_tables(self) -> None:
        """Create the tables of a new registry; several processes may try at once, exactly one succeeds."""
        sa = self.sa
        try:
            with self.write() as conn:
                if conn.dialect.name == "postgresql":
                    # CREATE TABLE is not serialized by row locks; a transaction-scoped advisory lock is.
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(7305501)"))
                _MD.create_all(conn)  # checks first, so the creator that waited finds the tables there
                if conn.execute(sa.select(META.c.value).where(META.c.key == "schema_version")).scalar() is None:
                    conn.execute(META.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
        except TailorError:
            if self._schema_version() is None:  # on databases without such a lock: fine if another process won
                raise

    def _schema_version(self) -> str | None:
        """The stored schema version, or None for a database without the registry's tables (read-only check)."""
        sa = self.sa
        with self.read() as conn:
            if not sa.inspect(conn).has_table(META.name):
                return None
            return conn.execute(sa.select(META.c.value).where(META.c.key == "schema_version")).scalar()

    def _connect(self, busy_timeout: float):
        sa = self.sa
        from sqlalchemy import event

        backend = self.url.get_backend_name()
        try:
            if backend == "sqlite":
                db = self.url.database
                if db and db != ":memory:" and not db.startswith("file:"):
                    p = Path(db)
                    if p.is_dir():
                        raise TailorError(f"the registry path is a directory: {p}", where=self.where,
                                          fix="name a database file, e.g. runs/registry.db")
                    p.parent.mkdir(parents=True, exist_ok=True)
                engine = sa.create_engine(self.url, connect_args={"timeout": busy_timeout})

                @event.listens_for(engine, "connect")
                def _on_connect(dbapi_conn, _record):
                    # SQLAlchemy, not the sqlite3 module, decides where transactions begin (see _on_begin).
                    dbapi_conn.isolation_level = None
                    cur = dbapi_conn.cursor()
                    cur.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
                    cur.execute("PRAGMA journal_mode = WAL")  # readers do not block the writer, nor it them
                    cur.execute("PRAGMA foreign_keys = ON")
                    cur.close()

                @event.listens_for(engine, "begin")
                def _on_begin(conn):
                    # A writer takes the write lock at BEGIN, so the read-modify-write of a version number
                    # cannot interleave with another writer's (a deferred BEGIN would fail on upgrade instead).
                    read = conn.get_execution_options().get("tailor_read", False)
                    conn.exec_driver_sql("BEGIN" if read else "BEGIN IMMEDIATE")
            elif backend == "postgresql":
                # Writers serialize on the model's row lock (SELECT ... FOR UPDATE), which READ COMMITTED honours.
                engine = sa.create_engine(self.url, isolation_level="READ COMMITTED", pool_pre_ping=True)
            else:
                engine = sa.create_engine(self.url, pool_pre_ping=True)
        except TailorError:
            raise
        except (ImportError, sa.exc.NoSuchModuleError, sa.exc.ArgumentError) as exc:
            raise TailorError(f"cannot open the registry at {self.where}: {exc}", where="--url / refresh.registry / TAILOR_REGISTRY",
                              fix="use a file path or sqlite:///path.db; for PostgreSQL install a driver "
                                  "(pip install 'psycopg[binary]') and use postgresql+psycopg://user@host/db") from None
        return engine

    def close(self) -> None:
        self._engine.dispose()

    @contextmanager
    def write(self):
        """One write transaction; database errors become TailorErrors that name the registry."""
        try:
            with self._engine.begin() as conn:
                yield conn
        except TailorError:
            raise
        except self.sa.exc.IntegrityError as exc:
            raise TailorError(f"the registry refused a change that would break its rules: {exc.orig}", where=self.where,
                              fix="another writer changed the same model at the same time; run the command again") from None
        except (self.sa.exc.OperationalError, self.sa.exc.DatabaseError) as exc:
            raise TailorError(f"registry database error: {exc.orig}", where=self.where,
                              fix="check that the database exists, is reachable and writable (SQLite: not on a network "
                                  "file system), and is not locked by a stuck process") from None

    @contextmanager
    def read(self):
        """One read-only connection; database errors become TailorErrors that name the registry."""
        try:
            with self._engine.connect() as conn:
                conn.execution_options(tailor_read=True)
                yield conn
        except TailorError:
            raise
        except (self.sa.exc.OperationalError, self.sa.exc.DatabaseError) as exc:
            raise TailorError(f"registry database error: {exc.orig}", where=self.where,
                              fix="check that the database exists and is readable") from None

    def lock(self, conn, name: str) -> dict:
        """Create the model's row if missing and lock it until the transaction ends."""
        sa = self.sa
        values = {"name": name, "revision": 0, "created_at": utc_now()}
        dialect = conn.dialect.name
        if dialect in ("sqlite", "postgresql"):
            if dialect == "sqlite":
                from sqlalchemy.dialects.sqlite import insert
            else:
                from sqlalchemy.dialects.postgresql import insert
            insert = insert(MODELS)
            conn.execute(insert.values(**values).on_conflict_do_nothing(index_elements=["name"]))
        else:
            with conn.begin_nested() as sp:
                try:
                    conn.execute(MODELS.insert().values(**values))
                except sa.exc.IntegrityError:
                    sp.rollback()
        return dict(conn.execute(sa.select(MODELS).where(MODELS.c.name == name).with_for_update()).mappings().one())
