"""The Tutor plugin (plugin API v1: :mod:`tutor.hooks`): event-tracking 5.x in the Open edX image,
Segment delivered by the backend itself, a spool on the persistent data volume, the global Segment
client installed.

Every choice is a config value (``tutor config save --set NAME=value``), prefixed EVENTTRACKING_:

- ``SOURCE``: the pip requirement of event-tracking 5.x added to ``OPENEDX_EXTRA_PIP_REQUIREMENTS``
  (a placeholder git URL until the operator sets it: ``tutor config save`` says so).
- ``OWNED_SEGMENT`` (true): edx-platform's ``segmentio`` SegmentBackend gets the site's Segment key
  (``LMS_SEGMENT_KEY`` / ``CMS_SEGMENT_KEY``) as ``write_key`` and delivers by itself; a site
  without a key keeps the drop-in mode. ``SEGMENT_HOST`` ("": Segment's own) for another API.
- ``SPOOL_DIR`` (``/openedx/data/eventtracking/spool``, on the data volume every LMS or CMS
  container and worker mounts; "" keeps events in memory only): the backend spools under
  ``<dir>/segment``, the global client under ``<dir>/client``; ``SPOOL_MAX_BYTES`` (1 GiB): the
  backend's bound (the client's own options have none).
- ``INSTALL_GLOBAL_CLIENT`` (true): the Django setting ``EVENT_TRACKING_SEGMENT_CLIENT`` makes
  event-tracking install its Segment client as the global one (key from the site's setting).
- ``BACKEND_OPTIONS`` / ``CLIENT_OPTIONS`` ({}): any other SegmentBackend or client option
  (``gzip``, ``anonymize_ip``, ``exit_timeout``...), applied last.
- ``STATS_LOG_INTERVAL`` (0: off): every sender's figures in one INFO line per interval (seconds),
  through the library's ``EVENTTRACKING_STATS_LOG_INTERVAL`` (see its docs/metrics.rst).
"""

from __future__ import annotations

import importlib.resources
from typing import Any

from tutor import fmt, hooks

from .__about__ import __version__

PLACEHOLDER_HOST = "<git host>"

hooks.Filters.CONFIG_DEFAULTS.add_items(
    [
        ("EVENTTRACKING_VERSION", __version__),
        ("EVENTTRACKING_SOURCE", f"event-tracking @ git+https://{PLACEHOLDER_HOST}/<path>.git@<tag>"),
        ("EVENTTRACKING_OWNED_SEGMENT", True),
        ("EVENTTRACKING_SEGMENT_HOST", ""),
        ("EVENTTRACKING_SPOOL_DIR", "/openedx/data/eventtracking/spool"),
        ("EVENTTRACKING_SPOOL_MAX_BYTES", 1024**3),
        ("EVENTTRACKING_INSTALL_GLOBAL_CLIENT", True),
        ("EVENTTRACKING_BACKEND_OPTIONS", {}),
        ("EVENTTRACKING_CLIENT_OPTIONS", {}),
        ("EVENTTRACKING_STATS_LOG_INTERVAL", 0),
    ]
)


@hooks.Filters.CONFIG_DEFAULTS.add(priority=hooks.priorities.LOW)
def _add_to_extra_pip_requirements(items: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """Append the package to the default ``OPENEDX_EXTRA_PIP_REQUIREMENTS`` (Tutor's, with what
    other plugins added before: the last value of the name wins), rendered from the config, so
    that changing ``EVENTTRACKING_SOURCE`` changes it. It runs last (LOW priority)."""
    current: list[Any] = []
    for name, value in items:
        if name == "OPENEDX_EXTRA_PIP_REQUIREMENTS":
            current = list(value)
    items.append(("OPENEDX_EXTRA_PIP_REQUIREMENTS", [*current, "{{ EVENTTRACKING_SOURCE }}"]))
    return items


@hooks.Actions.CONFIG_LOADED.add()
def _check_source(config: dict[str, Any]) -> None:
    """Say what the image would lack: the source is still the placeholder, or a requirements list
    of the operator's own (config.yml wins over defaults) does not hold it."""
    source = config.get("EVENTTRACKING_SOURCE", "")
    if PLACEHOLDER_HOST in source:
        fmt.echo_alert(
            "eventtracking: EVENTTRACKING_SOURCE is still a placeholder; set it to where event-tracking "
            '5.x is installed from: tutor config save --set "EVENTTRACKING_SOURCE=event-tracking @ '
            'git+https://..."'
        )
    elif source not in config.get("OPENEDX_EXTRA_PIP_REQUIREMENTS", []):
        fmt.echo_alert(
            "eventtracking: OPENEDX_EXTRA_PIP_REQUIREMENTS is set in config.yml and lacks "
            "EVENTTRACKING_SOURCE; add it: tutor config save --append "
            f'"OPENEDX_EXTRA_PIP_REQUIREMENTS={source}"'
        )


def _settings_patch(key_setting: str) -> str:
    """The settings patch of one service: which setting holds its Segment key, then the common part."""
    common = importlib.resources.files("tutoreventtracking").joinpath("patches", "segment-settings")
    return f'_eventtracking_key_setting = "{key_setting}"\n' + common.read_text(encoding="utf-8")


hooks.Filters.ENV_PATCHES.add_items(
    [
        ("openedx-lms-common-settings", _settings_patch("LMS_SEGMENT_KEY")),
        ("openedx-cms-common-settings", _settings_patch("CMS_SEGMENT_KEY")),
    ]
)
