"""The queue layer: buffers, the durable spool and the background worker, below every sender.

``segment/``, the publishers and the CLI depend on this package, never the reverse.

- :mod:`~eventtracking.queue.base`: the Protocols: :class:`~eventtracking.queue.base.Buffer`,
  :class:`~eventtracking.queue.base.BatchHandler`, :class:`~eventtracking.queue.base.Shared`.
- :mod:`~eventtracking.queue.worker`: the :class:`~eventtracking.queue.worker.BatchWorker` (the
  thread, take → handle → done, flush, close, fork) and a caller's
  :class:`~eventtracking.queue.worker.Handle`.
- :mod:`~eventtracking.queue.memory`: the memory buffer.
- :mod:`~eventtracking.queue.spool`: the durable buffer, a directory of append-only parts.
- :mod:`~eventtracking.queue.factory`: a worker's buffer from its options.
- :mod:`~eventtracking.queue.stats`: the counters.
"""
