"""Projections: read models kept up to date from a store, with dead letters and a live dashboard.

>>> view = OrdersView(orders)            # a Projection subclass with @applies handlers  # doctest: +SKIP
>>> await view.run_until_caught_up()                                       # doctest: +SKIP

The projection (:mod:`.projection`) reads through a durable pull consumer (:mod:`.consumer`), applies
events to a read model (:mod:`.readmodel`) through the handler dispatch (:mod:`.applying`), parks poison
events (:mod:`.deadletter`) and shows itself on a dashboard (:mod:`.dashboard`).
"""

from __future__ import annotations

from .consumer import missing_ranges
from .dashboard import Dashboard, dashboard
from .deadletter import DeadLetters, ParkedEvent
from .projection import IDLE_CHECK, Projection, ProjectionStats, applies

__all__ = [
    "IDLE_CHECK",
    "Dashboard",
    "DeadLetters",
    "ParkedEvent",
    "Projection",
    "ProjectionStats",
    "applies",
    "dashboard",
    "missing_ranges",
]
