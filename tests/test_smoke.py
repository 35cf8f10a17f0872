import eskit


async def test_append_then_read_returns_the_event(store: eskit.EventStore) -> None:
    pos = await store.append("1", [eskit.Event("created", {"a": 1})], expected_position=0)
    [event] = await store.read("1")
    assert (event.position, event.type, event.data) == (pos, "created", {"a": 1})
