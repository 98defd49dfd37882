"""What a run prints and writes: the table (each rate and RSS against the bare Celery figure), the issue's
targets as PASS/MISS, the JSON of every figure, two PNG plots and the results section of the docs."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DOCS_START = "<!-- bench:results:start -->"
DOCS_END = "<!-- bench:results:end -->"


@dataclass
class Row:
    label: str
    value: float
    unit: str
    #: "rate", "rss" and "cpu" rows get a ratio to the bare Celery figure of their kind.
    kind: str = ""
    lower_bound: bool = False

    def text(self) -> str:
        return ("≥ " if self.lower_bound else "") + _number(self.value)


def _number(value: float) -> str:
    if isinstance(value, int) or (value >= 100 and value == round(value)):
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}"


def rows(results: dict[str, Any]) -> list[Row]:
    """The table's rows: (a) to (g) in a full run, (h) and (i) whenever they ran (``--only h`` runs it alone)."""
    out = _main_rows(results) if set("abcdefg") <= set(results) else []
    if "h" in results:
        out += _payload_rows(results["h"])
    if "i" in results:
        out += _large_payload_rows(results["i"])
    return out


def _large_payload_rows(i: dict[str, Any]) -> list[Row]:
    out = []
    for run in i["runs"]:
        name = f"(i) {run['size']} payload ({run['body_bytes']:,} B body), {run['mode']}"
        out += [Row(f"{name}: publish", run["publish_per_s"], "msg/s"),
                Row(f"{name}: drain", run["tasks_per_s"], "tasks/s", "rate"),
                Row(f"{name}: one message in Valkey", run["valkey_bytes_per_message"], "B")]
        if run["claims_stored"]:
            out.append(Row(f"{name}: its claim in PostgreSQL", run["claim_bytes_per_message"], "B"))
    return out


def _payload_rows(h: dict[str, Any]) -> list[Row]:
    fig = h["figures"]
    out = [
        Row(f"(h) encode+decode per task, plain json ({h['body_bytes']['plain']} B body)", fig["codec_plain_us"],
            "µs"),
        Row(f"(h) encode+decode per task, json+fernet ({h['body_bytes']['encrypted']} B body)",
            fig["codec_encrypted_us"], "µs"),
        Row("(h) message in Valkey, plain", fig["message_plain_bytes"], "B"),
        Row("(h) message in Valkey, encrypted", fig["message_encrypted_bytes"], "B"),
        Row(f"(h) project worker drains send_notification-sized tasks, plain{_median_of(h)}",
            fig["plain_tasks_per_s"], "tasks/s", "rate"),
        Row(f"(h) project worker drains send_notification-sized tasks, encrypted{_median_of(h)}",
            fig["encrypted_tasks_per_s"], "tasks/s", "rate"),
    ]
    for kind in ("plain", "encrypted"):
        if f"cpu_us_per_task_{kind}" in fig:
            out.append(Row(f"(h) CPU per task, {kind}: main process + pool processes", fig[f"cpu_us_per_task_{kind}"],
                           "µs", "cpu"))
    return out


def _median_of(h: dict[str, Any]) -> str:
    runs = len(h["runs"]) // 2
    return f", median of {runs}" if runs > 1 else ""


