"""Example aggregates used by the lessons, tests and benchmarks.

:class:`Order` is the seed's order (created -> item_added* -> payment_received -> shipped), with its
business rules as commands:

>>> order = Order("123")
>>> order.create("ada"); order.add_item("A1", qty=2, price=4.5)
>>> order.status, order.total, order.version
('pending', 9.0, 2)
>>> order.pay(5.0)
Traceback (most recent call last):
eskit.examples.OrderError: order 123: a payment of 5.0 does not cover the total 9.0
"""

from __future__ import annotations

from typing import Any

from .aggregate import Aggregate, applies


class OrderError(ValueError):
    """A command the order's rules refuse (e.g. adding items after payment)."""


class Order(Aggregate):
    """The seed's order: status, items, total, tracking."""

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.status = "new"
        self.customer = ""
        self.items: list[dict[str, Any]] = []
        self.total = 0.0
        self.tracking = ""

    # -- commands: check the rules on the current state, then record what happened --------------------------

    def create(self, customer: str) -> None:
        if self.status != "new":
            raise OrderError(f"order {self.id} already exists")
        self.record("created", {"customer": customer})

    def add_item(self, sku: str, *, qty: int = 1, price: float = 1.0) -> None:
        if self.status != "pending":
            raise OrderError(f"order {self.id} is {self.status}: items can only be added while pending")
        self.record("item_added", {"sku": sku, "qty": qty, "price": price})

    def pay(self, amount: float) -> None:
        if self.status != "pending" or not self.items:
            raise OrderError(f"order {self.id} is {self.status} with {len(self.items)} items: cannot be paid")
        if amount < self.total:
            raise OrderError(f"order {self.id}: a payment of {amount} does not cover the total {self.total}")
        self.record("payment_received", {"amount": amount})

    def ship(self, tracking: str) -> None:
        if self.status != "paid":
            raise OrderError(f"order {self.id} is {self.status}: only paid orders ship")
        self.record("shipped", {"tracking": tracking})

    # -- apply handlers: one per event type, no rules, just state --------------------------------------------

    @applies("created")
    def _created(self, data: dict[str, Any]) -> None:
        self.status, self.customer = "pending", data["customer"]

    @applies("item_added")
    def _item_added(self, data: dict[str, Any]) -> None:
        self.items.append(data)
        self.total = round(self.total + data["qty"] * data["price"], 2)

    @applies("payment_received")
    def _payment_received(self, data: dict[str, Any]) -> None:
        self.status = "paid"

    @applies("shipped")
    def _shipped(self, data: dict[str, Any]) -> None:
        self.status, self.tracking = "shipped", data["tracking"]


class Account(Aggregate):
    """A balance: a state of fixed size however long the history grows (good for snapshot lessons).

    >>> account = Account("acc-1"); account.deposit(5); account.balance
    5
    """

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.balance = 0
        self.deposits = 0

    def deposit(self, amount: int) -> None:
        if amount <= 0:
            raise ValueError(f"deposit must be positive, got {amount}")
        self.record("deposited", {"amount": amount})

    @applies("deposited")
    def _deposited(self, data: dict[str, Any]) -> None:
        self.balance += data["amount"]
        self.deposits += 1
