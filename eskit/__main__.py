"""``python -m eskit ...``: run a server, open the lab, run the benchmarks.

    python -m eskit server [--store-dir DIR] [--port N]   a nats-server in the foreground; prints its URL
    python -m eskit server --cluster 3                    a 3-node JetStream cluster on loopback instead
    python -m eskit lab [--notebooks DIR] [LAB ARGS]      JupyterLab on the notebooks, with NATS_URL set
                                                          (the lessons marked trusted: saved widgets render)
    python -m eskit bench [ARGS]                          the benchmarks in bench/ (from a checkout)
    python -m eskit import FILE --stream NAME             a CSV/XES event log into a stream (NATS_URL)
    python -m eskit import FILE.jsonocel --dcb NAME       an OCEL 2.0 log into a DCB store (NATS_URL)
    python -m eskit clean [--dry-run] [--url URL]         remove what the lessons left on the server (NATS_URL)

Errors are one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from . import clean
from ._redact import redact_url
from .analysis.eventlog import ACTIVITY, CASE, TIMESTAMP, read_log
from .analysis.log_import import ImportResult, import_log
from .analysis.ocel import OcelImportResult, import_ocel, read_ocel
from .connection import connect
from .errors import EskitError, EventLogError
from .server import EmbeddedServer


def _wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass


def _announce_and_wait(*lines: str) -> None:
    """Print how to reach what is running, then wait for Ctrl-C or SIGTERM."""
    for line in lines:
        print(line, flush=True)
    _wait_for_signal()


def cmd_server(args: argparse.Namespace) -> int:
    if args.cluster:
        return _run_cluster(args)
    with EmbeddedServer(store_dir=args.store_dir, port=args.port) as server:
        _announce_and_wait(
            f"nats-server running at {server.url}  (monitoring {server.monitor_url})",
            f"export NATS_URL={server.url}",
            "Press Ctrl-C to stop.",
        )
    print("stopped.")
    return 0


def _run_cluster(args: argparse.Namespace) -> int:
    from .cluster import EmbeddedCluster

    if args.store_dir or args.port != -1:
        raise EskitError("--cluster picks its own ports and temporary stores; drop --store-dir/--port")
    with EmbeddedCluster(args.cluster) as cluster:
        _announce_and_wait(
            *(f"node {node.name} at {node.url}  (monitoring {node.monitor_url})" for node in cluster.nodes),
            f"export NATS_URL={cluster.url}",
            "Streams get replicas=3 here. Press Ctrl-C to stop.",
        )
    print("stopped.")
    return 0


def trust_lessons(folder: Path) -> int:
    """Mark the lessons (``NN_*.ipynb``, and ``solutions/``) in ``folder`` trusted; return how many were not yet.

    JupyterLab renders saved widgets (a slider, a dashboard) only in trusted notebooks, and a notebook
    generated elsewhere is not trusted here: opened fresh, it would show raw text like ``interactive(...``.
    These notebooks are the course's own generated outputs; a learner's other notebooks are left alone.

    >>> trust_lessons(Path("notebooks"))       # doctest: +SKIP
    8
    """
    from nbformat import read
    from nbformat.sign import NotebookNotary

    notary, signed = NotebookNotary(), 0  # type: ignore[no-untyped-call]
    for path in sorted(folder.glob("[0-9][0-9]_*.ipynb")) + sorted(folder.glob("solutions/[0-9][0-9]_*.ipynb")):
        try:
            nb = read(path, as_version=4)  # type: ignore[no-untyped-call]
            if not notary.check_signature(nb):  # type: ignore[no-untyped-call]
                notary.sign(nb)  # type: ignore[no-untyped-call]
                signed += 1
        except Exception as exc:  # a broken notebook or signature store must not keep the lab from starting
            print(f"eskit: could not mark {path.name} trusted ({type(exc).__name__}); its widgets show as text")
    return signed


def cmd_lab(args: argparse.Namespace) -> int:
    notebooks = Path(args.notebooks)
    if not notebooks.is_dir():
        raise EskitError(f"notebook folder {notebooks} not found; run from the eskit checkout or pass --notebooks")
    trust_lessons(notebooks)
    env = dict(os.environ)
    server = None
    if not env.get("NATS_URL"):
        server = EmbeddedServer(store_dir=args.store_dir).start()
        env["NATS_URL"] = server.url
        print(f"eskit: embedded nats-server at {server.url} (NATS_URL set for every kernel)", flush=True)
    else:
        print(f"eskit: using NATS_URL={redact_url(env['NATS_URL'], env['NATS_URL'])}", flush=True)
    cmd = [sys.executable, "-m", "jupyter", "lab", f"--notebook-dir={notebooks}", *args.lab_args]
    if hasattr(os, "geteuid") and os.geteuid() == 0 and "--allow-root" not in cmd:
        cmd.append("--allow-root")  # containers and workshop VMs often run as root; Jupyter refuses without it
    lab = subprocess.Popen(cmd, env=env)
    try:
        return lab.wait()
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: stop Jupyter (and its kernels), then the server
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        print("eskit: stopping JupyterLab and its kernels ...", flush=True)
        lab.terminate()  # Jupyter's SIGTERM handler shuts its kernels down and exits without asking
        try:
            lab.wait(30)
        except subprocess.TimeoutExpired:
            lab.kill()
            lab.wait()
        return 0
    finally:
        if server is not None:
            server.stop()


def cmd_bench(args: argparse.Namespace) -> int:
    script = Path("bench") / "run.py"
    if not script.exists():
        raise EskitError("bench/run.py not found; run `python -m eskit bench` from the eskit checkout")
    return subprocess.call([sys.executable, str(script), *args.bench_args])


def add_import_command(sub: Any) -> None:
    """``python -m eskit import FILE --stream NAME``: the CLI twin of :func:`import_log`."""
    p = sub.add_parser(
        "import",
        help="import a CSV or XES event log into a stream (one aggregate per case)",
        description="Import a CSV or XES event log into a stream: one aggregate per case, one event per row. "
        f"A CSV needs a header line naming a case id, an activity and a timestamp column: by default "
        f"{CASE!r}, {ACTIVITY!r} and {TIMESTAMP!r} (pm4py's names); other names with --case, --activity, "
        "--timestamp. Every other column becomes the event's data. Re-running adds nothing.",
    )
    p.add_argument("file", help="the .csv or .xes event log, or an OCEL 2.0 .jsonocel file (with --dcb)")
    into = p.add_mutually_exclusive_group(required=True)
    into.add_argument("--stream", help="the store to import into (created if needed), e.g. receipt")
    into.add_argument("--dcb", help="the DCB store to import an OCEL 2.0 JSON file into (created if needed)")
    p.add_argument("--format", choices=["csv", "xes"], help="default: from the file's extension")
    p.add_argument("--case", default=CASE, help=f"the case id column (default {CASE!r})")
    p.add_argument("--activity", default=ACTIVITY, help=f"the activity column (default {ACTIVITY!r})")
    p.add_argument("--timestamp", default=TIMESTAMP, help=f"the timestamp column, ISO 8601 (default {TIMESTAMP!r})")
    p.add_argument("--url", help="NATS server URL (default: $NATS_URL)")
    p.set_defaults(func=cmd_import)


def cmd_import(args: argparse.Namespace) -> int:
    url = args.url or os.environ.get("NATS_URL")
    if not url:
        raise EventLogError("no server to import into: pass --url or set NATS_URL (see `python -m eskit server`)")
    if args.dcb:
        return _import_ocel(url, args.file, args.dcb)
    columns = {"case": args.case, "activity": args.activity, "timestamp": args.timestamp}
    result = asyncio.run(_import_log(url, args.file, args.stream, args.format, columns))
    print(
        f"{args.file}: {result.cases:,} cases, {result.events:,} events; appended {result.appended:,} events "
        f"to {args.stream} ({result.cases_already_stored:,} cases were already there)"
    )
    return 0


async def _import_log(url: str, path: str, stream: str, format: str | None, columns: dict[str, str]) -> ImportResult:
    rows = read_log(path, format=format, **columns)  # checked before connecting
    async with await connect(url) as client:
        return await import_log(await client.event_store(stream), rows)


def _import_ocel(url: str, path: str, name: str) -> int:
    """``python -m eskit import FILE.jsonocel --dcb NAME``: the CLI twin of :func:`import_ocel`."""
    read_ocel(path)  # checked before connecting

    async def run() -> OcelImportResult:
        async with await connect(url) as client:
            return await import_ocel(client, path, name=name)

    r = asyncio.run(run())
    print(
        f"{path}: {r.events:,} events; appended {r.appended:,} to DCB store {name} ({r.already_stored:,} were "
        f"already there); left out {r.object_attributes_skipped:,} object attributes and "
        f"{r.object_relations_skipped:,} object-to-object relations"
    )
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eskit", description="Event sourcing on NATS JetStream.")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("server", help="run an embedded nats-server in the foreground")
    s.add_argument("--store-dir", help="JetStream store directory (kept); default: a temporary one")
    s.add_argument("--port", type=int, default=-1, help="client port (default: a free one)")
    s.add_argument("--cluster", type=int, default=0, metavar="N", help="run an N-node cluster instead (e.g. 3)")
    s.set_defaults(func=cmd_server)
    lab = sub.add_parser(
        "lab",
        help="JupyterLab on the notebooks, on the embedded server unless NATS_URL is set",
        epilog="Other options go to jupyter lab as they are, e.g. `python -m eskit lab --port 9999 --no-browser`.",
    )
    lab.add_argument("--notebooks", default="notebooks")
    lab.add_argument("--store-dir", help="JetStream store directory for the embedded server (kept)")
    lab.set_defaults(func=cmd_lab)
    b = sub.add_parser("bench", help="run the benchmarks (bench/run.py)")
    b.add_argument("bench_args", nargs=argparse.REMAINDER)
    b.set_defaults(func=cmd_bench)
    add_import_command(sub)
    clean.add_command(sub)
    return p


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt  # SIGTERM (a service manager, `timeout`) cleans up like Ctrl-C


def main(argv: list[str] | None = None) -> int:
    args, unknown = parser().parse_known_args(argv)
    if unknown and args.command != "lab":
        parser().error(f"unrecognized arguments: {' '.join(unknown)}")
    signal.signal(signal.SIGTERM, _interrupt)
    if args.command == "lab":  # `lab --port 9999` and `lab -- --port 9999` both reach Jupyter
        args.lab_args = [a for a in unknown if a != "--"]
    try:
        return int(args.func(args))
    except EskitError as exc:
        print(f"eskit: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
