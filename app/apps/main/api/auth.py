"""Who may call the task API, and how much: bearer tokens from the database (apps.main.api.tokens), each
limited to its tasks and, when it may, to reading results (TokenScope), and to its rate (TokenRateThrottle).

Order of the checks (DRF's): the token (401), its scope (403), its rate (429); then the body (400).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.utils import timezone
from rest_framework import authentication, exceptions, permissions, throttling
from rest_framework.request import Request

from apps.main.api import ratelimit
from apps.main.api.tokens import digest

#: The one answer for every token that cannot be used: which of the three it is goes to the audit only.
INVALID_TOKEN = "invalid, expired or revoked token"


class ApiClient:
    """The caller: the holder of ``token`` (the API has no user accounts)."""

    is_authenticated = True

    def __init__(self, token: Any) -> None:
        self.token = token


class BearerTokenAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer <token>`` (the scheme in any case, RFC 7235), found by its digest."""

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[ApiClient, str] | None:
        from apps.main.models import ApiToken

        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        scheme, _, value = header.partition(" ")
        if scheme.lower() != self.keyword.lower() or not value.strip():
            raise exceptions.AuthenticationFailed("expected 'Authorization: Bearer <token>'")
        token = ApiToken.objects.filter(digest=digest(value.strip())).first()
        if token is None:
            request.audit_reason = "unknown token"
            raise exceptions.AuthenticationFailed(INVALID_TOKEN)
        if refusal := token.refusal(timezone.now()):
            request.audit_token, request.audit_reason = token, refusal
            raise exceptions.AuthenticationFailed(INVALID_TOKEN)
        return ApiClient(token), value

    def authenticate_header(self, request: Request) -> str:
        return self.keyword  # makes DRF answer 401 (with WWW-Authenticate), not 403


class TokenScope(permissions.BasePermission):
    """Asks the view whether the token may make this call: ``view.scope_refusal(token)`` names what the
    token lacks, or is None."""

    message = "this token may not make this call"

    def has_permission(self, request: Request, view: Any) -> bool:
        client = request.user
        if not isinstance(client, ApiClient):
            return False
        if refusal := view.scope_refusal(client.token):
            self.message = refusal  # DRF makes one instance per request
            return False
        return True


class TokenRateThrottle(throttling.BaseThrottle):
    """At most the token's ``rate_limit`` (else API_RATE_LIMIT) calls per API_RATE_LIMIT_WINDOW_SECONDS."""

    decision: ratelimit.Decision | None = None

    def allow_request(self, request: Request, view: Any) -> bool:
        client = request.user
        if not isinstance(client, ApiClient):
            return True
        limit = client.token.rate_limit or settings.API_RATE_LIMIT
        self.decision = ratelimit.hit(str(client.token.pk), limit)
        return self.decision.allowed

    def wait(self) -> float | None:
        return self.decision.retry_after if self.decision else None


class RateLimited(exceptions.Throttled):
    """A 429 naming the limit; DRF adds "Expected available in N seconds." and the Retry-After header."""

    def __init__(self, wait: float | None, limit: int) -> None:
        window = settings.API_RATE_LIMIT_WINDOW_SECONDS
        super().__init__(wait, detail=f"Rate limit of this token exceeded ({limit} requests per {window} s).")
