"""eskit: learn, teach and analyse event sourcing on NATS JetStream.

>>> import eskit
>>> async with await eskit.connect() as client:                                   # doctest: +SKIP
...     orders = await client.event_store("orders")
...     await orders.append("123", [eskit.Event("created", {"customer": "c1"})], expected_position=0)
...     history = await orders.read("123")
"""

from __future__ import annotations

from . import analysis, dcb
from . import course as course  # the notebooks' exercise checks (eskit.course.check)
from . import testing as testing  # given / when / then
from .aggregate import Aggregate, applies
from .cache import AggregateCache
from .cluster import EmbeddedCluster
from .connection import Client, ServerInfo, connect, forget
from .dashboard import Dashboard, dashboard
from .deadletter import DeadLetters, ParkedEvent
from .errors import (
    AggregateError,
    AppendConditionError,
    AuthenticationError,
    ConcurrencyError,
    ConnectError,
    ContentionError,
    DecisionError,
    DuplicateEventError,
    EncodeError,
    EskitError,
    EventLogError,
    EventStoreError,
    InvalidNameError,
    PayloadTooLargeError,
    PermissionDeniedError,
    ProjectionError,
    ServerStartError,
    StoreTimeoutError,
    StoreUnavailableError,
    StreamNotFoundError,
    UndecodableEventError,
    UnknownEventError,
    UpcastError,
    ValidationError,
)
from .eventlog import LogEvent, read_log
from .events import Event, RecordedEvent
from .export import ExportResult, to_arrow, to_parquet
from .frames import to_dataframe
from .log_import import ImportResult, import_log
from .migrate import MigrationResult, migrate
from .ocel import OcelImportResult, OcelResult, import_ocel, to_ocel
from .privacy import FORGOTTEN as FORGOTTEN  # a constant: outside __all__ (ruff and sorted() order it apart)
from .privacy import Personal
from .projections import Projection, ProjectionStats
from .retry import retry_on_conflict, run_command
from .server import EmbeddedServer
from .snapshots import Snapshot, SnapshotCheck, SnapshotPolicy, Snapshots, SnapshotWarning
from .store import EventStore
from .upcasting import Upcasters

__version__ = "0.1.0"

__all__ = [
    "Aggregate",
    "AggregateCache",
    "AggregateError",
    "AppendConditionError",
    "AuthenticationError",
    "Client",
    "ConcurrencyError",
    "ConnectError",
    "ContentionError",
    "Dashboard",
    "DeadLetters",
    "DecisionError",
    "DuplicateEventError",
    "EmbeddedCluster",
    "EmbeddedServer",
    "EncodeError",
    "EskitError",
    "Event",
    "EventLogError",
    "EventStore",
    "EventStoreError",
    "ExportResult",
    "ImportResult",
    "InvalidNameError",
    "LogEvent",
    "MigrationResult",
    "OcelImportResult",
    "OcelResult",
    "ParkedEvent",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "Personal",
    "Projection",
    "ProjectionError",
    "ProjectionStats",
    "RecordedEvent",
    "ServerInfo",
    "ServerStartError",
    "Snapshot",
    "SnapshotCheck",
    "SnapshotPolicy",
    "SnapshotWarning",
    "Snapshots",
    "StoreTimeoutError",
    "StoreUnavailableError",
    "StreamNotFoundError",
    "UndecodableEventError",
    "UnknownEventError",
    "UpcastError",
    "Upcasters",
    "ValidationError",
    "__version__",
    "analysis",
    "applies",
    "connect",
    "dashboard",
    "dcb",
    "forget",
    "import_log",
    "import_ocel",
    "migrate",
    "read_log",
    "retry_on_conflict",
    "run_command",
    "to_arrow",
    "to_dataframe",
    "to_ocel",
    "to_parquet",
]
