"""Streaming export (Arrow, Parquet) and DuckDB over it: same rows as to_dataframe, atomic files, incremental."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pandas as pd
import pytest
from conftest import unique

import eskit
from eskit.samples import order_events, write_sample_log

try:
    import duckdb
    import pyarrow.dataset as ds
    import pyarrow.parquet
except ImportError:  # pragma: no cover - depends on the install
    if os.environ.get("CI"):
        raise
    pytest.skip("pyarrow and duckdb are not installed (pip install 'eskit[analysis]')", allow_module_level=True)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
async def log(client: eskit.Client, tmp_path: Path) -> AsyncIterator[eskit.EventStore]:
    name = unique("exp")
    store = await client.event_store(name)
    await eskit.import_log(store, write_sample_log(tmp_path / "log.csv", cases=60), progress=False)
    yield store
    await client.delete_store(name)


def comparable(df: pd.DataFrame, *, micros: bool = False) -> pd.DataFrame:
    """Values as plain Python objects (NaN/NaT/None -> None), times as ISO text, in position order."""
    df = df.sort_values(df.columns[0] if "position" not in df.columns else "position", ignore_index=True)
    out = {}
    for c in df.columns:
        col = df[c]
        if pd.api.types.is_datetime64_dtype(col.dtype):  # DuckDB's TIMESTAMP_NS: UTC, without a zone
            col = col.dt.tz_localize("UTC")
        if isinstance(col.dtype, pd.DatetimeTZDtype):
            col = col.dt.tz_convert("UTC").dt.floor("us") if micros else col.dt.tz_convert("UTC")
            out[c] = [None if pd.isna(v) else v.isoformat() for v in col]
        else:
            out[c] = [None if (v is None or (not isinstance(v, str) and pd.isna(v))) else v for v in col.astype(object)]
    return pd.DataFrame(out)


async def test_parquet_export_read_by_duckdb_and_pyarrow_dataset_equals_to_dataframe(
    log: eskit.EventStore, tmp_path: Path
) -> None:
    for names in ("eskit", "pm4py"):
        frame = await eskit.to_dataframe(log, names=names, progress=False)
        out = tmp_path / f"export_{names}"
        result = await eskit.to_parquet(log, out, names=names, progress=False)
        assert result.events == len(frame) > 300 and result.last_position == frame.index.size and result.files == 1
        glob = f"{out}/**/*.parquet"
        by_duckdb = duckdb.sql(f"SELECT * FROM read_parquet('{glob}', union_by_name=true)").df()
        assert list(by_duckdb.columns) == list(frame.columns)
        pd.testing.assert_frame_equal(comparable(by_duckdb, micros=True), comparable(frame, micros=True))
        by_pyarrow = ds.dataset(str(out), format="parquet").to_table().to_pandas()
        pd.testing.assert_frame_equal(comparable(by_pyarrow), comparable(frame))
        reader = await eskit.to_arrow(log, names=names, progress=False)
        pd.testing.assert_frame_equal(comparable(reader.read_all().to_pandas()), comparable(frame))


async def test_duckdb_counts_the_same_variants_as_pandas_over_the_arrow_stream_and_the_parquet_export(
    log: eskit.EventStore, tmp_path: Path
) -> None:
    frame = await eskit.to_dataframe(log, progress=False)
    ours = frame.sort_values("position").groupby("aggregate_id")["type"].agg(" > ".join).value_counts()
    query = """SELECT variant, count(*) AS cases FROM (
                 SELECT string_agg(type, ' > ' ORDER BY position) AS variant FROM {src} GROUP BY aggregate_id)
               GROUP BY variant"""
    await eskit.to_parquet(log, tmp_path / "x", progress=False)
    over_parquet = duckdb.sql(query.format(src=f"read_parquet('{tmp_path}/x/**/*.parquet')")).df()
    reader = await eskit.to_arrow(log, progress=False)  # noqa: F841  (DuckDB finds it by name)
    over_arrow = duckdb.sql(query.format(src="reader")).df()
    for got in (over_parquet, over_arrow):
        assert dict(zip(got["variant"], got["cases"], strict=True)) == ours.to_dict() and len(ours) > 2


async def test_partitioned_export_is_a_hive_layout_other_engines_read(log: eskit.EventStore, tmp_path: Path) -> None:
    frame = await eskit.to_dataframe(log, progress=False)
    await eskit.to_parquet(log, tmp_path / "p", partition_by="type", progress=False)
    folders = sorted(p.name for p in (tmp_path / "p").iterdir() if p.is_dir())
    assert folders == sorted(f"type={t.replace(' ', '%20')}" for t in frame["type"].unique())
    table = ds.dataset(str(tmp_path / "p"), format="parquet", partitioning="hive").to_table().to_pandas()
    counts = duckdb.sql(
        f"SELECT type, count(*) AS n FROM read_parquet('{tmp_path}/p/**/*.parquet', hive_partitioning=true) GROUP BY 1"
    ).df()
    assert dict(zip(counts["type"], counts["n"], strict=True)) == frame["type"].value_counts().to_dict()
    assert sorted(table["position"]) == sorted(frame["position"])


async def test_incremental_export_appends_exactly_the_events_stored_since(
    client: eskit.Client, tmp_path: Path
) -> None:
    name = unique("inc")
    orders = await client.event_store(name)
    try:
        histories = order_events(120, seed=3)
        await orders.append_many(histories[:80], concurrency=8)
        first = await eskit.to_parquet(orders, tmp_path / "o", after="last", progress=False)
        again = await eskit.to_parquet(orders, tmp_path / "o", after="last", progress=False)
        assert again.events == 0 and again.files == 0 and again.after == first.last_position
        await orders.append_many(histories[80:], concurrency=8)
        second = await eskit.to_parquet(orders, tmp_path / "o", after="last", progress=False)
        frame = await eskit.to_dataframe(orders, progress=False)
        assert second.after == first.last_position and first.events + second.events == len(frame)
        exported = duckdb.sql(f"SELECT position FROM read_parquet('{tmp_path}/o/*.parquet')").df()["position"]
        assert sorted(exported) == sorted(frame["position"]) and exported.is_unique
        assert len(list((tmp_path / "o").glob("part-*.parquet"))) == 2
        meta = pyarrow.parquet.read_metadata(sorted((tmp_path / "o").glob("part-*.parquet"))[-1]).metadata
        assert b'"last_position": ' + str(second.last_position).encode() in meta[b"eskit"]
    finally:
        await client.delete_store(name)


async def test_an_existing_export_is_kept_unless_overwrite_or_incremental(
    log: eskit.EventStore, tmp_path: Path
) -> None:
    await eskit.to_parquet(log, tmp_path / "e", progress=False)
    with pytest.raises(eskit.ValidationError, match="exists: pass overwrite=True"):
        await eskit.to_parquet(log, tmp_path / "e", progress=False)
    with pytest.raises(eskit.ValidationError, match="exported with"):
        await eskit.to_parquet(log, tmp_path / "e", after="last", names="pm4py", progress=False)
    result = await eskit.to_parquet(log, tmp_path / "e", overwrite=True, progress=False)
    assert result.files == 1 and len(list((tmp_path / "e").glob("*.parquet"))) == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def _start_export(nats_url: str, store: str, path: Path, how: str) -> subprocess.Popen[bytes]:
    code = (
        "import asyncio, eskit, eskit.export\n"
        "eskit.export.CHUNK = 200\n"  # small chunks: the export writes while it reads
        "async def main():\n"
        "    async with await eskit.connect() as client:\n"
        f"        store = await client.event_store({store!r})\n"
        f"        await eskit.to_parquet(store, {str(path)!r}, {how}, rows_per_file=600, row_group=300,"
        " progress=False)\n"
        "asyncio.run(main())\n"
    )
    env = {**os.environ, "NATS_URL": nats_url, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", code], env=env)


def _kill_when_writing(proc: subprocess.Popen[bytes], folder: Path, *, after_a_file: bool = False) -> None:
    """SIGKILL once the export is writing a file (a temporary one exists under ``folder``), after completing
    one if ``after_a_file``."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        found = [p.name for p in folder.rglob("*")] if folder.exists() else []
        writing = any(n.startswith(".tmp-") and n.endswith(".part") for n in found)
        if writing and (not after_a_file or any(n.startswith("part-") for n in found)):
            break
        time.sleep(0.005)
    assert proc.poll() is None, "the export finished before it could be interrupted"
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)


