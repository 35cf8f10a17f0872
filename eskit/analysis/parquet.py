"""The Parquet dataset of :func:`eskit.to_parquet`: files written under temporary names and renamed when
complete, hive partitions, and the record of what was exported (``_eskit_export.json``).

>>> dataset = Dataset(Path("orders.parquet"), meta, ["type"], row_group=100_000)   # doctest: +SKIP
>>> dataset.add(batch); dataset.commit(last_position)                            # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ..errors import EskitError, ValidationError
from .arrow import fits, merged, pyarrow_module, text

if TYPE_CHECKING:
    import pyarrow as pa

RECORD = "_eskit_export.json"
FORMAT = 1
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
TMP = ".tmp-"


class File:
    """One Parquet file being written under a temporary name."""

    def __init__(self, folder: Path, schema: pa.Schema, row_group: int) -> None:
        self.folder = folder
        self.schema = schema
        self.row_group = row_group
        self.tmp = folder / f"{TMP}{uuid.uuid4().hex}.part"  # not *.parquet: globs skip it
        folder.mkdir(parents=True, exist_ok=True)
        self.writer: Any = pyarrow_module().parquet.ParquetWriter(str(self.tmp), schema, compression="zstd")
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
            table = pyarrow_module().Table.from_batches(self.buffered, schema=self.schema)
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


def split(pa: Any, batch: pa.RecordBatch, partitions: list[str]) -> Iterator[tuple[tuple[str, ...], pa.RecordBatch]]:
    """The rows of ``batch`` per partition (the partition columns dropped, as hive layouts do)."""
    if not partitions:
        yield (), batch
        return
    import pyarrow.compute as pc

    table = pa.Table.from_batches([batch])
    keys = [text(pa, table.column(p).to_pylist()) for p in partitions]
    keys = [pc.fill_null(k, HIVE_NULL) for k in keys]
    combined = keys[0] if len(keys) == 1 else pc.binary_join_element_wise(*keys, "\x1f")
    rest = table.drop_columns(partitions)
    for value in pc.unique(combined).to_pylist():
        rows = rest.filter(pc.equal(combined, value))
        part = rows.combine_chunks().to_batches()[0]
        yield tuple(str(value).split("\x1f")), part


def write_record(folder: Path, record: dict[str, Any]) -> None:
    tmp = folder / f"{TMP}{uuid.uuid4().hex}.json"
    tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, folder / RECORD)


def resume(path: Path, what: dict[str, Any]) -> int:
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
    for leftover in path.rglob(f"{TMP}*"):
        leftover.unlink(missing_ok=True)
    for file in path.rglob("part-*-*.parquet"):
        with contextlib.suppress(ValueError):
            if int(file.stem.split("-")[1]) > last:  # renamed, but its export never recorded it
                file.unlink()
    return last


class Dataset:
    """The files being written into ``target``: one open file per partition, committed together."""

    def __init__(self, target: Path, meta: dict[str, Any], partitions: list[str], *, row_group: int) -> None:
        self.target = target
        self.meta = meta
        self.partitions = partitions
        self.row_group = row_group
        self.open: dict[tuple[str, ...], File] = {}
        self.pending = 0  # rows in open files
        self.written = 0  # files committed

    def commit(self, last: int) -> None:
        """Finish the open files and record ``last`` as the last position exported."""
        for file in self.open.values():
            file.finish(self.meta)
            self.written += 1
        self.open.clear()
        self.pending = 0
        write_record(self.target, {**self.meta, "last_position": last})

    def add(self, batch: pa.RecordBatch, last: int) -> None:
        """Write ``batch`` to the files of its partitions; ``last``: the last position written before it."""
        missing = [p for p in self.partitions if p not in batch.schema.names]
        if missing:
            raise ValidationError(f"partition_by: no column {missing[0]!r}; columns: {batch.schema.names}")
        parts = list(split(pyarrow_module(), batch, self.partitions))
        grown = [k for k, part in parts if k in self.open and fits(part, self.open[k].schema) is None]
        schemas = {k: self.open[k].schema for k in grown}
        if grown:  # the data grew a column: commit the open files (all hold rows up to `last` only)
            self.commit(last)
        for key, part in parts:
            file = self.open.get(key)
            if file is None:
                folder = self.target.joinpath(
                    *(f"{p}={quote(v, safe='')}" for p, v in zip(self.partitions, key, strict=True))
                )
                file = File(folder, merged(schemas.get(key), part.schema), self.row_group)
                self.open[key] = file
            fitted = fits(part, file.schema)
            if fitted is None:  # cannot happen: a new file's schema holds its first part
                raise EskitError(f"export: rows of {key} do not fit their file's schema")
            positions = part.column("position")
            file.write(fitted, positions[0].as_py(), positions[-1].as_py())
        self.pending += batch.num_rows

    def drop(self) -> None:
        """Remove the files not committed."""
        for file in self.open.values():
            file.drop()
