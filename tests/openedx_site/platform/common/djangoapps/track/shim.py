"""Stand-ins for edx-platform's tracking-log processors named in its EVENT_TRACKING_BACKENDS.

They reshape events the way the platform's do (common/djangoapps/track/shim.py), enough for the
tracking log to have the legacy shape and for Segment to get the platform's extra fields.
"""

LEGACY_CONTEXT_FIELDS = ("username", "session", "ip", "agent", "host", "referer", "accept_language", "page")


class LegacyFieldMappingProcessor:
    """Give the event the legacy tracking-log fields: event_type, event, time, and the request's."""

    def __call__(self, event):
        context = event.get("context", {})
        for field in LEGACY_CONTEXT_FIELDS:
            event[field] = context.pop(field, "")
        event["event_type"] = event.get("name")
        event["event"] = event.pop("data", {})
        event["time"] = event.pop("timestamp", None)
        event["event_source"] = "server"
        return event


class PrefixedEventProcessor:
    """The platform's handles browser events with an edx.ui prefix; server events pass unchanged."""

    def __call__(self, event):
        return event


class GoogleAnalyticsProcessor:
    """Label events with their course and mark them non-interactive, as the platform does."""

    def __call__(self, event):
        copied = dict(event)
        course_id = event.get("context", {}).get("course_id")
        if course_id is not None:
            copied["label"] = course_id
        copied["nonInteraction"] = 1
        return copied
