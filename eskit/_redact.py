"""Credentials never leave eskit in a message: one redaction for errors, reprs, logs and CLI output.

>>> redact("cannot reach nats://writer:hunter2@db:4222 (refused)")
'cannot reach nats://writer:***@db:4222 (refused)'
>>> redact("nats://s3cr3t-token@db:4222")
'nats://***@db:4222'
>>> redact("seed file /keys/user.nk is unreadable", "/keys/user.nk")
'seed file *** is unreadable'
>>> redact('users = [{"user": "writer", "password": "w-secret"}]')
'users = [{"user": "writer", "password": "***"}]'

What is hidden: a URL's password (``user:PASSWORD@``) or token (``TOKEN@``), anything that looks like an nkey
seed (``SU...``, 58 characters), the value after ``password:``, ``"pass":``, ``token =`` (config text, log
lines), and the secrets named by the caller (a password, a token, a seed or creds
path given to :func:`eskit.connect`). Every :class:`~eskit.errors.EskitError` message goes through it, and
every log record of the ``eskit`` and ``nats`` loggers and their children (``eskit.projections``, ...) is
redacted as it is made, whatever handler prints it.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable
from typing import Any

MASK = "***"
# scheme://userinfo@ (userinfo up to the last '@' before the host: a password may hold an '@'), or the same
# after a comma in a server list
_USERINFO = re.compile(r"((?:[A-Za-z][A-Za-z0-9+.\-]*://)|(?<=,))([^/\s,]*)@")
_SEED = re.compile(r"\bS[UAONCXP][A-Z2-7]{56}\b")
# config or JSON text (a server log line, a config file): password: x, "pass":"x", token = x
_KEY_VALUE = re.compile(r"""(?i)\b(password|pass|auth_token|token|seed)(["']?\s*[:=]\s*["']?)([^"'\s,}\]]+)""")


def _userinfo(match: re.Match[str]) -> str:
    user, colon, _ = match.group(2).partition(":")
    return f"{match.group(1)}{user}:{MASK}@" if colon else f"{match.group(1)}{MASK}@"


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with credentials replaced by ``***`` (see the module docstring)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    if "@" in text:
        text = _USERINFO.sub(_userinfo, text)
    if "S" in text:
        text = _SEED.sub(MASK, text)
    if ":" in text or "=" in text:
        text = _KEY_VALUE.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
    return text


def redact_url(text: str, url: str) -> str:
    """``text`` with the credentials of every server in ``url`` (``a,b``: a list) masked, also where
    :func:`redact`'s pattern cannot see them: a URL without a scheme, a password with ``/`` or a space.

    >>> redact_url("cannot reach bob:pa/ss@db:4222", "bob:pa/ss@db:4222")
    'cannot reach bob:***@db:4222'
    """
    for server in url.split(","):
        userinfo, at, _ = server.strip().partition("://")[2 if "://" in server else 0].rpartition("@")
        if at and userinfo:
            user, colon, _ = userinfo.partition(":")
            text = text.replace(userinfo + "@", f"{user}:{MASK}@" if colon else f"{MASK}@")
    return redact(text)


class RedactingFilter(logging.Filter):
    """Rewrites a log record's message (and its traceback text) through :func:`redact`."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


_LOGGERS = ("eskit", "nats")  # and every logger below them: "eskit.projections", "nats.aio.client", ...


def _ours(name: str) -> bool:
    return any(name == root or name.startswith(root + ".") for root in _LOGGERS)


class _RedactingFactory:
    """A log record factory that redacts the records of eskit's and nats-py's loggers and their children as
    they are made (a logger's filter sees only the records logged on that logger itself, not its children's,
    and a handler on a child would print them as given); other records pass through untouched."""

    def __init__(self, inner: Callable[..., logging.LogRecord]) -> None:
        self.inner, self._filter = inner, RedactingFilter()

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.inner(*args, **kwargs)
        if _ours(record.name):
            with contextlib.suppress(Exception):  # a message its args do not fit: the handler reports it
                self._filter.filter(record)
        return record


def install_log_filter() -> None:
    """Redact the records of eskit's loggers and nats-py's, children included (idempotent)."""
    if not isinstance(logging.getLogRecordFactory(), _RedactingFactory):
        logging.setLogRecordFactory(_RedactingFactory(logging.getLogRecordFactory()))
    for name in (*_LOGGERS, "nats.aio.client"):  # also if someone sets another record factory later
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(RedactingFilter())


install_log_filter()
