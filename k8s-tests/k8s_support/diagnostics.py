"""A readable dump of pods, their containers, recent logs and events, for failed waits and CI artifacts."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from kubernetes.client import CoreV1Api
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError


def _state(status: Any) -> str:
    """One line for a V1ContainerStatus: ready, restarts and the current (and last) state."""
    state = status.state
    if state is None:
        current = "unknown"
    elif state.waiting is not None:
        current = f"waiting ({state.waiting.reason}: {state.waiting.message or ''})".replace(": )", ")")
    elif state.terminated is not None:
        t = state.terminated
        current = f"terminated ({t.reason}, exit {t.exit_code}{', ' + t.message if t.message else ''})"
    elif state.running is not None:
        current = f"running since {state.running.started_at}"
    else:
        current = "unknown"
    line = f"ready={status.ready} restarts={status.restart_count} {current}"
    last = status.last_state.terminated if status.last_state is not None else None
    if last is not None:
        line += f"; last: {last.reason}, exit {last.exit_code}"
    return line


def _log_tail(core: CoreV1Api, namespace: str, pod: str, container: str, lines: int, previous: bool) -> str:
    try:
        text = core.read_namespaced_pod_log(
            pod, namespace, container=container, tail_lines=lines, previous=previous, _request_timeout=10
        )
    except (ApiException, HTTPError) as exc:
        reason = getattr(exc, "reason", None) or exc
        return f"      (no {'previous ' if previous else ''}log: {reason})"
    body = (text or "").rstrip("\n")
    if not body:
        return "      (empty log)"
    return "\n".join("      | " + line for line in body.splitlines())


def _event_time(event: Any) -> datetime:
    for value in (event.last_timestamp, event.event_time, event.first_timestamp,
                  event.metadata.creation_timestamp if event.metadata else None):
        if value is not None:
            return value
    return datetime.min


def describe_pods(
    core: CoreV1Api,
    namespace: str,
    label_selector: str = "",
    *,
    log_lines: int = 40,
    events: int = 25,
) -> str:
    """Pods matching the selector with phase, conditions, container states and log tails, then events.

    Every API failure is written into the text instead of raised: this runs when something already
    went wrong, and the dump must say as much as it can.
    """
    out: list[str] = []
    try:
        pods = core.list_namespaced_pod(namespace, label_selector=label_selector, _request_timeout=10).items
    except (ApiException, HTTPError) as exc:
        return f"== cannot list pods in {namespace} ({label_selector or 'all'}): {exc}"
    out.append(f"== pods in namespace {namespace} matching {label_selector or '(all)'}: {len(pods)}")
    for pod in sorted(pods, key=lambda p: p.metadata.name):
        status = pod.status
        out.append(f"-- pod {pod.metadata.name}: phase={status.phase} node={pod.spec.node_name}")
        if status.reason or status.message:
            out.append(f"   reason={status.reason} message={status.message}")
        for condition in status.conditions or []:
            if condition.status != "True":
                out.append(f"   condition {condition.type}={condition.status} "
                           f"({condition.reason}: {condition.message})")
        statuses = [("init", s) for s in status.init_container_statuses or []]
        statuses += [("container", s) for s in status.container_statuses or []]
        for kind, container in statuses:
            out.append(f"   {kind} {container.name}: {_state(container)}")
            out.append(_log_tail(core, namespace, pod.metadata.name, container.name, log_lines, False))
            if container.restart_count:
                out.append(f"     previous run of {container.name}:")
                out.append(_log_tail(core, namespace, pod.metadata.name, container.name, log_lines, True))
    if events:
        try:
            items = core.list_namespaced_event(namespace, _request_timeout=10).items
        except (ApiException, HTTPError) as exc:
            out.append(f"== cannot list events in {namespace}: {exc}")
        else:
            recent = sorted(items, key=_event_time)[-events:]
            out.append(f"== last {len(recent)} of {len(items)} events in {namespace}")
            for event in recent:
                target = event.involved_object
                out.append(
                    f"   {_event_time(event)} {event.type} {event.reason} "
                    f"{target.kind}/{target.name}: {(event.message or '').strip()}"
                )
    return "\n".join(out)


def write_dump(directory: Path, name: str, text: str) -> Path:
    """Keep a dump as a file (CI uploads the directory as an artifact); returns its path."""
    directory.mkdir(parents=True, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:150]
    path = directory / f"{safe}.txt"
    path.write_text(text + "\n", encoding="utf-8")
    return path