def _main_rows(results: dict[str, Any]) -> list[Row]:
    a, b, c, d, e, f, g = (results[k] for k in "abcdefg")
    on_off = {True: "on", False: "off"}
    out = [
        Row(f"(a) raw LPUSH+BRPOP, one client, sequential ({a['payload_bytes']} B)",
            a["figures"]["sequential_msgs_per_s"], "msg/s", "rate"),
        Row("(a) raw LPUSH thread (pipelined) -> BRPOP thread", a["figures"]["threaded_msgs_per_s"], "msg/s", "rate"),
        Row("(b) bare Celery no-op, prefork 2, all defaults" + (f", median of {len(b['runs'])}" if len(b["runs"]) > 1
                                                                 else ""), b["figures"]["tasks_per_s"], "tasks/s",
            "rate"),
        Row(f"(b) bare worker RSS after {b['tasks']} tasks", b["figures"]["rss_mib_after_run"], "MiB", "rss"),
    ]
    if b.get("cpu_us_per_task"):
        out.append(Row("(b) CPU per task: main process + pool processes", b["cpu_us_per_task"]["total"], "µs", "cpu"))
    for run in sorted(c["medians"], key=lambda r: (r["events"] != c["production_events"], not r["metrics"])):
        production = run["events"] == c["production_events"]
        tag = (" = production" if production and run["metrics"] else "") + (
            f", median of {c['repeats']}" if production and c["repeats"] > 1 else "")
        out.append(Row(f"(c) project no-op, events {on_off[run['events']]}, metrics {on_off[run['metrics']]}{tag}",
                       run["tasks_per_s"], "tasks/s", "rate"))
    if "production_but_prefetch_1_tasks_per_s" in c["figures"]:
        out.append(Row(f"(c) production, but prefetch multiplier 1 (not {c['production_prefetch_multiplier']})",
                       c["figures"]["production_but_prefetch_1_tasks_per_s"], "tasks/s", "rate"))
    production_cpu = c.get("cpu_us_per_task", {}).get(f"events {on_off[c['production_events']]}, metrics on")
    if production_cpu:
        out.append(Row("(c) CPU per task, production: main process + pool processes", production_cpu["total"], "µs",
                       "cpu"))
    out += [
        Row(f"(c) metrics overhead in CPU per task (events {on_off[c['production_events']]})",
            c.get("metrics_overhead_cpu_pct", float("nan")), "%"),
        Row(f"(c) metrics overhead in rate (events {on_off[c['production_events']]})", c["metrics_overhead_pct"], "%"),
        Row(f"(c) metrics overhead (events {on_off[not c['production_events']]})",
            c["metrics_overhead_pct_other_events"], "%"),
        Row("(c) task events cost (metrics on)", c["events_cost_pct"], "%"),
    ]
    out += [Row(f"(d) process_user_action + results, concurrency {r['concurrency']}", r["tasks_per_s"], "tasks/s",
                "rate") for r in d["runs"]]
    out += [Row(f"(d) worker RSS after the run, concurrency {r['concurrency']}", r["memory_after_run"]["rss_mib"],
                "MiB", "rss") for r in d["runs"]]
    out += [
        Row(f"(e) API POST -> 202, gunicorn {e['gunicorn_workers']} workers, {e['clients']} clients",
            e["figures"]["accepted_per_s"], "req/s", "rate"),
        Row("(e) API request latency p50", e["figures"]["p50_ms"], "ms"),
        Row("(e) API request latency p99", e["figures"]["p99_ms"], "ms"),
        Row("(e) non-202 answers", e["non_202"], "requests"),
    ]
    for layout, name in (("pools", "per-queue pools"), ("shared", "one shared queue")):
        data = f[layout]
        for p in (50, 95, 99):
            out.append(Row(f"(f) {name}: high-priority enqueue->start p{p}", data[f"p{p}_ms"], "ms",
                           lower_bound=data["lower_bound"]))
    out.append(Row("(f) shared queue: high-priority tasks never started (censored)", f["shared"]["censored"],
                   f"of {f['shared']['high_tasks']}"))
    out += [
        Row("(g) high-priority worker RSS, idle after start", g["figures"]["rss_mib_idle"], "MiB", "rss"),
        Row(f"(g) high-priority worker RSS after {g['tasks']} process_user_action", g["figures"]["rss_mib_after_tasks"],
            "MiB", "rss"),
    ]
    return out


def _ratio(row: Row, results: dict[str, Any]) -> str:
    if "b" not in results:
        return ""
    bare = results["b"]["figures"]
    base = {"rate": bare["tasks_per_s"], "rss": bare["rss_mib_after_run"],
            "cpu": bare.get("cpu_us_per_task_total")}.get(row.kind)
    return f"{row.value / base:.2f}× bare" if base else ""  # noqa: RUF001 — the multiplication sign


