"""Raw consumer messages (:class:`~eskit._bulkread.RawBatch`) into DataFrame columns, a column at a time.

The decoding is :mod:`eskit._rawdecode`'s, in bulk; here the results become pandas columns (positions and
store times as numpy arrays, aggregate ids and types with their original names).

>>> columns = raw_columns(batches)                                    # doctest: +SKIP
>>> columns.base["position"][:3]
array([1, 2, 3])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .._bulkread import RawBatch
from .._rawdecode import ack_tokens, header_fields, split_subjects, version


@dataclass(frozen=True, slots=True)
class RawColumns:
    """The base columns (frames.BASE order, except occurred_at), metadata per row, and the payloads."""

    base: dict[str, Any]
    occurred_at: list[str | None]
    meta: list[dict[str, str]]
    has_meta: bool
    payloads: list[bytes]


def raw_columns(batches: Sequence[RawBatch]) -> RawColumns:
    subjects = [s for b in batches for s in b.subjects]
    replies = [r for b in batches for r in b.replies]
    headers = [h for b in batches for h in b.headers]
    payloads = [p for b in batches for p in b.payloads]
    acks = ack_tokens(replies)
    subject, aggregate, event_type = split_subjects(subjects, original_names=True)
    fields = header_fields(headers)
    nanos = np.array(acks.nanos, dtype=np.int64)
    base = {
        "position": np.array(acks.positions, dtype=np.int64),
        "aggregate_id": aggregate,
        "type": event_type,
        "timestamp": pd.Series(nanos.view("datetime64[ns]")).dt.tz_localize("UTC"),
        "event_id": _or_none(fields.ids),
        "schema_version": _versions(fields.versions),
        "correlation_id": _or_none(fields.correlations),
        "causation_id": _or_none(fields.causations),
        "subject": subject,
    }
    return RawColumns(base, _or_none(fields.occurred), fields.meta, fields.has_meta, payloads)


def _or_none(values: tuple[str, ...]) -> list[str | None]:
    """A column of header values; a missing header (``""``) is None."""
    if "" not in values:
        return list(values)
    return [v or None for v in values]


def _versions(values: tuple[str, ...]) -> Any:
    if values.count("1") == len(values):
        return np.ones(len(values), np.int64)
    return pd.array([version(v) for v in values], dtype="int64")
