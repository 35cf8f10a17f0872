"""JetStream's answers, named once: the API error codes eskit acts on and the headers the server checks.

>>> reply = {"error": {"code": 404, "err_code": STREAM_NOT_FOUND, "description": "stream not found"}}
>>> reply["error"]["err_code"] == 10059
True
"""

from __future__ import annotations

STREAM_NOT_FOUND = 10059
STREAM_NAME_IN_USE = 10058  # created meanwhile, with another configuration
NO_MESSAGE = 10037
WRONG_LAST_SEQUENCE = 10071  # "wrong last sequence: 7": an optimistic-concurrency conflict
WRONG_LAST_SEQUENCE_CONSTANT = 10164  # the same conflict without the number: clustered streams, batches
CONFLICT = (WRONG_LAST_SEQUENCE, WRONG_LAST_SEQUENCE_CONSTANT)
SUBJECT_SEQUENCE_UNAVAILABLE = 10163  # clustered: "expected last sequence per subject temporarily unavailable"
BATCH_DUPLICATE, DUPLICATE_IN_PROCESS = 10201, 10158  # a message id seen again within an atomic batch

EXPECTED_SEQ = "Nats-Expected-Last-Subject-Sequence"
EXPECTED_SUBJECT = "Nats-Expected-Last-Subject-Sequence-Subject"
