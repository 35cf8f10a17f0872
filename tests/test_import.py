"""Importing CSV and XES event logs: real logs round-trip exactly, re-imports add nothing, bad files fail."""
# ruff: noqa: E501

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pandas as pd
import pytest
from conftest import unique
from hypothesis import given, settings
from hypothesis import strategies as st

import eskit
from eskit.analysis import directly_follows
from eskit.eventlog import decode_token, encode_token, read_log
from eskit.events import check_token
from eskit.samples import ENV, event_log_path, write_sample_log

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"


@pytest.fixture
async def logs(client: eskit.Client) -> AsyncIterator[eskit.EventStore]:
    name = unique("log")
    yield await client.event_store(name)
    await client.delete_store(name)


def expected_from_csv(
    path: Path, case: str = "case:concept:name"
) -> tuple[int, int, dict[tuple[str, str], int]]:
    """Cases, events and directly-follows counts of a CSV, computed with pandas alone."""
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    raw["t"] = pd.to_datetime(raw["time:timestamp"], utc=True, format="ISO8601")
    raw = raw.sort_values([case, "t"], kind="stable")
    nxt = raw.groupby(case)["concept:name"].shift(-1)
    pairs = pd.DataFrame({"a": raw["concept:name"], "b": nxt}).dropna().value_counts()
    return raw[case].nunique(), len(raw), {k: int(v) for k, v in pairs.items()}


async def round_trip(store: eskit.EventStore, path: Path) -> None:
    result = await eskit.import_log(store, path, progress=False)
    cases, events, follows = expected_from_csv(path)
    assert (result.cases, result.events, result.appended) == (cases, events, events)
    df = await eskit.to_dataframe(store, names="pm4py")
    assert (df["case:concept:name"].nunique(), len(df)) == (cases, events)
    got = directly_follows(df)
    assert {(r.source, r.target): r.count for r in got.itertuples()} == follows
    again = await eskit.import_log(store, path, progress=False)
    assert (again.appended, again.cases_already_stored) == (0, cases)
    assert await store.last_position() == events


@pytest.mark.skipif(
    not (DATA / "receipt.csv").exists(), reason="../shared/data/receipt.csv is not beside the repo"
)
async def test_receipt_log_comes_back_with_the_same_cases_events_and_directly_follows_counts(
    logs: eskit.EventStore,
) -> None:
    await round_trip(logs, DATA / "receipt.csv")
    df = await eskit.to_dataframe(logs)
    assert "T02 Check confirmation of receipt" in set(df["type"])  # original names, not subject tokens
    assert (df["aggregate_id"].nunique(), len(df)) == (1434, 8577)


@pytest.mark.skipif(
    not (DATA / "running-example.csv").exists(), reason="../shared/data is not beside the repo"
)
async def test_running_example_comes_back_whole_and_keeps_its_original_timestamps(
    logs: eskit.EventStore,
) -> None:
    await round_trip(logs, DATA / "running-example.csv")
    df = await eskit.to_dataframe(logs, names="pm4py")
    first = df[df["case:concept:name"] == "3"].iloc[0]
    assert first["concept:name"] == "register request"
    assert first["time:timestamp"] == pd.Timestamp("2010-12-30 14:32:00+01:00")
    assert first["Costs"] == 50 and "Unnamed: 0" not in df.columns


async def test_a_case_that_grew_gets_only_its_new_events(logs: eskit.EventStore, tmp_path: Path) -> None:
    rows = read_log(write_sample_log(tmp_path / "log.csv", cases=3, seed=1))
    first_case = [r for r in rows if r.case == rows[0].case]
    await eskit.import_log(logs, first_case[:2], progress=False)
    result = await eskit.import_log(logs, rows, progress=False)
    assert result.appended == len(rows) - 2
    df = await eskit.to_dataframe(logs)
    assert df.groupby("aggregate_id")["type"].agg(list)[rows[0].case] == [r.activity for r in first_case]


async def test_a_stored_case_that_differs_from_the_log_is_refused_before_anything_is_appended(
    logs: eskit.EventStore, tmp_path: Path
) -> None:
    rows = read_log(write_sample_log(tmp_path / "log.csv", cases=4, seed=2))
    await eskit.import_log(logs, rows[:1], progress=False)
    changed = [eskit.LogEvent(rows[0].case, "Something else", rows[0].timestamp), *rows[1:]]
    with pytest.raises(eskit.EventLogError, match="already in"):
        await eskit.import_log(logs, changed, progress=False)
    assert await logs.last_position() == 1


