"""eskit benchmark: ratios against baselines measured in the same run, on the same server.

    .venv/bin/python bench/run.py            # full run (< ~60 s)
    .venv/bin/python bench/run.py --quick    # smaller run (< 15 s), used by tests/test_bench_smoke.py
    .venv/bin/python bench/run.py --json     # the JSON on stdout (the table goes to stderr)

One embedded nats-server (``eskit.EmbeddedServer``) serves every measurement; each measurement gets its own
fresh stream (configured by ``client.event_store``, so baselines and eskit pay for the same stream settings),
runs once as a warm-up, then is repeated and the median taken. Results also go to bench/results/latest.json.

1. Load a 10-event aggregate: ``store.read(id)`` (batch Direct Get) vs the seed's consumer-per-load pattern
   (bench/seed.py). The aggregates' events are interleaved in a stream of many aggregates, as in real life.
2. Bulk append of N single-event appends, each to its own aggregate:
   (a) raw nats-py ``js.publish_async`` pipelined, no headers, then ``publish_async_completed()``;
   (b) ``store.append_many`` with ``expected_position=0`` (concurrency check) and ``Nats-Msg-Id`` (dedup);
   (c) the seed's sequential ``await js.publish(...)`` with its time-based ``Nats-Msg-Id`` (fewer events).
   Inputs (data dicts; for eskit, ``Event`` objects) are built before the clock starts; JSON encoding and
   everything after it are timed. Every run checks afterwards that the stream holds exactly N messages.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import platform
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import nats
import seed  # bench/seed.py (a script's folder is on sys.path)
from nats.aio.client import Client as NATS
from report import emit, log

import eskit

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
LOAD_GOAL = 100.0  # eskit load at least 100x faster than the seed's
APPEND_GOAL = 0.8  # eskit bulk append at least 0.8x raw publish_async


@dataclass(frozen=True)
class Sizes:
    reps: int
    load_streams: tuple[int, ...]  # aggregates of 10 events per load stream (interleaved), a stream each
    load_eskit: int  # eskit loads per rep
    load_seed: int  # seed loads per rep (each waits ~100 ms)
    append_n: int  # events per bulk append run (raw and eskit)
    seed_n: int  # events per seed sequential-publish run
    warmup_n: int  # events in a warm-up append run


FULL = Sizes(reps=3, load_streams=(1, 100, 1000), load_eskit=200, load_seed=6, append_n=20_000, seed_n=2_000,
             warmup_n=2_000)  # fmt: skip
QUICK = Sizes(reps=3, load_streams=(100,), load_eskit=100, load_seed=3, append_n=2_000, seed_n=300,
              warmup_n=300)  # fmt: skip

EVENT_TYPES = ("created", "item_added", "item_added", "payment_received", "item_added",
               "item_added", "payment_received", "item_added", "shipped", "delivered")  # fmt: skip


TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` (Linux /proc; 0.0 elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS
    except (OSError, IndexError, ValueError):
        return 0.0


class Meter:
    """Wall time, this process's CPU time and the server's CPU time over a ``with`` block.

    CPU per event is steadier than wall time on a busy machine, and says which side the time goes to.
    """

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.wall = self.client_cpu = self.server_cpu = 0.0

    def __enter__(self) -> Meter:
        self._w, self._c, self._s = time.perf_counter(), time.process_time(), process_cpu(self.server_pid)
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._w
        self.client_cpu = time.process_time() - self._c
        self.server_cpu = process_cpu(self.server_pid) - self._s

    def per_event(self, n: int) -> dict[str, float]:
        return {"events_per_s": n / self.wall, "client_cpu_us": self.client_cpu / n * 1e6,
                "server_cpu_us": self.server_cpu / n * 1e6}  # fmt: skip



def data_for(i: int) -> dict[str, Any]:
    return {"sku": f"sku-{i % 97}", "qty": 1 + i % 5, "price": 9.99, "note": "bench"}


class Bench:
    def __init__(self, client: eskit.Client, nc: NATS, sizes: Sizes, server_pid: int) -> None:
        self.client = client  # eskit's connection
        self.nc = nc  # a plain nats-py connection for the baselines
        self.sizes = sizes
        self.server_pid = server_pid
        self.run_id = uuid.uuid4().hex[:6]
        self.count = 0

    async def fresh_store(self, kind: str) -> eskit.EventStore:
        self.count += 1
        return await self.client.event_store(f"b{self.run_id}{kind}{self.count}")

    async def drop(self, store: eskit.EventStore) -> None:
        await self.client.delete_store(store.name)

    async def stored(self, store: eskit.EventStore) -> int:
        info = await self.client.js.stream_info(store.stream)
        return int(info.state.messages)

    # -- 1. load a 10-event aggregate -------------------------------------------------------------------

    async def load(self) -> dict[str, Any]:
        """Both loads at each stream size; the headline is the largest stream (the less flattering one)."""
        sizes = [await self.load_at(n) for n in self.sizes.load_streams]
        return {**sizes[-1], "events_per_aggregate": 10, "goal": LOAD_GOAL, "by_stream_size": sizes}

    async def load_at(self, aggregates: int) -> dict[str, Any]:
        s = self.sizes
        store = await self.fresh_store("load")
        ids = [f"o{i}" for i in range(aggregates)]
        try:
            for round_ in range(10):  # interleaved: event k of every aggregate, then event k+1 ...
                evs = [(oid, [eskit.Event(EVENT_TYPES[round_], data_for(round_))], None) for oid in ids]
                await store.append_many(evs)
            js = self.nc.jetstream()

            async def eskit_load(oid: str) -> None:
                events = await store.read(oid)
                assert len(events) == 10, f"eskit read {len(events)} events of {oid}"

            async def seed_load(oid: str) -> None:
                order = await seed.load_order(js, store.stream, store.name, oid)
                assert order["events"] == 10, f"seed loaded {order}"

            for oid in ids[:20]:  # warm-up (and a check that both see all 10 events)
                await eskit_load(oid)
            await seed_load(ids[-1])

            eskit_runs, seed_runs = [], []
            for rep in range(s.reps):
                eskit_ids = [ids[(rep * s.load_eskit + k) % len(ids)] for k in range(s.load_eskit)]
                seed_ids = [ids[(rep * s.load_seed + k * 7) % len(ids)] for k in range(s.load_seed)]
                eskit_runs.append(await timed_each(eskit_load, eskit_ids, self.server_pid))
                seed_runs.append(await timed_each(seed_load, seed_ids, self.server_pid))
                log(
                    f"  load ({10 * aggregates:,} events) rep {rep + 1}: eskit median "
                    f"{eskit_runs[-1]['median_ms']:.3f} ms, seed median {seed_runs[-1]['median_ms']:.1f} ms"
                )
        finally:
            await self.drop(store)
        eskit_r, seed_r = summarize_latency(eskit_runs), summarize_latency(seed_runs)
        return {
            "aggregates_in_stream": aggregates,
            "stream_events": 10 * aggregates,
            "eskit": eskit_r,
            "seed": seed_r,
            "speedup_median": seed_r["median_ms"] / eskit_r["median_ms"],
            "speedup_mean": seed_r["mean_ms"] / eskit_r["mean_ms"],
        }

    # -- 2. bulk append ---------------------------------------------------------------------------------

    async def raw_publish_async(self, n: int) -> dict[str, float]:
        store = await self.fresh_store("raw")
        try:
            js = self.nc.jetstream()  # fresh context: default publish_async_max_pending (4000)
            prefix = store.name
            datas = [data_for(i) for i in range(n)]
            with Meter(self.server_pid) as m:
                for i, data in enumerate(datas):
                    await js.publish_async(f"{prefix}.a{i}.created", json.dumps(data).encode())
                await js.publish_async_completed()
            stored = await self.stored(store)
            assert stored == n, f"raw publish_async stored {stored} of {n}"
            return m.per_event(n)
        finally:
            await self.drop(store)

    async def eskit_append_many(self, n: int) -> dict[str, float]:
        store = await self.fresh_store("eskit")
        try:
            appends = [(f"a{i}", [eskit.Event("created", data_for(i))], 0) for i in range(n)]
            with Meter(self.server_pid) as m:
                positions = await store.append_many(appends)
            stored = await self.stored(store)
            assert stored == n and len(set(positions)) == n, f"eskit stored {stored} of {n}"
            return m.per_event(n)
        finally:
            await self.drop(store)

    async def seed_sequential(self, n: int) -> dict[str, float]:
        store = await self.fresh_store("seed")
        try:
            js = self.nc.jetstream()
            prefix = store.name
            datas = [data_for(i) for i in range(n)]
            with Meter(self.server_pid) as m:
                for i, data in enumerate(datas):
                    await seed.publish_event(js, prefix, f"a{i}", "created", data)
            stored = await self.stored(store)
            assert stored == n, f"seed stored {stored} of {n}"
            return m.per_event(n)
        finally:
            await self.drop(store)

    async def append(self) -> dict[str, Any]:
        s = self.sizes
        methods: dict[str, tuple[Callable[[int], Awaitable[dict[str, float]]], int]] = {
            "raw": (self.raw_publish_async, s.append_n),
            "eskit": (self.eskit_append_many, s.append_n),
            "seed": (self.seed_sequential, s.seed_n),
        }
        for fn, n in methods.values():  # warm-up
            await fn(min(n, s.warmup_n))
        runs: dict[str, list[dict[str, float]]] = {k: [] for k in methods}
        for rep in range(s.reps):  # interleaved, so drift in the machine hits every method alike
            for name, (fn, n) in methods.items():
                runs[name].append(await fn(n))
            log(f"  append rep {rep + 1}: "
                + ", ".join(f"{k} {v[-1]['events_per_s']:,.0f}/s" for k, v in runs.items()))  # fmt: skip
        out: dict[str, Any] = {}
        for name, (_, n) in methods.items():
            medians = {key: statistics.median(r[key] for r in runs[name]) for key in runs[name][0]}
            out[name] = {"events": n, **medians, "runs": runs[name]}
        out["eskit"]["concurrency"] = (
            inspect.signature(eskit.EventStore.append_many).parameters["concurrency"].default
        )
        out["eskit_vs_raw"] = out["eskit"]["events_per_s"] / out["raw"]["events_per_s"]
        out["eskit_vs_seed"] = out["eskit"]["events_per_s"] / out["seed"]["events_per_s"]
        out["goal_vs_raw"] = APPEND_GOAL
        return out


async def timed_each(
    fn: Callable[[str], Awaitable[None]], ids: list[str], server_pid: int
) -> dict[str, float]:
    """Load each id in turn (one at a time: latency); per-load wall times, and CPU per load on both sides."""
    samples = []
    with Meter(server_pid) as m:
        for oid in ids:
            t0 = time.perf_counter()
            await fn(oid)
            samples.append((time.perf_counter() - t0) * 1000)
    return {"mean_ms": statistics.fmean(samples), "median_ms": statistics.median(samples),
            "client_cpu_us": m.client_cpu / len(ids) * 1e6, "server_cpu_us": m.server_cpu / len(ids) * 1e6,
            "n": len(samples)}  # fmt: skip


def summarize_latency(runs: list[dict[str, float]]) -> dict[str, Any]:
    keys = ("mean_ms", "median_ms", "client_cpu_us", "server_cpu_us")
    return {**{k: statistics.median(r[k] for r in runs) for k in keys}, "loads_per_rep": int(runs[0]["n"]),
            "runs": runs}  # fmt: skip


def table(result: dict[str, Any]) -> str:
    meta, load, app = result["meta"], result["load"], result["append"]

    def ok(good: bool) -> str:
        return "ok" if good else "BELOW GOAL"

    def lat(name: str, r: dict[str, Any]) -> str:
        return (f"   {name:38} {r['mean_ms']:>9.3f} ms {r['median_ms']:>9.3f} ms "
                f"{r['client_cpu_us']:>9.0f} us {r['server_cpu_us']:>9.0f} us")  # fmt: skip

    def rate(name: str, r: dict[str, Any]) -> str:
        return (f"   {name:40} {r['events']:>7,} {r['events_per_s']:>11,.0f} "
                f"{r['client_cpu_us']:>9.1f} us {r['server_cpu_us']:>9.1f} us")  # fmt: skip

    rows = [
        f"eskit benchmark ({'quick' if meta['quick'] else 'full'}): nats-server {meta['server_version']}, "
        f"nats-py {meta['nats_py']}, Python {meta['python']}, {meta['cpus']} CPUs, load average "
        f"{meta['loadavg_before']:.1f} -> {meta['loadavg_after']:.1f}; median of {meta['reps']} reps; "
        f"{result['elapsed_s']:.1f} s",
        "",
        "1. Load a 10-event aggregate (its events interleaved with other aggregates' in one stream)",
        f"   {'':38} {'mean':>12} {'median':>12} {'client CPU':>12} {'server CPU':>12}  (per load)",
        *[
            row
            for size in load["by_stream_size"]
            for row in (
                lat(f"eskit store.read, {size['stream_events']:,} events", size["eskit"]),
                lat(f"seed consumer+fetch, {size['stream_events']:,} events", size["seed"]),
                f"   {'':38} eskit is {size['speedup_median']:,.0f}x faster (median; mean "
                f"{size['speedup_mean']:,.0f}x); goal >= {load['goal']:.0f}x: "
                f"{ok(size['speedup_median'] >= load['goal'])}",
            )
        ],
        "",
        "2. Bulk append: single-event appends, one per aggregate",
        f"   {'':40} {'events':>7} {'events/s':>11} {'client CPU':>12} {'server CPU':>12}  (per event)",
        rate("raw nats-py publish_async (no checks)", app["raw"]),
        rate("eskit append_many (concurrency + dedup)", app["eskit"]),
        rate("seed: sequential js.publish", app["seed"]),
        f"   eskit/raw = {app['eskit_vs_raw']:.2f}x   goal >= {app['goal_vs_raw']}x: "
        f"{ok(app['eskit_vs_raw'] >= app['goal_vs_raw'])}",
        f"   eskit/seed = {app['eskit_vs_seed']:.1f}x",
    ]
    return "\n".join(rows)


async def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smaller run (< 15 s)")
    parser.add_argument("--json", action="store_true", help="print the JSON result on stdout")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON result")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    started = time.perf_counter()
    loadavg_before = os.getloadavg()[0]
    with eskit.EmbeddedServer() as server:
        client = await eskit.connect(server.url)
        nc = await nats.connect(server.url)
        try:
            bench = Bench(client, nc, sizes, server_pid=server._proc.pid if server._proc else 0)
            info = await client.server_info()
            log("load ...")
            load = await bench.load()
            log("append ...")
            append = await bench.append()
        finally:
            await nc.close()
            await client.close()
    result = {
        "meta": {
            "quick": args.quick,
            "reps": sizes.reps,
            "sizes": sizes.__dict__,
            "server_version": info.version,
            "nats_py": metadata.version("nats-py"),
            "eskit": eskit.__version__,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "loadavg_before": loadavg_before,
            "loadavg_after": os.getloadavg()[0],
        },
        "load": load,
        "append": append,
        "elapsed_s": time.perf_counter() - started,
    }
    emit(result, table(result), out=args.out, as_json=args.json)
    return result


if __name__ == "__main__":
    asyncio.run(main())
