"""The checkout flow of the docs, lesson 09, the tests and the benchmark: order -> payment -> shipping.

>>> payments = await eskit.command_service(client, "payment.charge", store="payments", decide=charge)  # doctest: +SKIP
>>> checkout = Checkout(client)                                                                      # doctest: +SKIP
>>> await orders.append("o1", [eskit.Event("placed", {"amount": 30})], expected_position=0)           # doctest: +SKIP
>>> await checkout.run_until_caught_up()                                                             # doctest: +SKIP

An order ``placed`` in store ``orders`` asks the payment service to charge it (a NATS request); the service
records ``captured`` or ``declined`` in store ``payments``; a capture asks for a shipment (store
``shipping``), a decline cancels the order (the compensation).
"""

from __future__ import annotations

from typing import Any

from ..events import Event, RecordedEvent
from .commands import Append, Request
from .manager import ProcessManager, reacts_to

LIMIT = 100  # the payment service declines a charge above this amount


class Checkout(ProcessManager):
    """placed -> charge the payment -> captured: request a shipment / declined: cancel the order."""

    @reacts_to("orders", "placed")
    def _placed(self, event: RecordedEvent) -> Request:
        return Request("payment.charge", {"order": event.aggregate_id, "amount": event.data["amount"]})

    @reacts_to("payments", "captured")
    def _captured(self, event: RecordedEvent) -> Append:
        order = event.data["order"]
        return Append("shipping", order, [Event("requested", {"order": order})], expected_position=0)

    @reacts_to("payments", "declined")
    def _declined(self, event: RecordedEvent) -> Append:
        reason = f"payment declined: {event.data['reason']}"
        return Append("orders", event.data["order"], [Event("cancelled", {"reason": reason})])


def charge(command: dict[str, Any]) -> Event:
    """The payment service's decision: declined above :data:`LIMIT`, else captured.

    >>> charge({"order": "o1", "amount": 30}).type, charge({"order": "o2", "amount": 500}).type
    ('captured', 'declined')
    """
    order, amount = command["order"], command["amount"]
    if amount > LIMIT:
        return Event("declined", {"order": order, "amount": amount, "reason": f"over the limit of {LIMIT}"})
    return Event("captured", {"order": order, "amount": amount})
