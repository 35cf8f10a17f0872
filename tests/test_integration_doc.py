"""docs/integration.md runs: its Python blocks, in order, as one notebook would run them (the lesson's cells)."""

from __future__ import annotations

import contextlib
import io
import re
import textwrap
from pathlib import Path

import eskit

DOC = Path(__file__).resolve().parent.parent / "docs" / "integration.md"
STORES = ("orders", "orders-curated", "payments")


async def test_the_integration_walk_throughs_run_and_show_what_the_doc_says(client: eskit.Client) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 6
    source = "async def walk_through():\n" + textwrap.indent("\n".join(blocks), "    ") + "\n    return locals()\n"
    namespace: dict[str, object] = {}
    exec(compile(source, str(DOC), "exec"), namespace)
    for name in STORES:  # a run that failed before
        await client.delete_store(name)
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            scope = await namespace["walk_through"]()  # type: ignore[operator]
    finally:
        for name in STORES:
            await client.delete_store(name)
        await client.wire.request("$JS.API.STREAM.DELETE.ORDERS-PUBLIC", b"")
    text = out.getvalue()
    public, curated = text.split("caused by", 1)[0].rsplit("\n", 1)[0], text.split("[('7'")[0]
    assert "1 1 placed {'total': 30, 'email': 'ada@example.com'}" in public  # whole events, chosen types
    assert "fraud_checked" not in text
    assert "1 placed {'total': 30} caused by" in curated and "email" not in curated.split("caused by", 1)[1]
    assert "[('7', 'placed')]" in text and "permission denied" in text
    assert "[('1', 'placed', 30), ('2', 'placed', 0), ('3', None, 5)]" in text
    assert "[('3', 'placed', 5)]" in text
    assert scope["secured"].running is False  # type: ignore[attr-defined]
