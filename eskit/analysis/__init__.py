"""Analysis: events as DataFrames, event-log helpers, logs in and out, samples and notebook widgets.

>>> df = await eskit.to_dataframe(orders)                                     # doctest: +SKIP
>>> directly_follows(df).head(3)                                              # doctest: +SKIP

Frames (:mod:`.frames`, decoded in bulk by :mod:`.rawcolumns`), process-analysis helpers
(:mod:`.helpers`), reading and importing event logs (:mod:`.eventlog`, :mod:`.log_import`), OCEL 2.0
(:mod:`.ocel`), Arrow/Parquet export (:mod:`.export`), sample data (:mod:`.samples`) and the notebook
widgets (:mod:`.widgets`).
"""

from __future__ import annotations

from .helpers import case_durations, directly_follows, events_per_type, funnel, to_dataframe, variants

__all__ = ["case_durations", "directly_follows", "events_per_type", "funnel", "to_dataframe", "variants"]
