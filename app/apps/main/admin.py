"""Admin pages: dead letters with requeue/discard; periodic tasks and task results come from their apps."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from apps.main import deadletter
from apps.main.models import AnalyticsSnapshot, DeadLetter, Heartbeat, Notification, UserAction


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
                sanitised += letter.sanitised
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
