"""The README's code runs: its Python blocks are executed against the real server."""

from __future__ import annotations

import re
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
