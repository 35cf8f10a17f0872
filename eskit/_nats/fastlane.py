"""Fast lanes: the messages of chosen subscriptions go straight to a plain function, as raw bytes.

nats-py reads every message through a regex, two buffer copies, an awaited coroutine, a ``Msg`` object, a
per-subscription queue and a task, and parses its header block in Python. On a replay, a bulk read or a
projection's catch-up that machinery is most of the client's time. :func:`route` delivers the messages of
one subscription to ``sink(subject, reply, header_block, payload)`` (all ``bytes``; ``b""`` when there is
no header block or reply) inside the connection's read loop. Every other subscription is untouched, and
nats-py still owns the subscriptions themselves (SUB on reconnect, UNSUB).

Two ways in, the best that the installed nats-py allows:

- :class:`FastParser`, set on a connection before it connects (:func:`prepare`, as :func:`eskit.connect`
  does): frames are cut from each read chunk with ``bytes.find``; routed ones never become objects.
- otherwise a hook on the connection's ``_process_msg`` (the parser's hand-off), installed on first use.

If neither fits, :func:`route` returns False and the caller keeps its ordinary callback. With
``ESKIT_FAST_LANE=0`` in the environment when a connection is prepared, it gets no fast lane at all
(:func:`disable`): every message takes nats-py's own path.

>>> nc = nats.aio.client.Client(); prepare(nc); await nc.connect(url)      # doctest: +SKIP
>>> sub = await nc.subscribe(inbox); route(nc, sub, lambda subj, reply, hdr, data: ...)  # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import logging
import os
import weakref
from collections.abc import Callable
from typing import Any

from nats.errors import ProtocolError
from nats.protocol.parser import Parser

Sink = Callable[[bytes, bytes, bytes, bytes], None]
ENV = "ESKIT_FAST_LANE"
_log = logging.getLogger("eskit")
_PROCESS_MSG = ["sid", "subject", "reply", "data", "headers"]  # the hand-off's parameters, as nats-py 2.16 has them
_off: weakref.WeakSet[Any] = weakref.WeakSet()  # connections prepared with the fast lane off
_hooked: weakref.WeakKeyDictionary[Any, dict[int, Sink]] = weakref.WeakKeyDictionary()


def enabled() -> bool:
    """Whether the environment allows fast lanes (``ESKIT_FAST_LANE=0``, ``off``, ``false`` or ``no``: not).

    >>> os.environ["ESKIT_FAST_LANE"] = "0"; enabled()                          # doctest: +SKIP
    False
    """
    return os.environ.get(ENV, "1").strip().lower() not in {"0", "off", "false", "no"}


def disable(nc: Any) -> None:
    """No fast lane on this connection: :func:`route` returns False, :func:`available` says no."""
    _off.add(nc)


class FastParser(Parser):
    """nats-py's protocol parser, with message frames cut in bulk and routed frames handed to sinks."""

    def __init__(self, nc: Any = None) -> None:
        super().__init__(nc)
        self.sinks: dict[int, Sink] = {}
        self._held: list[bytes] = []  # an incomplete frame, in pieces
        self._held_size = 0
        self._need = 0  # bytes the held frame needs before it can be parsed
        self._resets = 0

    def reset(self) -> None:
        """Forget everything read so far (nats-py calls it on a reconnect, from inside :meth:`parse` too)."""
        super().reset()
        self._held, self._held_size, self._need = [], 0, 0
        self._resets = getattr(self, "_resets", 0) + 1  # Parser.__init__ calls reset() before __init__ ends

    async def parse(self, data: bytes = b"") -> None:
        if self._held:
            self._held.append(data)
            self._held_size += len(data)
            if self._held_size < self._need:
                return  # a large payload still arriving: no copy until it is complete
            data = b"".join(self._held)
            self._held, self._held_size, self._need = [], 0, 0
        pos, size, sinks, resets = 0, len(data), self.sinks, self._resets
        while pos < size:
            eol = data.find(b"\r\n", pos)
            if eol < 0:
                break  # a line still arriving (nats-py's parser waits for the rest too, however long)
            if not (data.startswith(b"HMSG ", pos) or data.startswith(b"MSG ", pos)):
                self.buf = bytearray(data[pos : eol + 2])  # PING, PONG, INFO, +OK, -ERR: nats-py's own code
                await super().parse()
                if self._resets != resets:
                    return  # nats-py reset the parser (-ERR 'Stale Connection'): the rest of this read is void
                pos = eol + 2
                continue
            args = data[pos:eol].split()
            try:
                with_headers = args[0] == b"HMSG"
                if not 4 + with_headers <= len(args) <= 5 + with_headers:
                    raise ValueError  # nats-py's regex takes no other count either
                total = int(args[-1])
                header_size = int(args[-2]) if with_headers else 0
                sid = int(args[2])
                reply = args[3] if len(args) == (6 if with_headers else 5) else b""
            except (IndexError, ValueError):
                raise ProtocolError("nats: malformed MSG") from None
            start = eol + 2
            stop = start + total
            if stop + 2 > size:
                self._need = stop + 2 - pos
                break
            sink = sinks.get(sid)
            if sink is not None:
                try:
                    sink(args[1], reply, data[start : start + header_size], data[start + header_size : stop])
                except Exception:  # a bug in a sink must not stop the connection's read loop
                    _log.exception("eskit: a fast-lane message handler failed")
            else:
                headers = data[start : start + header_size] if with_headers else None
                await self.nc._process_msg(sid, args[1], reply, data[start + header_size : stop], headers)
                if self._resets != resets:
                    return
            pos = stop + 2
        if pos < size:
            rest = data[pos:]
            self._held, self._held_size = [rest], len(rest)
            self._need = max(self._need, len(rest) + 1)


