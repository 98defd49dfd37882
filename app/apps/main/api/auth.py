from __future__ import annotations

import hmac

from django.conf import settings
from rest_framework import authentication, exceptions
from rest_framework.request import Request


class ApiClient:
    """The caller holding the API token (there are no per-user accounts on this API)."""

    is_authenticated = True


class BearerTokenAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer <API_TOKEN>`` (the scheme in any case, RFC 7235); with no token configured
    every request is refused."""

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[ApiClient, str] | None:
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != self.keyword.lower() or not token.strip():
            raise exceptions.AuthenticationFailed("expected 'Authorization: Bearer <token>'")
        expected = settings.API_TOKEN
        if not expected or not hmac.compare_digest(token.strip().encode(), expected.encode()):
            raise exceptions.AuthenticationFailed("invalid token")
        return ApiClient(), token

    def authenticate_header(self, request: Request) -> str:
        return self.keyword  # makes DRF answer 401 (with WWW-Authenticate), not 403
