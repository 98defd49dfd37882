"""The audit trail of the task API: one row per call of a task route (enqueue or result read), allowed or
refused, with the token, the task, the time and the client's address; and the same as a log line.

A row that cannot be written (the database down) is not a reason to fail a task already published: the
log line carries the event then, at ERROR.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle

logger = logging.getLogger(__name__)

#: Longest reason kept (a 400's field list can be long).
REASON_LENGTH = 200


def client_address(request: Request) -> str | None:
    """REMOTE_ADDR, or the address the trusted proxies in front added to X-Forwarded-For (API_NUM_PROXIES,
    DRF's NUM_PROXIES rule); None when that is no IP address."""
    address = BaseThrottle().get_ident(request)
    try:
        return str(ipaddress.ip_address(address.strip()))
    except (ValueError, AttributeError):
        return None


def refusal_reason(request: Request, response: Response) -> str:
    """Why the call was refused: the audit's own reason (which token state) over the answer's detail."""
    if reason := vars(request).get("audit_reason"):
        return reason
    data = response.data if isinstance(response, Response) else None
    if isinstance(data, dict):
        if "detail" in data:
            return str(data["detail"])
        return "invalid " + ", ".join(str(field) for field in data)
    return f"HTTP {response.status_code}"


def record(request: Request, response: Response, *, action: str, task: str = "", task_id: str = "") -> None:
    from apps.main.models import ApiAuditEvent

    # The client as authenticated, without authenticating again (``request.user`` would, after a failure
    # that was not a refusal: the database down).
    client = vars(request).get("_user")
    token = getattr(client, "token", None) or vars(request).get("audit_token")
    allowed = response.status_code < 400
    event = ApiAuditEvent(
        token=token, token_name=token.name if token else "", action=action, task=task, task_id=task_id,
        status=response.status_code, allowed=allowed,
        reason="" if allowed else refusal_reason(request, response)[:REASON_LENGTH],
        client_address=client_address(request),
    )
    fields: dict[str, Any] = {
        "audit_action": action, "audit_task": task, "audit_task_id": task_id, "audit_status": event.status,
        "audit_token": token.pk if token else None, "audit_token_name": event.token_name,
        "audit_client": event.client_address, "audit_reason": event.reason,
    }
    message = "api %s %s: %s%s", action, task or task_id, event.status, f" ({event.reason})" if event.reason else ""
    try:
        event.save()
    except Exception as exc:  # the database is down: the log keeps the event
        logger.error(*message, extra={**fields, "audit_stored": False, "audit_store_error": type(exc).__name__})
        return
    logger.info(*message, extra=fields)
