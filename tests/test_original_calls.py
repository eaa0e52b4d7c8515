"""The original's observable calls, as tests across Open edX assert them with mocks.

- Registration errors start with the original's text (``Backend <class> does not have a callable
  "send" method.``, ``Processor <class> is not callable.``); our detail only follows.
- Every log call the original made is made with the same message and arguments: preformatted
  strings stay preformatted, ``%s`` arguments stay arguments.
- A patched ``eventtracking.backends.async_routing.send_event`` (or the event bus's
  ``TRACKING_EVENT_EMITTED.send_event``) is called in ``send()``, on the caller's thread, as the
  original did; unpatched, the background publisher stays the path.
"""

from __future__ import annotations

import re
import threading
from datetime import datetime, timezone
from unittest.mock import call, patch

import pytest
from celery import Celery

from eventtracking.backends.async_routing import AsyncRoutingBackend
from eventtracking.backends.routing import RoutingBackend
from eventtracking.processors.exceptions import (
    EventEmissionExit,
    ImproperlyConfigured,
    NoBackendEnabled,
    NoTransformerImplemented,
)
from eventtracking.processors.regex_filter import RegexFilter

EVENT = {"name": "test_name", "context": {}, "data": {"k": 1}}


class NoSend:
    send = "not callable"


class NotAProcessor:
    pass


def test_registration_errors_start_with_the_originals_text():
    with pytest.raises(ValueError) as backend_error:
        RoutingBackend(backends={"a": NoSend()})
    message = str(backend_error.value)
    assert message.startswith('Backend NoSend does not have a callable "send" method.')
    assert re.match(r'Backend \w+ does not have a callable "send" method.', message)
    assert "'a'" in message  # the registered name follows
    for processor, name in ((NotAProcessor(), "NotAProcessor"), (5, "int"), ("x", "str")):
        with pytest.raises(ValueError) as processor_error:
            RoutingBackend(processors=[processor])
        assert str(processor_error.value).startswith(f"Processor {name} is not callable.")
        assert re.match(r"Processor \w+ is not callable.", str(processor_error.value))


def test_the_routers_log_calls_are_the_originals():
    def broken(event):
        raise KeyError("missing")

    class Refusing:
        def __init__(self, error):
            self.error = error

        def send(self, event):
            raise self.error

    no_transformer, not_enabled = NoTransformerImplemented("no"), NoBackendEnabled("off")
    router = RoutingBackend(
        backends={"1": Refusing(no_transformer), "2": Refusing(not_enabled), "3": Refusing(RuntimeError())},
        processors=[broken],
    )
    with patch("eventtracking.backends.routing.LOG") as log:
        router.send(dict(EVENT))
    assert log.exception.call_args_list == [
        call("Failed to execute processor: %s", str(broken)),
        call('Unable to send edx event "%s" to backend: %s', "test_name", "3"),
    ]
    assert log.info.call_args_list == [
        call(
            '[send_to_backends] No transformer has been implemented for edx event "%s", [%s]',
            "test_name",
            repr(no_transformer),
        ),
        call(
            '[send_to_backends] Failed to send edx event "%s" to "%s" backend. "%s" backend has'
            " not been enabled, [%s]",
            "test_name",
            "2",
            "2",
            repr(not_enabled),
        ),
    ]


def test_a_patched_send_event_is_called_in_send_on_the_callers_thread_with_the_originals_logs():
    backend = AsyncRoutingBackend(backend_name="test")
    threads = []
    with patch("eventtracking.backends.async_routing.send_event") as send_event, patch(
        "eventtracking.backends.async_routing.logger"
    ) as logger:
        send_event.delay.side_effect = lambda *args: threads.append(threading.get_ident())
        backend.send(dict(EVENT))
        send_event.delay.assert_called_once_with("test", EVENT)
    assert threads == [threading.get_ident()]
    assert logger.info.call_args_list == [
        call('Successfully processed event "test_name"'),
        call('Scheduled celery task for event "test_name" processing and routing'),
    ]
    assert backend.stats()["accepted"] == 0  # no publisher was involved


def test_a_dropped_event_is_logged_as_the_original_logs_it():
    def exit_processor(event):
        raise EventEmissionExit()

    backend = AsyncRoutingBackend(backend_name="test", processors=[exit_processor])
    with patch("eventtracking.backends.async_routing.send_event") as send_event, patch(
        "eventtracking.backends.async_routing.logger"
    ) as logger:
        backend.send(dict(EVENT))
    send_event.delay.assert_not_called()
    assert logger.info.call_args_list == [call("[EventEmissionExit] skipping event test_name")]


def test_unpatched_the_background_publisher_stays_the_path():
    app = Celery("original-calls", broker="memory://", set_as_current=True)
    app.set_current()
    backend = AsyncRoutingBackend(backend_name="test")
    try:
        backend.send(dict(EVENT))
        assert backend.flush(timeout=30)
        stats = backend.stats()
        assert stats["accepted"] == 1 and stats["published"] == 1  # the publisher published it
    finally:
        backend.close(timeout=5)
        app.close()


def test_a_patched_event_bus_signal_is_sent_in_send_with_the_originals_log():
    from django.conf import settings

    if not settings.configured:
        settings.configure()
    from django.test.utils import override_settings

    from eventtracking.backends.event_bus import EventBusRoutingBackend

    backend = EventBusRoutingBackend()
    event = {"name": "sample_event", "data": {"foo": "bar"}, "context": {"baz": "qux"},
             "timestamp": datetime(2020, 1, 1, 12, 12, 12, tzinfo=timezone.utc)}
    threads = []
    on = override_settings(SEND_TRACKING_EVENT_EMITTED_SIGNAL=True, EVENT_BUS_TRACKING_LOGS=["sample_event"])
    with on, patch("eventtracking.backends.event_bus.TRACKING_EVENT_EMITTED.send_event") as send, patch(
        "eventtracking.backends.event_bus.logger"
    ) as logger:
        send.side_effect = lambda **kwargs: threads.append(threading.get_ident())
        backend.send(event)
        send.assert_called_once()
        assert send.call_args.kwargs["tracking_log"].name == "sample_event"
        assert send.call_args.kwargs["tracking_log"].data == '{"foo": "bar"}'
    assert threads == [threading.get_ident()]
    assert logger.info.call_args_list == [call("Tracking log sample_event emitted to the event bus.")]
    assert backend.stats()["accepted"] == 0  # no publisher was involved


def test_regex_filter_logs_the_originals_errors_before_raising():
    with patch("eventtracking.processors.regex_filter.logger") as logger, pytest.raises(ImproperlyConfigured):
        RegexFilter(filter_type="sometimes", regular_expressions=[])
    assert logger.error.call_args_list == [
        call("Unsupported filter type sometimes is set. Allowed types are only allowlist and blocklist.")
    ]
    with patch("eventtracking.processors.regex_filter.logger") as logger:
        with pytest.raises(ImproperlyConfigured) as error:
            RegexFilter(regular_expressions=["ok", "[", "(x"])
    assert logger.error.call_args_list == [
        call(
            "The following invalid regular expressions are configured"
            "for setting \"ASYNC_ROUTING_BACKENDS_FILTERS\": ['[', '(x']"
        )
    ]
    assert str(error.value).startswith("Invalid Regular Expressions are configured. '['")
