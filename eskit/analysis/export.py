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

import os
import shutil
import tempfile
import uuid
import weakref
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tqdm import tqdm

from ..errors import ValidationError
from .arrow import fits as _fits
from .arrow import frame_batch as _batch
from .arrow import merged as _merged
from .arrow import pyarrow_module as _arrow
from .frames import Names, _renamed, chunk_frames
from .parquet import FORMAT, RECORD, TMP, Dataset, resume, write_record

if TYPE_CHECKING:
    import pyarrow as pa

    from ..store import EventStore

CHUNK = 20_000  # events decoded into a frame at a time (Python objects: the bulk of an export's memory)
ROW_GROUP = 100_000  # rows per Parquet row group, collected as Arrow data (compact)


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
    path = Path(path)
    partitions = _check_parquet(after, names, partition_by, overwrite, rows_per_file, row_group)
    what = {
        "store": getattr(source, "name", None),
        "names": names,
        "subjects": list(subjects) if subjects is not None else None,
        "partition_by": partitions,
    }
    incremental, exists = after == "last", path.exists()
    start, target = _target(path, after, overwrite, what)
    meta = {**what, "format": FORMAT}
    events, last = 0, start
    dataset = Dataset(target, meta, partitions, row_group=row_group)
    try:
        target.mkdir(parents=True, exist_ok=True)
        if not (target / RECORD).exists():
            write_record(target, {**meta, "last_position": start})
        with _bar("to_parquet", progress) as bar:
            async for chunk in _batches(source, start, subjects, names, bar):
                for at in range(0, chunk.num_rows, min(row_group, rows_per_file)):
                    batch = chunk.slice(at, min(row_group, rows_per_file))
                    dataset.add(batch, last)
                    last = max(last, batch.column("position")[-1].as_py())
                    events += batch.num_rows
                    if dataset.pending >= rows_per_file:
                        dataset.commit(last)
        dataset.commit(last)
    except BaseException:
        dataset.drop()
        if target != path or not (exists or incremental):  # nothing stored (an incremental one keeps its files)
            shutil.rmtree(target, ignore_errors=True)
        raise
    if target != path:  # overwrite: the new dataset is complete; swap
        old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(path, old)
        os.replace(target, path)
        shutil.rmtree(old, ignore_errors=True)
    return ExportResult(path, events, dataset.written, start, last)


def _target(path: Path, after: int | Literal["last"], overwrite: bool, what: dict[str, Any]) -> tuple[int, Path]:
    """Where the export starts and the folder it writes: ``path``, or a new one beside it to swap in."""
    incremental, exists = after == "last", path.exists()
    if exists and not path.is_dir():
        raise ValidationError(f"{path} is a file; a Parquet export is a folder: give another path")
    if exists and not incremental and not overwrite:
        raise ValidationError(
            f"{path} exists: pass overwrite=True to replace it, or after='last' to append the events since its export"
        )
    if incremental and exists:
        return resume(path, what), path
    if exists:  # overwrite: build beside it, swap when complete
        return 0 if incremental else int(after), path.with_name(f".{path.name}{TMP}{uuid.uuid4().hex[:8]}")
    return 0 if incremental else int(after), path


def _check_parquet(
    after: int | Literal["last"],
    names: Names,
    partition_by: str | Sequence[str] | None,
    overwrite: bool,
    rows_per_file: int,
    row_group: int,
) -> list[str]:
    """The partition columns, once the options of :func:`to_parquet` are checked (pyarrow too)."""
    _arrow()
    partitions = [partition_by] if isinstance(partition_by, str) else list(partition_by or [])
    if rows_per_file < 1 or row_group < 1:
        raise ValidationError("rows_per_file and row_group must be at least 1")
    if names not in ("eskit", "pm4py"):
        raise ValidationError(f"names={names!r}: use 'eskit' or 'pm4py'")
    if "position" in partitions:
        raise ValidationError("partition_by='position' makes a folder per event; partition by 'type' or a data column")
    if after == "last" and overwrite:
        raise ValidationError("after='last' appends to an export, overwrite=True replaces it: pass one of them")
    if after != "last" and not isinstance(after, int):
        raise ValidationError(f"after={after!r}: give a position (int) or 'last'")
    return partitions


