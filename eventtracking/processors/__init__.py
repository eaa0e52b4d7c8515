"""
Processors: callables that see every event before the backends do.

A processor is called as ``processor(event)``. It may return a new event, return
``None`` to keep the (possibly mutated in place) event, or raise
``eventtracking.processors.exceptions.EventEmissionExit`` to drop the event.

The filters (``whitelist.NameWhitelistProcessor``, ``regex_filter.RegexFilter``) also take a
list of events and return the list of those kept, and they fail closed: an event they cannot
decide on is dropped and counted, never let through (see :mod:`eventtracking.processors.filtering`).
"""
