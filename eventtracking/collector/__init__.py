"""A local Segment-compatible collector: the project's test peer and demo server.

``Collector`` serves Segment's HTTP Tracking API on loopback and stores every accepted
message in SQLite; ``collector.faults`` injects failures.  See
:mod:`eventtracking.collector.server` for the wire contract.
"""

from __future__ import annotations

from eventtracking.collector.faults import Fault, FaultPlan
from eventtracking.collector.server import MAX_BODY_BYTES, MAX_MESSAGE_BYTES, Collector
from eventtracking.collector.store import MessageStore

__all__ = ["Collector", "Fault", "FaultPlan", "MessageStore", "MAX_BODY_BYTES", "MAX_MESSAGE_BYTES"]
