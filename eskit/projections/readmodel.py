"""A projection's read model: a SQLite database that also holds the projection's position.

The position (the stream sequence of the last event applied) is written in the same transaction as the
changes the events made, so the read model and its position can never disagree: after a crash, a redelivered
event at or below the position is recognised and skipped.

>>> model = ReadModel(":memory:", "orders_view", "CREATE TABLE orders_view (id TEXT PRIMARY KEY)")
>>> model.position
0

A read model fed by several stores (:mod:`eskit.projections.multistream`) keeps one position per store: each store's
part is a :meth:`ReadModel.lane` on the same database, with its own row in the positions table, moved in
the same transaction as that store's changes.

``path`` is a file or ``":memory:"``. A rebuild builds a fresh model beside the live one (``<path>.rebuild``
for a file) and :meth:`ReadModel.replace` swaps it in: for a file, with one atomic rename, so a reader opening
``path`` sees either the old model or the new one, never a half-built one.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

from ..events import RecordedEvent

POSITIONS = "eskit_positions"
Apply = Callable[[sqlite3.Connection, RecordedEvent], None]


class ReadModel:
    """One SQLite database (file or memory) with a schema and a position (see the module docstring)."""

    def __init__(
        self, path: str | os.PathLike[str], name: str, schema: str, *, key: str | None = None,
        db: sqlite3.Connection | None = None,
    ) -> None:  # fmt: skip
        self.path = str(path)
        self.name = name
        self.schema = schema
        self.key = key or name  # the row of the positions table this model moves
        self._owns_db = db is None  # a lane shares its owner's database and never closes it
        self.db = db if db is not None else self._open(self.path)
        self.position = self._setup()

    @property
    def in_memory(self) -> bool:
        return self.path == ":memory:"

    def _open(self, path: str) -> sqlite3.Connection:
        db = sqlite3.connect(path, isolation_level=None)  # autocommit: we BEGIN and COMMIT ourselves
        db.execute("PRAGMA synchronous = NORMAL")
        return db

    def _setup(self) -> int:
        exists = self.db.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (POSITIONS,)).fetchone()
        if not exists:  # a new model: its tables and the position table, in one transaction
            self.db.executescript(
                f"BEGIN;\n{self.schema.strip().rstrip(';')};\n"
                f"CREATE TABLE {POSITIONS} (name TEXT PRIMARY KEY, position INTEGER NOT NULL);\nCOMMIT;"
            )
        row = self.db.execute(f"SELECT position FROM {POSITIONS} WHERE name = ?", (self.key,)).fetchone()
        return int(row[0]) if row else 0

    def lane(self, key: str) -> ReadModel:
        """A model on the same database with a position of its own (row ``key``): one store's part of a
        read model fed by several stores. Only the model that opened the database closes it."""
        return ReadModel(self.path, self.name, self.schema, key=key, db=self.db)

    def follow(self, owner: ReadModel) -> None:
        """Point this lane at ``owner``'s database again (after the owner's :meth:`replace`)."""
        self.db = owner.db
        self.position = self._setup()

    def run(self, events: Sequence[RecordedEvent], apply: Apply) -> tuple[int, Exception | None]:
        """Apply ``events`` in one transaction and move the position to the last one, all or nothing.

        If ``apply`` raises on event ``i``, the transaction is rolled back and the events before it are
        applied again in a transaction of their own: returns ``(events committed, the error)``.
        """
        db = self.db
        db.execute("BEGIN")
        for i, event in enumerate(events):
            try:
                apply(db, event)
            except Exception as exc:
                db.execute("ROLLBACK")
                if i == 0:
                    return 0, exc
                done, error = self.run(events[:i], apply)
                return done, error or exc
        self._commit(events[-1].position) if events else db.execute("COMMIT")
        return len(events), None

    def advance(self, position: int) -> None:
        """Move the position past an event without applying it (a parked event)."""
        self.db.execute("BEGIN")
        self._commit(position)

    def _commit(self, position: int) -> None:
        try:
            self.db.execute(
                f"INSERT INTO {POSITIONS} (name, position) VALUES (?, ?) ON CONFLICT (name) "
                "DO UPDATE SET position = max(position, excluded.position)",
                (self.key, position),
            )
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise
        self.position = max(self.position, position)

    def sibling(self) -> ReadModel:
        """A new, empty model beside this one, for a rebuild (``<path>.rebuild``, or another memory db)."""
        if self.in_memory:
            return ReadModel(":memory:", self.name, self.schema)
        path = Path(self.path + ".rebuild")
        for leftover in (path, Path(f"{path}-journal")):
            leftover.unlink(missing_ok=True)  # an earlier rebuild that did not finish
        return ReadModel(path, self.name, self.schema)

    def replace(self, new: ReadModel) -> None:
        """Become ``new`` (a finished :meth:`sibling`): from now on queries see its tables and position."""
        old = self.db
        if new.in_memory:
            self.db = new.db
        else:
            new.db.close()
            os.replace(new.path, self.path)  # atomic: readers that open `path` see old or new, whole
            self.db = self._open(self.path)
        self.position = new.position
        old.close()

    def close(self) -> None:
        if self._owns_db:
            self.db.close()
