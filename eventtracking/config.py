"""
Settings of the event-bus integration, read from Django settings when they are used.

- ``SEND_TRACKING_EVENT_EMITTED_SIGNAL``: a toggle (edx-toggles' ``SettingToggle``) whose
  ``is_enabled()`` reads the Django setting of that name, default False. When True,
  ``EventBusRoutingBackend`` publishes the ``TRACKING_EVENT_EMITTED`` signal.
- ``EVENT_BUS_TRACKING_LOGS``: the Django setting listing the event names that are published
  to the bus (default: none); read on every send, because sites and tests change settings.

Importing this module needs Django and edx-toggles (the ``eventbus`` extra).
"""

from __future__ import annotations

from typing import Collection

from django.conf import settings
from edx_toggles.toggles import SettingToggle

# .. toggle_name: SEND_TRACKING_EVENT_EMITTED_SIGNAL
# .. toggle_implementation: SettingToggle
# .. toggle_default: False
# .. toggle_description: When True, EventBusRoutingBackend publishes a TRACKING_EVENT_EMITTED signal
#   (and so, with a producer configured, an event-bus message) for each tracking log it is sent whose
#   name is in EVENT_BUS_TRACKING_LOGS.
# .. toggle_use_cases: opt_in
# .. toggle_creation_date: 2023-10-26
SEND_TRACKING_EVENT_EMITTED_SIGNAL = SettingToggle(
    "SEND_TRACKING_EVENT_EMITTED_SIGNAL", default=False, module_name=__name__
)

EVENT_BUS_TRACKING_LOGS = "EVENT_BUS_TRACKING_LOGS"


def event_bus_tracking_logs() -> Collection[str]:
    """The event names to publish on the bus: the ``EVENT_BUS_TRACKING_LOGS`` setting, default none."""
    return getattr(settings, EVENT_BUS_TRACKING_LOGS, None) or ()
