"""pandas frames as Arrow record batches, and Arrow schemas widened to hold each other (int -> float, else text).

>>> batch = frame_batch(df)                                                    # doctest: +SKIP
>>> schema = merged(None, batch.schema); fits(batch, schema) is batch          # doctest: +SKIP
True

The Arrow half of :mod:`eskit.analysis.export`: pyarrow is optional (``pip install 'eskit[analysis]'``) and
imported on first use only.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ..errors import EskitError

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa


def pyarrow_module() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet  # a submodule: loaded here once, used as pyarrow.parquet
    except ImportError as exc:
        raise EskitError("the Arrow/Parquet export needs pyarrow: pip install 'eskit[analysis]'") from exc
    return pyarrow


def frame_batch(df: pd.DataFrame) -> pa.RecordBatch:
    pa = pyarrow_module()
    arrays = []
    for name in df.columns:
        column = df[name]
        try:
            array = pa.array(column, from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):  # mixed types: as text
            array = text(pa, column.tolist())
        if pa.types.is_large_string(array.type):
            array = array.cast(pa.string())
        arrays.append(array)
    return pa.RecordBatch.from_arrays(arrays, names=[str(c) for c in df.columns])


def text(pa: Any, values: list[Any]) -> pa.Array:
    def one(v: Any) -> str | None:
        if v is None or (isinstance(v, float) and v != v):
            return None
        return v if isinstance(v, str) else json.dumps(v, default=str, ensure_ascii=False)

    return pa.array([one(v) for v in values], type=pa.string())


def merged(old: pa.Schema | None, new: pa.Schema) -> pa.Schema:
    """A schema holding both: old's columns first; a type that differs is widened (int -> float, else text)."""
    pa = pyarrow_module()
    if old is None:
        return new
    fields = {f.name: f.type for f in old}
    for f in new:
        have = fields.get(f.name)
        if have is None or pa.types.is_null(have):
            fields[f.name] = f.type
        elif pa.types.is_null(f.type) or have == f.type:
            continue
        elif numeric(pa, have) and numeric(pa, f.type):
            fields[f.name] = pa.float64()
        else:
            fields[f.name] = pa.string()
    return pa.schema(list(fields.items()), metadata=old.metadata)


def numeric(pa: Any, t: pa.DataType) -> bool:
    return bool(pa.types.is_integer(t) or pa.types.is_floating(t))


def fits(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch | None:
    """``batch`` as ``schema`` (missing columns empty, types widened), or None if it has other columns or types."""
    pa = pyarrow_module()
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
            elif pa.types.is_floating(f.type) and numeric(pa, array.type):
                array = array.cast(f.type)
            elif pa.types.is_string(f.type):
                array = text(pa, array.to_pylist())
            else:
                return None
        arrays.append(array)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
