"""A pyeventsourcing Application on NATS JetStream, then eskit reading what it wrote.

    .venv/bin/python examples/eventsourcing_app.py

The application is the library's own (``Application``, ``Aggregate``, ``@event``); only its environment
changes: ``PERSISTENCE_MODULE=eskit.interop.eventsourcing`` and ``NATS_URL``. Its events land in the store
``dogschool_events`` (stream ``DOGSCHOOL_EVENTS``), where ``eskit.to_dataframe`` reads them like any other
store. Uses NATS_URL if it is set, else starts an embedded nats-server for the run; the store is removed at
the end, so the script can run again.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any
from uuid import UUID

import pandas as pd
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event

import eskit


class Dog(Aggregate):
    @event("Registered")
    def __init__(self, name: str) -> None:
        self.name = name
        self.tricks: list[str] = []

    @event("TrickAdded")
    def add_trick(self, trick: str) -> None:
        self.tricks.append(trick)


class DogSchool(Application[UUID]):
    def register_dog(self, name: str) -> UUID:
        dog = Dog(name)
        self.save(dog)
        return dog.id

    def add_trick(self, dog_id: UUID, trick: str) -> None:
        dog: Dog = self.repository.get(dog_id)
        dog.add_trick(trick)
        self.save(dog)

    def get_dog(self, dog_id: UUID) -> dict[str, Any]:
        dog: Dog = self.repository.get(dog_id)
        return {"name": dog.name, "tricks": list(dog.tricks), "version": dog.version}


def run_school(url: str) -> dict[str, Any]:
    """The library's side: an application on NATS, commands in, state out."""
    school = DogSchool(env={"PERSISTENCE_MODULE": "eskit.interop.eventsourcing", "NATS_URL": url})
    try:
        fido = school.register_dog("Fido")
        school.add_trick(fido, "roll over")
        school.add_trick(fido, "play dead")
        return school.get_dog(fido)
    finally:
        school.close()


async def read_back(url: str) -> pd.DataFrame:
    """eskit's side: the same events, as a DataFrame (topics decoded, the version as metadata)."""
    async with await eskit.connect(url) as client:
        store = await client.event_store("dogschool_events")
        try:
            return await eskit.to_dataframe(store)
        finally:
            await client.delete_store(store.name)


def main() -> pd.DataFrame:
    server = None if os.environ.get("NATS_URL") else eskit.EmbeddedServer().start()
    url = server.url if server else os.environ["NATS_URL"]
    try:
        print(run_school(url))
        df = asyncio.run(read_back(url))
    finally:
        if server is not None:
            server.stop()
    columns = ["position", "aggregate_id", "type", "meta:Originator-Version", "name", "trick"]
    print(df[columns].to_string(index=False))
    return df


if __name__ == "__main__":
    main()
