"""Exercise checks for the course notebooks: one verdict line per check, never a traceback.

A check cell calls :func:`check` with a zero-argument test (sync or async) that raises :class:`Wrong` (or
``AssertionError``) with a hint when the learner's answer is not right yet:

>>> def test():
...     if sorted([3, 1]) != [1, 3]:
...         raise Wrong("sort the list first")
>>> import asyncio; asyncio.run(check(test, ok="sorted"))
✓ sorted
>>> import eskit; eskit.course.last_verdict
'✓ sorted'

Checks must be re-runnable in the same kernel: every store a check writes to is a fresh one, from
:func:`scratch`, deleted when the check ends (``unique`` names anything else a check creates).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import traceback
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from .clean import LESSON_PREFIX
from .streams import LEARNER_ENV, check_namespace

if TYPE_CHECKING:
    from .connection import Client
    from .store import EventStore

__all__ = ["Spy", "Wrong", "check", "last_verdict", "require", "scratch", "unique"]

NOT_DONE = "not done yet: write your answer in the exercise cell above (replace the `...`)"

last_verdict: str | None = None
"""The line the last :func:`check` printed (``"✓ ..."`` or ``"✗ ..."``)."""


class Wrong(Exception):
    """The answer is not right yet; the message is the hint shown after ``✗``.

    >>> raise Wrong("count each order once")
    Traceback (most recent call last):
    eskit.course.Wrong: count each order once
    """


def require(value: object, what: str) -> None:
    """Raise :class:`Wrong` ``"not done yet: <what>"`` if ``value`` is still a stub (``...``, None, NotImplemented).

    >>> require(..., "shipped_orders returns nothing yet")
    Traceback (most recent call last):
    eskit.course.Wrong: not done yet: shipped_orders returns nothing yet
    """
    if value is None or value is Ellipsis or value is NotImplemented:
        raise Wrong(f"not done yet: {what}")


def unique(prefix: str) -> str:
    """A unique name (``lesson_`` + ``prefix`` + 8 hex digits) for a store, bucket or consumer a lesson creates.

    The common ``lesson_`` prefix is how ``python -m eskit clean`` finds what the lessons left on a server.
    With ``ESKIT_LEARNER=alice`` the name is in alice's namespace: ``alice_lesson_<prefix><hex>`` (the name
    ``client.event_store`` gives it anyway, see :meth:`eskit.Client.store_name`), so subjects and consumers a
    lesson builds from the name are hers too, and ``python -m eskit clean --namespace alice`` finds them.

    >>> unique("check").startswith("lesson_check")
    True
    """
    learner = check_namespace(os.environ.get(LEARNER_ENV, "").strip())
    return f"{learner + '_' if learner else ''}{LESSON_PREFIX}{prefix}{uuid.uuid4().hex[:8]}"


@asynccontextmanager
async def scratch(client: Client, prefix: str = "check", **options: Any) -> AsyncIterator[EventStore]:
    """A fresh, uniquely named event store, deleted (with its snapshots) when the block ends.

    If ``client`` is closed already (a learner ran the whole lesson, whose last cell closes it, and then works
    on the exercises), the store lives on a connection of its own to ``NATS_URL``, closed at the end.

    >>> async with eskit.course.scratch(client, "shipped") as store:    # doctest: +SKIP
    ...     await store.append("order-1", [eskit.Event("created", {})])
    """
    own = None
    if client.nc.is_closed:  # the lesson's last cell closed it (Run All, then the exercises): connect anew
        from .connection import connect

        own = client = await connect()
    name = unique(prefix)
    try:
        store = await client.event_store(name, **options)
        try:
            yield store
        finally:
            with contextlib.suppress(Exception):  # cleanup must not hide the verdict
                await client.delete_store(name)
    finally:
        if own is not None:
            await own.close()


class Spy:
    """A stand-in for a store (or anything) that notes each method call, so a check can see *how* an answer
    read or wrote, not only what it returned.

    >>> spy = Spy([3, 1, 2]); spy.index(1)
    1
    >>> spy.calls
    [('index', (1,), {})]
    """

    def __init__(self, target: Any) -> None:
        self.target = target
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, attribute: str) -> Any:
        value = getattr(self.target, attribute)
        if not callable(value):
            return value

        def noted(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((attribute, args, kwargs))
            return value(*args, **kwargs)

        return noted

    def called(self, method: str) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
        """The (args, kwargs) of each call of ``method``, in order."""
        return [(args, kwargs) for name, args, kwargs in self.calls if name == method]


def _one_line(text: str) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return " ".join(lines) if len(lines) <= 3 else " ".join(lines[:3]) + " ..."


def _verdict(exc: BaseException) -> str:
    """The hint for an exception raised by a test (or by the learner's code inside it)."""
    if isinstance(exc, Wrong | AssertionError):
        return _one_line(str(exc)) or "not right yet (a check failed without saying why)"
    if isinstance(exc, NotImplementedError):
        return f"not done yet: {_one_line(str(exc))}" if str(exc) else NOT_DONE
    if isinstance(exc, NameError):
        name = getattr(exc, "name", None) or str(exc)
        return f"run the exercise cell above first ({name} is not defined)"
    where = ""
    frames = traceback.extract_tb(exc.__traceback__)
    if frames and frames[-1].filename.startswith("<"):  # raised in notebook code: say which line
        where = f" at `{(frames[-1].line or '').strip()}`"
    return f"your code raised {type(exc).__name__}{where}: {_one_line(str(exc)) or '(no message)'}"


async def check(test: Callable[[], Awaitable[object] | object] | Awaitable[object], *, ok: str) -> None:
    """Run ``test`` and print ONE verdict line: ``✓ <ok>`` if it returns, ``✗ <hint>`` if it raises.

    Returns nothing (so a notebook shows only the line); the line is kept in ``eskit.course.last_verdict``.
    """
    global last_verdict
    try:
        result = test if inspect.isawaitable(test) else test()  # check(test()) works too
        if inspect.isawaitable(result):
            await result
        line = f"✓ {ok}"
    except (KeyboardInterrupt, SystemExit, asyncio.CancelledError):
        raise
    except BaseException as exc:  # a verdict, never a traceback
        line = f"✗ {_verdict(exc)}"
    last_verdict = line
    print(line)
