"""Read event logs (CSV and XES files) from process mining into plain :class:`LogEvent` rows.

>>> events = read_log("receipt.csv")                                          # doctest: +SKIP
>>> events[0].case, events[0].activity                                       # doctest: +SKIP
('case-10011', 'Confirmation of receipt')

Column names follow the XES / pm4py convention (``case:concept:name``, ``concept:name``,
``time:timestamp``); pass ``case=``, ``activity=``, ``timestamp=`` for other names (on the command line:
``--case``, ``--activity``, ``--timestamp``). A CSV's delimiter (``,`` ``;`` tab ``|``) and quoting are
sniffed from its first lines. The whole file is read
and checked first: a malformed file raises :class:`~eskit.errors.EventLogError` naming the line (CSV) or the
element (XES), before anything is stored. Timestamps without a UTC offset are taken as UTC.

Case ids and activity names are free text ("T02 Check confirmation of receipt"); :func:`encode_token` maps
them reversibly onto subject tokens ("T02%20Check%20confirmation%20of%20receipt") and :func:`decode_token`
gives the original back.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import EventLogError
from ..events import decode_token as decode_token  # subject tokens live with subjects (eskit.events)
from ..events import encode_token as encode_token

CASE, ACTIVITY, TIMESTAMP = "case:concept:name", "concept:name", "time:timestamp"
_INT = re.compile(r"-?(0|[1-9][0-9]*)")


@dataclass(frozen=True, slots=True)
class LogEvent:
    """One row of an event log: which case, which activity, when, and every other attribute."""

    case: str
    activity: str
    timestamp: datetime
    attributes: dict[str, Any] = field(default_factory=dict)
    where: str = ""  # "line 12" or "trace #3, event #2": for error messages

    def event_id(self, ordinal: int) -> str:
        """A stable id from the row's content and its ordinal within the case (re-imports dedup)."""
        content = [self.case, self.activity, self.timestamp.isoformat(), self.attributes, ordinal]
        text = json.dumps(content, sort_keys=True, ensure_ascii=False, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:32]


def parse_timestamp(value: str, where: str) -> datetime:
    """An ISO 8601 timestamp as a tz-aware datetime (no offset: UTC); a clear error otherwise."""
    text = value.strip()
    if "." in text:  # Python takes at most 6 fractional digits
        head, _, frac = text.partition(".")
        digits = len(frac) - len(frac.lstrip("0123456789"))
        text = f"{head}.{frac[: min(digits, 6)]}{frac[digits:]}"
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise EventLogError(f"{where}: timestamp {value!r} is not ISO 8601 (e.g. 2011-10-11 13:45:40+02:00)") from None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def typed(value: str) -> Any:
    """A CSV cell as int or float when that loses nothing ('50' -> 50, '007' stays '007')."""
    if _INT.fullmatch(value):
        return int(value)
    try:
        number = float(value)
    except ValueError:
        return value
    return number if repr(number) == value else value


def read_log(
    path: str | Path,
    *,
    format: str | None = None,
    case: str = CASE,
    activity: str = ACTIVITY,
    timestamp: str = TIMESTAMP,
) -> list[LogEvent]:
    """Every event of a CSV or XES file (by extension, or ``format="csv"|"xes"``), checked."""
    path = Path(path)
    kind = (format or path.suffix.lstrip(".")).lower()
    if not path.is_file():
        raise EventLogError(f"event log {path} not found; give the path of a .csv or .xes file")
    if kind == "csv":
        return read_csv(path, case=case, activity=activity, timestamp=timestamp)
    if kind == "xes":
        return read_xes(path, case=case, activity=activity, timestamp=timestamp)
    raise EventLogError(f"{path}: unknown log format {kind!r}; use a .csv or .xes file, or pass format='csv'")


def read_csv(
    path: str | Path,
    *,
    case: str = CASE,
    activity: str = ACTIVITY,
    timestamp: str = TIMESTAMP,
    delimiter: str | None = None,
) -> list[LogEvent]:
    """Events of a CSV log with a header line; empty cells are left out of the attributes.

    ``delimiter=None`` sniffs the dialect (delimiter and quoting) from the first lines.
    """
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            dialect = _dialect(f.read(_SNIFF_BYTES)) if delimiter is None else None
            f.seek(0)
            reader = csv.reader(f, dialect) if dialect else csv.reader(f, delimiter=delimiter or ",")
            return list(_csv_rows(reader, str(path), case, activity, timestamp))
    except UnicodeDecodeError as exc:
        raise EventLogError(f"{path}: not UTF-8 text (byte {exc.start}); save the log as UTF-8") from exc
    except csv.Error as exc:
        raise EventLogError(f"{path}: malformed CSV: {exc}") from exc


