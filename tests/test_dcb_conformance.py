"""pyeventsourcing's own DCB recorder contract, run unchanged against NatsDCBRecorder on the test server."""

from __future__ import annotations

import os

from conftest import unique
from eventsourcing.dcb import tests as contract

from eskit.interop.eventsourcing import NatsDCBRecorder


class TestNatsDCBRecorderPassesTheEventsourcingContract(contract.DCBRecorderTestCase):
    def setUp(self) -> None:
        self.recorder = NatsDCBRecorder(unique("dcbconf"), url=os.environ["NATS_URL"])

    def tearDown(self) -> None:
        self.recorder.close(delete_store=True)

    def test_append_then_read_by_type_tag_and_position(self) -> None:
        self._test_append_read(self.recorder)

    def test_a_subscription_blocks_then_receives_new_events(self) -> None:
        self._test_append_subscribe(self.recorder)
