"""The queue layer: buffers, the durable spool and the background worker, below every sender.

``segment/``, the publishers and the CLI depend on this package, never the reverse.

- :mod:`~eventtracking.queue.base`: the :class:`~eventtracking.queue.base.Buffer` Protocol.
- :mod:`~eventtracking.queue.memory`: the memory buffer.
- :mod:`~eventtracking.queue.spool`: the durable buffer, a directory of append-only parts.
- :mod:`~eventtracking.queue.factory`: a worker's buffer from its options.
- :mod:`~eventtracking.queue.stats`: the counters.
"""