BAD_CSV = {
    "missing column": ("case:concept:name,concept:name\nc1,a\n", "line 1: no column 'time:timestamp'"),
    "bad timestamp": (
        "case:concept:name,concept:name,time:timestamp\nc1,a,2020-01-01\nc1,b,yesterday\n",
        "line 3: timestamp 'yesterday'",
    ),
    "short row": (
        "case:concept:name,concept:name,time:timestamp\nc1,a,2020-01-01\nc2,b\n",
        "line 3: 2 fields",
    ),
    "empty case": (
        "case:concept:name,concept:name,time:timestamp\nc1,a,2020-01-01\n,b,2020-01-02\n",
        "line 3: empty case id",
    ),
}


@pytest.mark.parametrize("kind", list(BAD_CSV))
async def test_a_malformed_csv_names_the_line_and_imports_nothing(
    logs: eskit.EventStore, tmp_path: Path, kind: str
) -> None:
    text, message = BAD_CSV[kind]
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(eskit.EventLogError, match=message):
        await eskit.import_log(logs, path, progress=False)
    assert await logs.last_position() == 0


XES_HEAD = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<log xes.version="1.0" xmlns="http://www.xes-standard.org/">\n'
)
GOOD_XES = (
    XES_HEAD
    + """<string key="concept:name" value="the log"/>
<global scope="event"><string key="concept:name" value="__INVALID__"/></global>
<trace><string key="concept:name" value="case 1.a"/><int key="priority" value="2"/>
  <event><string key="concept:name" value="Register request"/><date key="time:timestamp" value="2010-12-30T11:02:00.000+01:00"/>
    <string key="org:resource" value="Pete"/><float key="cost" value="50.5"/><boolean key="urgent" value="true"/></event>
  <event><string key="concept:name" value="Decide"/><date key="time:timestamp" value="2010-12-31T10:00:00+01:00"/></event>
</trace>
<trace><string key="concept:name" value="case 2"/>
  <event><string key="concept:name" value="Register request"/><date key="time:timestamp" value="2011-01-02T09:00:00Z"/></event>
</trace>
</log>
"""
)


async def test_an_xes_log_is_imported_with_original_names_and_case_attributes(
    logs: eskit.EventStore, tmp_path: Path
) -> None:
    path = tmp_path / "log.xes"
    path.write_text(GOOD_XES)
    result = await eskit.import_log(logs, path, progress=False)
    assert (result.cases, result.events) == (2, 3)
    df = await eskit.to_dataframe(logs, names="pm4py")
    first = df[df["case:concept:name"] == "case 1.a"].iloc[0]
    assert (first["concept:name"], first["org:resource"]) == ("Register request", "Pete")
    assert (first["case:priority"], first["cost"], first["urgent"]) == (2, 50.5, True)
    by_case = df.groupby("case:concept:name")["concept:name"].agg(list).to_dict()
    assert by_case == {"case 1.a": ["Register request", "Decide"], "case 2": ["Register request"]}


BAD_XES = {
    "not xml": (XES_HEAD + "<trace><event>\n</trace></log>", r"line 4, column 2: not well-formed"),
    "trace without name": (
        XES_HEAD + "<trace><event><string key='concept:name' value='a'/>"
        "<date key='time:timestamp' value='2020-01-01'/></event></trace></log>",
        r"trace #3: <trace> has no",
    ),
    "event without time": (
        XES_HEAD + "<trace><string key='concept:name' value='c'/><event>"
        "<string key='concept:name' value='a'/></event></trace></log>",
        r"trace #3, event #1: <event> has no <date key='time:timestamp'>",
    ),
    "bad int": (
        XES_HEAD + "<trace><string key='concept:name' value='c'/><event><int key='n' value='x'/>"
        "</event></trace></log>",
        r"trace #3, event #1: <int key='n'> has value 'x'",
    ),
}


