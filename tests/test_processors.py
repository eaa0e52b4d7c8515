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
