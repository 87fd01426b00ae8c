"""What the signed-in principal may do, for deciding what the pages offer.

The rules come from the coordinator's ``whoami`` (the rules that apply to the caller) and
go through the same pure ``authorize`` the services enforce with, so a button is shown
exactly when the request behind it would be allowed. That is a courtesy only: every
action is a call to the API with the user's credentials, and the API decides.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from conveyor.protocol.security import CLUSTER_RESOURCE, AclRule, WhoAmI, authorize


@dataclass(frozen=True, slots=True)
class Permissions:
    principal: str
    auth_enabled: bool
    rules: list[AclRule] = field(default_factory=list)

    @classmethod
    def of(cls, whoami: WhoAmI) -> Permissions:
        return cls(whoami.principal, whoami.auth_enabled, list(whoami.acls))

    def may(self, operation: str, resource_type: str, name: str = CLUSTER_RESOURCE) -> bool:
        if not self.auth_enabled:
            return True  # auth off: the API allows everything, and so does the console
        return authorize(self.rules, self.principal, operation, resource_type, name)

    @property
    def admin(self) -> bool:
        return self.may("admin", "cluster")

    def topic(self, operation: str, name: str) -> bool:
        return self.may(operation, "topic", name)

    def group(self, operation: str, name: str) -> bool:
        return self.may(operation, "group", name)

    @property
    def describe_cluster(self) -> bool:
        return self.may("describe", "cluster")

    def may_create_some_topic(self) -> bool:
        """Whether to offer the create form at all (the name is typed in it)."""
        return (
            self.admin
            or any(r.operation == "create_topic" for r in self.rules)
            or (not self.auth_enabled)
        )