async def test_an_export_killed_mid_way_leaves_the_previous_complete_files(
    client: eskit.Client, nats_url: str, tmp_path: Path
) -> None:
    name = unique("kill")
    orders = await client.event_store(name)
    try:
        await orders.append_many(order_events(1000, seed=4), concurrency=16)
        frame = await eskit.to_dataframe(orders, progress=False)
        out = tmp_path / "k"
        await eskit.to_parquet(orders, out, progress=False)
        before = {p.name: p.read_bytes() for p in out.iterdir()}

        _kill_when_writing(_start_export(nats_url, name, out, "overwrite=True"), tmp_path)
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the old export, untouched
        exported = duckdb.sql(f"SELECT position FROM read_parquet('{out}/*.parquet')").df()["position"]
        assert sorted(exported) == sorted(frame["position"])

        fresh = tmp_path / "f"  # an incremental export killed mid-way: complete files, and it goes on from there
        _kill_when_writing(_start_export(nats_url, name, fresh, "after='last'"), fresh, after_a_file=True)
        kept = duckdb.sql(f"SELECT position FROM read_parquet('{fresh}/*.parquet')").df()["position"]
        assert kept.is_unique and len(kept) < len(frame)
        done = await eskit.to_parquet(orders, fresh, after="last", progress=False)
        exported = duckdb.sql(f"SELECT position FROM read_parquet('{fresh}/*.parquet')").df()["position"]
        assert sorted(exported) == sorted(frame["position"]) and exported.is_unique
        assert done.last_position == frame["position"].max()
        assert not [p for p in fresh.rglob(".tmp-*")]
    finally:
        await client.delete_store(name)


