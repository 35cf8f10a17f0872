"""Streams into pandas DataFrames: one row per event, built column-wise straight from the wire.

>>> df = await eskit.to_dataframe(orders)                                    # doctest: +SKIP
>>> df.columns[:5].tolist()
['position', 'aggregate_id', 'type', 'timestamp', 'occurred_at']

Columns: ``position``, ``aggregate_id`` and ``type`` (original names: ``%XX`` escapes from
:func:`~eskit.events.encode_token` are undone), ``timestamp`` (when the server stored it, UTC),
``occurred_at`` (when it happened, UTC), ``event_id``, ``schema_version``, ``correlation_id``,
``causation_id``, ``subject``, then ``meta:<key>`` for each metadata key and the event data flattened
(nested keys joined with ``.``; a data key that clashes with a column above gets a ``data:`` prefix).

``names="pm4py"`` renames the case, activity and time columns to the XES convention
(``case:concept:name``, ``concept:name``, ``time:timestamp`` = ``occurred_at``), so the frame goes
straight into pm4py.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence
from datetime import UTC
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd
from tqdm import tqdm

from .._bulkread import ConsumerRefused, RawBatch
from .._nats.codes import EXPECTED_SEQ, EXPECTED_SUBJECT
from .._nats.wire import StoredMsg
from .._rawdecode import ack_tokens, decode_payloads, split_subjects, version
from .._reader import by_consumer
from ..dcb.store import DCBStore
from ..errors import EventStoreError, ValidationError
from ..events import (
    CAUSATION_ID,
    CORRELATION_ID,
    META_PREFIX,
    MSG_ID,
    OCCURRED_AT,
    SCHEMA_VERSION,
    RecordedEvent,
    check_position,
    subject_parts,
)
from .eventlog import ACTIVITY, CASE, TIMESTAMP
from .rawcolumns import raw_columns

if TYPE_CHECKING:
    from ..privacy import Privacy
    from ..store import EventStore
    from ..upcasting import Upcasters
    from .rawcolumns import RawColumns

CHUNK = 100_000  # rows turned into a DataFrame at a time: bounds the per-event Python objects held
BASE = [
    "position",
    "aggregate_id",
    "type",
    "timestamp",
    "occurred_at",
    "event_id",
    "schema_version",
    "correlation_id",
    "causation_id",
    "subject",
]
PM4PY = {"aggregate_id": CASE, "type": ACTIVITY, "occurred_at": TIMESTAMP}
Names = Literal["eskit", "pm4py"]
_NO_META: dict[str, str] = {}
_PICKED = ("Nats-Time-Stamp", OCCURRED_AT, MSG_ID, SCHEMA_VERSION, CORRELATION_ID, CAUSATION_ID)
_KNOWN = frozenset(
    {
        *_PICKED,
        "Nats-Stream",
        "Nats-Subject",
        "Nats-Sequence",
        "Nats-Num-Pending",
        "Nats-Last-Sequence",
        EXPECTED_SEQ,
        EXPECTED_SUBJECT,
    }
)


class _Columns:
    """Column lists for one chunk of events."""

    def __init__(self, upcasters: Upcasters | None = None, privacy: Privacy | None = None) -> None:
        self.upcasters = upcasters  # applied to stored messages (RecordedEvents come upcast already)
        self.privacy = privacy  # personal fields of stored messages decrypted by build() (eskit.privacy)
        self.rows: list[list[Any]] = [[] for _ in range(8)]
        self.meta: list[dict[str, str]] = []
        self.data: list[Any] = []  # decoded (from RecordedEvents)
        self.raw: list[bytes] = []  # payloads (from messages), decoded a chunk at a time
        self.batches: list[RawBatch] = []  # raw consumer messages, cut into columns a chunk at a time
        self.size = 0
        self.has_meta = False

    def __len__(self) -> int:
        return len(self.data) + len(self.raw) + self.size

    def add_raw(self, batch: RawBatch) -> None:
        self.batches.append(batch)
        self.size += len(batch)

    def add_messages(self, messages: list[StoredMsg]) -> None:
        pos, subj, stamp, occ, ids, ver, corr, caus = self.rows
        raw, meta, columns = self.raw, self.meta, (stamp, occ, ids, ver, corr, caus)
        for m in messages:
            h = m.headers
            pos.append(m.seq)
            subj.append(m.subject)
            for column, value in zip(columns, map(h.get, _PICKED), strict=True):
                column.append(value)
            if h.keys() - _KNOWN:  # a set difference in C: most events carry no metadata
                extra = {k[len(META_PREFIX) :]: v for k, v in h.items() if k.startswith(META_PREFIX)}
                self.has_meta = self.has_meta or bool(extra)
                meta.append(extra)
            else:
                meta.append(_NO_META)
            raw.append(m.data)

    def add_event(self, e: RecordedEvent) -> None:
        occurred = e.occurred_at.isoformat() if e.occurred_at else None
        values = [
            e.position,
            e.subject,
            e.timestamp.isoformat(),
            occurred,
            e.id,
            e.schema_version,
            e.correlation_id,
            e.causation_id,
        ]
        for column, value in zip(self.rows, values, strict=True):
            column.append(value)
        self.meta.append(dict(e.metadata))
        self.has_meta = self.has_meta or bool(e.metadata)
        self.data.append(e.data)

    async def build(self) -> pd.DataFrame:
        """:meth:`frame`, with the personal fields of stored messages decrypted first (or FORGOTTEN)."""
        if self.privacy is None or not (self.batches or self.raw):
            return self.frame()
        if self.batches:
            columns = raw_columns(self.batches)
            data = _decode_all(columns.payloads)
            await self.privacy.reveal([subject_parts(s)[1] for s in columns.base["subject"]], data)
            return self._raw_frame(columns, data)
        data = _decode_all(self.raw)
        await self.privacy.reveal([subject_parts(s)[1] for s in self.rows[1]], data)
        return self.frame(data)

    def frame(self, decoded: list[Any] | None = None) -> pd.DataFrame:
        """The chunk as a DataFrame (``decoded``: the payloads, decoded already)."""
        if self.batches:
            return self._raw_frame()
        pos, subj, stamp, occ, ids, ver, corr, caus = self.rows
        _, aggregates, types = split_subjects(subj, original_names=True)
        data = decoded if decoded is not None else self.data or _decode_all(self.raw)
        versions = [version(v) for v in ver]
        if self.upcasters is not None and self.raw:
            types, versions = self.upcasters._apply_columns(pos, subj, types, versions, data)
        df = pd.DataFrame(
            {
                "position": pd.array(pos, dtype="int64"),
                "aggregate_id": aggregates,
                "type": types,
                "timestamp": _times(stamp),
                "occurred_at": _times(occ),
                "event_id": pd.array(ids, dtype=object),
                "schema_version": pd.array(versions, dtype="int64"),
                "correlation_id": pd.array(corr, dtype=object),
                "causation_id": pd.array(caus, dtype=object),
                "subject": subj,
            }
        )
        return _joined(df, self.meta if self.has_meta else None, data)

    def _raw_frame(self, columns: RawColumns | None = None, data: list[Any] | None = None) -> pd.DataFrame:
        columns = columns if columns is not None else raw_columns(self.batches)
        base = columns.base
        base["occurred_at"] = _times(columns.occurred_at)
        data = data if data is not None else _decode_all(columns.payloads)
        if self.upcasters is not None:
            base["type"], versions = self.upcasters._apply_columns(
                base["position"], base["subject"], base["type"], base["schema_version"], data
            )
            base["schema_version"] = pd.array(versions, dtype="int64")
        df = pd.DataFrame({name: base[name] for name in BASE})
        return _joined(df, columns.meta if columns.has_meta else None, data)


def _joined(df: pd.DataFrame, meta: list[dict[str, str]] | None, data: list[Any]) -> pd.DataFrame:
    parts = [df]
    if meta is not None:
        parts.append(pd.DataFrame(meta).add_prefix("meta:"))
    parts.append(_flatten(data, set(df.columns)))
    return pd.concat(parts, axis=1)


def _decode_all(payloads: list[bytes]) -> list[Any]:
    """JSON payloads (None for one that is not JSON)."""
    return decode_payloads(payloads)[0]


def _times(values: list[Any]) -> pd.Series:
    """ISO 8601 strings as UTC timestamps; a missing or garbled one is NaT, never an error."""
    times = pd.to_datetime(pd.Series(values, dtype=object), utc=True, format="ISO8601", errors="coerce")
    if times.dtype != "datetime64[ns, UTC]":  # pandas picked a coarser unit for a year outside 1677-2262
        times = times.where(
            (times >= pd.Timestamp.min.tz_localize(UTC)) & (times <= pd.Timestamp.max.tz_localize(UTC))
        )
    return times.astype("datetime64[ns, UTC]")


def _flatten(data: list[Any], taken: set[str]) -> pd.DataFrame:
    """Event data as columns: dict keys flattened with '.', anything else in one ``data`` column."""
    dicts = [d if isinstance(d, dict) else {} for d in data]
    frame = pd.DataFrame.from_records(dicts) if any(dicts) else pd.DataFrame(index=range(len(data)))
    for column in [c for c in frame.columns if frame[c].dtype == object]:
        if any(isinstance(v, dict) for v in frame[column]):
            nested = pd.json_normalize([v if isinstance(v, dict) else {} for v in frame[column]], sep=".")
            frame = frame.drop(columns=column).join(nested.add_prefix(f"{column}."))
    if any(d is not None and not isinstance(d, dict) for d in data):
        frame["data"] = [None if isinstance(d, dict) else d for d in data]
    frame = frame.rename(columns={c: f"data:{c}" for c in frame.columns if c in taken})
    return frame.loc[:, ~frame.columns.duplicated()]  # {"a.b": 1, "a": {"b": 2}}: the first wins


async def to_dataframe(
    source: EventStore | AsyncIterable[RecordedEvent] | Iterable[RecordedEvent],
    *,
    after: int = 0,
    subjects: Sequence[str] | None = None,
    names: Names = "eskit",
    progress: bool | None = None,
) -> pd.DataFrame:
    """One row per event of a store (after position ``after``, on ``subjects``) or of any event stream.

    A store is read with what the events were when the read started, built into columns 100,000 rows at a
    time. A whole store of more than one page (2,000 events): through a short-lived pull consumer, 2,000
    events a pull and 4 pulls in flight, raw messages cut into columns in bulk (:mod:`eskit._bulkread`);
    fewer, subject filters (a consumer's wildcard filters slow down with the number of aggregates), or an
    account that may not create consumers: batch Direct Get pages. ``progress``: None shows a
    bar on a terminal only, for reads that take over half a second; True always; False never.

    >>> df = await to_dataframe(store, subjects=["orders.*.shipped"], names="pm4py")  # doctest: +SKIP
    """
    if names not in ("eskit", "pm4py"):
        raise ValidationError(f"names={names!r}: use 'eskit' or 'pm4py'")
    check_position(after, "after", optional=False)
    if isinstance(source, str | bytes):
        raise ValidationError(f"to_dataframe takes a store (client.event_store({source!r})) or events, not a name")
    if isinstance(source, DCBStore):
        raise ValidationError(
            f"to_dataframe reads event stores; {source.name!r} is a DCB store: export it with "
            f"eskit.to_ocel(store, 'log.jsonocel') (an object-centric log), or read it with store.read(...)"
        )
    with tqdm(
        unit="ev",
        desc="to_dataframe",
        disable=None if progress is None else not progress,
        delay=0.5 if progress is None else 0,
    ) as bar:
        chunks = await _read(source, after, subjects, bar)
    df = pd.concat(chunks, ignore_index=True) if chunks else _Columns().frame()
    if subjects is not None and len(subjects) > 1:
        df = df.sort_values("position", kind="stable").drop_duplicates("position", ignore_index=True)
    return _renamed(df) if names == "pm4py" else df


async def _read(source: Any, after: int, subjects: Sequence[str] | None, bar: tqdm) -> list[pd.DataFrame]:
    return [chunk async for chunk in chunk_frames(source, after, subjects, bar)]


async def chunk_frames(
    source: Any, after: int, subjects: Sequence[str] | None, bar: tqdm | None = None, *, chunk: int = 0
) -> AsyncIterator[pd.DataFrame]:
    """The frames :func:`to_dataframe` concatenates, one per ``chunk`` events (default ``CHUNK``), as the
    read goes (columns as ``names="eskit"``; with several ``subjects``, each filter's events in turn).

    >>> async for chunk in chunk_frames(store, 0, None):                   # doctest: +SKIP
    ...     print(len(chunk))
    """
    from ..store import EventStore

    bar = bar if bar is not None else tqdm(disable=True)
    chunk = chunk or CHUNK
    upcasters = source.upcasters if isinstance(source, EventStore) else None
    privacy = source.privacy if isinstance(source, EventStore) else None
    columns = _Columns(upcasters, privacy)
    if isinstance(source, EventStore) and subjects is None:
        last = await source.reader.last_position()
        bar.total = max(0, last - after)
        if by_consumer(last - after):  # a consumer is faster; Direct Get reads on from where it stopped
            got = [after]
            async for frame in _read_by_consumer(source, after, bar, got, chunk):
                yield frame
            after = got[0]
        async for messages in source.reader.ahead(after=after, last=last):
            columns.add_messages(messages)
            bar.update(len(messages))
            if len(columns) >= chunk:
                yield await columns.build()
                columns = _Columns(upcasters, privacy)
    elif isinstance(source, EventStore):
        for filter_subject in _filters(source, subjects):
            first = True
            async for page in source.reader.pages(filter_subject, after, None):
                if first:  # the first page says how many more match: the bar's total
                    bar.total, first = (bar.total or 0) + len(page.messages) + page.pending, False
                    bar.refresh()
                columns.add_messages(page.messages)
                bar.update(len(page.messages))
                if len(columns) >= chunk:
                    yield await columns.build()
                    columns = _Columns(upcasters, privacy)
    elif subjects is not None:
        raise ValidationError("subjects= filters a store; filter an event stream before passing it")
    else:
        async for event in _events(source):
            columns.add_event(event)
            bar.update(1)
            if len(columns) >= chunk:
                yield await columns.build()
                columns = _Columns(upcasters, privacy)
    if len(columns):
        yield await columns.build()


async def _read_by_consumer(
    store: EventStore, after: int, bar: tqdm, got: list[int], chunk: int
) -> AsyncIterator[pd.DataFrame]:
    """Frames of the events after ``after``, as far as a consumer gets; ``got[0]``: the last position it got.

    Refused (an account that may not create consumers), ended early (events deleted meanwhile) or failed
    half-way (its consumer gone): the caller reads on from the position in ``got``, with Direct Get.
    """
    columns = _Columns(store.upcasters, store.privacy)
    reader = store.reader.batches(after=after, filters=[f"{store.name}.>"])
    with contextlib.suppress(ConsumerRefused, EventStoreError):
        async with contextlib.aclosing(reader) as batches:  # on an error too: the consumer goes at once
            async for batch in batches:
                columns.add_raw(batch)
                bar.update(len(batch))
                got[0] = ack_tokens(batch.replies[-1:]).positions[0]
                if len(columns) >= chunk:
                    frame, columns = await columns.build(), _Columns(store.upcasters, store.privacy)
                    yield frame
    if len(columns):
        yield await columns.build()


def _filters(store: EventStore, subjects: Sequence[str] | None) -> list[str]:
    filters = list(subjects or [f"{store.name}.>"])
    for f in filters:
        if not f.startswith(f"{store.name}."):
            raise ValidationError(f"subject filter {f!r} is outside store {store.name!r} ({store.name}.>)")
    return filters


async def _events(
    source: AsyncIterable[RecordedEvent] | Iterable[RecordedEvent],
) -> AsyncIterable[RecordedEvent]:
    if isinstance(source, AsyncIterable):
        async for event in source:
            yield event
    else:
        for event in source:
            yield event


def _renamed(df: pd.DataFrame) -> pd.DataFrame:
    df = df.assign(occurred_at=df["occurred_at"].fillna(df["timestamp"]))
    return df.rename(columns={c: f"data:{c}" for c in PM4PY.values() if c in df.columns}).rename(
        columns=PM4PY
    )