def prepare(nc: Any) -> str | None:
    """Give a not-yet-connected nats-py client the :class:`FastParser`; None when it has it, else why not
    (then :func:`route` still tries the ``_process_msg`` hook, see :func:`missing`).

    >>> nc = nats.aio.client.Client(); prepare(nc) is None                      # doctest: +SKIP
    True
    """
    current = getattr(nc, "_ps", None)
    if isinstance(current, FastParser):
        return None
    if getattr(nc, "is_connected", True):
        return "the client is connected already"
    if type(current) is not Parser:
        return f"its protocol parser is {type(current).__name__}, not nats.protocol.parser.Parser"
    if missing := [name for name in ("buf", "nc", "reset", "parse") if not hasattr(current, name)]:
        return f"nats-py's Parser has no {', '.join(missing)}"
    nc._ps = FastParser(nc)
    return None


def missing(nc: Any) -> str | None:
    """What this nats-py client lacks for routing (None: nothing): the parser's hand-off
    ``_process_msg(sid, subject, reply, data, headers)``."""
    original = getattr(nc, "_process_msg", None)
    if original is None:
        return "nats-py's Client has no _process_msg"
    if list(inspect.signature(original).parameters) != _PROCESS_MSG:
        return f"nats-py's Client._process_msg takes {list(inspect.signature(original).parameters)}"
    return None


def _sinks(nc: Any) -> dict[int, Sink] | None:
    if nc in _off:
        return None
    parser = getattr(nc, "_ps", None)
    if isinstance(parser, FastParser):
        return parser.sinks
    hooked = _hooked.get(nc)
    if hooked is not None:
        return hooked
    if not enabled() or missing(nc) is not None:
        return None
    original = nc._process_msg
    sinks: dict[int, Sink] = {}

    async def process(sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
        sink = sinks.get(sid)
        if sink is None:
            await original(sid, subject, reply, data, headers)
            return
        try:
            sink(subject, reply, headers or b"", data)
        except Exception:
            _log.exception("eskit: a fast-lane message handler failed")

    nc._process_msg = process
    _hooked[nc] = sinks
    return sinks


def sid_of(sub: Any) -> int | None:
    """The subscription id nats-py gave ``sub`` (None: this nats-py keeps it elsewhere)."""
    sid = getattr(sub, "_id", None)
    return sid if isinstance(sid, int) else None


def route(nc: Any, sub: Any, sink: Sink) -> bool:
    """Deliver the messages of ``sub`` to ``sink`` from now on; False if this connection cannot."""
    sid = sid_of(sub)
    sinks = _sinks(nc)
    if sid is None or sinks is None:
        return False
    sinks[sid] = sink
    return True


def unroute(nc: Any, sub: Any) -> None:
    """Stop routing ``sub`` (before unsubscribing it)."""
    sinks = _sinks(nc)
    if sinks is not None:
        sinks.pop(sid_of(sub) or -1, None)


def available(nc: Any) -> bool:
    """Whether :func:`route` works on this connection."""
    return _sinks(nc) is not None