def text_table(results: dict[str, Any]) -> str:
    table = [(r.label, f"{r.text()} {r.unit}", _ratio(r, results)) for r in rows(results)]
    header = ("figure", "value", "vs (b)")
    widths = [max(len(x[i]) for x in [header, *table]) for i in range(3)]
    line = "  ".join("-" * w for w in widths)
    out = [f"{header[0]:<{widths[0]}}  {header[1]:>{widths[1]}}  {header[2]:>{widths[2]}}", line]
    out += [f"{a:<{widths[0]}}  {b:>{widths[1]}}  {c:>{widths[2]}}" for a, b, c in table]
    return "\n".join(out)


def markdown_table(results: dict[str, Any]) -> str:
    out = ["| figure | value | vs (b) |", "|---|---:|---:|"]
    out += [f"| {r.label} | {r.text()} {r.unit} | {_ratio(r, results)} |" for r in rows(results)]
    return "\n".join(out)


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each checked: name, passed, the figures behind it."""
    bare = results["b"]["figures"]["tasks_per_s"]
    c, d, f = results["c"], results["d"], results["f"]
    out = []
    ratio = c["production_tasks_per_s"] / bare
    out.append({"target": "(c) project worker >= 0.8x bare Celery", "passed": ratio >= 0.8,
                "detail": f"{c['production_tasks_per_s']:.0f} / {bare:.0f} tasks/s = {ratio:.2f}x"})
    at2 = [r for r in d["runs"] if r["concurrency"] == 2]
    if at2:
        ratio = at2[0]["tasks_per_s"] / bare
        out.append({"target": "(d) process_user_action at concurrency 2 >= 0.4x bare Celery", "passed": ratio >= 0.4,
                    "detail": f"{at2[0]['tasks_per_s']:.0f} / {bare:.0f} tasks/s = {ratio:.2f}x"})
    pools, shared = f["pools"]["p99_ms"], f["shared"]["p99_ms"]
    bound = "≥ " if f["shared"]["lower_bound"] else ""
    out.append({"target": "(f) high-priority p99 < 50 ms on the pools, in seconds on a shared queue",
                "passed": pools < 50 and shared >= 1000,
                "detail": f"pools p99 {pools:.1f} ms, shared p99 {bound}{shared / 1000:.1f} s"})
    events = "on" if c["production_events"] else "off"
    # CPU per task decides: the rate of two identical runs differs by up to 10 % on a shared machine.
    cpu_pct = c.get("metrics_overhead_cpu_pct", float("nan"))
    out.append({"target": "(c) worker metrics overhead < 5 %", "passed": cpu_pct < 5,
                "detail": f"{cpu_pct:.1f} % of the CPU per task with events {events}; in rate "
                          f"{c['metrics_overhead_pct']:.1f} % ({c['metrics_overhead_pct_other_events']:.1f} % with "
                          f"events {'off' if c['production_events'] else 'on'})"})
    return out


def target_lines(checked: list[dict[str, Any]]) -> list[str]:
    return [f"{'PASS' if t['passed'] else 'MISS'}  {t['target']}: {t['detail']}" for t in checked]


def finite_figures(results: dict[str, Any]) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0
               for section in results.values() for v in section["figures"].values())


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")


# --- plots -------------------------------------------------------------------------------------------

_COLOURS = {"a": "#7f7f7f", "b": "#1f77b4", "c": "#2ca02c", "d": "#ff7f0e", "e": "#9467bd"}


def plot_throughput(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = [(r.label, r.value, r.label[1]) for r in rows(results) if r.kind == "rate"]
    bare = results["b"]["figures"]["tasks_per_s"]
    fig, ax = plt.subplots(figsize=(11, 0.42 * len(bars) + 1.6))
    y = range(len(bars))
    ax.barh(list(y), [v for _, v, _ in bars], color=[_COLOURS.get(s, "grey") for *_, s in bars])
    ax.set_xscale("log")
    ax.set_yticks(list(y), [label for label, _, _ in bars], fontsize=8)
    ax.invert_yaxis()
    ax.axvline(bare, color=_COLOURS["b"], linestyle="--", linewidth=1)
    for i, (_, value, _) in enumerate(bars):
        ax.text(value * 1.04, i, f"{value:,.0f}/s  ({value / bare:.2f}× bare)", va="center", fontsize=8,  # noqa: RUF001
                bbox={"facecolor": "white", "edgecolor": "none", "pad": 1})
    ax.set_xlim(right=max(v for _, v, _ in bars) * 3)
    ax.set_xlabel("messages, tasks or requests per second (log scale); dashed: (b) bare Celery")
    ax.set_title("Throughput on one Valkey + PostgreSQL, 2-process pools")
    ax.grid(axis="x", alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_latency(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f = results["f"]
    percentiles = (50, 95, 99)
    fig, ax = plt.subplots(figsize=(8, 5))
    width = 0.38
    for offset, layout, label, colour in ((-width / 2, "pools", "per-queue pools (2 + 2)", "#2ca02c"),
                                          (width / 2, "shared", "one shared queue (4)", "#d62728")):
        data = f[layout]
        values = [data[f"p{p}_ms"] for p in percentiles]
        xs = [i + offset for i in range(len(percentiles))]
        ax.bar(xs, values, width, label=label, color=colour)
        for x, value in zip(xs, values, strict=True):
            text = ("≥ " if data["lower_bound"] else "") + (f"{value / 1000:.1f} s" if value >= 1000
                                                            else f"{value:.1f} ms")
            ax.text(x, value * 1.15, text, ha="center", fontsize=8)
    ax.axhline(50, color="black", linestyle=":", linewidth=1, label="target: 50 ms")
    ax.set_yscale("log")
    ax.set_ylim(top=max(f["shared"]["p99_ms"], f["pools"]["p99_ms"]) * 5)
    ax.set_xticks(range(len(percentiles)), [f"p{p}" for p in percentiles])
    ax.set_ylabel("enqueue → start of a high-priority task, ms (log)")
    ax.set_title(f"(f) {f['high_rate']:.0f} high-priority tasks/s behind {f['low_tasks']:,} low-priority "
                 f"tasks of {f['low_task_seconds'] * 1000:.0f} ms", fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3, frameon=False)
    ax.grid(axis="y", alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- docs --------------------------------------------------------------------------------------------


def docs_section(payload: dict[str, Any], results_dir: str) -> str:
    date, machine, versions = payload["date"], payload["machine"], payload["versions"]
    minutes, seconds = divmod(round(payload["wall_seconds"]), 60)
    lines = [
        f"Last full run: **{date}** (`make bench`, {minutes} min {seconds:02d} s).",
        "",
        f"Machine: {machine['cores']} cores, {machine['cpu_model']}, {machine['memory_gib']:.1f} GiB memory, "
        f"{machine['kernel']}.",
        "",
        "Versions: " + ", ".join(f"{name} {version}" for name, version in versions.items()) + ".",
        "",
        markdown_table(payload["sections"]),
        "",
        "Targets:",
        "",
        *(f"- {line}" for line in target_lines(payload["targets"])),
        "",
    ]
    if payload["errors"] or payload["notes"]:
        lines += [*(f"- ERROR: {e}" for e in payload["errors"]), *(f"- note: {n}" for n in payload["notes"]), ""]
    lines += [
        f"![throughput]({results_dir}/{date}-throughput.png)",
        "",
        f"![latency]({results_dir}/{date}-latency.png)",
        "",
        f"Every figure, the sizes, settings and command lines: [{date}.json]({results_dir}/{date}.json).",
    ]
    return "\n".join(lines)


def update_docs(path: Path, section: str) -> None:
    text = path.read_text()
    pattern = re.compile(re.escape(DOCS_START) + r".*?" + re.escape(DOCS_END), re.DOTALL)
    if not pattern.search(text):
        raise RuntimeError(f"{path} has no {DOCS_START} … {DOCS_END} markers")
    path.write_text(pattern.sub(lambda _: f"{DOCS_START}\n{section}\n{DOCS_END}", text))
