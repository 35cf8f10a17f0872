"""A whole-stream read with several batch Direct Get pages in flight.

``store._pages`` asks for the next page when the previous one has arrived: one request in flight. For a
whole stream the pages' sequence ranges are known up front (``after+1 ..`` the stream's last sequence,
2,000 at a time), so several can be requested at once and the server works on the next pages while the
client decodes this one. A range with deleted messages returns messages of the next range too; those are
dropped here (each message is yielded once, in stream order). Events appended after the read started are
not included.

>>> async for messages in stream_pages(store, after=0, last=await last_position(store)): ...  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from ._nats.wire import Page, StoredMsg

if TYPE_CHECKING:
    from .store import EventStore

PAGE = 2000
AHEAD = 4


async def last_position(store: EventStore) -> int:
    """The stream's last sequence; a missing stream is :class:`StreamNotFoundError`."""
    return await store.last_position()


async def stream_pages(
    store: EventStore, *, after: int, last: int, ahead: int = AHEAD
) -> AsyncIterator[list[StoredMsg]]:
    """Messages at positions ``after+1 .. last``, page by page in order, ``ahead`` pages in flight."""
    starts = iter(range(after + 1, last + 1, PAGE))

    def fetch(start: int) -> asyncio.Future[Page]:
        batch = min(PAGE, last - start + 1)
        return asyncio.ensure_future(
            store._wire.direct_get(store.stream, f"{store.name}.>", start=start, batch=batch)
        )

    window = deque(fetch(start) for start in itertools.islice(starts, ahead))
    seen = after
    try:
        while window:
            page = await window.popleft()
            following = next(starts, None)
            if following is not None:
                window.append(fetch(following))
            messages = [m for m in page.messages if m.seq > seen]
            if messages:
                seen = messages[-1].seq
                yield messages
    finally:
        for task in window:
            task.cancel()
