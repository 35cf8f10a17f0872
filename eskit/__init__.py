"""eskit: learn, teach and analyse event sourcing on NATS JetStream.

>>> import eskit
>>> async with await eskit.connect() as client:                                   # doctest: +SKIP
...     orders = await client.event_store("orders")
...     await orders.append("123", [eskit.Event("created", {"customer": "c1"})], expected_position=0)
...     history = await orders.read("123")
"""

from __future__ import annotations

from types import ModuleType

from . import _flat, analysis, dcb, integration, periods
from . import auth as auth  # eskit.auth.least_privilege_config
from . import course as course  # the notebooks' exercise checks (eskit.course.check)
from . import projections as projections  # eskit.projections.Projection
from . import testing as testing  # given / when / then
from ._nats import FastLaneWarning
from .aggregate import Aggregate, applies
from .analysis.eventlog import LogEvent, read_log
from .analysis.export import ExportResult, to_arrow, to_parquet
from .analysis.frames import to_dataframe
from .analysis.log_import import ImportResult, import_log
from .analysis.ocel import OcelImportResult, OcelResult, import_ocel, to_ocel
from .auth import Partner
from .cache import AggregateCache
from .cluster import EmbeddedCluster
from .connection import Client, ServerInfo, connect, forget
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
    ProcessError,
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
from .events import Event, RecordedEvent
from .integration import IntegrationStream, Republisher
from .migrate import MigrationResult, migrate
from .privacy import FORGOTTEN as FORGOTTEN  # a constant: outside __all__ (ruff and sorted() order it apart)
from .privacy import Personal
from .process import (
    Append,
    CommandService,
    ProcessManager,
    ProcessStats,
    Request,
    command_service,
    reacts_to,
)
from .projections.dashboard import Dashboard, dashboard
from .projections.deadletter import DeadLetters, ParkedEvent
from .projections.multistream import MultiStreamProjection
from .projections.projection import Projection, ProjectionStats
from .retry import retry_on_conflict, run_command
from .server import EmbeddedServer
from .snapshots import Snapshot, SnapshotCheck, SnapshotPolicy, Snapshots, SnapshotWarning
from .store import EventStore
from .upcasting import Upcasters

__version__ = "0.1.0"

# The flat layout's module paths (eskit.widgets, eskit.dcb_examples, eskit.frames, ...) keep working, each the
# module it became, imported when first asked for (see eskit/_flat.py). `eskit.projections`, `eskit.analysis`
# and `eskit.dcb` are packages that export what their modules did; `eskit.dashboard` is the function, as before.
_flat.install()


def __getattr__(name: str) -> ModuleType:
    return _flat.attribute(name)

__all__ = [
    "Aggregate",
    "AggregateCache",
    "AggregateError",
    "Append",
    "AppendConditionError",
    "AuthenticationError",
    "Client",
    "CommandService",
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
    "FastLaneWarning",
    "ImportResult",
    "IntegrationStream",
    "InvalidNameError",
    "LogEvent",
    "MigrationResult",
    "MultiStreamProjection",
    "OcelImportResult",
    "OcelResult",
    "ParkedEvent",
    "Partner",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "Personal",
    "ProcessError",
    "ProcessManager",
    "ProcessStats",
    "Projection",
    "ProjectionError",
    "ProjectionStats",
    "RecordedEvent",
    "Republisher",
    "Request",
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
    "command_service",
    "connect",
    "dashboard",
    "dcb",
    "forget",
    "import_log",
    "import_ocel",
    "integration",
    "migrate",
    "periods",
    "reacts_to",
    "read_log",
    "retry_on_conflict",
    "run_command",
    "to_arrow",
    "to_dataframe",
    "to_ocel",
    "to_parquet",
]
