"""drf-spectacular extensions: the OpenAPI schema states the bearer auth, the closed argument objects,
and the error responses of every operation."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiSerializerExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse


class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = "apps.main.api.auth.BearerTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return build_bearer_security_scheme_object(header_name="Authorization", token_prefix="Bearer")


class ClosedTaskArguments(OpenApiSerializerExtension):
    """TaskArguments refuses unknown keys (400), so the schema says ``additionalProperties: false``."""

    target_class = "apps.main.api.serializers.TaskArguments"
    match_subclasses = True

    def map_serializer(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        schema["additionalProperties"] = False
        return schema


def canonical_paths_only(endpoints: list[tuple[Any, ...]], **kwargs: Any) -> list[tuple[Any, ...]]:
    """drf-spectacular preprocessing hook: each route is also served without its trailing slash
    (apps.main.api.urls); the schema lists the canonical spelling only."""
    return [endpoint for endpoint in endpoints if endpoint[0].endswith("/")]


RETRY_AFTER = OpenApiParameter(
    "Retry-After", OpenApiTypes.INT, OpenApiParameter.HEADER, response=[503],
    description="Seconds to wait before trying again (API_RETRY_AFTER_SECONDS).",
)

#: A 400 on a body: ``{field: [reasons]}`` for invalid arguments, ``{"detail": reason}`` for a body that
#: is not acceptable JSON at all.
INVALID_BODY: dict[str, Any] = {
    "type": "object",
    "additionalProperties": {},
    "description": "Invalid arguments, {field: [reasons]}; or {detail: reason} for a body that is not "
                   "acceptable JSON (malformed, nested deeper than API_MAX_JSON_DEPTH, holding U+0000 or a "
                   "lone surrogate, a number out of range).",
}


def error_responses(*, not_found: str, with_body: bool) -> dict[int, OpenApiResponse]:
    """The error responses of one operation (every one JSON; see apps.main.api.errors)."""
    from apps.main.api.serializers import ApiError

    responses = {
        401: OpenApiResponse(ApiError, "No valid `Authorization: Bearer <API_TOKEN>` header."),
        404: OpenApiResponse(ApiError, not_found),
        413: OpenApiResponse(ApiError, "The body is larger than API_MAX_BODY_BYTES (checked on Content-Length)."),
        503: OpenApiResponse(ApiError, "The broker or the database is unreachable; retry after Retry-After seconds."),
    }
    if with_body:
        responses[400] = OpenApiResponse(INVALID_BODY, "Invalid arguments or an unacceptable JSON body.")
        responses[415] = OpenApiResponse(ApiError, "The body is not `application/json`.")
    return responses
