"""pyeventsourcing's own recorder and factory contracts, run unchanged against eskit.interop.eventsourcing.

On the test server; the application and process recorder cases on a 3-node cluster too (``slow``). The
library's performance tests run as well: they print their figures (reported, not gated; ``pytest -s`` shows
them: ``... -s tests/test_eventsourcing_conformance.py -k "performance or concurrent"``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from conftest import unique
from eventsourcing.persistence import AggregateRecorder, ApplicationRecorder, ProcessRecorder, TrackingRecorder
from eventsourcing.tests import persistence as contract
from eventsourcing.utils import Environment

from eskit.cluster import EmbeddedCluster
from eskit.interop.eventsourcing import (
    Factory,
    NatsAggregateRecorder,
    NatsApplicationRecorder,
    NatsProcessRecorder,
    NatsRecorder,
    NatsTrackingRecorder,
)


class OnNats:
    """Each test's recorders get their own stores on the server at ``url``, deleted after the test."""

    url: ClassVar[str | None] = None

    def setUp(self) -> None:
        self.recorders: list[NatsRecorder] = []

    def tearDown(self) -> None:
        for recorder in self.recorders:
            recorder.close(delete_store=True)

    def made(self, cls: type[Any]) -> Any:
        recorder = cls(unique("esconf"), url=self.url or os.environ["NATS_URL"])
        self.recorders.append(recorder)
        return recorder


class TestNatsAggregateRecorderPassesTheEventsourcingContract(OnNats, contract.AggregateRecorderTestCase):
    def create_recorder(self) -> AggregateRecorder:
        return self.made(NatsAggregateRecorder)  # type: ignore[no-any-return]


class TestNatsApplicationRecorderPassesTheEventsourcingContract(OnNats, contract.ApplicationRecorderTestCase):
    def create_recorder(self) -> ApplicationRecorder:
        return self.made(NatsApplicationRecorder)  # type: ignore[no-any-return]

    def test_insert_subscribe(self) -> None:
        self.optional_test_insert_subscribe()


class TestNatsNotificationIdsOfConcurrentInsertsDoNotInterleave(
    OnNats, contract.NonInterleavingNotificationIDsBaseCase
):
    def create_recorder(self) -> ApplicationRecorder:
        return self.made(NatsApplicationRecorder)  # type: ignore[no-any-return]


class TestNatsTrackingRecorderPassesTheEventsourcingContract(OnNats, contract.TrackingRecorderTestCase):
    def create_recorder(self) -> TrackingRecorder:
        return self.made(NatsTrackingRecorder)  # type: ignore[no-any-return]


class TestNatsProcessRecorderPassesTheEventsourcingContract(OnNats, contract.ProcessRecorderTestCase):
    def create_recorder(self) -> ProcessRecorder:
        return self.made(NatsProcessRecorder)  # type: ignore[no-any-return]


class TrackingRecorderSubclass(NatsTrackingRecorder):
    pass


class TestTheNatsFactoryPassesTheEventsourcingContract(contract.InfrastructureFactoryTestCase[Factory]):
    def setUp(self) -> None:
        self.env = Environment(unique("Factory"))
        self.env[Factory.PERSISTENCE_MODULE] = "eskit.interop.eventsourcing"
        self.env[Factory.NATS_URL] = os.environ["NATS_URL"]
        super().setUp()

    def tearDown(self) -> None:
        for purpose in ("events", "tracking"):
            self.factory.portal.call(self.factory.portal.client.delete_store, f"{self.factory.prefix}_{purpose}")
        super().tearDown()

    def expected_factory_class(self) -> type[Factory]:
        return Factory

    def expected_aggregate_recorder_class(self) -> type[AggregateRecorder]:
        return NatsAggregateRecorder

    def expected_application_recorder_class(self) -> type[ApplicationRecorder]:
        return NatsApplicationRecorder

    def expected_tracking_recorder_class(self) -> type[TrackingRecorder]:
        return NatsTrackingRecorder

    def tracking_recorder_subclass(self) -> type[TrackingRecorder]:
        return TrackingRecorderSubclass

    def expected_process_recorder_class(self) -> type[ProcessRecorder]:
        return NatsProcessRecorder


@pytest.fixture(scope="module")
def cluster() -> Iterator[EmbeddedCluster]:
    with EmbeddedCluster(3) as c:
        yield c


@pytest.fixture(scope="class")
def cluster_url(cluster: EmbeddedCluster, request: pytest.FixtureRequest) -> None:
    request.cls.url = cluster.url


@pytest.mark.slow
@pytest.mark.usefixtures("cluster_url")
class TestNatsApplicationRecorderPassesTheEventsourcingContractOnACluster(
    TestNatsApplicationRecorderPassesTheEventsourcingContract
):
    pass


@pytest.mark.slow
@pytest.mark.usefixtures("cluster_url")
class TestNatsProcessRecorderPassesTheEventsourcingContractOnACluster(
    TestNatsProcessRecorderPassesTheEventsourcingContract
):
    pass
