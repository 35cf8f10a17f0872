"""The course in a real browser: JupyterLab driven headless by Playwright in the system's Chromium.

nbval runs every lesson, but not as a learner does: it does not render widgets, click, or look at a notebook
as it opens. Here lessons 02, 04, 06 and 07 are opened in JupyterLab (their saved widgets must render, not
show as raw text), run with Run All, and used afterwards: the lesson 02 slider moves through the order's
history, the lesson 04 dashboard follows new events, the lesson 06 event browser loads one order, lesson 07
shows the failover. No cell may end in an error.

Needs ``playwright`` (pip, the test extra) and Chromium at /usr/bin/chromium (Debian: ``apt-get install -y
chromium``; never ``playwright install``); skipped with the reason otherwise.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from eskit.__main__ import trust_lessons
from eskit.cluster import free_ports

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
LESSONS = ["02_rebuilding_state", "04_projections", "06_event_log_analysis", "07_scaling_and_faults"]
TOKEN = "eskit-browser-test"

playwright_api = pytest.importorskip(
    "playwright.async_api", reason="playwright is not installed (pip install 'eskit[test]')"
)
pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(240),
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}: apt-get install -y chromium (Debian/Ubuntu)"
    ),
]


@dataclass
class Lab:
    url: str
    folder: Path


def _get(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return bytes(r.read())
    except OSError:
        return None


@pytest.fixture
def lab(tmp_path: Path, nats_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    """JupyterLab on copies of the lessons (Run All saves into them), trusted as `python -m eskit lab` does."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    for name in LESSONS:
        shutil.copy(ROOT / "notebooks" / f"{name}.ipynb", folder)
    jupyter = {  # nothing from the user's own Jupyter set-up (workspaces, settings, signatures)
        "JUPYTER_CONFIG_DIR": tmp_path / "config", "JUPYTER_DATA_DIR": tmp_path / "data",
        "JUPYTER_RUNTIME_DIR": tmp_path / "runtime", "JUPYTERLAB_WORKSPACES_DIR": tmp_path / "workspaces",
        "JUPYTERLAB_SETTINGS_DIR": tmp_path / "settings",
    }  # fmt: skip
    for key, value in jupyter.items():
        monkeypatch.setenv(key, str(value))
    trust_lessons(folder)
    settings = tmp_path / "settings" / "@jupyterlab"
    for plugin, values in {
        "notebook-extension/tracker": {"windowingMode": "none"},  # every cell in the page, not only those in view
        "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    }.items():
        (settings / plugin).parent.mkdir(parents=True, exist_ok=True)
        (settings / plugin).with_suffix(".jupyterlab-settings").write_text(json.dumps(values))
    env = {k: v for k, v in os.environ.items() if k != "ESKIT_CLEANUP"}  # a learner's lab: widgets stay alive
    env["NATS_URL"] = nats_url
    [port] = free_ports(1)
    args = [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
            f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={folder}"]  # fmt: skip
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--allow-root")
    log = (tmp_path / "lab.log").open("w")
    process = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while _get(f"{url}/api/status?token={TOKEN}") is None:
            assert process.poll() is None, f"JupyterLab exited: {(tmp_path / 'lab.log').read_text()[-2000:]}"
            assert time.monotonic() < deadline, "JupyterLab did not answer within 60 s"
            time.sleep(0.2)
        yield Lab(url, folder)
    finally:
        process.terminate()  # JupyterLab shuts its kernels down
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture
async def browser(lab: Lab) -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as p:
        chromium = await p.chromium.launch(executable_path=str(CHROMIUM))
        try:
            yield chromium
        finally:
            await chromium.close()


async def open_lesson(browser: Any, lab: Lab, name: str) -> Any:
    page = await browser.new_page(viewport={"width": 1400, "height": 1000})
    # one workspace per page, so the pages do not restore each other's tabs
    await page.goto(f"{lab.url}/lab/workspaces/w{name[:2]}/tree/{name}.ipynb?token={TOKEN}")
    await page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    return page


async def kernel_idle(page: Any, timeout: float = 120) -> None:
    await page.wait_for_selector(
        ".jp-Notebook-ExecutionIndicator[data-status='idle']", state="attached", timeout=timeout * 1000
    )


async def run_all(page: Any) -> None:
    await page.get_by_role("menuitem", name="Run", exact=True).click()
    await page.locator("[data-command='runmenu:run-all']").click()
    await page.wait_for_function(
        "() => [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].some(p => p.textContent.includes('*'))",
        timeout=30_000,
    )


async def all_cells_ran(page: Any, timeout: float) -> None:
    """The last code cell shows an execution count and no cell is queued or running (`[*]`).

    Run All runs the cells in order and stops at an error (the cells after it keep `[ ]`), so a count on the
    last cell means every cell ran.
    """
    try:
        await page.wait_for_function(
            """() => {
                const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')];
                return prompts.length > 0 && prompts.every(p => !p.textContent.includes('*'))
                    && /\\[\\d+\\]/.test(prompts[prompts.length - 1].textContent);
            }""",
            timeout=timeout * 1000,
        )
    except playwright_api.TimeoutError:
        prompts = await page.evaluate(
            "() => [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].map(p => p.textContent)"
        )
        raise AssertionError(
            f"{page.url}: not every cell ran in {timeout} s: {prompts}; {await errors_in(page)}"
        ) from None
    await kernel_idle(page)


async def text_of(locator: Any) -> str:
    return str(await locator.inner_text())


async def errors_in(page: Any) -> list[str]:
    """Error outputs, warnings on stderr, and widget status lines showing an error (not other stderr text,
    such as the banner pm4py prints on import when it is installed)."""
    found = await page.evaluate(
        """() => [...document.querySelectorAll(
                '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"], span[style*="#b00020"]')]
            .map(e => e.textContent).filter(t => /Traceback|Error|Warning|error:/.test(t))"""
    )
    return [str(t)[:300] for t in found]


async def test_lessons_run_all_in_jupyterlab_and_their_widgets_still_work_afterwards(lab: Lab, browser: Any) -> None:
    opened = await asyncio.gather(*(open_lesson(browser, lab, name) for name in LESSONS))
    pages = {name[:2]: page for name, page in zip(LESSONS, opened, strict=True)}

    # opened fresh, saved widgets render (from the widget state stored in the trusted notebook), not as text
    lesson02 = pages["02"]
    await lesson02.wait_for_selector(".jp-OutputArea .widget-slider", timeout=90_000)
    assert "interactive(children=" not in await text_of(lesson02.locator(".jp-Notebook"))
    await pages["04"].wait_for_selector(".jp-OutputArea .widget-html th:has-text('applied')", timeout=90_000)
    await pages["06"].wait_for_selector(".jp-OutputArea .widget-button:has-text('next ▶')", timeout=90_000)

    for page in pages.values():  # the lessons run side by side, each in its own kernel
        await kernel_idle(page)
        await run_all(page)
    for page in pages.values():
        await all_cells_ran(page, timeout=150)

    # lesson 02: the slider moves through order-1's history
    interact = lesson02.locator(".widget-interact").first
    shown = interact.locator(".jp-OutputArea")
    before = await text_of(shown)
    await interact.locator(".noUi-handle").first.focus()
    await lesson02.keyboard.press("ArrowRight")
    await lesson02.wait_for_function(
        "([el, before]) => el.textContent.trim() && el.textContent !== before",
        arg=[await shown.element_handle(), before],
        timeout=10_000,
    )
    assert "version" in await text_of(shown) and await text_of(shown) != before

    # lesson 06: the event browser loads one order (its connection is still open after Run All)
    lesson06 = pages["06"]
    events = lesson06.locator(".jp-OutputArea-output").filter(has=lesson06.locator("button", has_text="next ▶"))
    status = events.locator(".widget-html").nth(0)
    before = await text_of(status)
    assert "events · page 1 of" in before
    await events.locator("input").first.fill("order-0007")
    await events.locator("button", has_text="load").click()
    await lesson06.wait_for_function(
        "([el, before]) => el.textContent !== before && !/working/.test(el.textContent)",
        arg=[await status.element_handle(), before],
        timeout=20_000,
    )
    after = await text_of(events)
    assert "error" not in (await text_of(status)).lower() and "page 1 of 1" in await text_of(status)
    assert "order-0007" in after and "order-0001" not in after

    # lesson 04: the dashboard follows new events (it is not frozen, the projection still runs)
    lesson04 = pages["04"]
    board = lesson04.locator(".jp-OutputArea-output").filter(has=lesson04.locator("th", has_text="applied")).first
    before = await text_of(board)
    assert "▶" in before
    await lesson04.locator(".jp-Cell").last.click()
    await lesson04.keyboard.press("Escape")
    await lesson04.keyboard.press("b")  # a new cell below, as a learner would
    await lesson04.keyboard.press("Enter")
    await lesson04.keyboard.type('await place("o-browser", "zed", ["A1", "B2"])')
    await lesson04.keyboard.press("Shift+Enter")
    await lesson04.wait_for_function(
        "([el, before]) => el.textContent !== before",
        arg=[await board.element_handle(), before],
        timeout=20_000,
    )

    # lesson 07: the kill landed in the middle of the writes, and nothing acknowledged was lost
    lesson07 = await text_of(pages["07"].locator(".jp-Notebook"))
    assert "appends acknowledged after the kill: True" in lesson07
    assert "acknowledged but lost: 0" in lesson07

    for name, page in pages.items():
        await kernel_idle(page)
        assert await errors_in(page) == [], f"lesson {name} shows an error"

    # when you are done: the button at the end of lesson 06 cleans up
    done = lesson06.locator(".jp-OutputArea-output").filter(has=lesson06.locator("button", has_text="clean up"))
    await done.locator("button").click()
    await done.locator("text=cleaned up").wait_for(timeout=20_000)
    assert await errors_in(lesson06) == []
