"""Bridges from eskit to other tools.

- :mod:`eskit.interop.eventsourcing`: ``NatsDCBRecorder``, pyeventsourcing's ``DCBRecorder`` on a NATS DCB
  store (needs the ``eventsourcing`` package: ``pip install eskit[test]``).
"""
