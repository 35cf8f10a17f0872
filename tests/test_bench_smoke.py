"""The benchmark runs end to end (``bench/run.py --quick --json``) and reports what it should.

Speed is not asserted here: ratios belong to the benchmark's output, not to pass/fail tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"


def test_quick_benchmark_reports_every_figure(tmp_path: Path) -> None:
    python = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable
    out = tmp_path / "latest.json"
    proc = subprocess.run(
        [python, str(ROOT / "bench" / "run.py"), "--quick", "--json", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert json.loads(out.read_text()) == result

    assert result["meta"]["quick"] is True
    assert result["meta"]["server_version"]

    load = result["load"]
    assert load["events_per_aggregate"] == 10
    assert load["by_stream_size"]
    for size in load["by_stream_size"]:
        for who in ("eskit", "seed"):
            assert size[who]["mean_ms"] > 0 and size[who]["median_ms"] > 0
        assert size["speedup_median"] > 0 and size["speedup_mean"] > 0
    assert load["speedup_median"] > 0 and load["goal"] > 0

    append = result["append"]
    for who in ("raw", "eskit", "seed"):
        assert append[who]["events"] > 0
        assert append[who]["events_per_s"] > 0
    assert append["eskit_vs_raw"] > 0 and append["eskit_vs_seed"] > 0 and append["goal_vs_raw"] > 0
    assert result["elapsed_s"] > 0


def test_quick_upcasting_benchmark_reports_both_ratios() -> None:
    python = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable
    proc = subprocess.run(
        [python, str(ROOT / "bench" / "upcasting.py"), "--quick", "--reps", "1", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["events"] == 20_000 and result["upcast_events"] == 10_000
    for read in ("replay", "to_dataframe"):
        assert result[read]["without_per_s"] > 0 and result[read]["with_per_s"] > 0
        assert result[read]["ratio"] > 0 and result[read]["cpu_ratio"] > 0
    assert result["goal_ratio"] == 0.8 and isinstance(result["goal_met"], bool)


def test_quick_eventsourcing_interop_benchmark_reports_its_ratios(tmp_path: Path) -> None:
    python = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable
    proc = subprocess.run(
        [python, str(ROOT / "bench" / "eventsourcing_interop.py"), "--quick", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["meta"]["quick"] is True and result["meta"]["server_version"]
    for op in ("cycle", "get", "create"):
        for who in ("nats", "sqlite_memory", "sqlite_file"):
            assert result[op][who] > 0
        assert result[op]["ratio_vs_sqlite_memory"] > 0 and result[op]["ratio_vs_sqlite_file"] > 0
    assert "NATS/SQLite" in proc.stderr


def test_quick_export_benchmark_reports_every_figure() -> None:
    if not os.environ.get("CI"):  # the analysis extra; CI installs it (dev.py test), so there it must run
        pytest.importorskip("pyarrow")
        pytest.importorskip("duckdb")
    python = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable
    proc = subprocess.run(
        [python, str(ROOT / "bench" / "export.py"), "--quick", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["meta"]["quick"] is True and result["meta"]["events"] == 20_000
    for mode in ("to_dataframe", "to_parquet", "to_arrow", "pandas_variants", "duckdb_variants"):
        figures = result["modes"][mode]
        assert figures["rows"] == 20_000 and figures["seconds"] > 0 and figures["peak_rss_mib"] > 0, mode
    assert result["modes"]["import"]["peak_rss_mib"] > 0
    assert result["parquet_vs_dataframe"] > 0 and result["parquet_files"] >= 1
    assert result["variants_agree"] is True and result["modes"]["duckdb_variants"]["variants"] > 1


def test_quick_scale_benchmark_reports_every_figure(tmp_path: Path) -> None:
    python = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable
    out = tmp_path / "scale.json"
    proc = subprocess.run(
        [python, str(ROOT / "bench" / "scale.py"), "--quick", "--json", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert json.loads(out.read_text()) == result
    assert result["meta"]["quick"] is True and result["meta"]["server_version"]
    figures = result["figures"]
    names = ("load_flatness", "cycle_vs_eventsourcing", "cycle_vs_eventsourcing_file", "multi_event_append_ratio",
             "dcb_disjoint_scaling", "peak_rss_mib", "server_peak_rss_mib")  # fmt: skip
    for name in names:
        assert figures[name] > 0, name
    assert set(result["goals"]) <= set(figures)
    assert result["dcb"]["retries_per_decision"] >= 0 and result["dcb"]["contended_worst_rounds"] >= 1


def test_quick_process_manager_benchmark_reports_both_rates_and_the_ratio() -> None:
    python = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable
    proc = subprocess.run(
        [python, str(ROOT / "bench" / "process_manager.py"), "--quick", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["flows"] == 500 and result["reps"] == 1
    assert result["loop_flows_per_s"] > 0 and result["process_manager_flows_per_s"] > 0 and result["ratio"] > 0
    assert result["goal"] == 0.5 and isinstance(result["goal_met"], bool) and result["cpu_ratio"] > 0
    assert "x the hand-written loop" in proc.stderr
