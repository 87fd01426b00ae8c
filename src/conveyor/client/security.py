"""Managing users, API tokens and ACL rules on the coordinator (``admin`` on ``cluster``)."""

from __future__ import annotations

from types import TracebackType

from conveyor.protocol.security import (
    AclRule,
    Operation,
    PatternType,
    ResourceType,
    TokenCreated,
    TokenCreateRequest,
    TokenSummary,
    UserCreateRequest,
    UserSummary,
    WhoAmI,
)
from conveyor.transport.client import SyncHTTP, coordinator_set, encode_body
from conveyor.transport.credentials import authorization_header
from conveyor.transport.tls import TLSConfig


class SecurityAdmin:
    """``conveyor user|token|acl`` as a library. Credentials as for :class:`Admin`."""

    def __init__(
        self,
        url: str | None = None,
        *,
        tls: TLSConfig | None = None,
        token: str | None = None,
        user: str | None = None,
        password: str | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        coordinators = coordinator_set(url)
        self.url = coordinators.primary + "/v1/security"
        self._http = SyncHTTP(
            tls,
            timeout_s=timeout_s,
            pool_size=2,
            authorization=authorization_header(token, user, password),
            coordinators=coordinators,
        )

    def add_user(self, name: str, password: str) -> UserSummary:
        body = UserCreateRequest(name=name, password=password)
        return self._http.call("POST", f"{self.url}/users", UserSummary, body=body)

    def remove_user(self, name: str) -> None:
        self._http.request("DELETE", f"{self.url}/users/{name}")

    def list_users(self) -> list[UserSummary]:
        return self._http.call("GET", f"{self.url}/users", list[UserSummary])

    def create_token(self, principal: str, expires_in_ms: int | None = None) -> TokenCreated:
        body = TokenCreateRequest(principal=principal, expires_in_ms=expires_in_ms)
        return self._http.call("POST", f"{self.url}/tokens", TokenCreated, body=body)

    def revoke_token(self, token_id: str) -> None:
        self._http.request("DELETE", f"{self.url}/tokens/{token_id}")

    def list_tokens(self) -> list[TokenSummary]:
        return self._http.call("GET", f"{self.url}/tokens", list[TokenSummary])

    def add_acl(
        self,
        principal: str,
        operation: Operation,
        resource_type: ResourceType,
        name: str,
        pattern: PatternType = "literal",
    ) -> AclRule:
        rule = AclRule(
            principal=principal,
            operation=operation,
            resource_type=resource_type,
            name=name,
            pattern=pattern,
        )
        return self._http.call("POST", f"{self.url}/acls", AclRule, body=rule)

    def remove_acl(self, rule: AclRule) -> None:
        self._http.request("POST", f"{self.url}/acls/delete", body=encode_body(rule))

    def list_acls(self) -> list[AclRule]:
        return self._http.call("GET", f"{self.url}/acls", list[AclRule])

    def whoami(self) -> WhoAmI:
        return self._http.call("GET", f"{self.url}/whoami", WhoAmI)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SecurityAdmin:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
