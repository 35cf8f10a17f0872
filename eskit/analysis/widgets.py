"""Jupyter widgets over a store: an event browser and a stream overview.

>>> browser = EventBrowser(orders)                                             # doctest: +SKIP
>>> await browser.refresh(); browser                                           # doctest: +SKIP
>>> overview = StreamOverview(orders); await overview.refresh(); overview      # doctest: +SKIP
>>> await when_done(view.close, client.close)     # a lesson's last cell: a clean-up button  # doctest: +SKIP

Buttons start their async work as tasks on the running loop (the notebook's); a failure is shown in the
widget's status line, never dropped. Every action is also a method, so the logic runs without a browser.
Each widget's output also carries a static HTML copy of what it shows, for viewers without widgets.
"""

from __future__ import annotations

import asyncio
import html
import inspect
import json
import os
import re
from collections.abc import Callable, Coroutine
from typing import Any

import ipywidgets as widgets  # type: ignore[import-untyped]
import pandas as pd

from ..errors import ValidationError
from ..store import EventStore
from .eventlog import encode_token
from .frames import BASE, to_dataframe

SHOWN = ["position", "aggregate_id", "type", "occurred_at"]
CLEANUP = "ESKIT_CLEANUP"  # "now": a lesson's clean-up button cleans up at once (unattended runs, the tests)


