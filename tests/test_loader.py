"""Tests for eventtracking.loader: building objects from ENGINE/OPTIONS trees."""

from __future__ import annotations

import copy

import pytest

from eventtracking.backends.routing import RoutingBackend
from eventtracking.loader import import_engine, load
from eventtracking.processors.exceptions import ImproperlyConfigured
from eventtracking.processors.whitelist import NameWhitelistProcessor

HERE = __name__  # ENGINE paths to the helper classes below
CONSTRUCTED = []


class Thing:
    def __init__(self, **options):
        self.options = options
        CONSTRUCTED.append(self)


class Backend:
    def __init__(self, label=None):
        self.label = label
        self.events = []

    def send(self, event):
        self.events.append(event)


class Strict:
    def __init__(self, required):
        self.required = required


NOT_CALLABLE = 42


@pytest.fixture(autouse=True)
def _reset_constructed():
    CONSTRUCTED.clear()


def test_plain_values_pass_through():
    tree = {"a": 1, "b": ["x", {"c": None}], "d": "ENGINE"}
    assert load(tree) == tree
    assert load(5) == 5
    assert load("text") == "text"


def test_single_engine_with_options():
    obj = load({"ENGINE": f"{HERE}.Thing", "OPTIONS": {"size": 10, "foo": "bar"}})
    assert isinstance(obj, Thing)
    assert obj.options == {"size": 10, "foo": "bar"}


def test_engine_without_options():
    obj = load({"ENGINE": f"{HERE}.Thing"})
    assert isinstance(obj, Thing) and obj.options == {}


def test_nested_dicts_and_lists():
    tree = {
        "a": {
            "b": {"first": {"ENGINE": f"{HERE}.Thing", "OPTIONS": {"size": 10}}},
            "c": [
                {
                    "ENGINE": f"{HERE}.Thing",
                    "OPTIONS": {
                        "more": {"d": {"ENGINE": f"{HERE}.Thing"}},
                        "items": [1, {"ENGINE": f"{HERE}.Thing", "OPTIONS": {"deep": True}}],
                    },
                },
                "plain",
            ],
        }
    }
    original = copy.deepcopy(tree)
    root = load(tree)
    assert tree == original, "the settings tree must not be modified"
    first = root["a"]["b"]["first"]
    assert isinstance(first, Thing) and first.options == {"size": 10}
    second = root["a"]["c"][0]
    assert isinstance(second, Thing)
    assert isinstance(second.options["more"]["d"], Thing)
    assert second.options["items"][0] == 1
    assert second.options["items"][1].options == {"deep": True}
    assert root["a"]["c"][1] == "plain"
    # Inner objects are built before the object that receives them.
    assert CONSTRUCTED.index(second) > CONSTRUCTED.index(second.options["more"]["d"])


def test_tuples_are_loaded_as_lists():
    result = load(({"ENGINE": f"{HERE}.Thing"}, 2))
    assert isinstance(result, list)
    assert isinstance(result[0], Thing) and result[1] == 2


def test_real_routing_tree():
    router = load(
        {
            "ENGINE": "eventtracking.backends.routing.RoutingBackend",
            "OPTIONS": {
                "backends": {"rec": {"ENGINE": f"{HERE}.Backend", "OPTIONS": {"label": "r"}}},
                "processors": [
                    {
                        "ENGINE": "eventtracking.processors.whitelist.NameWhitelistProcessor",
                        "OPTIONS": {"whitelist": ["keep"]},
                    }
                ],
            },
        }
    )
    assert isinstance(router, RoutingBackend)
    assert isinstance(router.processors[0], NameWhitelistProcessor)
    router.send({"name": "keep", "data": {}})
    router.send({"name": "drop", "data": {}})
    assert [e["name"] for e in router.backends["rec"].events] == ["keep"]


@pytest.mark.parametrize(
    ("engine", "reason"),
    [
        ("no_such_package.module.Backend", "No module named 'no_such_package'"),
        (f"{HERE}.DoesNotExist", "has no attribute 'DoesNotExist'"),
        ("BarBackend", "expected 'package.module.ClassName'"),
        ("", "dotted path"),
        ("trailing.dot.", "expected"),
        (f"{HERE}.NOT_CALLABLE", "not callable"),
        (None, "dotted path"),
    ],
)
def test_unknown_engine_error_names_engine(engine, reason):
    with pytest.raises(ImproperlyConfigured) as excinfo:
        load({"backends": {"x": {"ENGINE": engine}}})
    message = str(excinfo.value)
    assert message.startswith(f"Cannot load ENGINE {engine!r}")
    assert reason in message
    assert isinstance(excinfo.value, ValueError)  # the original raised ValueError


def test_bad_outer_engine_fails_before_inner_objects_are_built():
    with pytest.raises(ImproperlyConfigured):
        load({"ENGINE": "missing.module.Cls", "OPTIONS": {"inner": {"ENGINE": f"{HERE}.Thing"}}})
    assert CONSTRUCTED == []


def test_options_must_be_a_dict():
    with pytest.raises(ImproperlyConfigured, match="OPTIONS"):
        load({"ENGINE": f"{HERE}.Thing", "OPTIONS": ["not", "a", "dict"]})


def test_constructor_errors_propagate_unchanged():
    with pytest.raises(TypeError):
        load({"ENGINE": f"{HERE}.Strict", "OPTIONS": {"wrong": 1}})
    with pytest.raises(TypeError, match="whitelist"):
        load(
            {
                "ENGINE": "eventtracking.processors.whitelist.NameWhitelistProcessor",
                "OPTIONS": {"whitelist": "x"},
            }
        )


def test_import_engine_returns_class():
    assert import_engine("eventtracking.backends.routing.RoutingBackend") is RoutingBackend


@pytest.mark.parametrize(
    "engine,blocked,extra",
    [
        ("eventtracking.backends.async_routing.AsyncRoutingBackend", "celery", "celery"),
        ("eventtracking.backends.event_bus.EventBusRoutingBackend", "openedx_events", "eventbus"),
        ("eventtracking.backends.mongodb.MongoBackend", "pymongo", "mongodb"),
    ],
)
def test_a_missing_optional_dependency_names_the_extra(monkeypatch, engine, blocked, extra):
    import sys

    for name in [n for n in sys.modules if n == blocked or n.startswith(blocked + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, blocked, None)  # as if it were not installed
    for name in ("eventtracking.tasks", "eventtracking.config", engine.rpartition(".")[0]):
        monkeypatch.delitem(sys.modules, name, raising=False)
    with pytest.raises(ImproperlyConfigured) as excinfo:
        load({"ENGINE": engine})
    message = str(excinfo.value)
    assert message.startswith(f"Cannot load ENGINE {engine!r}")
    assert f"pip install 'event-tracking[{extra}]'" in message


def test_a_module_this_package_lacks_is_said_so():
    with pytest.raises(ImproperlyConfigured, match=r"eventtracking\.backends\.kinesis is not part of this"):
        load({"ENGINE": "eventtracking.backends.kinesis.KinesisBackend"})


def test_the_base_package_imports_no_optional_dependency():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import eventtracking.tracker, eventtracking.loader, eventtracking.backends.routing\n"
        "import eventtracking.backends.logger, eventtracking.backends.segment\n"
        "import eventtracking.processors.whitelist, eventtracking.processors.regex_filter\n"
        "import eventtracking.processors.exceptions, eventtracking.exceptions\n"
        "heavy = ('celery', 'kombu', 'openedx_events', 'edx_toggles', 'pymongo', 'django')\n"
        "print(sorted(name for name in heavy if name in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
