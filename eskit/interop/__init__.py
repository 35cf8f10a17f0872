"""Bridges from eskit to other tools.

- :mod:`eskit.interop.eventsourcing`: pyeventsourcing on NATS: ``PERSISTENCE_MODULE=eskit.interop.eventsourcing``
  (its ``Factory``), the recorders ``NatsAggregateRecorder``, ``NatsApplicationRecorder``,
  ``NatsTrackingRecorder``, ``NatsProcessRecorder`` and ``NatsDCBRecorder`` (needs the ``eventsourcing``
  package: ``pip install eskit[test]``).
"""
