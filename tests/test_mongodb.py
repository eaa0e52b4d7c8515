"""
MongoBackend against PyMongo 4's API. No MongoDB server can be installed on these machines, so:
the client the backend builds is a real pymongo.MongoClient, inspected for the options it got
(credentials, write concern, time zones, seeds); index creation and inserts run on mongomock's
collection (an in-memory implementation of PyMongo's collection API); PyMongo's own failure
path runs against a port where no server listens. What a real server would add (authentication
really succeeding, the indexes built on disk, w=0 inserts arriving) is not proven here.
"""

from __future__ import annotations

import datetime
import logging
import socket
import subprocess
from pathlib import Path

import mongomock
import pymongo
import pytest
from pymongo.write_concern import WriteConcern

from eventtracking.backends import mongodb
from eventtracking.backends.mongodb import MongoBackend
from eventtracking.loader import load
from eventtracking.tracker import Tracker

ORIGINAL = Path(__file__).resolve().parent.parent / ".envs" / "original" / "bin" / "python"
FAST = {"serverSelectionTimeoutMS": 50, "connectTimeoutMS": 50}  # nothing listens: fail fast


@pytest.fixture
def closed_port():
    """A loopback port where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def backend_without_server(closed_port, caplog):
    backends = []

    def build(**options):
        with caplog.at_level(logging.WARNING, logger="eventtracking.backends.mongodb"):
            backend = MongoBackend(host="127.0.0.1", port=closed_port, extra=dict(FAST), **options)
        backends.append(backend)
        return backend

    yield build
    for backend in backends:
        backend.connection.close()


def credentials(backend):
    return backend.connection.options.pool_options._credentials  # PyMongo keeps them here


def test_the_client_gets_the_original_options_and_credentials(backend_without_server, closed_port):
    backend = backend_without_server(user="tracker", password="s3cret:@/", database="edxapp")
    assert isinstance(backend.connection, pymongo.MongoClient)
    assert backend.connection.options.write_concern == WriteConcern(w=0)
    assert backend.connection.options.codec_options.tz_aware is True
    assert set(backend.connection.topology_description.server_descriptions()) == {("127.0.0.1", closed_port)}
    assert (backend.database.name, backend.collection.name) == ("edxapp", "events")
    creds = credentials(backend)
    assert (creds.username, creds.password, creds.source) == ("tracker", "s3cret:@/", "edxapp")


def test_no_credentials_without_user_or_password_and_extra_is_not_mutated(backend_without_server):
    extra = {"w": 1, "tz_aware": False, **FAST}
    backend = MongoBackend(host="127.0.0.1", port=1, extra=extra)
    try:
        assert credentials(backend) is None
        assert backend.connection.options.write_concern == WriteConcern(w=1)
        assert backend.connection.options.codec_options.tz_aware is False
        assert backend.database.name == "eventtracking" and backend.collection.name == "events"
        assert extra == {"w": 1, "tz_aware": False, **FAST}
    finally:
        backend.connection.close()


def test_no_server_at_startup_is_a_warning_and_send_never_raises(backend_without_server, caplog):
    backend = backend_without_server()
    assert "could not create its indexes on eventtracking.events (ServerSelectionTimeoutError" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="eventtracking.backends.mongodb"):
        backend.send({"name": "x", "data": {}})
    [record] = caplog.records
    assert record.getMessage() == "Error inserting to MongoDB event tracker backend"
    assert isinstance(record.exc_info[1], pymongo.errors.PyMongoError)


@pytest.fixture
def in_memory(monkeypatch):
    """MongoClient replaced by mongomock's, which keeps what is inserted and the indexes made."""
    monkeypatch.setattr(mongodb, "MongoClient", mongomock.MongoClient)


def test_indexes_and_inserts_through_the_tracker(in_memory):
    spec = {"ENGINE": "eventtracking.backends.mongodb.MongoBackend", "OPTIONS": {"collection": "log"}}
    backend = load(spec)
    assert isinstance(backend, MongoBackend)
    indexes = backend.collection.index_information()
    assert indexes["time_-1"]["key"] == [("time", pymongo.DESCENDING)]
    assert indexes["name_1"]["key"] == [("name", pymongo.ASCENDING)]

    Tracker({"mongo": backend}).emit("edx.course.enrollment.activated", {"course_id": "c"})
    [stored] = backend.collection.find({"name": "edx.course.enrollment.activated"})
    assert stored["data"] == {"course_id": "c"}
    assert isinstance(stored["timestamp"], datetime.datetime)


def test_an_unencodable_event_is_logged_not_raised(in_memory, caplog):
    backend = MongoBackend()
    with caplog.at_level(logging.ERROR, logger="eventtracking.backends.mongodb"):
        backend.send({"name": "x", "data": {"value": object()}})
    assert "Error inserting to MongoDB event tracker backend" in caplog.text
    assert backend.collection.count_documents({}) == 0


def test_the_original_fails_with_credentials_on_pymongo_4(tmp_path):
    assert ORIGINAL.exists(), f"{ORIGINAL} is missing: `make test` builds it"
    script = (
        "from eventtracking.backends.mongodb import MongoBackend\n"
        "MongoBackend(port=1, user='u', password='p', extra={'connect': False})\n"
    )
    result = subprocess.run(
        [str(ORIGINAL), "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "authenticate" in result.stderr  # Database.authenticate, removed in PyMongo 4
