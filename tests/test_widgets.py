"""The event browser and the stream overview, driven through their methods (no browser needed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from conftest import unique

import eskit
from eskit.widgets import CLEANUP, EventBrowser, StreamOverview, when_done

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


async def test_run_all_leaves_the_lesson_alive_until_the_clean_up_button_is_pressed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(CLEANUP, raising=False)
    ran: list[str] = []

    async def close() -> None:
        ran.append("close")

    done = await when_done(lambda: ran.append("stop"), close)
    assert ran == [] and not done.done and not done.button.disabled  # the widgets above keep working
    done.button.click()
    assert done.task is not None
    await done.task
    assert ran == ["stop", "close"] and done.done and done.button.disabled
    assert "cleaned up" in done.status.value
    await done.run()  # a second press cleans nothing twice
    assert ran == ["stop", "close"] and "already" in done.status.value


async def test_an_unattended_run_cleans_up_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CLEANUP, "now")
    ran: list[str] = []
    done = await when_done(lambda: ran.append("stop"))
    assert ran == ["stop"] and done.done


async def test_a_failing_clean_up_step_shows_its_error_and_can_be_pressed_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(CLEANUP, raising=False)
    attempts: list[int] = []

    def flaky() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise eskit.StoreUnavailableError("no server")

    done = await when_done(flaky)
    task = done.start(done.run())
    with pytest.raises(eskit.StoreUnavailableError):
        await task
    assert "error" in done.status.value and not done.done and not done.button.disabled
    await done.start(done.run())
    assert done.done and len(attempts) == 2


class Counting(eskit.Projection):
    schema = "CREATE TABLE n (n INTEGER)"

    @eskit.applies("created")
    def _created(self, db: object, event: eskit.RecordedEvent) -> None: ...


async def test_widget_outputs_carry_a_readable_static_copy_for_viewers_without_widgets(
    shop: eskit.EventStore,
) -> None:
    browser = EventBrowser(shop, page_size=4)
    await browser.refresh()
    bundle = browser._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert "<table" in bundle["text/html"] and "order-0" in bundle["text/html"] and "page 1 of 3" in bundle["text/html"]
    assert bundle["text/plain"] == "EventBrowser: 10 events · page 1 of 3"
    view = Counting(shop, name=unique("view"))
    board = eskit.dashboard(view)
    try:
        board_bundle = board._repr_mimebundle_()
        assert "<table" in board_bundle["text/html"] and view.stats.name in board_bundle["text/html"]
        assert "application/vnd.jupyter.widget-view+json" in board_bundle
    finally:
        board.stop()
        await view.close(delete_consumer=True)