class _Panel:
    """A status line, and async work started from callbacks whose errors land in it."""

    def __init__(self) -> None:
        self.status = widgets.HTML()
        self.task: asyncio.Task[None] | None = None
        self.widget: widgets.Widget = widgets.VBox()

    def start(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``work`` as a task; its error, if any, is shown in the status line."""
        self.say("working…")
        self.task = asyncio.ensure_future(work)
        self.task.add_done_callback(self._done)
        return self.task

    def _done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            self.say("cancelled")
        elif (exc := task.exception()) is not None:
            self.say(f"error: {type(exc).__name__}: {exc}", error=True)

    def say(self, text: str, *, error: bool = False) -> None:
        color = "#b00020" if error else "#555"
        self.status.value = f'<span style="color:{color}">{html.escape(text)}</span>'

    def static_html(self) -> str:
        """What the widget shows, as plain HTML: the fallback for viewers without a widget manager."""
        return str(self.status.value)

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle: dict[str, Any] = self.widget._repr_mimebundle_(**kwargs)
        bundle["text/html"] = self.static_html()
        status = html.unescape(re.sub(r"<[^>]+>", "", str(self.status.value)))
        bundle["text/plain"] = f"{type(self).__name__}: {status}" if status else type(self).__name__
        return bundle


class EventBrowser(_Panel):
    """A store's events by aggregate, type and time range, a page at a time, with data and metadata."""

    def __init__(self, store: EventStore, *, page_size: int = 20) -> None:
        super().__init__()
        self.store, self.page_size, self.page = store, page_size, 0
        self.frame = pd.DataFrame(columns=BASE)
        self.aggregate = widgets.Text(description="aggregate", placeholder="all")
        self.type = widgets.Text(description="type", placeholder="all")
        self.since = widgets.Text(description="from", placeholder="2024-03-01")
        self.until = widgets.Text(description="to", placeholder="2024-03-31 18:00")
        buttons = [widgets.Button(description=d) for d in ("load", "◀ previous", "next ▶")]
        buttons[0].on_click(lambda _: self.start(self.refresh()))
        buttons[1].on_click(lambda _: self.show(self.page - 1))
        buttons[2].on_click(lambda _: self.show(self.page + 1))
        self.table = widgets.HTML()
        filters = widgets.HBox(
            [widgets.VBox([self.aggregate, self.type]), widgets.VBox([self.since, self.until])]
        )
        self.widget = widgets.VBox([filters, widgets.HBox(buttons), self.status, self.table])

    def static_html(self) -> str:
        return f"{self.status.value}{self.table.value}"

    def subjects(self) -> list[str]:
        """The subject filter the aggregate and type fields stand for (original names are encoded)."""
        aggregate, kind = self.aggregate.value.strip(), self.type.value.strip()
        if not (aggregate or kind):
            return [f"{self.store.name}.>"]
        aggregate_token = encode_token(aggregate) if aggregate else "*"
        return [f"{self.store.name}.{aggregate_token}.{encode_token(kind) if kind else '>'}"]

    async def refresh(self) -> None:
        """Read the events matching the filters (aggregate and type on the server, time here); show page 1."""
        since, until = _time(self.since.value, "from"), _time(self.until.value, "to")
        df = await to_dataframe(self.store, subjects=self.subjects(), progress=False)
        when = df["occurred_at"].fillna(df["timestamp"])
        keep = pd.Series(True, index=df.index)
        if since is not None:
            keep &= when >= since
        if until is not None:
            keep &= when <= until
        self.frame = df[keep].reset_index(drop=True)
        self.show(0)

    @property
    def pages(self) -> int:
        return max(1, -(-len(self.frame) // self.page_size))

    def rows(self) -> pd.DataFrame:
        """The current page: position, aggregate, type, time, and the event's data and metadata as JSON."""
        part = self.frame.iloc[self.page * self.page_size : (self.page + 1) * self.page_size]
        extra = [c for c in part.columns if c not in BASE]
        records: list[dict[str, Any]] = [
            {str(k): v for k, v in r.items()} for r in part[extra].convert_dtypes().to_dict("records")
        ]
        data = [{k: v for k, v in r.items() if not k.startswith("meta:") and _present(v)} for r in records]
        meta = [{k[5:]: v for k, v in r.items() if k.startswith("meta:") and _present(v)} for r in records]
        out = part[SHOWN].copy()
        out["data"] = [json.dumps(d, ensure_ascii=False, default=str) for d in data]
        out["metadata"] = [json.dumps(m, ensure_ascii=False) for m in meta]
        return out

    def show(self, page: int) -> None:
        """Go to ``page`` (0-based, clamped) and render it."""
        self.page = min(max(page, 0), self.pages - 1)
        self.table.value = self.rows().to_html(index=False, escape=True)
        self.say(f"{len(self.frame):,} events · page {self.page + 1} of {self.pages}")


class StreamOverview(_Panel):
    """A store at a glance: events and aggregates, counts by type, first and last event time."""

    def __init__(self, store: EventStore) -> None:
        super().__init__()
        self.store = store
        self.summary = pd.DataFrame(columns=["events", "first", "last"])
        self.totals: dict[str, Any] = {}
        self.table = widgets.HTML()
        button = widgets.Button(description="refresh")
        button.on_click(lambda _: self.start(self.refresh()))
        self.widget = widgets.VBox([button, self.status, self.table])

    def static_html(self) -> str:
        return f"{self.status.value}{self.table.value}"

    async def refresh(self) -> None:
        """Read the stream and summarise it per event type."""
        df = await to_dataframe(self.store, progress=False)
        when = df["occurred_at"].fillna(df["timestamp"])
        groups = when.groupby(df["type"])
        self.summary = pd.DataFrame({"events": groups.size(), "first": groups.min(), "last": groups.max()})
        self.summary = self.summary.sort_values("events", ascending=False, kind="stable")
        first, last = (when.min(), when.max()) if len(df) else (None, None)
        self.totals = {
            "events": len(df),
            "aggregates": df["aggregate_id"].nunique(),
            "first": first,
            "last": last,
        }
        self.table.value = self.summary.to_html(escape=True)
        self.say(
            f"{self.store.name}: {self.totals['events']:,} events in {self.totals['aggregates']:,} aggregates"
        )


class CleanUp(_Panel):
    """A lesson's "when you are done" button: Run All leaves the lesson running, a click cleans up.

    >>> done = CleanUp(board.stop, view.close, client.close); done          # doctest: +SKIP

    A lesson's last cell would otherwise close the connection and delete the stores during Run All, and the
    widgets above it (a live dashboard, an event browser) would answer errors. A click calls ``steps`` in
    order (awaiting what they return when it is awaitable) and disables the button; a failing step is shown
    in the status line, and another click runs the steps again. Use :func:`when_done` in a lesson.
    """

    def __init__(self, *steps: Callable[[], object], label: str = "I'm done: clean up") -> None:
        super().__init__()
        self.steps, self.done = steps, False
        self.button = widgets.Button(description=label, button_style="warning", icon="broom")
        self.button.layout.width = "auto"
        self.button.on_click(lambda _: self.start(self.run()))
        self.say("Everything above keeps running. When you are done, press the button (or restart the kernel).")
        self.widget = widgets.VBox([self.button, self.status])

    def static_html(self) -> str:
        return f"<button disabled>{html.escape(self.button.description)}</button> {self.status.value}"

    async def run(self) -> None:
        """Run the clean-up steps now (what a click does)."""
        if self.done:
            self.say("already cleaned up")
            return
        for step in self.steps:
            result = step()
            if inspect.isawaitable(result):
                await result
        self.done, self.button.disabled = True, True
        self.say("cleaned up: this lesson's stores, projections and connection are gone")


async def when_done(*steps: Callable[[], object], label: str = "I'm done: clean up") -> CleanUp:
    """A :class:`CleanUp` button for a lesson's last cell; with ``ESKIT_CLEANUP=now`` it cleans up at once.

    >>> await when_done(board.stop, client.close)        # the cell shows the button     # doctest: +SKIP

    The test suite and other unattended runs set ``ESKIT_CLEANUP=now``: nobody will press the button there.
    """
    panel = CleanUp(*steps, label=label)
    if os.environ.get(CLEANUP, "").strip().lower() == "now":
        await panel.run()
    return panel


def _time(text: str, what: str) -> pd.Timestamp | None:
    text = text.strip()
    if not text:
        return None
    try:
        stamp = pd.Timestamp(text)
    except ValueError:
        raise ValidationError(
            f"{what} {text!r} is not a date or time; use e.g. 2024-03-01 or 2024-03-01 18:00"
        ) from None
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _present(value: Any) -> bool:
    return value is not None and value is not pd.NA and not (isinstance(value, float) and value != value)
