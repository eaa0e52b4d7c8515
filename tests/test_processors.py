"""Tests for the whitelist and regex filter processors."""

from __future__ import annotations

import pytest

from eventtracking.processors.exceptions import EventEmissionExit, ImproperlyConfigured
from eventtracking.processors.regex_filter import ALLOWLIST, BLOCKLIST, RegexFilter
from eventtracking.processors.whitelist import NameWhitelistProcessor


def event(name):
    return {"name": name, "data": {}, "context": {}}


def test_improperly_configured_is_a_value_error():
    assert issubclass(ImproperlyConfigured, ValueError)
    assert not issubclass(EventEmissionExit, ValueError)


# --- NameWhitelistProcessor ---------------------------------------------------


@pytest.mark.parametrize(
    "whitelist", [["a.b", "c.d"], ("a.b", "c.d"), {"a.b", "c.d"}, frozenset({"a.b", "c.d"})]
)
def test_whitelist_passes_listed_names(whitelist):
    processor = NameWhitelistProcessor(whitelist=whitelist)
    e = event("c.d")
    assert processor(e) is e


def test_whitelist_drops_unlisted_names():
    processor = NameWhitelistProcessor(whitelist=["a.b"])
    with pytest.raises(EventEmissionExit):
        processor(event("a.bc"))
    with pytest.raises(EventEmissionExit):
        processor(event("A.B"))


def test_whitelist_empty_drops_everything():
    with pytest.raises(EventEmissionExit):
        NameWhitelistProcessor(whitelist=[])(event("anything"))


@pytest.mark.parametrize("bad", ["a.b", b"a.b", None, 42])
def test_whitelist_bad_values_are_type_errors(bad):
    with pytest.raises(TypeError, match="whitelist"):
        NameWhitelistProcessor(whitelist=bad)


def test_whitelist_missing_is_type_error():
    with pytest.raises(TypeError, match="whitelist"):
        NameWhitelistProcessor()


def test_whitelist_ignores_extra_options():
    processor = NameWhitelistProcessor(whitelist=["x"], unused_option=True)
    assert processor.whitelist == frozenset({"x"})


# --- RegexFilter --------------------------------------------------------------


def test_allowlist_keeps_matches_and_drops_others():
    processor = RegexFilter(
        filter_type=ALLOWLIST, regular_expressions=[r"edx\.course\.", r"^edx\.ui\.video$"]
    )
    e = event("edx.course.enrollment.activated")
    assert processor(e) is e
    assert processor(event("edx.ui.video")) is not None
    with pytest.raises(EventEmissionExit):
        processor(event("edx.ui.video.play"))
    with pytest.raises(EventEmissionExit):
        processor(event("other.edx.course.x"))  # match is anchored at the start


def test_blocklist_drops_matches_and_keeps_others():
    processor = RegexFilter(filter_type=BLOCKLIST, regular_expressions=[r"edx\.bi\.", r"^heartbeat$"])
    with pytest.raises(EventEmissionExit):
        processor(event("edx.bi.user.login"))
    with pytest.raises(EventEmissionExit):
        processor(event("heartbeat"))
    e = event("edx.course.enrollment.activated")
    assert processor(e) is e


def test_default_filter_type_is_allowlist():
    processor = RegexFilter(regular_expressions=["keep"])
    assert processor.filter_type == "allowlist"
    with pytest.raises(EventEmissionExit):
        processor(event("drop"))


def test_empty_expressions():
    with pytest.raises(EventEmissionExit):
        RegexFilter(filter_type="allowlist", regular_expressions=[])(event("x"))
    assert RegexFilter(filter_type="blocklist")(event("x"))["name"] == "x"


def test_non_string_name_never_matches():
    with pytest.raises(EventEmissionExit):
        RegexFilter(filter_type="allowlist", regular_expressions=[".*"])(event(None))
    assert RegexFilter(filter_type="blocklist", regular_expressions=[".*"])(event(None))["name"] is None


def test_invalid_regex_is_configuration_error_naming_it():
    with pytest.raises(ImproperlyConfigured) as excinfo:
        RegexFilter(filter_type="allowlist", regular_expressions=["fine", "broken[("])
    assert "broken[(" in str(excinfo.value)
    assert isinstance(excinfo.value, ValueError)


