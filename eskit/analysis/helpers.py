"""Event-log analysis in plain pandas: counts over time, case durations, variants, directly-follows, funnels.

>>> df = await eskit.to_dataframe(orders)                                     # doctest: +SKIP
>>> directly_follows(df).head(3)                                              # doctest: +SKIP
       source      target  count      mean_time
0     created  item_added    412 0 days 00:03:10
...

Every helper takes a frame from :func:`to_dataframe` (either naming) or any frame with a case, an
activity and a time column (pass ``case=``, ``activity=``, ``time=`` for other names). A *case* is one
aggregate; its events are ordered by time, then by stream position.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from ..errors import ValidationError
from .eventlog import ACTIVITY, CASE, TIMESTAMP
from .frames import to_dataframe

__all__ = ["case_durations", "directly_follows", "events_per_type", "funnel", "to_dataframe", "variants"]

Columns = tuple[str, str, str]


def columns(
    df: pd.DataFrame, case: str | None = None, activity: str | None = None, time: str | None = None
) -> Columns:
    """The case, activity and time columns of ``df`` (pm4py names if present, else eskit's)."""
    pm4py = CASE in df.columns
    chosen = (
        case or (CASE if pm4py else "aggregate_id"),
        activity or (ACTIVITY if pm4py else "type"),
        time or (TIMESTAMP if pm4py else "occurred_at"),
    )
    missing = [c for c in chosen if c not in df.columns]
    if missing:
        raise ValidationError(
            f"the frame has no column {missing[0]!r}; pass case=, activity=, time= to name them"
        )
    return chosen


def ordered(df: pd.DataFrame, cols: Columns) -> pd.DataFrame:
    """Events grouped by case, each case in time order (stream position breaks ties), rows renumbered."""
    case, _, time = cols
    df = df.assign(**{time: df[time].fillna(df["timestamp"])}) if "timestamp" in df.columns else df
    keys = [case, time] + (["position"] if "position" in df.columns else [])
    return df.sort_values(keys, kind="stable").reset_index(drop=True)


def events_per_type(
    df: pd.DataFrame,
    *,
    freq: str = "D",
    case: str | None = None,
    activity: str | None = None,
    time: str | None = None,
) -> pd.DataFrame:
    """Counts per time bucket (``freq``: "h", "D", "W", "MS", ...) and event type: one column per type.

    >>> events_per_type(df, freq="W").plot.area()                             # doctest: +SKIP
    """
    _, act, t = columns(df, case, activity, time)
    counts = df.groupby([pd.Grouper(key=t, freq=freq), act]).size()
    return counts.unstack(fill_value=0).rename_axis(columns=None)


def case_durations(
    df: pd.DataFrame, *, case: str | None = None, activity: str | None = None, time: str | None = None
) -> pd.DataFrame:
    """Per case: first and last event time, duration, number of events; longest first.

    >>> case_durations(df)["duration"].describe()                             # doctest: +SKIP
    """
    c, _, t = columns(df, case, activity, time)
    g = df.groupby(c)[t]
    out = pd.DataFrame({"start": g.min(), "end": g.max(), "events": g.size()})
    out.insert(2, "duration", out["end"] - out["start"])
    return out.sort_values(["duration", "events"], ascending=False, kind="stable")


def variants(
    df: pd.DataFrame, *, case: str | None = None, activity: str | None = None, time: str | None = None
) -> pd.DataFrame:
    """Distinct event sequences (as tuples of activities), how many cases follow each, and their share.

    >>> variants(df).head()                                                   # doctest: +SKIP
    """
    cols = columns(df, case, activity, time)
    seqs = ordered(df, cols).groupby(cols[0], sort=False)[cols[1]].agg(tuple)
    counts = seqs.value_counts().rename_axis("variant").reset_index(name="cases")
    counts = counts.assign(length=counts["variant"].map(len), key=counts["variant"].map(" → ".join))
    counts = counts.sort_values(["cases", "key"], ascending=[False, True], kind="stable", ignore_index=True)
    counts["share"] = counts["cases"] / counts["cases"].sum()
    return counts[["variant", "cases", "share", "length"]]


def directly_follows(
    df: pd.DataFrame, *, case: str | None = None, activity: str | None = None, time: str | None = None
) -> pd.DataFrame:
    """How often ``target`` directly follows ``source`` within a case, and the mean time between them.

    >>> directly_follows(df).pivot(index="source", columns="target", values="count")  # doctest: +SKIP
    """
    cols = columns(df, case, activity, time)
    c, act, t = cols
    events = ordered(df, cols)
    nxt = events.groupby(c, sort=False)[[act, t]].shift(-1)
    pairs = pd.DataFrame({"source": events[act], "target": nxt[act], "gap": nxt[t] - events[t]})
    pairs = pairs[nxt[act].notna()]
    out = pairs.groupby(["source", "target"], sort=True).agg(count=("gap", "size"), mean_time=("gap", "mean"))
    return out.reset_index().sort_values(
        ["count", "source", "target"], ascending=[False, True, True], kind="stable", ignore_index=True
    )


def funnel(
    df: pd.DataFrame,
    steps: Sequence[str],
    *,
    case: str | None = None,
    activity: str | None = None,
    time: str | None = None,
) -> pd.DataFrame:
    """How many cases reach each step, in order (step k counts only after step k-1 was reached).

    >>> funnel(df, ["created", "payment_received", "shipped"])                # doctest: +SKIP
    """
    if not steps:
        raise ValidationError("funnel needs at least one step, e.g. funnel(df, ['created', 'shipped'])")
    cols = columns(df, case, activity, time)
    c, act, _ = cols
    events = ordered(df, cols).rename_axis("rank").reset_index()
    total = events[c].nunique()
    reached = pd.Series(-1, index=pd.Index(events[c].unique(), name=c))  # rank where the case stands
    rows = []
    for step in steps:
        hits = events.loc[events[act] == step, [c, "rank"]]
        hits = hits[hits["rank"] > hits[c].map(reached)]
        reached = hits.groupby(c)["rank"].min()
        rows.append((step, len(reached)))
    out = pd.DataFrame(rows, columns=["step", "cases"])
    out["share"] = out["cases"] / total if total else 0.0
    return out
