"""Least privilege: a writer that may append, an analyst that may only read.

>>> config = least_privilege_config(writer_password="w-secret", analyst_password="a-secret")
>>> server = EmbeddedServer(config=config).start()                                   # doctest: +SKIP
>>> analyst = await eskit.connect(server.url, user="analyst", password="a-secret")   # doctest: +SKIP
>>> await (await analyst.event_store("orders")).append("1", [Event("x")])            # doctest: +SKIP
eskit.errors.PermissionDeniedError: permission denied: this account may not publish to 'orders.1.x'; ...

Both users live in the server's default account. The writer may publish events and use the JetStream API,
but not delete or purge streams. The analyst may only read: stream info, Direct Get, and consumers
(replays, projections, analysis) — no event subjects, no stream changes.
"""

from __future__ import annotations

import json

WRITER_DENY = ["$JS.API.STREAM.DELETE.>", "$JS.API.STREAM.PURGE.>", "$JS.API.STREAM.MSG.DELETE.>"]
ANALYST_ALLOW = [
    "$JS.API.INFO",
    "$JS.API.STREAM.INFO.*",
    "$JS.API.STREAM.NAMES",
    "$JS.API.STREAM.LIST",
    "$JS.API.DIRECT.GET.>",
    "$JS.API.STREAM.MSG.GET.*",
    "$JS.API.CONSUMER.>",
    "$JS.ACK.>",
    "$JS.FC.>",
]


def least_privilege_config(
    *, writer_password: str, analyst_password: str, writer: str = "writer", analyst: str = "analyst"
) -> str:
    """nats-server configuration text with the two users (JetStream is enabled by eskit's flags)."""
    users = [
        {
            "user": writer,
            "password": writer_password,
            "permissions": {"publish": {"allow": [">"], "deny": WRITER_DENY}, "subscribe": {"allow": ["_INBOX.>"]}},
        },
        {
            "user": analyst,
            "password": analyst_password,
            "permissions": {"publish": {"allow": ANALYST_ALLOW}, "subscribe": {"allow": ["_INBOX.>"]}},
        },
    ]
    return "authorization {\n  users = " + json.dumps(users, indent=2) + "\n}\n"
