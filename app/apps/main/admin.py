"""Admin pages: dead letters with requeue/discard, API tokens (issue, scope, revoke) and their audit trail;
periodic tasks and task results come from their apps."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import Max, Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from apps.main import deadletter
from apps.main.api import tokens
from apps.main.models import (
    AnalyticsSnapshot,
    ApiAuditEvent,
    ApiToken,
    DeadLetter,
    Heartbeat,
    Notification,
    PayloadClaim,
    UserAction,
)


@admin.register(DeadLetter)
class DeadLetterAdmin(admin.ModelAdmin):
    list_display = ("failed_at", "task_name", "task_id", "queue", "reason", "attempts", "status", "sanitised")
    list_filter = ("status", "reason", "sanitised", "task_name", "queue")
    search_fields = ("task_id", "task_name", "exception")
    readonly_fields = [f.name for f in DeadLetter._meta.fields]
    actions = ("requeue_selected", "discard_selected")
    date_hierarchy = "failed_at"

    @admin.action(description="Requeue selected tasks on their original queue")
    def requeue_selected(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> None:
        done, skipped, sanitised = 0, [], 0
        for letter in queryset:
            try:
                deadletter.requeue(letter)
                done += 1
                sanitised += letter.sanitised and not letter.payload_claim  # a claim sent the whole body
            except ValueError as exc:
                skipped.append(str(exc))
        if done:
            self.message_user(request, f"Requeued {done} task(s).", messages.SUCCESS)
        if sanitised:
            self.message_user(request, f"{sanitised} of them had sanitised content: they ran with the stored "
                                       "(escaped or cut) arguments, not the original ones.", messages.WARNING)
        for reason in skipped:
            self.message_user(request, reason, messages.WARNING)

    @admin.action(description="Discard selected dead letters")
    def discard_selected(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> None:
        count = 0
        for letter in queryset.filter(status=DeadLetter.Status.PENDING):
            deadletter.discard(letter)
            count += 1
        self.message_user(request, f"Discarded {count} dead letter(s).", messages.SUCCESS)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(PayloadClaim)
class PayloadClaimAdmin(admin.ModelAdmin):
    """Stored bodies of claim-checked messages (apps.main.payload_claims): to look at, never to edit. Each goes with
    its message's acknowledgement, its dead letter's requeue or discard, or cleanup_temp_files' pruning."""

    list_display = ("created", "task_name", "task_id", "size", "content_type", "compression")
    list_filter = ("task_name", "compression")
    search_fields = ("task_id",)
    exclude = ("body",)
    date_hierarchy = "created"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(UserAction)
class UserActionAdmin(admin.ModelAdmin):
    list_display = ("occurred_at", "user_id", "action", "action_id")
    list_filter = ("action",)
    search_fields = ("user_id", "action_id")


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ("created_at", "channel", "recipient", "subject", "status")
    list_filter = ("channel", "status")


@admin.register(AnalyticsSnapshot)
class AnalyticsSnapshotAdmin(admin.ModelAdmin):
    list_display = ("created_at", "total_actions", "window_actions", "unique_users")


@admin.register(Heartbeat)
class HeartbeatAdmin(admin.ModelAdmin):
    list_display = ("name", "last_success")


class ApiTokenForm(forms.ModelForm):
    tasks = forms.MultipleChoiceField(
        choices=[], required=False, widget=forms.CheckboxSelectMultiple,
        help_text="The tasks it may enqueue (the API's allow-list).",
    )

    class Meta:
        model = ApiToken
        fields = ("name", "tasks", "can_read_results", "rate_limit", "expires_at")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["tasks"].choices = [(name, name) for name in tokens.task_names()]

    def clean_tasks(self) -> list[str]:
        return tokens.checked_tasks(self.cleaned_data["tasks"])  # sorted, as the command stores them


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Adding a token shows it once, on the page that answers the form (never in a message: messages sit in a
    cookie or the session); afterwards only its first characters are visible. Tokens are revoked, not deleted:
    their audit events keep pointing at them."""

    form = ApiTokenForm
    list_display = ("name", "shown", "tasks", "can_read_results", "rate_limit", "state", "last_used",
                    "created_at", "expires_at")
    list_filter = ("can_read_results", ("revoked_at", admin.EmptyFieldListFilter))
    search_fields = ("name", "shown_part")
    readonly_fields = ("shown", "created_at", "created_by", "revoked_at")
    actions = ("revoke_selected",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[ApiToken]:
        return super().get_queryset(request).annotate(
            last_authenticated_call=Max("events__at", filter=~Q(events__status=401)))

    @admin.display(description="token")
    def shown(self, token: ApiToken) -> str:
        return f"{token.shown_part}…" if token.shown_part else "-"

    @admin.display(description="state")
    def state(self, token: ApiToken) -> str:
        return token.refusal(timezone.now()) or "active"

    @admin.display(description="last used", ordering="last_authenticated_call")
    def last_used(self, token: ApiToken) -> Any:
        return getattr(token, "last_authenticated_call", None)

    def save_model(self, request: HttpRequest, token: ApiToken, form: forms.ModelForm, change: bool) -> None:
        if not change:
            secret = tokens.new_token()
            token.digest, token.shown_part = tokens.digest(secret), tokens.shown_part(secret)
            token.created_by = f"admin:{request.user.get_username()}"
            token._issued_secret = secret  # type: ignore[attr-defined]  # for response_add only
        super().save_model(request, token, form, change)

    def response_add(self, request: HttpRequest, token: ApiToken, post_url_continue: str | None = None) -> HttpResponse:
        context = {**self.admin_site.each_context(request), "opts": self.opts, "token": token,
                   "secret": token._issued_secret, "title": f"API token {token.name} created"}  # type: ignore[attr-defined]
        response = TemplateResponse(request, "admin/main/apitoken/issued.html", context)
        response["Cache-Control"] = "no-store"  # the only page that ever shows the token
        return response

    @admin.action(description="Revoke selected tokens (every call with them is refused from now on)")
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"Revoked {count} token(s).", messages.SUCCESS)

    def has_delete_permission(self, request: HttpRequest, obj: ApiToken | None = None) -> bool:
        return False


@admin.register(ApiAuditEvent)
class ApiAuditEventAdmin(admin.ModelAdmin):
    """Read-only: the trail is written by the API and pruned by cleanup_temp_files (API_AUDIT_RETENTION_DAYS)."""

    list_display = ("at", "token_name", "action", "task", "task_id", "status", "allowed", "reason", "client_address")
    list_filter = ("allowed", "action", "status", "task", "token_name")
    search_fields = ("token_name", "task_id", "client_address", "reason")
    date_hierarchy = "at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: ApiAuditEvent | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: ApiAuditEvent | None = None) -> bool:
        return False
