"""`python -m eskit lab` (the README's first command, after set-up): JupyterLab on the notebooks with an
embedded nats-server, and SIGTERM stops both."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from eskit.cluster import free_ports

ROOT = Path(__file__).resolve().parent.parent


def get(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return bytes(r.read())
    except OSError:
        return None


def test_the_lab_serves_the_notebooks_on_an_embedded_server_and_stops_cleanly(tmp_path: Path) -> None:
    [port] = free_ports(1)
    env = {k: v for k, v in os.environ.items() if k != "NATS_URL"}
    args = ["--no-browser", f"--port={port}", "--IdentityProvider.token=t", "--ServerApp.ip=127.0.0.1"]
    log = tmp_path / "lab.log"
    with log.open("w") as out:
        lab = subprocess.Popen(
            [sys.executable, "-m", "eskit", "lab", "--", *args], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        listing = None
        deadline = time.monotonic() + 60
        while listing is None and time.monotonic() < deadline and lab.poll() is None:
            listing = get(f"http://127.0.0.1:{port}/api/contents?token=t")
            time.sleep(0.5)
        assert listing is not None, "JupyterLab did not answer within 60 s"
        names = {item["name"] for item in json.loads(listing)["content"]}
        assert "00_setup_check.ipynb" in names
    finally:
        lab.send_signal(signal.SIGTERM)
        lab.wait(30)
    first = log.read_text().splitlines()[0]
    assert "embedded nats-server at nats://127.0.0.1:" in first
    # the embedded server is named after the process that started it (eskit.server: "eskit-<pid>-...")
    nats_pids = subprocess.run(["pgrep", "-f", f"server_name eskit-{lab.pid}-"], capture_output=True, text=True)
    assert lab.returncode == 0 and nats_pids.stdout.split() == []