_SNIFF_BYTES = 64 * 1024


def _dialect(sample: str) -> type[csv.Dialect] | None:
    """The CSV dialect of a sample (None: too little to tell, read as plain commas)."""
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        return None


def _csv_rows(reader: Any, name: str, case: str, activity: str, timestamp: str) -> Iterator[LogEvent]:
    header = next(reader, None)
    if not header:
        raise EventLogError(f"{name}: line 1: no header line; the first line must name the columns")
    for column in (case, activity, timestamp):
        if column not in header:
            raise EventLogError(
                f"{name}: line 1: no column {column!r} (columns: {', '.join(header)}); name the log's columns "
                "with --case/--activity/--timestamp (python -m eskit import) or case=, activity=, timestamp="
            )
    named = (case, activity, timestamp)
    keep = [i for i, h in enumerate(header) if h and not h.startswith("Unnamed:") and h not in named]
    ic, ia, it = header.index(case), header.index(activity), header.index(timestamp)
    for row in reader:
        if not row:
            continue
        where = f"{name}: line {reader.line_num}"
        if len(row) != len(header):
            raise EventLogError(f"{where}: {len(row)} fields, but the header has {len(header)}; fix that row")
        for i, what in ((ic, "case id"), (ia, "activity")):
            if not row[i].strip():
                raise EventLogError(f"{where}: empty {what} (column {header[i]!r}); every event needs one")
        stamp = parse_timestamp(row[it], where)
        attributes = {header[i]: typed(row[i]) for i in keep if row[i] != ""}
        yield LogEvent(row[ic], row[ia], stamp, attributes, where)


_VALUE_TAGS = {"string", "date", "int", "float", "boolean", "id"}


def _tag(element: ET.Element) -> str:
    return element.tag.rpartition("}")[2]


def _attribute(element: ET.Element, where: str) -> tuple[str, Any]:
    tag, key, value = _tag(element), element.get("key"), element.get("value")
    if key is None or value is None:
        raise EventLogError(f"{where}: <{tag}> attribute without key= or value=; give both")
    try:
        if tag == "int":
            return key, int(value)
        if tag == "float":
            return key, float(value)
    except ValueError:
        raise EventLogError(f"{where}: <{tag} key={key!r}> has value {value!r}, not a number") from None
    if tag == "boolean":
        if value.lower() not in ("true", "false"):
            raise EventLogError(f"{where}: <boolean key={key!r}> has value {value!r}; use true or false")
        return key, value.lower() == "true"
    return key, value


def _attributes(element: ET.Element, where: str) -> dict[str, Any]:
    return dict(_attribute(child, where) for child in element if _tag(child) in _VALUE_TAGS)


def read_xes(
    path: str | Path, *, case: str = CASE, activity: str = ACTIVITY, timestamp: str = TIMESTAMP
) -> list[LogEvent]:
    """Events of an XES log, read with ``xml.etree.ElementTree.iterparse``; trace attributes -> ``case:*``."""
    events: list[LogEvent] = []
    pending: list[tuple[dict[str, Any], str]] = []
    traces = 0
    try:
        for _, element in ET.iterparse(path, events=("end",)):
            tag = _tag(element)
            if tag == "event":
                where = f"{path}: trace #{traces + 1}, event #{len(pending) + 1}"
                pending.append((_attributes(element, where), where))
                element.clear()
            elif tag == "trace":
                traces += 1
                events.extend(_trace_events(element, pending, f"{path}: trace #{traces}", case, activity, timestamp))
                pending = []
                element.clear()
    except ET.ParseError as exc:
        line, column = exc.position
        raise EventLogError(f"{path}: line {line}, column {column}: not well-formed XML ({exc.msg})") from exc
    return events


def _trace_events(
    trace: ET.Element,
    pending: list[tuple[dict[str, Any], str]],
    where: str,
    case: str,
    activity: str,
    timestamp: str,
) -> Iterator[LogEvent]:
    attributes = _attributes(trace, where)
    case_id = attributes.pop(ACTIVITY if case == CASE else case, None)  # XES names a trace by concept:name
    if not case_id:
        raise EventLogError(f'{where}: <trace> has no <string key="concept:name"> (its case id); add one')
    case_attributes = {f"case:{k}": v for k, v in attributes.items()}
    for values, event_where in pending:
        name, stamp = values.pop(activity, None), values.pop(timestamp, None)
        if not name:
            raise EventLogError(f"{event_where}: <event> has no {activity!r} attribute (its activity); add one")
        if not stamp:
            raise EventLogError(f"{event_where}: <event> has no <date key={timestamp!r}>; add one")
        yield LogEvent(
            str(case_id),
            str(name),
            parse_timestamp(str(stamp), event_where),
            {**case_attributes, **values},
            event_where,
        )
