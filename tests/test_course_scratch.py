"""Exercise checks keep working after a lesson's last cell closed the lesson's connection."""

from __future__ import annotations

import eskit


async def test_a_check_still_gets_a_scratch_store_after_the_lesson_closed_its_client(
    client: eskit.Client, nats_url: str
) -> None:
    lesson_client = await eskit.connect(nats_url)
    await lesson_client.close()  # Run All reached the lesson's clean-up cell; the learner now solves an exercise
    async with eskit.course.scratch(lesson_client, "after") as store:
        position = await store.append("o1", [eskit.Event("created")])
        assert [e.type for e in await store.read("o1")] == ["created"] and position > 0
        name = store.name
    assert not await client.delete_store(name), "the scratch store is deleted when the block ends"
