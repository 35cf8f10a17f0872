"""The transport: eskit's own ways of talking to nats-py and the server, under one roof.

Fast lanes for bulk deliveries (:mod:`.fastlane`), raw JetStream requests on one reply inbox
(:mod:`.wire`), header blocks parsed at C speed (:mod:`.headers`), closing within a bound
(:mod:`.closing`). This package is where eskit reaches into nats-py's private members; the modules above
it (stores, projections, analysis) go through it.

>>> server_info(client.nc)["version"]                                   # doctest: +SKIP
'2.15.1'
"""

from __future__ import annotations

from typing import Any

from nats.aio.client import Client as NATS


def server_info(nc: NATS) -> dict[str, Any]:
    """The INFO the server sent when ``nc`` connected (nats-py keeps it in a private member)."""
    info: dict[str, Any] = nc._server_info
    return info
