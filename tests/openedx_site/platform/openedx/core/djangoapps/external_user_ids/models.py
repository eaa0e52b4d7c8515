"""Stand-in for edx-platform's external user ids: a stable UUID per user and type, as ERB expects."""

import uuid
from types import SimpleNamespace


class ExternalIdType:
    XAPI = "xapi"
    CALIPER = "caliper"
    LTI = "lti"


class ExternalId:
    @classmethod
    def add_new_user_id(cls, user, type_name):
        """(external id, created): edx-platform stores a random UUID; a name-based one is as stable."""
        value = uuid.uuid5(uuid.NAMESPACE_URL, f"openedx-site/{type_name}/{user.pk}")
        return SimpleNamespace(external_user_id=value), True
