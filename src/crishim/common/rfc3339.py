"""RFC 3339 timestamps with nanoseconds (Docker's and the CRI log format's) as Unix ns."""

from __future__ import annotations

import datetime
import re

_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?")


def to_ns(timestamp: str | None) -> int:
    """Unix nanoseconds; 0 for Go's zero time (0001-01-01), empty or unreadable input."""
    if not timestamp or timestamp.startswith("0001-01-01"):
        return 0
    match = _RFC3339.fullmatch(timestamp)
    if match is None:
        return 0
    whole, frac, tz = match.groups()
    offset = "+00:00" if tz in (None, "Z") else tz
    seconds = int(datetime.datetime.fromisoformat(whole + offset).timestamp())
    return seconds * 1_000_000_000 + int((frac or "0").ljust(9, "0")[:9])


def from_ns(ns: int) -> str:
    """Unix nanoseconds as RFC 3339 UTC with nanoseconds, the form to_ns reads back."""
    seconds, frac = divmod(ns, 1_000_000_000)
    whole = datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{whole}.{frac:09d}Z"
