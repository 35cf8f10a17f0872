"""Publishing as nats-py's ``publish`` does, without its per-message overhead: the HPUB command written here
only when it is byte-equal to what nats-py would send (``tests/test_nats_seam.py`` checks), else nats-py's
own path (it checks, cleans, buffers during a reconnect, or refuses).

>>> hpub("orders.1.created", "_INBOX.x.1", {"A": "1"}, b"{}")
b'HPUB orders.1.created _INBOX.x.1 18 20\\r\\nNATS/1.0\\r\\nA: 1\\r\\n\\r\\n{}\\r\\n'
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping

from nats.aio.client import Client as NATS

from . import fastlane as _fastlane
from . import warn_once as _warn_once

_SUBJECT_INVALID = re.compile(r"[ \t\r\n]")  # nats-py refuses these in a subject (and a reply subject)
_HEADER_KEY = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # nats-py's rule for a header name (an HTTP token)
_good_keys: set[str] = set()  # header names checked once: the same few on every event


def header_block(headers: Mapping[str, str]) -> bytes | None:
    """The header block nats-py's ``publish`` would send, or None when nats-py would change or refuse
    something (a name to strip, skip or refuse, a value to strip or with CR/LF in it): then its path decides.

    >>> header_block({"Nats-Msg-Id": "7", "Eskit-Type": "created"})
    b'NATS/1.0\\r\\nNats-Msg-Id: 7\\r\\nEskit-Type: created\\r\\n\\r\\n'
    >>> header_block({"Nats-Msg-Id": " 7"}) is None
    True
    """
    if not _good_keys.issuperset(headers):
        for key in headers:
            if not _HEADER_KEY.fullmatch(key):
                return None
            if len(_good_keys) < 1000:
                _good_keys.add(key)
    if [v for v in headers.values() if v != v.strip() or "\r" in v or "\n" in v]:
        return None
    return b"NATS/1.0\r\n" + "".join([f"{k}: {v}\r\n" for k, v in headers.items()]).encode() + b"\r\n"


def header_size(headers: Mapping[str, str]) -> int:
    """The size of the header block nats-py sends for ``headers`` (at most: it strips values)."""
    return 12 + sum(len(k.encode()) + len(v.encode()) + 4 for k, v in headers.items())


def hpub(subject: str, reply: str, headers: Mapping[str, str], payload: bytes) -> bytes | None:
    """The HPUB command nats-py's ``publish(subject, payload, reply=reply, headers=headers)`` sends, byte for
    byte; None when only nats-py's own path can tell (a subject or header it would check or clean).

    >>> hpub("orders.1.created", "_INBOX.x.1", {"A": "1"}, b"{}")
    b'HPUB orders.1.created _INBOX.x.1 18 20\\r\\nNATS/1.0\\r\\nA: 1\\r\\n\\r\\n{}\\r\\n'
    """
    block = header_block(headers)
    if block is None or not subject or _SUBJECT_INVALID.search(subject) or _SUBJECT_INVALID.search(reply):
        return None
    size = len(block)
    total = size + len(payload)
    return b"HPUB %s %s %d %d\r\n%s%s\r\n" % (subject.encode(), reply.encode(), size, total, block, payload)


def raw_publishing(nc: NATS) -> Callable[[bytes], Awaitable[bool]] | None:
    """A way to send a ready-made command on ``nc`` as nats-py's ``publish`` does after its checks (queue it,
    flush it when no flush is pending), or None: fast lanes off, or this nats-py keeps its queue elsewhere.
    The returned coroutine says False when the connection cannot take it now (not connected, draining): then
    nats-py's ``publish`` must (it buffers during a reconnect, or raises)."""
    if not _fastlane.available(nc):
        return None
    send, flush = getattr(nc, "_send_command", None), getattr(nc, "_flush_pending", None)
    if not callable(send) or not callable(flush) or not hasattr(nc, "_flush_queue"):
        _warn_once("nats-py's Client has no _send_command, _flush_pending or _flush_queue")
        return None

    async def raw(command: bytes) -> bool:
        if not nc.is_connected or nc.is_draining_pubs:
            return False
        await send(command)
        queue = nc._flush_queue
        if queue is not None and queue.empty():
            await flush()
        return True

    return raw
