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

import nbformat
import pytest

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


def test_the_lab_marks_the_lessons_trusted_so_their_saved_widgets_render_when_first_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nbformat.sign import NotebookNotary

    from eskit.__main__ import trust_lessons

    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))  # this user's signature store
    folder = tmp_path / "notebooks"
    (folder / "solutions").mkdir(parents=True)
    lesson = nbformat.read(ROOT / "notebooks" / "02_rebuilding_state.ipynb", 4)
    for n, name in enumerate(["02_rebuilding_state.ipynb", "solutions/02_rebuilding_state.ipynb", "mine.ipynb"]):
        lesson.cells[0].source += f"\n\n{n}"  # distinct contents: a signature covers a notebook's content
        nbformat.write(lesson, folder / name)
    notary = NotebookNotary()

    def trusted() -> dict[str, bool]:
        return {
            p.relative_to(folder).as_posix(): notary.check_signature(nbformat.read(p, 4))
            for p in folder.rglob("*.ipynb")
        }

    assert not any(trusted().values())  # generated on another machine: JupyterLab would show raw widget text
    assert trust_lessons(folder) == 2
    assert trusted() == {
        "02_rebuilding_state.ipynb": True,
        "solutions/02_rebuilding_state.ipynb": True,
        "mine.ipynb": False,
    }
    assert trust_lessons(folder) == 0


def test_a_saved_widget_gets_a_readable_html_copy_for_viewers_that_show_it_as_raw_text() -> None:
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import make_notebook
    finally:
        sys.path.remove(str(ROOT / "tools"))
    lesson = nbformat.read(ROOT / "notebooks" / "02_rebuilding_state.ipynb", 4)
    [slider] = [o for c in lesson.cells for o in c.get("outputs", []) if make_notebook.WIDGET_VIEW in o.get("data", {})]
    slider.data.pop("text/html", None)
    assert slider.data["text/plain"].startswith("interactive(children=(SelectionSlider(")  # what GitHub shows
    assert make_notebook.add_widget_fallbacks(lesson) == 1
    shown = slider.data["text/html"]
    assert "position: <b>" in shown and "<pre>version " in shown  # the slider and what it printed
    assert make_notebook.add_widget_fallbacks(lesson) == 0
