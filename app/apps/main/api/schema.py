"""drf-spectacular extensions: the OpenAPI schema states the bearer auth, the closed argument objects, the
recipient each notification channel takes, the free-form payload's storable text, and the error responses of
every operation. Each rule comes from the serializer field that checks it (apps.main.api.serializers)."""

from __future__ import annotations

import copy
from typing import Any

from django.core.validators import RegexValidator
from drf_spectacular.extensions import (
    OpenApiAuthenticationExtension,
    OpenApiSerializerExtension,
    OpenApiSerializerFieldExtension,
)
from drf_spectacular.plumbing import ResolvedComponent, build_bearer_security_scheme_object
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework.serializers import CharField


def field_schema(auto_schema: Any, field: Any, direction: Any) -> dict[str, Any]:
    """The schema of a field outside a serializer, with its validators' rules (pattern, lengths), as
    drf-spectacular maps a serializer's own fields."""
    schema = auto_schema._map_serializer_field(field, direction)
    auto_schema._insert_field_validators(field, schema)
    return schema


def published_pattern(auto_schema: Any, validator: RegexValidator) -> str:
    """``validator``'s regex as drf-spectacular publishes a field's (ECMA anchors and escapes)."""
    schema = {"type": "string"}
    auto_schema._insert_field_validators(CharField(validators=[validator]), schema)
    return schema["pattern"]


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


class NotificationPerChannel(ClosedTaskArguments):
    """One alternative per channel, each with the recipient rule SendNotificationArguments.validate checks."""

    target_class = "apps.main.api.serializers.SendNotificationArguments"
    priority = 1  # before ClosedTaskArguments, which matches every TaskArguments

    def map_serializer(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        from apps.main.api.serializers import RECIPIENTS, recipient_field

        closed = super().map_serializer(auto_schema, direction)
        mapping = {}
        for channel in RECIPIENTS:
            variant = {**copy.deepcopy(closed), "description": f"send_notification on the {channel} channel."}
            variant["properties"]["channel"] = {"type": "string", "const": channel}
            variant["properties"]["recipient"] = field_schema(auto_schema, recipient_field(channel), direction)
            name = f"{type(self.target).__name__.removesuffix('Arguments')}{channel.title().replace('_', '')}Arguments"
            component = ResolvedComponent(name, ResolvedComponent.SCHEMA, object=name, schema=variant)
            auto_schema.registry.register_on_missing(component)
            mapping[channel] = component.ref["$ref"]
        # No "type" here: drf-spectacular drops an object component without properties. "required" marks the
        # request body required (an absent body is {}, which lacks them).
        return {
            "required": closed["required"],
            "oneOf": [{"$ref": ref} for ref in mapping.values()],
            "discriminator": {"propertyName": "channel", "mapping": mapping},
        }


class DateTimeTextFormat(OpenApiSerializerFieldExtension):
    """A string with the RFC 3339 pattern its validator checks, and the ``date-time`` format it is."""

    target_class = "apps.main.api.serializers.DateTimeText"

    def map_serializer_field(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        schema = auto_schema._map_serializer_field(self.target, direction, bypass_extensions=True)
        return {**schema, "format": "date-time"}


STORABLE_JSON = "StorableJson"


class StorableJsonObject(OpenApiSerializerFieldExtension):
    """A free-form object whose every key and string, at any depth, is storable text (the parser's check)."""

    target_class = "apps.main.api.serializers.JsonObject"

    def map_serializer_field(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        from apps.main.api.serializers import ANY_STORABLE_TEXT

        text = {"type": "string", "pattern": published_pattern(auto_schema, ANY_STORABLE_TEXT)}
        value = ResolvedComponent(STORABLE_JSON, ResolvedComponent.SCHEMA, object=STORABLE_JSON)
        # Each keyword applies to its own type only: one schema describes every JSON value.
        value.schema = {
            "type": ["object", "array", "string", "number", "boolean", "null"],
            "description": "Any JSON value whose strings and object keys hold no U+0000 and no lone surrogate "
                           "(a pattern can only say the first); arrays and objects nest at most API_MAX_JSON_DEPTH "
                           "levels deep, counting the body's own.",
            "pattern": text["pattern"],
            "propertyNames": text,
            "additionalProperties": value.ref,
            "items": value.ref,
        }
        auto_schema.registry.register_on_missing(value)
        return {"type": "object", "propertyNames": text, "additionalProperties": value.ref}


def canonical_paths_only(endpoints: list[tuple[Any, ...]], **kwargs: Any) -> list[tuple[Any, ...]]:
    """drf-spectacular preprocessing hook: each route is also served without its trailing slash
    (apps.main.api.urls); the schema lists the canonical spelling only."""
    return [endpoint for endpoint in endpoints if endpoint[0].endswith("/")]


RETRY_AFTER = OpenApiParameter(
    "Retry-After", OpenApiTypes.INT, OpenApiParameter.HEADER, response=[429, 503],
    description="Seconds to wait before trying again: until the token's rate-limit window ends (429), "
                "API_RETRY_AFTER_SECONDS (503).",
)

#: A 400 on a body: ``{field: [reasons]}`` for invalid arguments, ``{"detail": reason}`` for a body that
#: is not acceptable JSON at all.
INVALID_BODY: dict[str, Any] = {
    "type": "object",
    "additionalProperties": {},
    "description": "Invalid arguments, {field: [reasons]}; or {detail: reason} for a body that is not "
                   "acceptable JSON (malformed, nested deeper than API_MAX_JSON_DEPTH, holding U+0000 or a "
                   "lone surrogate, a number out of range) or a malformed Content-Length header.",
}


def error_responses(*, not_found: str, forbidden: str, with_body: bool) -> dict[int, OpenApiResponse]:
    """The error responses of one operation (every one JSON; see apps.main.api.errors)."""
    from apps.main.api.serializers import ApiError

    responses = {
        401: OpenApiResponse(ApiError, "No `Authorization: Bearer <token>` header, or a token that is unknown, "
                                       "expired or revoked."),
        403: OpenApiResponse(ApiError, forbidden),
        404: OpenApiResponse(ApiError, not_found),
        429: OpenApiResponse(ApiError, "The token's rate limit is exhausted (its `rate_limit`, else API_RATE_LIMIT, "
                                       "calls per API_RATE_LIMIT_WINDOW_SECONDS); retry after Retry-After seconds."),
        413: OpenApiResponse(ApiError, "The body is larger than API_MAX_BODY_BYTES (checked on Content-Length), "
                                       "or the task's message would be larger than TASK_MAX_PAYLOAD_BYTES."),
        503: OpenApiResponse(ApiError, "The broker or the database is unreachable; retry after Retry-After seconds."),
    }
    if with_body:
        responses[400] = OpenApiResponse(INVALID_BODY, "Invalid arguments or an unacceptable JSON body.")
        responses[415] = OpenApiResponse(ApiError, "The body is not `application/json`.")
    else:
        responses[400] = OpenApiResponse(ApiError, "A malformed Content-Length header.")
    return responses
