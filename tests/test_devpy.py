"""`python3 dev.py ...`, the README's two commands: typos, help, options passed to the lab, and Ctrl-C/SIGTERM
that stop everything dev.py started (JupyterLab, its kernels, the embedded server) and leave no temporary store."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from jupyter_client import BlockingKernelClient

from eskit.cluster import free_ports

ROOT = Path(__file__).resolve().parent.parent
DEV = ROOT / "dev.py"


def dev_module() -> object:
    spec = importlib.util.spec_from_file_location("dev", DEV)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_typo_says_unknown_command_and_help_exits_zero() -> None:
    typo = subprocess.run([sys.executable, str(DEV), "tset"], capture_output=True, text=True, timeout=30)
    assert typo.returncode == 2 and "unknown command 'tset'" in typo.stderr
    helped = subprocess.run([sys.executable, str(DEV), "--help"], capture_output=True, text=True, timeout=30)
    assert helped.returncode == 0 and "dev.py lab" in helped.stdout


def get(url: str, data: bytes | None = None) -> bytes | None:
    try:
        with urllib.request.urlopen(url, data=data, timeout=2) as r:
            return bytes(r.read())
    except OSError:
        return None


def ours(marker: str) -> list[str]:
    """Command lines of live processes that mention `marker` (our temp dir or our port)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != "Z":
            found.append(cmdline)
    return found


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_to_dev_py_lab_stops_jupyter_its_kernels_and_the_server_and_leaves_nothing(
    tmp_path: Path, sig: signal.Signals
) -> None:
    if not dev_module().up_to_date(("lab",)):  # type: ignore[attr-defined]
        pytest.skip("the venv is not dev.py's install of pyproject.toml as it is (run `python3 dev.py test`)")
    [port] = free_ports(1)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in {"NATS_URL", "PYTHONPATH"}}
    env.update(TMPDIR=str(tmp), JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"))
    args = ["--no-browser", f"--port={port}", "--IdentityProvider.token=t", "--ServerApp.ip=127.0.0.1"]
    log = tmp_path / "dev.log"
    with log.open("w") as out:
        dev = subprocess.Popen([sys.executable, str(DEV), "lab", *args], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        kernel = None
        while kernel is None and time.monotonic() < deadline and dev.poll() is None:
            kernel = get(f"http://127.0.0.1:{port}/api/kernels?token=t", data=b"{}")  # start a kernel
            if kernel is None:
                time.sleep(0.3)
        assert kernel is not None, f"JupyterLab did not answer within 90 s:\n{log.read_text()}"
        connection = tmp_path / "runtime" / f"kernel-{json.loads(kernel)['id']}.json"
        ready = BlockingKernelClient(connection_file=str(connection))  # a learner's kernel has started up
        ready.load_connection_file()
        ready.start_channels(hb=False)
        try:
            ready.kernel_info()
            assert ready.get_shell_msg(timeout=60)["msg_type"] == "kernel_info_reply"
        finally:
            ready.stop_channels()
        assert any(str(tmp_path / "runtime") in c for c in ours("ipykernel")), "the kernel did not start"
        assert list(tmp.glob("eskit-nats-*")), "the embedded server's temporary store is missing"
        dev.send_signal(sig)  # to dev.py's pid alone, as `kill` or a service manager would
        assert dev.wait(60) == 0
    finally:
        if dev.poll() is None:  # a failed check: stop it as a user would, so nothing outlives the test
            dev.send_signal(signal.SIGTERM)
            try:
                dev.wait(60)
            except subprocess.TimeoutExpired:
                dev.kill()
    output = log.read_text()
    assert "Traceback" not in output, output
    leftovers = ours(str(tmp_path)) + ours(f"--port={port}")
    assert leftovers == [], leftovers
    assert list(tmp.glob("eskit-nats-*")) == []


def test_a_script_beside_a_checkout_named_eskit_imports_the_package_not_the_folder(tmp_path: Path) -> None:
    if not dev_module().up_to_date(("lab",)):  # type: ignore[attr-defined]
        pytest.skip("the venv is not dev.py's install of pyproject.toml as it is (run `python3 dev.py test`)")
    (tmp_path / "eskit").symlink_to(ROOT)  # `git clone ... eskit`, then a script saved next to it
    script = tmp_path / "mine.py"
    script.write_text("import eskit\nprint(eskit.connect.__name__)\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout.strip()) == (0, "connect"), done.stderr
