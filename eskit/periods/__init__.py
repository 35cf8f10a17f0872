"""Closing the books: long-lived aggregates kept in periods (see :mod:`eskit.periods.books`, docs/closing-the-books.md).

>>> period_id("acc-1", "2025")
'acc-1_2025'
"""

from __future__ import annotations

from .books import CLOSED, OPENED, PeriodicAggregate, append_together, close_period, period_id

__all__ = ["CLOSED", "OPENED", "PeriodicAggregate", "append_together", "close_period", "period_id"]
