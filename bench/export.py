"""Benchmark: streaming export (to_parquet, to_arrow) vs to_dataframe, and DuckDB vs pandas for variants.

    .venv/bin/python bench/export.py                        # 1,000,000 events, 1 rep (~5-10 min on 2 cores)
    .venv/bin/python bench/export.py --events 200000 --reps 3
    .venv/bin/python bench/export.py --quick --json         # 20,000 events (tests/test_bench_smoke.py)

One embedded nats-server, one stream filled like bench/analysis.py (single-event appends over 2,000
aggregates, eskit's headers, small JSON data). Each measurement runs in its own child process, so its peak
RSS (``ru_maxrss``) is its own: ``import`` (eskit, pandas and pyarrow imported, connected: the floor),
``to_dataframe``, ``to_parquet`` (a fresh folder), ``to_arrow`` (the reader read batch by batch and counted),
then the variant count (the distinct sequences of types per aggregate) by pandas over ``to_dataframe`` and by
DuckDB over the Parquet export. Goals: ``to_parquet`` at least 0.8x ``to_dataframe``'s events/s, with a peak
RSS of at most 250 MiB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import eskit  # noqa: E402

SPEED_GOAL = 0.8
RSS_GOAL_MIB = 250
TYPES = ("created", "item_added", "item_added", "payment_received", "shipped")
MODES = ("import", "to_dataframe", "to_parquet", "to_arrow", "pandas_variants", "duckdb_variants")
VARIANTS_SQL = """SELECT count(*) AS variants FROM (
    SELECT string_agg(type, ',' ORDER BY position) AS variant FROM read_parquet('{glob}') GROUP BY aggregate_id
    ) GROUP BY variant"""


async def fill(store: eskit.EventStore, n: int) -> None:
    step = 20_000
    for start in range(0, n, step):
        appends = [
            (
                f"o{i % 2000}",
                [eskit.Event(TYPES[i % len(TYPES)], {"sku": f"sku-{i % 97}", "qty": 1 + i % 5, "price": 9.99})],
                None,
            )
            for i in range(start, min(n, start + step))
        ]
        await store.append_many(appends)


# -- the child: one measurement ----------------------------------------------------------------------------


async def child(mode: str, url: str, name: str, folder: str) -> dict[str, Any]:
    import pandas as pd
    import pyarrow.parquet  # noqa: F401  (imported in every mode: the same floor; duckdb only where used)

    async with await eskit.connect(url) as client:
        store = await client.event_store(name)
        t0 = time.perf_counter()
        rows = 0
        if mode == "to_dataframe":
            rows = len(await eskit.to_dataframe(store, progress=False))
        elif mode == "to_parquet":
            rows = (await eskit.to_parquet(store, folder, overwrite=True, progress=False)).events
        elif mode == "to_arrow":
            reader = await eskit.to_arrow(store, progress=False)
            rows = sum(batch.num_rows for batch in reader)
        elif mode == "pandas_variants":
            df = await eskit.to_dataframe(store, progress=False)
            rows = len(df)
            t1 = time.perf_counter()
            traces = df.sort_values("position").groupby("aggregate_id", sort=False)["type"].agg(",".join)
            count = int(pd.Series(traces).nunique())
            return _measured(mode, rows, t0, query_s=time.perf_counter() - t1, variants=count)
        elif mode == "duckdb_variants":
            import duckdb

            t0 = time.perf_counter()  # the import is not the query's
            found = duckdb.sql(VARIANTS_SQL.format(glob=f"{folder}/**/*.parquet")).fetchall()
            rows = int(duckdb.sql(f"SELECT count(*) FROM read_parquet('{folder}/**/*.parquet')").fetchall()[0][0])
            return _measured(mode, rows, t0, query_s=time.perf_counter() - t0, variants=len(found))
        return _measured(mode, rows, t0)


def _measured(mode: str, rows: int, t0: float, **extra: Any) -> dict[str, Any]:
    seconds = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"mode": mode, "rows": rows, "seconds": seconds, "events_per_s": rows / seconds if rows else 0.0,
            "peak_rss_mib": rss, **extra}  # fmt: skip


def run_child(mode: str, url: str, name: str, folder: Path) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", mode, "--url", url, "--store", name, "--folder", str(folder)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"bench/export.py: the {mode} child failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


# -- the parent --------------------------------------------------------------------------------------------


async def main(n: int, reps: int, as_json: bool, quick: bool, modes: tuple[str, ...] = MODES) -> dict[str, Any]:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="eskit-bench-export-") as tmp, eskit.EmbeddedServer() as server:
        async with await eskit.connect(server.url) as client:
            name = f"bench{uuid.uuid4().hex[:6]}"
            store = await client.event_store(name)
            try:
                t0 = time.perf_counter()
                await fill(store, n)
                print(f"filled {n:,} events in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
                folder = Path(tmp) / "export"
                runs: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
                for rep in range(reps):
                    for mode in modes:
                        result = run_child(mode, server.url, name, folder)
                        runs[mode].append(result)
                        print(f"  rep {rep + 1} {mode:<16} {result['seconds']:7.2f} s  "
                              f"{result['events_per_s']:>10,.0f} ev/s  peak RSS {result['peak_rss_mib']:6.0f} MiB",
                              file=sys.stderr)  # fmt: skip
                files = sorted(folder.rglob("*.parquet"))
                size = sum(f.stat().st_size for f in files)
            finally:
                await client.delete_store(name)
    summary = {mode: _median(results) for mode, results in runs.items()}
    out = {
        "meta": {"quick": quick, "events": n, "reps": reps, "python": sys.version.split()[0]},
        "modes": summary,
        "speed_goal": SPEED_GOAL,
        "rss_goal_mib": RSS_GOAL_MIB,
        "parquet_files": len(files),
        "parquet_mib": size / 2**20,
        "elapsed_s": time.perf_counter() - started,
    }
    if "to_parquet" in summary and "to_dataframe" in summary:
        out["parquet_vs_dataframe"] = summary["to_parquet"]["events_per_s"] / summary["to_dataframe"]["events_per_s"]
    if "pandas_variants" in summary and "duckdb_variants" in summary:
        out["variants_agree"] = summary["pandas_variants"]["variants"] == summary["duckdb_variants"]["variants"]
    report(out)
    if as_json:
        print(json.dumps(out, indent=1))
    return out


def _median(results: list[dict[str, Any]]) -> dict[str, Any]:
    middle = sorted(results, key=lambda r: r["seconds"])[len(results) // 2]
    return {**middle, "peak_rss_mib": max(r["peak_rss_mib"] for r in results),
            "seconds_all": [round(r["seconds"], 3) for r in results],
            "seconds_median": statistics.median(r["seconds"] for r in results)}  # fmt: skip


def report(out: dict[str, Any]) -> None:
    m = out["modes"]
    floor = m["import"]["peak_rss_mib"] if "import" in m else float("nan")
    print(f"export of {out['meta']['events']:,} events ({out['meta']['reps']} reps, median; own process each)",
          file=sys.stderr)  # fmt: skip
    for mode in [mode for mode in MODES[1:] if mode in m]:
        r = m[mode]
        variants = f"  ({r['variants']} variants)" if "variants" in r else ""
        print(f"  {mode:<16} {r['seconds']:7.2f} s {r['events_per_s']:>11,.0f} ev/s  "
              f"peak RSS {r['peak_rss_mib']:5.0f} MiB{variants}", file=sys.stderr)  # fmt: skip
    print(f"  floor (imports + connection)       peak RSS {floor:5.0f} MiB", file=sys.stderr)
    if "parquet_vs_dataframe" in out:
        ok_speed = out["parquet_vs_dataframe"] >= SPEED_GOAL
        print(f"  to_parquet / to_dataframe: {out['parquet_vs_dataframe']:.2f}x (goal >= {SPEED_GOAL}: "
              f"{'ok' if ok_speed else 'BELOW GOAL'})", file=sys.stderr)  # fmt: skip
    if "to_parquet" in m:
        ok_rss = m["to_parquet"]["peak_rss_mib"] <= RSS_GOAL_MIB
        print(f"  to_parquet peak RSS {m['to_parquet']['peak_rss_mib']:.0f} MiB (goal <= {RSS_GOAL_MIB}: "
              f"{'ok' if ok_rss else 'OVER'})", file=sys.stderr)  # fmt: skip
    print(f"  Parquet: {out['parquet_files']} file(s), {out['parquet_mib']:.1f} MiB; variants agree: "
          f"{out.get('variants_agree', 'not compared')}", file=sys.stderr)  # fmt: skip


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="20,000 events, 1 rep (the smoke test)")
    p.add_argument("--json", action="store_true", help="the results as JSON on stdout")
    p.add_argument("--modes", default=",".join(MODES), help="which, comma-separated (to_parquet needs to come "
                   "before duckdb_variants), e.g. import,to_parquet,to_arrow for a 10M run")  # fmt: skip
    p.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--store", help=argparse.SUPPRESS)
    p.add_argument("--folder", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(child(args.child, args.url, args.store, args.folder))))
    else:
        events = 20_000 if args.quick else args.events
        modes = tuple(m for m in args.modes.split(",") if m)
        unknown = [m for m in modes if m not in MODES]
        if unknown:
            p.error(f"--modes: unknown {unknown}; choose from {', '.join(MODES)}")
        asyncio.run(main(events, 1 if args.quick else args.reps, args.json, args.quick, modes))
