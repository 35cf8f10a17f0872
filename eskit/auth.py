"""Least privilege: an admin that changes stores, a writer that appends, an analyst that only reads.

>>> config = least_privilege_config(writer_password="w-secret", analyst_password="a-secret",
...                                 admin_password="adm-secret")
>>> server = EmbeddedServer(config=config).start()                                   # doctest: +SKIP
>>> analyst = await eskit.connect(server.url, user="analyst", password="a-secret")   # doctest: +SKIP
>>> await (await analyst.event_store("orders")).append("1", [Event("x")])            # doctest: +SKIP
eskit.errors.PermissionDeniedError: permission denied: this account may not publish to 'orders.1.x'; ...

The users live in the server's default account and are told apart by NATS subject permissions on the
JetStream API (``$JS.API.<call>.<stream>[.<consumer>]``):

========  ======================================================================================================
admin     everything: creates, changes (``STREAM.UPDATE``: limits, subjects) and deletes stores, manages every
          consumer. The only role that can shorten history (and only for a store opened with
          ``allow_delete_history=True``, or by deleting the whole store).
writer    publishes events into stores an admin created; runs projections (durable consumers, pull, ack) and
          bulk reads (short-lived consumers). It may **not** create a stream (``STREAM.CREATE``: a stream's
          subjects are in the request body, which no permission can check, so a writer's stream over
          ``_INBOX_analyst.>`` would keep every reply the analyst reads), ``STREAM.UPDATE`` (a
          ``max_msgs: 1`` would cut the history), delete or purge a stream, delete a
          message, restore a stream over one, purge the account, use the cluster's meta API, pause
          consumers, force leader stepdowns, or publish into another user's reply inbox. With
          ``writer_creates_stores=True`` it may create stores again (one trusted writer, a workshop): then a
          stream it created beforehand with settings that drop events is refused when the store is opened,
          but its streams can capture other users' replies.
partner   another team (:class:`Partner`): reads the public stores it is given (``client.publish_integration``,
          :mod:`eskit.integration`) and runs its own consumers on them (projections, which park poison
          events in ``<store>_parked``), nothing else: no event, no stream info, no Direct Get, no consumer
          on any other store (the private ones).
analyst   reads: stream info, Direct Get (``read``, ``load``, ``replay``, ``to_dataframe``), consumer info. It
          creates **no consumer at all**, pulls from none and acks none: its bulk reads are refused at once
          and fall back to Direct Get (:mod:`eskit._bulkread`), so it changes nothing anyone relies on.
========  ======================================================================================================

Why the analyst gets no consumers, not even ephemeral ones: NATS subject wildcards match whole tokens, and a
consumer name is one token, so no permission can say "only consumers whose name starts with ``eskit_read_``";
and the ephemeral-create subject ``$JS.API.CONSUMER.CREATE.<stream>`` (no name in it) accepts a ``name`` in
its body and then *updates* the durable consumer of that name (checked on nats-server 2.15: an
"ephemeral" create with ``name: projection-x`` changed that projection's filter). ``CONSUMER.MSG.NEXT`` and
``$JS.ACK`` are per consumer name too. So the roles are split by what they may do, not by consumer names:
every durable consumer belongs to the writer (and admin). A projection also notices events delivered past
a gap it did not cause (someone else with the writer's rights acked them) and reads the missing ones itself
(:mod:`eskit.projections`).

What no permission can split: writers among themselves. All writers are one role, and a consumer's name
is one token while a create's body (filter, deliver subject) is unchecked, so any writer may delete,
refilter or re-point any consumer, its own or another writer's (a projection's, a bulk read's short-lived
one). Projections notice and recover (a refiltered consumer is recreated at the read model's position and
missing positions are read back; a deleted one is recreated by the next step); a bulk read notices a gap
its consumer passed over where an event is stored, and reads on with Direct Get (:mod:`eskit._bulkread`).
Give writer rights only to programs you trust with history: they can append any event anyway.

Each user reads replies only on its own inbox, ``_INBOX_<user>`` (:func:`inbox_prefix`; ``eskit.connect(user=...)``
uses it), which no other user may subscribe to or (for the writer) publish to: under one shared ``_INBOX.>``
a writer could read every reply and inject forged events into an analyst's reads.

Stores are created with ``deny_delete`` and ``deny_purge`` (:func:`eskit.streams.stream_config`), so even
the admin cannot delete single events or purge a store unless it was opened with
``allow_delete_history=True`` (the server refuses to turn these flags off later); deleting the whole
store still works (cleanup, tests).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import ValidationError
from .events import check_token

#: What a writer may not publish to (everything else it may: events, the JetStream API, acks).
WRITER_DENY = [
    "$JS.API.STREAM.UPDATE.>",  # limits (max_msgs, max_age, max_bytes), subjects, deny flags
    "$JS.API.STREAM.DELETE.>",
    "$JS.API.STREAM.PURGE.>",
    "$JS.API.STREAM.MSG.DELETE.>",
    "$JS.API.STREAM.RESTORE.>",  # a restore brings back another history under a store's name
    "$JS.API.STREAM.PEER.REMOVE.>",
    "$JS.API.ACCOUNT.PURGE.>",  # every stream of the account
    "$JS.API.META.>",
    "$JS.API.SERVER.>",
    "$JS.API.CONSUMER.PAUSE.>",  # eskit never pauses; a pause until 2099 would stall a running projection
    "$JS.API.STREAM.LEADER.STEPDOWN.>",  # on a cluster, one request per second keeps a store electing leaders
    "$JS.API.CONSUMER.LEADER.STEPDOWN.>",
]
#: Denied too unless ``least_privilege_config(writer_creates_stores=True)``: a new stream's subjects (in the body)
#: could capture another user's replies (``_INBOX_analyst.>``), the JetStream API's requests or acks.
WRITER_CREATE = "$JS.API.STREAM.CREATE.>"
#: All an analyst may publish to: reading requests, nothing that creates, changes, pulls or acks.
ANALYST_ALLOW = [
    "$JS.API.INFO",
    "$JS.API.STREAM.INFO.*",
    "$JS.API.STREAM.NAMES",
    "$JS.API.STREAM.LIST",
    "$JS.API.DIRECT.GET.>",
    "$JS.API.STREAM.MSG.GET.*",
    "$JS.API.CONSUMER.INFO.*.*",
    "$JS.API.CONSUMER.NAMES.*",
    "$JS.API.CONSUMER.LIST.*",
]
INBOX_PREFIX = "_INBOX_{user}"  # each user's replies: what eskit.connect(user=...) subscribes to (see inbox_prefix)


def inbox_prefix(user: str) -> str:
    """The reply inbox prefix of ``user``: only that user may subscribe to it and no writer may publish to it,
    so nobody reads or forges another user's replies (a shared ``_INBOX.>`` let a writer inject events into an
    analyst's reads and let every user read everyone's replies).

    >>> inbox_prefix("analyst")
    '_INBOX_analyst'
    """
    return INBOX_PREFIX.format(user=user)


@dataclass(frozen=True, slots=True)
class Partner:
    """A user of another team that reads public stores only (see :func:`partner_permissions`).

    >>> Partner("shipping", password="s-secret", stores=("orders-public",))
    Partner(user='shipping', stores=('orders-public',), consumers=True)
    """

    user: str
    password: str = field(repr=False)
    stores: tuple[str, ...] = ()
    consumers: bool = True  # may run its own consumers (projections, bulk reads) on those stores

    def __post_init__(self) -> None:
        if isinstance(self.stores, str) or not isinstance(self.stores, Sequence) or not self.stores:
            raise ValidationError(f"a partner reads a list of public stores, e.g. ['orders-public'], {self.stores!r}")
        object.__setattr__(self, "stores", tuple(self.stores))  # a list given: kept as a tuple
        check_token(self.user, "partner user")  # 'a.b' would reply on _INBOX_a.b, which user 'a' may read

    def permissions(self) -> dict[str, Any]:
        return partner_permissions(self.stores, user=self.user, consumers=self.consumers)


def partner_permissions(stores: Sequence[str], *, user: str, consumers: bool = True) -> dict[str, Any]:
    """NATS permissions of a partner that may read the public ``stores`` and nothing else: stream info,
    Direct Get and (``consumers=True``) its own consumers on their streams, and the dead-letter stream of
    each (``<store>_parked``, made by :func:`eskit.integration.publish_integration`) where its projections park
    events they cannot apply; no publish to any other subject, no request about any other stream, no stream
    created (a stream it made could mirror or source the private store, or capture other users' replies: the
    server checks neither). Replies only on its own inbox.

    Consumers are per stream, not per user (see above): partners that run consumers should each get their
    own public store, or one could change another's consumer.

    >>> partner_permissions(["orders-public"], user="shipping", consumers=False)["publish"]["allow"][:3]
    ['$JS.API.INFO', '$JS.API.STREAM.INFO.ORDERS-PUBLIC', '$JS.API.DIRECT.GET.ORDERS-PUBLIC']
    """
    if isinstance(stores, str) or not stores:
        raise ValidationError(f"a partner reads a list of public stores, e.g. ['orders-public'], got {stores!r}")
    check_token(user, "partner user")  # its inbox is one token: no other user's inbox wildcard covers it
    allow = ["$JS.API.INFO"]
    for store in stores:
        stream = check_token(store, "public store name").upper()  # its stream (eskit.streams.stream_name)
        allow += [
            f"$JS.API.STREAM.INFO.{stream}",
            f"$JS.API.DIRECT.GET.{stream}",
            f"$JS.API.DIRECT.GET.{stream}.>",
            f"$JS.API.STREAM.MSG.GET.{stream}",
            f"$JS.API.CONSUMER.INFO.{stream}.*",
            f"$JS.API.CONSUMER.NAMES.{stream}",
            f"$JS.API.CONSUMER.LIST.{stream}",
        ]
        if consumers:
            parked = f"{store}_parked".upper()  # its projections' dead letters (eskit.deadletter)
            allow += [
                f"$JS.API.CONSUMER.CREATE.{stream}",
                f"$JS.API.CONSUMER.CREATE.{stream}.>",
                f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.*",
                f"$JS.API.CONSUMER.MSG.NEXT.{stream}.*",
                f"$JS.API.CONSUMER.DELETE.{stream}.*",
                f"$JS.ACK.{stream}.>",
                f"$JS.API.STREAM.INFO.{parked}",  # created by publish_integration: a partner's STREAM.CREATE
                # could give it a mirror or source of the private store (the server does not check rights there)
                f"$JS.API.DIRECT.GET.{parked}",
                f"$JS.API.DIRECT.GET.{parked}.>",
                f"$JS.API.STREAM.MSG.DELETE.{parked}",
                f"{store}_parked.>",
            ]
    return {"publish": {"allow": allow}, "subscribe": {"allow": [inbox_prefix(user) + ".>"]}}


def least_privilege_config(
    *, writer_password: str, analyst_password: str, admin_password: str | None = None,
    writer: str = "writer", analyst: str = "analyst", admin: str = "admin", partners: Sequence[Partner] = (),
    writer_creates_stores: bool = False,
) -> str:  # fmt: skip
    """nats-server configuration text with the users (JetStream is enabled by eskit's flags); the admin
    user only if ``admin_password`` is given; a user per :class:`Partner` (read-only on its public stores).
    The admin creates stores (and snapshot buckets); with ``writer_creates_stores=True`` the writer may too,
    at the price of reading other users' replies.

    >>> text = least_privilege_config(writer_password="w", analyst_password="a", admin_password="adm")
    """
    inboxes = {"_INBOX.>", inbox_prefix(writer) + ".>", inbox_prefix(analyst) + ".>", inbox_prefix(admin) + ".>"}
    inboxes |= {inbox_prefix(p.user) + ".>" for p in partners}
    forge = sorted(inboxes - {inbox_prefix(writer) + ".>"})  # other users' replies, which a writer could forge
    deny = WRITER_DENY + ([] if writer_creates_stores else [WRITER_CREATE]) + forge
    users: list[dict[str, Any]] = []
    if admin_password is not None:
        users.append({"user": admin, "password": admin_password})  # no permissions: may do everything
    users += [
        {
            "user": writer,
            "password": writer_password,
            "permissions": {
                "publish": {"allow": [">"], "deny": deny},
                "subscribe": {"allow": [inbox_prefix(writer) + ".>"]},
            },
        },
        {
            "user": analyst,
            "password": analyst_password,
            "permissions": {
                "publish": {"allow": ANALYST_ALLOW},
                "subscribe": {"allow": [inbox_prefix(analyst) + ".>"]},
            },
        },
    ]
    users += [{"user": p.user, "password": p.password, "permissions": p.permissions()} for p in partners]
    return "authorization {\n  users = " + json.dumps(users, indent=2) + "\n}\n"