async def test_data_that_grows_a_column_or_changes_type_mid_stream_is_exported_whole(
    client: eskit.Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(eskit.export, "CHUNK", 100)  # one chunk per consumer batch (2,000 events)
    name = unique("grow")
    store = await client.event_store(name)
    try:
        early = [(f"a{i}", [eskit.Event("old", {"a": i})], 0) for i in range(2000)]  # the first batch
        late = [(f"b{i}", [eskit.Event("new", {"a": f"x{i}", "b": 2.5, "c": {"d": True}})], 0) for i in range(200)]
        await store.append_many(early, concurrency=16)
        await store.append_many(late, concurrency=16)
        expected_a = sorted([str(i) for i in range(2000)] + [f"x{i}" for i in range(200)])
        table = (await eskit.to_arrow(store, progress=False)).read_all()
        assert table.num_rows == 2200 and table.schema.field("a").type == "string"
        assert sorted(table.column("a").to_pylist()) == expected_a
        assert table.column("b").to_pylist() == [None] * 2000 + [2.5] * 200
        assert table.column("c.d").to_pylist() == [None] * 2000 + [True] * 200
        result = await eskit.to_parquet(store, tmp_path / "g", progress=False)
        assert result.events == 2200 and result.files == 2  # the new columns start a new file
        got = duckdb.sql(
            f"SELECT a, b FROM read_parquet('{tmp_path}/g/*.parquet', union_by_name=true) ORDER BY position"
        ).fetchall()
        assert sorted(a for a, _ in got) == expected_a and [b for _, b in got] == [None] * 2000 + [2.5] * 200
    finally:
        await client.delete_store(name)


async def test_a_bad_option_or_a_missing_partition_column_stores_nothing(log: eskit.EventStore, tmp_path: Path) -> None:
    with pytest.raises(eskit.ValidationError, match="names='xes': use 'eskit' or 'pm4py'"):
        await eskit.to_parquet(log, tmp_path / "n", names="xes", progress=False)  # type: ignore[arg-type]
    with pytest.raises(eskit.ValidationError, match="partition_by: no column 'colour'"):
        await eskit.to_parquet(log, tmp_path / "n", partition_by="colour", progress=False)
    with pytest.raises(eskit.ValidationError, match="pass one of them"):
        await eskit.to_parquet(log, tmp_path / "n", after="last", overwrite=True, progress=False)
    assert not (tmp_path / "n").exists()


async def test_an_empty_store_exports_the_columns_and_no_rows(store: eskit.EventStore, tmp_path: Path) -> None:
    table = (await eskit.to_arrow(store, progress=False)).read_all()
    assert table.num_rows == 0 and table.column_names == list((await eskit.to_dataframe(store)).columns)
    result = await eskit.to_parquet(store, tmp_path / "e", after="last", progress=False)
    assert (result.events, result.files, result.last_position) == (0, 0, 0)
    await store.append("o1", [eskit.Event("created", {"n": 1})], expected_position=0)
    later = await eskit.to_parquet(store, tmp_path / "e", after="last", progress=False)
    assert (later.events, later.files, later.after, later.last_position) == (1, 1, 0, 1)


async def test_a_subject_filter_exports_only_its_events(log: eskit.EventStore, tmp_path: Path) -> None:
    only = [f"{log.name}.*.Submit%20claim"]
    frame = await eskit.to_dataframe(log, subjects=only, progress=False)
    result = await eskit.to_parquet(log, tmp_path / "s", subjects=only, progress=False)
    got = duckdb.sql(f"SELECT DISTINCT type FROM read_parquet('{tmp_path}/s/*.parquet')").fetchall()
    assert result.events == len(frame) == 60 and got == [("Submit claim",)]
    with pytest.raises(eskit.ValidationError, match="exported with"):
        await eskit.to_parquet(log, tmp_path / "s", after="last", progress=False)  # all subjects: another export
    with pytest.raises(eskit.ValidationError, match="one subject filter"):
        await eskit.to_arrow(log, subjects=[*only, f"{log.name}.*.Pay%20out"], progress=False)


async def test_an_arrow_reader_dropped_unread_or_half_read_leaves_no_spool_behind(log: eskit.EventStore) -> None:
    import gc
    import tempfile

    def spools() -> set[str]:
        return {p.name for p in Path(tempfile.gettempdir()).glob("eskit-arrow-*")}

    before = spools()
    unread = await eskit.to_arrow(log, progress=False)
    half = await eskit.to_arrow(log, progress=False)
    assert half.read_next_batch().num_rows > 0 and len(spools() - before) == 2
    del unread, half
    gc.collect()
    assert spools() - before == set()
