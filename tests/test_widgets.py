"""The event browser and the stream overview, driven through their methods (no browser needed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from conftest import unique

import eskit
from eskit.widgets import EventBrowser, StreamOverview

T0 = datetime(2024, 3, 1, tzinfo=UTC)


@pytest.fixture
async def shop(store: eskit.EventStore) -> eskit.EventStore:
    for n in range(5):
        events = [
            eskit.Event("created", {"n": n}, occurred_at=T0 + timedelta(days=n), metadata={"user": "ada"}),
            eskit.Event("item_added", {"sku": f"s{n}"}, occurred_at=T0 + timedelta(days=n, hours=1)),
        ]
        await store.append(f"order-{n}", events, expected_position=0)
    return store


async def test_the_browser_pages_through_every_event_with_its_data_and_metadata(
    shop: eskit.EventStore,
) -> None:
    browser = EventBrowser(shop, page_size=4)
    await browser.refresh()
    assert (len(browser.frame), browser.pages, browser.page) == (10, 3, 0)
    first = browser.rows().iloc[0]
    assert (first["aggregate_id"], first["type"], first["data"], first["metadata"]) == (
        "order-0", "created", '{"n": 0}', '{"user": "ada"}')  # fmt: skip
    browser.show(browser.page + 1)
    browser.show(99)  # clamped to the last page
    assert browser.page == 2 and len(browser.rows()) == 2
    assert "page 3 of 3" in browser.status.value and "<table" in browser.table.value


async def test_the_browser_filters_by_aggregate_type_and_time(shop: eskit.EventStore) -> None:
    browser = EventBrowser(shop)
    browser.aggregate.value = "order-2"
    await browser.refresh()
    assert browser.frame["aggregate_id"].unique().tolist() == ["order-2"] and len(browser.frame) == 2
    browser.aggregate.value, browser.type.value = "", "item_added"
    browser.since.value, browser.until.value = "2024-03-02", "2024-03-04"
    await browser.refresh()
    assert browser.frame["aggregate_id"].tolist() == ["order-1", "order-2"]


async def test_a_failing_callback_shows_its_error_in_the_widget(shop: eskit.EventStore) -> None:
    browser = EventBrowser(shop)
    browser.since.value = "last tuesday"
    task = browser.start(browser.refresh())
    with pytest.raises(eskit.ValidationError):
        await task
    assert "error" in browser.status.value and "last tuesday" in browser.status.value


async def test_the_overview_counts_types_and_a_missing_stream_is_reported(
    client: eskit.Client, shop: eskit.EventStore
) -> None:
    overview = StreamOverview(shop)
    await overview.refresh()
    assert overview.summary["events"].to_dict() == {"created": 5, "item_added": 5}
    assert (overview.totals["events"], overview.totals["aggregates"]) == (10, 5)
    assert overview.totals["first"] == T0 and overview.totals["last"] == T0 + timedelta(days=4, hours=1)
    name = unique("gone")
    gone = StreamOverview(await client.event_store(name))
    await client.delete_store(name)
    task = gone.start(gone.refresh())
    with pytest.raises(eskit.EventStoreError):
        await task
    assert "error" in gone.status.value
