"""The transport: eskit's own ways of talking to nats-py and the server, under one roof.

Fast lanes for bulk deliveries (:mod:`.fastlane`), raw JetStream requests on one reply inbox
(:mod:`.wire`), header blocks parsed at C speed (:mod:`.headers`), closing within a bound
(:mod:`.closing`), JetStream's error codes and the translation of nats-py's errors (:mod:`.codes`,
:mod:`.jsapi`). This package is the only code that touches nats-py's private members
(``tests/test_architecture.py`` checks it); the modules above it (stores, projections, analysis) go through
it. :func:`install` decides once per connection, before it connects, what this nats-py allows:

>>> nc = nats.aio.client.Client(); install(nc); await nc.connect(url)            # doctest: +SKIP
>>> server_info(nc)["version"]                                                   # doctest: +SKIP
'2.15.1'

``ESKIT_FAST_LANE=0`` in the environment turns every fast lane off (nats-py's own path throughout). If the
installed nats-py differs from the one eskit is built on (``nats-py>=2.16,<2.17`` in pyproject.toml) so that
a fast lane cannot be installed, eskit says so once, with a :class:`FastLaneWarning`, and runs on nats-py's
own path.
"""

from __future__ import annotations

import warnings
from importlib import metadata
from typing import Any

from nats.aio.client import Client as NATS
from nats.js.client import JetStreamContext

from . import fastlane, headers

_warned: list[str] = []  # the one warning said in this process


class FastLaneWarning(UserWarning):
    """The fast lane could not be installed (the installed nats-py differs from the one eskit was built on):
    eskit works on nats-py's own path, more slowly. Said once per process."""


def install(nc: NATS) -> bool:
    """Fast lanes on a new, not yet connected client: the fast parser and the header parser. False when
    they are off (``ESKIT_FAST_LANE=0``) or this nats-py does not allow them (then one warning says why)."""
    if not fastlane.enabled():
        fastlane.disable(nc)
        return False
    problem = fastlane.missing(nc) or headers.missing(nc) or fastlane.prepare(nc) or headers.install(nc)
    if problem is None:
        return True
    fastlane.disable(nc)
    warn_once(problem)
    return False


def warn_once(problem: str) -> None:
    """Say once per process that the fast lane is off, and why (one line)."""
    if _warned:
        return
    _warned.append(problem)
    try:
        version = metadata.version("nats-py")
    except metadata.PackageNotFoundError:
        version = "?"
    message = (
        f"eskit's fast lane is off: {problem} (nats-py {version}); eskit runs on nats-py's own path, "
        "slower; install nats-py>=2.16,<2.17 for the fast lane, or set ESKIT_FAST_LANE=0 to silence this"
    )
    warnings.warn(message, FastLaneWarning, stacklevel=3)


def server_info(nc: NATS) -> dict[str, Any]:
    """The INFO the server sent when ``nc`` connected (nats-py keeps it in a private member)."""
    info: dict[str, Any] = getattr(nc, "_server_info", None) or {}
    return info


def connection_of(js: JetStreamContext) -> NATS:
    """The connection a JetStream context talks over (nats-py keeps it in a private member)."""
    nc: NATS = js._nc
    return nc
