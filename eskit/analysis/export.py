"""Streaming export: a store as Arrow record batches or as a Parquet dataset, in bounded memory.

>>> reader = await eskit.to_arrow(orders)                     # a pyarrow.RecordBatchReader   # doctest: +SKIP
>>> result = await eskit.to_parquet(orders, "orders.parquet")                                  # doctest: +SKIP
>>> result = await eskit.to_parquet(orders, "orders.parquet", after="last")  # nightly: new events only # doctest: +SKIP

Columns, their names and values are :func:`eskit.to_dataframe`'s (``names="pm4py"`` too): the read is the
same (one short-lived consumer, or Direct Get pages), cut into frames of 20,000 events (``export.CHUNK``),
each turned into one Arrow record batch and dropped before the next; Parquet row groups collect 100,000
rows (``row_group``) as Arrow data. Memory is bounded by a chunk and a row group, not by the store. A data
column whose values have more than one type in a file (``5`` and ``"5"``) is text there.

**The Parquet dataset** is a folder of plain Parquet files, readable unchanged by DuckDB, Polars, Spark,
Dask and ``pyarrow.dataset`` (``read_parquet('orders.parquet/**/*.parquet', union_by_name=true)``), with
hive partitions when ``partition_by`` is given (``type=created/part-...parquet``). Files are named by the
positions they hold (``part-<first>-<last>.parquet``) and carry them in their key-value metadata; a new file
starts every ``rows_per_file`` events, or when the data grows a column. ``_eskit_export.json`` records what
was exported (the store, the options, ``last_position``): ``after="last"`` appends only the events stored
since, as new files.

**Atomic per file.** Each file is written under a hidden temporary name and renamed when complete; the
record is then rewritten (temporary file + rename) to name the new last position. An export killed
mid-way leaves the files of the previous export (and of the steps completed) intact; the next incremental
export removes leftover temporary files and any file beyond the recorded position, and goes on from there.
``overwrite=True`` builds the new dataset beside the old one and swaps them when it is complete.

**to_arrow** returns one ``RecordBatchReader`` with one schema, so it must know every column before the
first batch: the read is spooled to a temporary Arrow IPC folder (one file per schema, memory-mapped back),
and the reader streams the batches from there, each widened to the final schema.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
import weakref
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

from tqdm import tqdm

from ..errors import EskitError, ValidationError
from .frames import Names, _renamed, chunk_frames

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from ..store import EventStore

CHUNK = 20_000  # events decoded into a frame at a time (Python objects: the bulk of an export's memory)
ROW_GROUP = 100_000  # rows per Parquet row group, collected as Arrow data (compact)
RECORD = "_eskit_export.json"
FORMAT = 1
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
_TMP = ".tmp-"


def _arrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet  # a submodule: loaded here once, used as pyarrow.parquet
    except ImportError as exc:
        raise EskitError("the Arrow/Parquet export needs pyarrow: pip install 'eskit[analysis]'") from exc
    return pyarrow


@dataclass(frozen=True, slots=True)
class ExportResult:
    """What an export wrote: events and files added, and the positions they cover (``after`` < p <= last)."""

    path: Path
    events: int
    files: int
    after: int
    last_position: int


# -- frames -> record batches ------------------------------------------------------------------------------


async def _batches(
    source: EventStore, after: int, subjects: Sequence[str] | None, names: Names, bar: tqdm
) -> AsyncIterator[pa.RecordBatch]:
    """One record batch per chunk of the read (schemas may differ from batch to batch)."""
    if names not in ("eskit", "pm4py"):
        raise ValidationError(f"names={names!r}: use 'eskit' or 'pm4py'")
    if subjects is not None and len(subjects) > 1:
        raise ValidationError("a streaming export takes one subject filter (subjects=['orders.*.shipped'])")
    async for frame in chunk_frames(source, after, subjects, bar, chunk=CHUNK):
        yield _batch(_renamed(frame) if names == "pm4py" else frame)


def _batch(df: pd.DataFrame) -> pa.RecordBatch:
    pa = _arrow()
    arrays = []
    for name in df.columns:
        column = df[name]
        try:
            array = pa.array(column, from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):  # mixed types: as text
            array = _text(pa, column.tolist())
        if pa.types.is_large_string(array.type):
            array = array.cast(pa.string())
        arrays.append(array)
    return pa.RecordBatch.from_arrays(arrays, names=[str(c) for c in df.columns])


def _text(pa: Any, values: list[Any]) -> pa.Array:
    def one(v: Any) -> str | None:
        if v is None or (isinstance(v, float) and v != v):
            return None
        return v if isinstance(v, str) else json.dumps(v, default=str, ensure_ascii=False)

    return pa.array([one(v) for v in values], type=pa.string())


def _merged(old: pa.Schema | None, new: pa.Schema) -> pa.Schema:
    """A schema holding both: old's columns first; a type that differs is widened (int -> float, else text)."""
    pa = _arrow()
    if old is None:
        return new
    fields = {f.name: f.type for f in old}
    for f in new:
        have = fields.get(f.name)
        if have is None or pa.types.is_null(have):
            fields[f.name] = f.type
        elif pa.types.is_null(f.type) or have == f.type:
            continue
        elif _numeric(pa, have) and _numeric(pa, f.type):
            fields[f.name] = pa.float64()
        else:
            fields[f.name] = pa.string()
    return pa.schema(list(fields.items()), metadata=old.metadata)


