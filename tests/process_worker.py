"""The checkout process manager in a process of its own, for the crash test (tests/test_process_crash.py).

    python tests/process_worker.py NAMESPACE DB [--batch N] [--block-after KIND:N --marker FILE]

Catches ``Checkout`` up on the stores of learner namespace ``NAMESPACE`` (server at ``$NATS_URL``; the
payment service runs elsewhere), positions in the SQLite file ``DB``, then prints ``caught up`` and its
positions. With ``--block-after``, once the N-th command of KIND (``request``: a payment charge,
``shipping``: a shipment, ``cancel``: an order cancelled) has been issued, it touches ``FILE`` and blocks
(the event loop too): the parent kills it there, after issuing, before the position is stored.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import eskit
from eskit.process.commands import Command
from eskit.process.examples import Checkout


def kind(command: Command) -> str:
    if isinstance(command, eskit.Request):
        return "request"
    return "shipping" if command.store == "shipping" else "cancel"


class Blocking(Checkout):
    name = "Checkout"  # the same subscribers and command ids as the restarted, plain Checkout
    block_kind, block_after, marker, issued = "", 0, Path(), 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        send = self._sender.send

        async def send_then_block(
            source: str, event: eskit.RecordedEvent, index: int, command: Command, *, suspect: bool
        ) -> None:
            await send(source, event, index, command, suspect=suspect)
            if kind(command) == self.block_kind:
                self.issued += 1
                if self.issued == self.block_after:
                    written = self.marker.with_suffix(".tmp")
                    written.write_text(json.dumps({"position": event.position, "store": source}))
                    written.rename(self.marker)  # whole, at once: the parent reads it as soon as it exists
                    time.sleep(600)  # killed here: the command issued, the position not stored

        self._sender.send = send_then_block  # type: ignore[method-assign]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("namespace")
    parser.add_argument("db")
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--block-after", default="")
    parser.add_argument("--marker", type=Path)
    args = parser.parse_args()
    async with await eskit.connect(namespace=args.namespace) as client:
        checkout: Checkout
        if args.block_after and args.marker:
            checkout = Blocking(client, db=args.db, batch_size=args.batch)
            checkout.block_kind, after = args.block_after.split(":")
            checkout.block_after, checkout.marker = int(after), args.marker
        else:
            checkout = Checkout(client, db=args.db, batch_size=args.batch)
        await checkout.run_until_caught_up(timeout=60)
        print(f"caught up {json.dumps(dict(checkout.positions), sort_keys=True)}", flush=True)
        await checkout.close()


if __name__ == "__main__":
    asyncio.run(main())
