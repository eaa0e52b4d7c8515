"""
Backend that stores each event as one document in a MongoDB collection (PyMongo 4).

The original's options and defaults. The difference is authentication: the original called
``Database.authenticate``, which PyMongo 4 removed, so it failed whenever a user or password was
set; here the credentials go to ``MongoClient`` (``username``, ``password``, and ``authSource``
the configured database, which is where ``authenticate`` logged in).

Needs pymongo (the ``mongodb`` extra).
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

import pymongo
from bson.errors import BSONError
from pymongo import MongoClient
from pymongo.errors import PyMongoError

log = logging.getLogger(__name__)


class MongoBackend:
    """
    Insert every event into ``database.collection`` with ``insert_one``.

    Options (the original's): `host` (``"localhost"``, or a ``mongodb://`` URI), `port` (27017),
    `user` and `password` (none), `database` (``"eventtracking"``), `collection` (``"events"``)
    and `extra`, more keyword arguments for ``pymongo.MongoClient``. As in the original, writes
    are not acknowledged by default (``w=0``: an insert does not wait for the server) and dates
    are read back timezone-aware (``tz_aware=True``); `extra` may change both. Other options are
    ignored, as the original's ``**kwargs`` constructor did.

    The indexes the original creates (``time`` descending, ``name``) are created at construction;
    if the server cannot be reached then, a warning says so and the backend still starts (the
    original raised, which stopped the application). PyMongo waits for a server up to its
    ``serverSelectionTimeoutMS`` (30 s by default; set it in `extra`).

    ``send`` logs and swallows PyMongo and BSON errors (the event is lost, as with the original);
    PyMongo reconnects by itself for the next event. It adds ``_id`` to the event it is given,
    which is that backend's own copy when called by a router.
    """

    def __init__(
        self,
        host: str = "localhost",
        port: int = 27017,
        user: str = "",
        password: str = "",
        database: str = "eventtracking",
        collection: str = "events",
        extra: Mapping[str, Any] | None = None,
        **_kwargs: Any,
    ) -> None:
        options = dict(extra or {})  # the original wrote its defaults into the caller's dict
        options.setdefault("w", 0)
        options.setdefault("tz_aware", True)
        if user or password:
            options.setdefault("username", user)
            options.setdefault("password", password)
            options.setdefault("authSource", database)
        self.connection: MongoClient = MongoClient(host=host, port=port, **options)
        self.database = self.connection[database]
        self.collection = self.database[collection]
        self._create_indexes()

    def _create_indexes(self) -> None:
        """Index ``time`` (descending) and ``name``, as the original does.

        The collection may be locked while an index is built on a large collection: create them
        ahead of time on such a site (creating an index that exists is a no-op)."""
        try:
            self.collection.create_index([("time", pymongo.DESCENDING)])
            self.collection.create_index("name")
        except PyMongoError as error:
            log.warning(
                "MongoBackend could not create its indexes on %s.%s (%s: %s); starting without them",
                self.database.name,
                self.collection.name,
                type(error).__name__,
                error,
            )

    def send(self, event: Any) -> None:
        """Insert `event` into the collection; log PyMongo and BSON errors instead of raising."""
        try:
            self.collection.insert_one(event)
        except (PyMongoError, BSONError):
            # The event is lost (a connection error, a value BSON cannot encode...); PyMongo
            # reconnects and authenticates again by itself for the next event.
            log.exception("Error inserting to MongoDB event tracker backend")
