"""results.json -> a markdown table and a latency plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

_FANOUT_ROWS: tuple[tuple[str, str], ...] = (
    ("established", "established"),
    ("lost", "lost"),
    ("duplicated", "duplicated"),
    ("latency_ms.p50", "fan-out p50 (ms)"),
    ("latency_ms.p90", "fan-out p90 (ms)"),
    ("latency_ms.p99", "fan-out p99 (ms)"),
    ("latency_ms.max", "fan-out max (ms)"),
    ("connect_ms.p50", "connect p50 (ms)"),
    ("connect_ms.p99", "connect p99 (ms)"),
    ("rss_per_stream_kb", "RSS per stream (KB)"),
    ("server_cpu_ms_per_1000_deliveries", "server CPU per 1,000 deliveries (ms)"),
    ("client_cpu_pct", "load generator CPU (%)"),
    ("client_loop_lag_ms.p99", "load generator loop lag p99 (ms)"),
    ("client_loop_lag_ms.max", "load generator loop lag max (ms)"),
    ("client_loop_lag_while_connecting_ms.p99", "load generator loop lag p99 while connecting (ms)"),
)


def _get(result: dict[str, Any], dotted: str) -> Any:
    value: Any = result
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _ratio(ours: Any, theirs: Any) -> str:
    if not isinstance(ours, int | float) or not isinstance(theirs, int | float) or theirs == 0:
        return "-"
    return f"{ours / theirs:.2f}"


def targets_markdown(fanout: dict[str, Any]) -> list[str]:
    """The targets of the brief, per load: reported, never asserted."""
    lines = [
        "| load | fan-out p99 ours/nchan (target <= 1.5) | RSS/stream ours/nchan (target <= 2) | lost ours"
        " (target 0) | connect p99 ours (target < 200 ms) |",
        "|---|---|---|---|---|",
    ]
    for name, per_target in fanout.get("loads", {}).items():
        ours = next((r for t, r in per_target.items() if t != "nchan" and "error" not in r), None)
        theirs = per_target.get("nchan")
        if ours is None:
            continue
        have_nchan = theirs is not None and "error" not in theirs

        def verdict(value: float | None, limit: float, below: bool = True) -> str:
            if value is None:
                return "-"
            ok = value <= limit if below else value < limit
            return f"{_fmt(value)} ({'met' if ok else 'NOT met'})"

        p99 = _get(ours, "latency_ms.p99")
        ratio_p99 = p99 / theirs["latency_ms"]["p99"] if have_nchan and p99 and theirs["latency_ms"]["p99"] else None
        rss = ours.get("rss_per_stream_kb")
        ratio_rss = rss / theirs["rss_per_stream_kb"] if have_nchan and rss and theirs["rss_per_stream_kb"] else None
        lines.append(
            f"| ({name}) | {verdict(ratio_p99, 1.5)} | {verdict(ratio_rss, 2.0)} | {verdict(ours['lost'], 0)} |"
            f" {verdict(_get(ours, 'connect_ms.p99'), 200.0, below=False)} |"
        )
    return lines


def fanout_markdown(fanout: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for name, per_target in fanout.get("loads", {}).items():
        targets = list(per_target)
        first = next((r for r in per_target.values() if "label" in r), None)
        lines.append(f"### Load {first['label'] if first else name}")
        lines.append("")
        ours = next((t for t in targets if t != "nchan"), None)
        header = ["figure", *targets] + (["ours/nchan"] if ours and "nchan" in targets else [])
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for key, title in _FANOUT_ROWS:
            row = [title] + [_fmt(_get(per_target[t], key)) for t in targets]
            if ours and "nchan" in targets:
                row.append(_ratio(_get(per_target[ours], key), _get(per_target["nchan"], key)))
            lines.append("| " + " | ".join(row) + " |")
        for target, result in per_target.items():
            if "error" in result:
                lines.append(f"\n{target} failed: `{result['error']}`")
            else:
                extras = [
                    f"sent {result['notifications_sent']:,}",
                    f"expected deliveries {result['expected_deliveries']:,}",
                    f"delivered {result['delivered']:,}",
                    f"misrouted {result['misrouted']}",
                    f"connect errors {result['connect_errors'] or 0}",
                    f"closed during run {result['closed_during_run']}",
                    f"heartbeats {result['heartbeats_received']:,}",
                    f"RSS {result['rss_before_mb']} -> {result['rss_after_connect_mb']} MB",
                    f"load average {result['load_average_before']} -> {result['load_average_after']}",
                ]
                profile = result.get("server_profile")
                if profile:
                    extras.append(
                        f"slow deliveries (> 50 ms) {profile['slow_deliveries_over_50ms']:,}, of which"
                        f" {profile['slow_deliveries_within_1s_after_heartbeat_burst']:,} within 1 s after a"
                        f" heartbeat burst and {profile['slow_deliveries_overlapping_gc']:,} overlapping a GC pause;"
                        f" slow connects (> 200 ms) {profile['slow_connects_over_200ms']:,}, of which"
                        f" {profile['slow_connects_within_1s_after_heartbeat_burst']:,} after a heartbeat burst and"
                        f" {profile['slow_connects_overlapping_gen2_gc']:,} in a full (gen2) GC; full GCs while"
                        f" connecting {profile['gc_while_connecting']['gen2_pauses']} (longest"
                        f" {profile['gc_while_connecting']['gen2_max_ms']} ms, total"
                        f" {profile['gc_while_connecting']['gen2_total_ms']} ms); longest Hub.heartbeat call"
                        f" {profile['heartbeat_call_max_ms']} ms; GC gen1/2 pauses while publishing"
                        f" {profile['gc_pauses_gen1_2_while_publishing']} (max {profile['gc_pause_max_ms']} ms)"
                    )
                lines.append(f"\n{target}: " + "; ".join(extras) + ".")
        lines.append("")
    for note in fanout.get("notes", []):
        lines.append(f"- {note}")
    return lines


def pipeline_markdown(pipeline: dict[str, Any]) -> list[str]:
    if "error" in pipeline:
        return [f"Pipeline failed: `{pipeline['error']}`"]
    e2e = pipeline.get("end_to_end_ms", {})
    lines = [
        f"Published {pipeline['published']:,} events at {pipeline['rate']}/s to {pipeline['streams']} streams "
        f"of {pipeline['users']} users; received {pipeline['received']:,}, lost {pipeline['lost']}, "
        f"duplicated {pipeline['duplicated']}; throughput {pipeline['throughput_per_s']}/s.",
        "",
        "| stage | p50 (ms) | p99 (ms) | max (ms) |",
        "|---|---|---|---|",
        f"| end to end (publish -> SSE) | {_fmt(e2e.get('p50'))} | {_fmt(e2e.get('p99'))} | {_fmt(e2e.get('max'))} |",
    ]
    for stage, summary in pipeline.get("stages_ms", {}).items():
        lines.append(
            f"| {stage} | {_fmt(summary.get('p50'))} | {_fmt(summary.get('p99'))} | {_fmt(summary.get('max'))} |"
        )
    return lines


def cost_markdown(cost: dict[str, Any]) -> list[str]:
    if not cost:
        return []
    lines = ["| operation | per notification | per connected user-hour |", "|---|---|---|"]
    for op in cost.get("operations", []):
        lines.append(f"| {op} | {_fmt(cost['per_notification'].get(op))} | {_fmt(cost['per_user_hour'].get(op))} |")
    lines += [
        "",
        f"Per connection (connect + disconnect): {cost.get('per_connection')}; per instance heartbeat:"
        f" {cost.get('per_instance_heartbeat')}. Per connected user-hour = per connection x connects per hour"
        " + the instance's heartbeat writes shared by the users it holds (scenario in bench/prices.json).",
    ]
    monthly = cost.get("monthly", {})
    lines += ["", f"Monthly at {cost.get('scenario', '')}:", "", "| item | quantity | USD |", "|---|---|---|"]
    for item in monthly.get("items", []):
        lines.append(f"| {item['item']} | {item['quantity']:,.0f} {item['unit']} | {item['usd']:,.2f} |")
    lines.append(f"| **total** | | **{monthly.get('total_usd', 0):,.2f}** |")
    lines.append("")
    lines.append(f"Prices: {cost.get('prices_source', '')}")
    for note in cost.get("notes", []):
        lines.append(f"- {note}")
    return lines


def write_markdown(results: dict[str, Any], path: Path) -> None:
    machine = results.get("machine", {})
    lines = [
        f"# Benchmark results ({results.get('mode')}, {results.get('started_at')})",
        "",
        f"Command: `{results.get('command')}`; {machine.get('cpus')} CPUs; load average at start "
        f"{machine.get('load_average_at_start')}, at end {machine.get('load_average_at_end')}; "
        f"took {results.get('elapsed_seconds')} s. Heartbeats every {results.get('heartbeat_seconds')} s; "
        f"streams opened at {results.get('connect_rate_per_s')}/s.",
        "",
    ]
    if "fanout" in results:
        lines += ["## Fan-out: one stream process vs nginx+nchan (one worker)", ""]
        lines += targets_markdown(results["fanout"])
        lines.append("")
        lines += fanout_markdown(results["fanout"])
        lines.append("")
    if "pipeline" in results:
        lines += ["## Full pipeline on the emulators", ""]
        lines += pipeline_markdown(results["pipeline"])
        lines.append("")
    if "cost" in results:
        lines += ["## Cost", ""]
        lines += cost_markdown(results["cost"])
        lines.append("")
    path.write_text("\n".join(lines) + "\n")


def write_plot(latencies: dict[str, list[float]], path: Path) -> None:
    """Empirical CDF of fan-out latency, one panel per load, ours and nchan side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loads = sorted({key.split(":")[0] for key in latencies})
    fig, axes = plt.subplots(1, len(loads), figsize=(5 * len(loads), 4), squeeze=False)
    for ax, load in zip(axes[0], loads, strict=True):
        for key, values in sorted(latencies.items()):
            name, target = key.split(":")
            if name != load or not values:
                continue
            ordered = sorted(v * 1000 for v in values)
            n = len(ordered)
            step = max(1, n // 2000)
            xs = [*ordered[::step], ordered[-1]]
            ys = [*(i / n for i in range(0, n, step)), 1.0]
            ax.plot(xs, ys, label=f"{target} (n={n:,})")
        ax.set_xscale("log")
        ax.set_title(f"load ({load}): fan-out latency CDF")
        ax.set_xlabel("fan-out latency (ms, log)")
        ax.set_ylabel("fraction delivered")
        ax.axhline(0.99, color="grey", linewidth=0.5, linestyle="--")
        ax.grid(True, which="both", linewidth=0.3)
        ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
