"""A live ipywidgets dashboard of projections: position, lag, applied, skipped, parked, running.

>>> board = eskit.dashboard(orders_view, other_view)     # shows itself as the cell's output  # doctest: +SKIP
>>> board.stop()                                          # stop refreshing                  # doctest: +SKIP

It refreshes from :attr:`Projection.stats` (no server round trip) every ``every`` seconds, in a task on the
notebook's event loop, until :meth:`Dashboard.stop`.
"""

from __future__ import annotations

import asyncio
import html
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from .applying import ProjectionStats
    from .multistream import MultiStreamProjection
    from .projection import Projection

    Shown: TypeAlias = Projection | MultiStreamProjection

COLUMNS = ("projection", "running", "position", "lag", "applied", "skipped", "parked", "last error")


class Dashboard:
    """A table of projection stats that refreshes itself (see the module docstring)."""

    def __init__(self, projections: tuple[Shown, ...], *, every: float = 0.5) -> None:
        import ipywidgets  # type: ignore[import-untyped]

        self.projections = projections
        self.every = every
        self.widget = ipywidgets.HTML(self.render())
        self._task: asyncio.Task[None] | None = asyncio.get_running_loop().create_task(self._refresh())

    def render(self) -> str:
        """The table as HTML."""
        head = "".join(f"<th style='padding:2px 10px'>{c}</th>" for c in COLUMNS)
        rows = []
        for name, s in self._stats():
            cells = (name, "▶" if s.running else "■", s.position, "?" if s.lag is None else s.lag,
                     s.applied, s.skipped, s.parked, s.error or "")  # fmt: skip
            rows.append("".join(f"<td style='padding:2px 10px'>{html.escape(str(c))}</td>" for c in cells))
        body = "".join(f"<tr>{r}</tr>" for r in rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def _stats(self) -> list[tuple[str, ProjectionStats]]:
        """One row per projection; a multi-stream projection has one per store, ``name (store)``."""
        rows: list[tuple[str, ProjectionStats]] = []
        for p in self.projections:
            stats = p.stats
            if isinstance(stats, dict):
                rows += [(f"{s.name} ({label})", s) for label, s in stats.items()]
            else:
                rows.append((stats.name, stats))
        return rows

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            self.widget.value = self.render()

    def stop(self) -> None:
        """Stop refreshing (the table keeps its last values)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self.widget.value = self.render()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = self.widget._repr_mimebundle_(**kwargs)
        bundle["text/html"] = self.render()  # a static copy, for viewers without a widget manager
        bundle["text/plain"] = f"projection dashboard: {', '.join(name for name, _ in self._stats())}"
        return bundle


def dashboard(*projections: Shown, every: float = 0.5) -> Dashboard:
    """A live table of ``projections``' stats (a multi-stream projection: a row per store); display it in a
    notebook cell (call inside the event loop)."""
    return Dashboard(projections, every=every)