def _numeric(pa: Any, t: pa.DataType) -> bool:
    return bool(pa.types.is_integer(t) or pa.types.is_floating(t))


def _fits(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch | None:
    """``batch`` as ``schema`` (missing columns empty, types widened), or None if it has other columns or types."""
    pa = _arrow()
    if batch.schema.equals(schema):
        return batch
    if any(schema.get_field_index(n) < 0 for n in batch.schema.names):
        return None
    arrays = []
    for f in schema:
        i = batch.schema.get_field_index(f.name)
        if i < 0:
            arrays.append(pa.nulls(batch.num_rows, f.type))
            continue
        array = batch.column(i)
        if array.type != f.type:
            if pa.types.is_null(array.type):
                array = pa.nulls(batch.num_rows, f.type)
            elif pa.types.is_floating(f.type) and _numeric(pa, array.type):
                array = array.cast(f.type)
            elif pa.types.is_string(f.type):
                array = _text(pa, array.to_pylist())
            else:
                return None
        arrays.append(array)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _bar(desc: str, progress: bool | None) -> tqdm:
    return tqdm(
        unit="ev", desc=desc, disable=None if progress is None else not progress, delay=0.5 if progress is None else 0
    )


# -- to_arrow ----------------------------------------------------------------------------------------------


async def to_arrow(
    source: EventStore,
    *,
    after: int = 0,
    subjects: Sequence[str] | None = None,
    names: Names = "eskit",
    progress: bool | None = None,
) -> pa.RecordBatchReader:
    """The events of ``source`` after ``after`` as a ``pyarrow.RecordBatchReader`` (columns as
    :func:`eskit.to_dataframe`), in bounded memory: spooled to a temporary Arrow file, streamed back.

    >>> reader = await eskit.to_arrow(orders, names="pm4py")                       # doctest: +SKIP
    >>> duckdb.sql("SELECT \\"concept:name\\", count(*) FROM reader GROUP BY 1")    # doctest: +SKIP
    """
    pa = _arrow()
    spool = Path(tempfile.mkdtemp(prefix="eskit-arrow-"))
    files: list[Path] = []
    schema: Any = None
    writer: Any = None
    try:
        with _bar("to_arrow", progress) as bar:
            async for batch in _batches(source, after, subjects, names, bar):
                fitted = _fits(batch, schema) if schema is not None else None
                if fitted is None:  # a new column or type: a new spool file with the widened schema
                    if writer is not None:
                        writer.close()
                    schema = _merged(schema, batch.schema)
                    files.append(spool / f"{len(files):06d}.arrow")
                    writer = pa.ipc.new_file(str(files[-1]), schema)
                    fitted = _fits(batch, schema)
                writer.write_batch(fitted)
    except BaseException:
        shutil.rmtree(spool, ignore_errors=True)
        raise
    finally:
        if writer is not None:
            writer.close()
    if schema is None:  # nothing to read: the base columns, empty
        from .frames import _Columns

        shutil.rmtree(spool, ignore_errors=True)
        empty = _batch(_renamed(_Columns().frame()) if names == "pm4py" else _Columns().frame())
        return pa.RecordBatchReader.from_batches(empty.schema, iter([]))
    final = schema

    def stream() -> Iterator[Any]:
        try:
            for file in files:
                with pa.memory_map(str(file)) as source_file:
                    reader = pa.ipc.open_file(source_file)
                    for i in range(reader.num_record_batches):
                        fitted = _fits(reader.get_batch(i), final)
                        assert fitted is not None  # every spool schema is a part of the final one
                        yield fitted
        finally:
            shutil.rmtree(spool, ignore_errors=True)

    batches = stream()
    weakref.finalize(batches, shutil.rmtree, spool, True)  # a reader dropped unread removes its spool too
    return pa.RecordBatchReader.from_batches(final, batches)


# -- to_parquet --------------------------------------------------------------------------------------------


class _File:
    """One Parquet file being written under a temporary name."""

    def __init__(self, folder: Path, schema: pa.Schema, row_group: int) -> None:
        self.folder = folder
        self.schema = schema
        self.row_group = row_group
        self.tmp = folder / f"{_TMP}{uuid.uuid4().hex}.part"  # not *.parquet: globs skip it
        folder.mkdir(parents=True, exist_ok=True)
        self.writer: Any = _arrow().parquet.ParquetWriter(str(self.tmp), schema, compression="zstd")
        self.first = self.last = 0
        self.rows = 0
        self.buffered: list[pa.RecordBatch] = []  # rows of the next row group
        self.buffered_rows = 0

    def write(self, batch: pa.RecordBatch, first: int, last: int) -> None:
        self.buffered.append(batch)
        self.buffered_rows += batch.num_rows
        self.first, self.last, self.rows = self.first or first, last, self.rows + batch.num_rows
        if self.buffered_rows >= self.row_group:
            self._flush()

    def _flush(self) -> None:
        if self.buffered:
            table = _arrow().Table.from_batches(self.buffered, schema=self.schema)
            self.writer.write_table(table, row_group_size=max(self.row_group, table.num_rows))
            self.buffered, self.buffered_rows = [], 0

    def finish(self, meta: dict[str, Any]) -> Path:
        self._flush()
        self.writer.add_key_value_metadata(
            {"eskit": json.dumps({**meta, "first_position": self.first, "last_position": self.last})}
        )
        self.writer.close()
        final = self.folder / f"part-{self.first:012d}-{self.last:012d}.parquet"
        os.replace(self.tmp, final)
        return final

    def drop(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()
        self.tmp.unlink(missing_ok=True)


async def to_parquet(
    source: EventStore,
    path: str | Path,
    *,
    after: int | Literal["last"] = 0,
    subjects: Sequence[str] | None = None,
    names: Names = "eskit",
    partition_by: str | Sequence[str] | None = None,
    overwrite: bool = False,
    rows_per_file: int = 1_000_000,
    row_group: int = ROW_GROUP,
    progress: bool | None = None,
) -> ExportResult:
    """Export the events of ``source`` after ``after`` to the Parquet dataset (a folder) ``path``.

    ``after="last"``: append the events stored since the last export to ``path`` (a full export if
    ``path`` does not exist yet). An existing ``path`` is an error unless ``overwrite=True`` (replace it)
    or ``after="last"``. ``partition_by``: hive partitions by these columns (``"type"``).

    >>> await eskit.to_parquet(orders, "exports/orders", partition_by="type", overwrite=True)   # doctest: +SKIP
    ExportResult(path=PosixPath('exports/orders'), events=1260, files=6, after=0, last_position=1260)
    """
    pa = _arrow()
    path = Path(path)
    partitions = [partition_by] if isinstance(partition_by, str) else list(partition_by or [])
    if rows_per_file < 1 or row_group < 1:
        raise ValidationError("rows_per_file and row_group must be at least 1")
    if names not in ("eskit", "pm4py"):
        raise ValidationError(f"names={names!r}: use 'eskit' or 'pm4py'")
    if "position" in partitions:
        raise ValidationError("partition_by='position' makes a folder per event; partition by 'type' or a data column")
    what = {
        "store": getattr(source, "name", None),
        "names": names,
        "subjects": list(subjects) if subjects is not None else None,
        "partition_by": partitions,
    }
    incremental = after == "last"
    if incremental and overwrite:
        raise ValidationError("after='last' appends to an export, overwrite=True replaces it: pass one of them")
    if not incremental and not isinstance(after, int):
        raise ValidationError(f"after={after!r}: give a position (int) or 'last'")
    exists = path.exists()
    if exists and not path.is_dir():
        raise ValidationError(f"{path} is a file; a Parquet export is a folder: give another path")
    if exists and not incremental and not overwrite:
        raise ValidationError(
            f"{path} exists: pass overwrite=True to replace it, or after='last' to append the events since its export"
        )
    start = int(after) if not incremental else 0
    target = path
    if incremental and exists:
        start = _resume(path, what)
    elif exists:  # overwrite: build beside it, swap when complete
        target = path.with_name(f".{path.name}{_TMP}{uuid.uuid4().hex[:8]}")
    meta = {**what, "format": FORMAT}
    events, written = 0, 0
    last = start
    open_files: dict[tuple[str, ...], _File] = {}
    pending = 0  # rows in open files

    def commit() -> None:
        nonlocal written, pending
        for file in open_files.values():
            file.finish(meta)
            written += 1
        open_files.clear()
        pending = 0
        _write_record(target, {**meta, "last_position": last})

    try:
        target.mkdir(parents=True, exist_ok=True)
        if not (target / RECORD).exists():
            _write_record(target, {**meta, "last_position": start})
        with _bar("to_parquet", progress) as bar:
            async for chunk in _batches(source, start, subjects, names, bar):
                for at in range(0, chunk.num_rows, min(row_group, rows_per_file)):
                    batch = chunk.slice(at, min(row_group, rows_per_file))
                    missing = [p for p in partitions if p not in batch.schema.names]
                    if missing:
                        raise ValidationError(f"partition_by: no column {missing[0]!r}; columns: {batch.schema.names}")
                    parts = list(_split(pa, batch, partitions))
                    grown = [k for k, part in parts if k in open_files and _fits(part, open_files[k].schema) is None]
                    schemas = {k: open_files[k].schema for k in grown}
                    if grown:  # the data grew a column: commit the open files (all hold rows up to `last` only)
                        commit()
                    for key, part in parts:
                        file = open_files.get(key)
                        if file is None:
                            folder = target.joinpath(
                                *(f"{p}={quote(v, safe='')}" for p, v in zip(partitions, key, strict=True))
                            )
                            file = _File(folder, _merged(schemas.get(key), part.schema), row_group)
                            open_files[key] = file
                        fitted = _fits(part, file.schema)
                        if fitted is None:  # cannot happen: a new file's schema holds its first part
                            raise EskitError(f"export: rows of {key} do not fit their file's schema")
                        positions = part.column("position")
                        file.write(fitted, positions[0].as_py(), positions[-1].as_py())
                    last = max(last, batch.column("position")[-1].as_py())
                    events += batch.num_rows
                    pending += batch.num_rows
                    if pending >= rows_per_file:
                        commit()
        commit()
    except BaseException:
        for file in open_files.values():
            file.drop()
        if target != path or not (exists or incremental):  # nothing stored (an incremental one keeps its files)
            shutil.rmtree(target, ignore_errors=True)
        raise
    if target != path:  # overwrite: the new dataset is complete; swap
        old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(path, old)
        os.replace(target, path)
        shutil.rmtree(old, ignore_errors=True)
    return ExportResult(path, events, written, start, last)


def _split(pa: Any, batch: pa.RecordBatch, partitions: list[str]) -> Iterator[tuple[tuple[str, ...], pa.RecordBatch]]:
    """The rows of ``batch`` per partition (the partition columns dropped, as hive layouts do)."""
    if not partitions:
        yield (), batch
        return
    import pyarrow.compute as pc

    table = pa.Table.from_batches([batch])
    keys = [_text(pa, table.column(p).to_pylist()) for p in partitions]
    keys = [pc.fill_null(k, HIVE_NULL) for k in keys]
    combined = keys[0] if len(keys) == 1 else pc.binary_join_element_wise(*keys, "\x1f")
    rest = table.drop_columns(partitions)
    for value in pc.unique(combined).to_pylist():
        rows = rest.filter(pc.equal(combined, value))
        part = rows.combine_chunks().to_batches()[0]
        yield tuple(str(value).split("\x1f")), part


def _write_record(folder: Path, record: dict[str, Any]) -> None:
    tmp = folder / f"{_TMP}{uuid.uuid4().hex}.json"
    tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, folder / RECORD)


def _resume(path: Path, what: dict[str, Any]) -> int:
    """The last position exported to ``path``; removes what an interrupted export left beyond it."""
    try:
        record = json.loads((path / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValidationError(
            f"{path} is not an eskit Parquet export (no readable {RECORD}): give another path or overwrite=True"
        ) from exc
    differs = {k: record.get(k) for k, v in what.items() if record.get(k) != v}
    if differs:
        raise ValidationError(
            f"{path} was exported with {differs}, not { ({k: what[k] for k in differs}) }: "
            "export with the same options, or to a new path"
        )
    last = int(record["last_position"])
    for leftover in path.rglob(f"{_TMP}*"):
        leftover.unlink(missing_ok=True)
    for file in path.rglob("part-*-*.parquet"):
        with contextlib.suppress(ValueError):
            if int(file.stem.split("-")[1]) > last:  # renamed, but its export never recorded it
                file.unlink()
    return last
