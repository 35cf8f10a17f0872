"""Integration events: a curated public stream other teams read, beside the private store.

Two ways, both in this package:

- :func:`publish_integration` (``client.publish_integration(orders, "orders-public", types=[...])``): a
  JetStream stream that *sources* the private store, with one subject filter + transform per public type.
  No code runs and the application writes once; the server copies the chosen types (whole events) with its
  own lag. See :mod:`eskit.integration.public`.
- :class:`Republisher`: a projection that appends a public *shape* of chosen events (only the fields you
  pick) to another store, with ids derived from the private events so a retry is deduplicated. A second
  write, with a projection's lag. See :mod:`eskit.integration.republish`.

The reading side is another user with read rights on the public stream only (:func:`eskit.auth.Partner`).
"""

from __future__ import annotations

from .public import IntegrationStream, open_public_store, publish_integration
from .republish import Republisher

__all__ = ["IntegrationStream", "Republisher", "open_public_store", "publish_integration"]
