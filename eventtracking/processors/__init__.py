"""
Processors: callables that see every event before the backends do.

A processor is called as ``processor(event)``. It may return a new event, return
``None`` to keep the (possibly mutated in place) event, or raise
``eventtracking.processors.exceptions.EventEmissionExit`` to drop the event.
"""
