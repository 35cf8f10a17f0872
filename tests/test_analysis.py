"""Streams into DataFrames, and the analysis helpers on them: exact answers on small, known histories."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nats.aio.client import Client as NATS

import eskit
from eskit._nats.headers import parse_headers
from eskit.analysis import case_durations, directly_follows, events_per_type, funnel, variants

T0 = datetime(2024, 1, 1, 9, 0, tzinfo=UTC)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


HISTORIES = {  # three orders: two take the happy path, one is cancelled
    "o1": [("created", 0), ("paid", 10), ("shipped", 70)],
    "o2": [("created", 5), ("paid", 25), ("shipped", 45)],
    "o3": [("created", 8), ("cancelled", 9)],
}


@pytest.fixture
async def orders(store: eskit.EventStore) -> eskit.EventStore:
    for oid, steps in HISTORIES.items():
        events = [eskit.Event(kind, {"n": i, "address": {"city": "Oslo"}}, occurred_at=at(m))
                  for i, (kind, m) in enumerate(steps)]  # fmt: skip
        await store.append(oid, events, expected_position=0)
    return store


async def test_a_frame_has_one_row_per_event_with_flattened_data_and_utc_times(
    orders: eskit.EventStore,
) -> None:
    df = await eskit.to_dataframe(orders)
    assert len(df) == 8 and df["position"].tolist() == list(range(1, 9))
    assert df.columns[:5].tolist() == ["position", "aggregate_id", "type", "timestamp", "occurred_at"]
    assert str(df["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert df["occurred_at"].iloc[1] == pd.Timestamp(at(10))
    assert df["address.city"].unique().tolist() == ["Oslo"] and df["n"].tolist()[:3] == [0, 1, 2]


async def test_pm4py_names_rename_case_activity_and_time(orders: eskit.EventStore) -> None:
    df = await eskit.to_dataframe(orders, names="pm4py")
    assert {"case:concept:name", "concept:name", "time:timestamp"} <= set(df.columns)
    assert df["time:timestamp"].iloc[0] == pd.Timestamp(T0)


async def test_after_and_subject_filters_choose_the_rows(orders: eskit.EventStore) -> None:
    later = await eskit.to_dataframe(orders, after=6)
    assert later["position"].tolist() == [7, 8]
    name = orders.name
    some = await eskit.to_dataframe(
        orders, subjects=[f"{name}.*.shipped", f"{name}.o3.>", f"{name}.*.shipped"]
    )
    assert some["position"].tolist() == [3, 6, 7, 8]  # merged in order, each event once
    assert some["type"].tolist() == ["shipped", "shipped", "created", "cancelled"]


async def test_a_replayed_stream_gives_the_same_frame_as_the_store(orders: eskit.EventStore) -> None:
    fast = await eskit.to_dataframe(orders)
    slow = await eskit.to_dataframe(orders.replay())
    fast["timestamp"] = fast["timestamp"].dt.floor("us")  # a RecordedEvent's datetime keeps microseconds
    pd.testing.assert_frame_equal(fast, slow, check_dtype=False)


async def test_metadata_and_ids_come_along(store: eskit.EventStore) -> None:
    event = eskit.Event("created", {}, correlation_id="req-1", metadata={"user": "ada"})
    await store.append("x", [event])
    [row] = (await eskit.to_dataframe(store)).to_dict("records")
    assert (row["event_id"], row["correlation_id"], row["meta:user"]) == (event.id, "req-1", "ada")


async def test_an_empty_store_gives_an_empty_frame_with_the_columns(store: eskit.EventStore) -> None:
    df = await eskit.to_dataframe(store)
    assert len(df) == 0 and "aggregate_id" in df.columns
    assert len(await eskit.to_dataframe(store, names="pm4py")) == 0


async def test_helpers_give_exact_variants_follows_durations_and_funnel(orders: eskit.EventStore) -> None:
    df = await eskit.to_dataframe(orders)
    v = variants(df)
    assert v[["variant", "cases"]].values.tolist() == [
        [("created", "paid", "shipped"), 2], [("created", "cancelled"), 1]]  # fmt: skip
    follows = directly_follows(df).set_index(["source", "target"])
    assert follows.loc[("created", "paid"), "count"] == 2
    assert follows.loc[("paid", "shipped"), "mean_time"] == pd.Timedelta(minutes=40)
    durations = case_durations(df)
    assert durations.loc["o1", "duration"] == pd.Timedelta(minutes=70) and durations.index[0] == "o1"
    steps = funnel(df, ["created", "paid", "shipped"])
    assert steps["cases"].tolist() == [3, 2, 2]
    assert funnel(df, ["shipped", "created"])["cases"].tolist() == [2, 0]  # order matters
    hourly = events_per_type(df, freq="h")
    assert int(hourly.to_numpy().sum()) == 8 and hourly.loc[pd.Timestamp(T0), "created"] == 3


async def test_helpers_accept_pm4py_names_and_say_which_column_is_missing(orders: eskit.EventStore) -> None:
    pm = await eskit.to_dataframe(orders, names="pm4py")
    assert variants(pm)["cases"].tolist() == [2, 1]
    with pytest.raises(eskit.ValidationError, match="no column 'case'"):
        variants(pd.DataFrame({"x": [1]}), case="case")


async def test_an_unknown_naming_is_refused(store: eskit.EventStore) -> None:
    with pytest.raises(eskit.ValidationError, match="names="):
        await eskit.to_dataframe(store, names="xes")  # type: ignore[arg-type]


async def test_a_dcb_store_given_to_to_dataframe_gets_a_one_line_error_naming_to_ocel_not_a_type_error(
    client: eskit.Client,
) -> None:
    dcb = await client.dcb_store(f"courses_{uuid.uuid4().hex[:8]}", tag_keys=["course"])
    try:
        with pytest.raises(eskit.ValidationError, match="to_ocel") as info:
            await eskit.to_dataframe(dcb)
        assert "\n" not in str(info.value)
    finally:
        await client.delete_store(dcb.name)


names = st.text(
    st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=":"), min_size=1, max_size=12
)
names = names.filter(lambda n: n not in ("Status", "Description"))  # the inline status's own keys
values = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF, exclude_characters="\r\n"), max_size=20)


@given(st.dictionaries(names, values.map(str.strip), max_size=6), st.sampled_from(["", " 404 No Messages"]))
@settings(max_examples=200, deadline=None)
def test_the_fast_header_parser_agrees_with_nats_py(headers: dict[str, str], status: str) -> None:
    raw = (f"NATS/1.0{status}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode()
    ours = parse_headers(raw) or {}  # None for an empty block, as nats-py gives it
    theirs = NATS._parse_header_lines(raw[raw.index(b"\r\n") + 2 :])
    assert {k: v for k, v in ours.items() if k not in ("Status", "Description")} == theirs
    assert all(ours.get(k) == v for k, v in theirs.items())
    assert ours.get("Status") == ("404" if status else None)
