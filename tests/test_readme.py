"""The README's code runs: its Python blocks are executed against the real server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import eskit

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


async def test_the_readme_api_example_runs_and_reads_back_what_it_wrote(client: eskit.Client) -> None:
    [block] = python_blocks()
    source = "async def example():\n" + textwrap.indent(block, "    ") + "\n    return history\n"
    namespace: dict[str, object] = {}
    exec(compile(source, str(README), "exec"), namespace)
    try:
        history = await namespace["example"]()  # type: ignore[operator]
        assert [e.type for e in history] == ["created", "item_added", "item_added"]
        assert [e.data for e in history][1:] == [{"sku": "A1"}, {"sku": "B2"}]
    finally:
        await client.delete_store("orders")


def test_the_quickstart_script_runs_as_a_script_from_any_folder(nats_url: str, tmp_path: Path) -> None:
    script = README.parent / "examples" / "quickstart.py"
    env = {**os.environ, "NATS_URL": nats_url}
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "1 123 created {'customer': 'c1'}",
        "2 123 item_added {'sku': 'A1'}",
        "3 123 item_added {'sku': 'B2'}",
    ]


def test_the_readme_lists_every_dependency_of_every_extra() -> None:
    import tomllib

    project = tomllib.loads((README.parent / "pyproject.toml").read_text())["project"]
    text = README.read_text().split("## Dependencies", 1)[1].split("\n## ", 1)[0]
    wanted = list(project["dependencies"]) + [d for deps in project["optional-dependencies"].values() for d in deps]
    names = {re.split(r"[<>=\[; ]", d, maxsplit=1)[0] for d in wanted}
    missing = sorted(n for n in names if f"`{n}`" not in text)
    assert missing == [], f"README's Dependencies section does not name {missing}"
    assert all(f"| `{extra}` |" in text for extra in project["optional-dependencies"])
    [nats_py] = [d for d in project["dependencies"] if d.startswith("nats-py")]
    assert nats_py == "nats-py>=2.16,<2.17" and f"`nats-py` (`{nats_py.removeprefix('nats-py')}`" in text