@pytest.mark.parametrize("kind", list(BAD_XES))
async def test_a_malformed_xes_names_the_element_and_imports_nothing(
    logs: eskit.EventStore, tmp_path: Path, kind: str
) -> None:
    text, message = BAD_XES[kind]
    good_first = GOOD_XES.replace("</log>", "")  # valid traces before the bad one are not appended either
    path = tmp_path / "bad.xes"
    path.write_text(good_first + text.split("\n", 2)[2] if kind != "not xml" else text)
    with pytest.raises(eskit.EventLogError, match=message):
        await eskit.import_log(logs, path, progress=False)
    assert await logs.last_position() == 0


@given(st.text(min_size=1, max_size=20))  # at most 12 bytes per character once encoded: under 255
@settings(max_examples=200, deadline=None)
def test_any_name_maps_to_a_valid_subject_token_and_back(name: str) -> None:
    token = encode_token(name)
    assert check_token(token, "token") == token
    assert decode_token(token) == name


def test_the_lesson_uses_the_log_named_by_the_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mine = write_sample_log(tmp_path / "mine.csv", cases=2)
    monkeypatch.setenv(ENV, str(mine))
    assert event_log_path(tmp_path / "unused") == mine
    monkeypatch.setenv(ENV, str(tmp_path / "missing.csv"))
    with pytest.raises(eskit.EventLogError, match="not a file"):
        event_log_path(tmp_path)
    monkeypatch.delenv(ENV)
    sample = event_log_path(tmp_path)
    assert sample.name == "sample_claims.csv" and len(read_log(sample)) > 0


def test_the_sample_log_is_the_same_on_every_run(tmp_path: Path) -> None:
    a = write_sample_log(tmp_path / "a.csv").read_text()
    assert a == write_sample_log(tmp_path / "b.csv").read_text()
    assert "claim 2024.001" in a and "Check documents" in a


async def test_the_cli_imports_a_log_and_a_second_run_adds_nothing(
    client: eskit.Client, logs: eskit.EventStore, tmp_path: Path
) -> None:
    path = write_sample_log(tmp_path / "log.csv", cases=5)
    cmd = [sys.executable, "-m", "eskit", "import", str(path), "--stream", logs.name]
    env = {**os.environ, "NATS_URL": client.url}
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, cwd=REPO)
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert first.returncode == 0, first.stderr
    assert "5 cases" in first.stdout and "appended 0 events" in second.stdout


def test_the_cli_names_a_missing_file_in_one_line(
    nats_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from eskit.__main__ import main

    assert main(["import", str(tmp_path / "nope.csv"), "--stream", "x", "--url", nats_url]) == 1
    assert "nope.csv not found" in capsys.readouterr().err


async def test_the_cli_imports_a_semicolon_log_with_its_own_column_names(
    client: eskit.Client, logs: eskit.EventStore, tmp_path: Path
) -> None:
    path = tmp_path / "log.csv"
    path.write_text(
        'case_id;activity;timestamp;note\nc1;"Register; quickly";2024-01-02T10:00:00Z;a\n'
        "c1;Approve;2024-01-02T11:00:00Z;b\nc2;Register;2024-01-03T09:00:00+01:00;\n"
    )
    base = [sys.executable, "-m", "eskit", "import", str(path), "--stream", logs.name]
    env = {**os.environ, "NATS_URL": client.url}
    refused = subprocess.run(base, env=env, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1
    assert "no column 'case:concept:name'" in refused.stderr and "--case/--activity/--timestamp" in refused.stderr
    named = ["--case", "case_id", "--activity", "activity", "--timestamp", "timestamp"]
    done = subprocess.run([*base, *named], env=env, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "2 cases, 3 events" in done.stdout
    history = await logs.read("c1")
    assert [decode_token(e.type) for e in history] == ["Register; quickly", "Approve"]
    assert [e.data for e in history] == [{"note": "a"}, {"note": "b"}]


def test_the_cli_help_names_the_expected_columns() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "eskit", "import", "--help"], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert shown.returncode == 0
    assert "case:concept:name" in shown.stdout and "--activity" in shown.stdout and "--timestamp" in shown.stdout


async def test_import_log_takes_the_column_names_too(logs: eskit.EventStore, tmp_path: Path) -> None:
    path = tmp_path / "tabs.csv"
    path.write_text("id\tstep\tat\nx1\tOpen\t2024-01-02 10:00:00\nx1\tClose\t2024-01-02 10:05:00\n")
    result = await eskit.import_log(logs, path, case="id", activity="step", timestamp="at", progress=False)
    assert (result.cases, result.events, result.appended) == (1, 2, 2)