@pytest.mark.parametrize("filter_type", ["whitelist", "ALLOWLIST", "", None])
def test_invalid_filter_type_is_configuration_error_naming_it(filter_type):
    with pytest.raises(ImproperlyConfigured) as excinfo:
        RegexFilter(filter_type=filter_type, regular_expressions=["x"])
    assert repr(filter_type) in str(excinfo.value)


def test_single_string_expressions_rejected():
    with pytest.raises(ImproperlyConfigured, match="list"):
        RegexFilter(filter_type="allowlist", regular_expressions="edx.*")


# --- batches and failing closed (eventtracking.processors.filtering) -----------------------


def batch(*names):
    return [event(name) for name in names]


def test_whitelist_filters_a_list_as_the_original_does():
    processor = NameWhitelistProcessor(whitelist=["a", "c"])
    given = batch("a", "b", "c", "b")
    assert processor(given) == batch("a", "c")
    assert processor(batch("b")) == []  # an empty list, not an exception (as the original)
    assert len(given) == 4  # a new list: the caller's batch is left as it was


@pytest.mark.parametrize(
    "filter_type,expected", [(ALLOWLIST, ["edx.course.x", "edx.course.y"]), (BLOCKLIST, ["other"])]
)
def test_regex_filter_filters_a_list(filter_type, expected):
    processor = RegexFilter(filter_type=filter_type, regular_expressions=[r"edx\.course\."])
    assert [e["name"] for e in processor(batch("edx.course.x", "other", "edx.course.y"))] == expected


@pytest.mark.parametrize(
    "processor",
    [
        NameWhitelistProcessor(whitelist=["keep"]),
        RegexFilter(filter_type=BLOCKLIST, regular_expressions=["drop"]),
    ],
    ids=["whitelist", "blocklist"],
)
def test_an_undecidable_event_is_dropped_counted_and_warned_once(processor, caplog):
    mixed = [event("keep"), "not an event", None, event("keep"), ["x"]]
    with caplog.at_level("DEBUG", logger="eventtracking.processors.filtering"):
        assert processor(mixed) == [event("keep"), event("keep")]
        with pytest.raises(EventEmissionExit):
            processor("not an event either")
    assert processor.stats()["undecided"] == {
        "the event is a str, not a mapping": 2,
        "the event is a NoneType, not a mapping": 1,
        "the event is a list, not a mapping": 1,
    }
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 3  # once per reason, then debug
    assert "cannot decide (the event is a str, not a mapping)" in warnings[0].getMessage()


def test_an_unhashable_name_is_dropped_not_let_through():
    processor = NameWhitelistProcessor(whitelist=["keep"])
    with pytest.raises(EventEmissionExit):
        processor({"name": ["keep"]})
    assert processor.stats()["undecided"] == {"TypeError": 1}


def test_a_subclass_s_keeps_decides_on_plain_events_too():
    class ByPrefix(NameWhitelistProcessor):
        def keeps(self, event):
            return event.get("name", "").startswith("edx.")

    processor = ByPrefix(whitelist=[])
    event = {"name": "edx.course.enrollment.activated"}
    assert processor(event) is event
    with pytest.raises(EventEmissionExit):
        processor({"name": "other"})


def test_a_router_filters_a_batch_and_drops_a_failing_filter_s_event():
    from eventtracking.backends.routing import RoutingBackend

    class Recorder:
        events: list = []

        def send(self, event):
            Recorder.events.append(event)

    class BrokenFilter(NameWhitelistProcessor):
        def __call__(self, event):
            raise RuntimeError("bug in a filter")

    def broken_enricher(event):
        raise RuntimeError("bug in a processor that is not a filter")

    whitelisted = RoutingBackend(
        backends={"r": Recorder()}, processors=[NameWhitelistProcessor(whitelist=["a"])]
    )
    whitelisted.send(batch("a", "secret", "a"))
    assert Recorder.events == [batch("a", "a")]  # the batch no longer goes on unfiltered

    Recorder.events.clear()
    RoutingBackend(backends={"r": Recorder()}, processors=[BrokenFilter(whitelist=["a"])]).send(event("a"))
    assert Recorder.events == []  # a failing filter drops, it does not let through
    RoutingBackend(backends={"r": Recorder()}, processors=[broken_enricher]).send(event("a"))
    assert [e["name"] for e in Recorder.events] == ["a"]  # other processors are skipped, as before
