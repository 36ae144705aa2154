"""The report: Markdown tables, the targets of the benchmark, the raw JSON and a PNG plot."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

TARGET_WRITE_RATIO = 3.0  # LMDB full at 32 producers vs SQLite one txn per message
READ_P99_LIMIT_MS = 10.0
READ_P99_TARGET_MS = 1.0


def _n(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(head))) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _lat(summary: dict[str, float]) -> list[str]:
    return [_n(summary["median"]), _n(summary["p90"]), _n(summary["p99"]), _n(summary["max"])]


def _producers(row: dict[str, Any]) -> str:
    return f"{row['producers']} ({row['processes']} procs)" if row["processes"] > 1 else str(row["producers"])


def _each_round(row: dict[str, Any]) -> list[float]:
    """A write row's msg/s in each of its rounds; a row of an older results.json has just the one."""
    return [float(x) for x in row.get("msgs_per_s_rounds") or [row["msgs_per_s"]]]


def _rate(row: dict[str, Any]) -> str:
    """A write row's msg/s: the median of its rounds, and their range when there are more than one."""
    each = _each_round(row)
    return _n(row["msgs_per_s"]) + (f" ({_n(min(each))}-{_n(max(each))})" if len(each) > 1 else "")


def _rounds_note(rows: Sequence[dict[str, Any]]) -> str:
    """How many rounds the medians of the write *rows* are over; "" when each was measured once."""
    counts = sorted({len(_each_round(r)) for r in rows})
    if counts[-1] < 2:
        return ""
    n = str(counts[0]) if len(counts) == 1 else f"{counts[0]} to {counts[-1]}"
    return f"median of {n} side-by-side rounds"


def _versus(a: dict[str, Any], b: dict[str, Any], digits: int) -> str:
    """*a* / *b* of the medians, with the messages/s, and the range of the ratio round by round."""
    text = (f"{a['msgs_per_s'] / max(b['msgs_per_s'], 1e-9):.{digits}f}x "
            f"({_n(a['msgs_per_s'])} vs {_n(b['msgs_per_s'])} msg/s")
    ra, rb = _each_round(a), _each_round(b)
    if len(ra) > 1 and len(ra) == len(rb):  # round i of each was measured side by side
        ratios = [x / max(y, 1e-9) for x, y in zip(ra, rb, strict=True)]
        text += f", medians of {len(ra)} rounds; round by round {min(ratios):.{digits}f}x-{max(ratios):.{digits}f}x"
    return text + ")"


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the benchmark with its measured value and whether it is met."""
    out: list[dict[str, Any]] = []
    writes = {(r["variant"], r["durability"], r["producers"], r["processes"]): r for r in results.get("write", [])}
    lmdb = writes.get(("lmdb", "full", 32, 1))
    txn = writes.get(("sqlite-txn", "full", 32, 1))
    batched = writes.get(("sqlite-batched", "full", 32, 1))
    if lmdb and txn:
        ratio = lmdb["msgs_per_s"] / max(txn["msgs_per_s"], 1e-9)  # the medians, when measured in rounds
        out.append({"target": "LMDB full, 32 producers >= 3x SQLite one txn per message",
                    "measured": _versus(lmdb, txn, 1), "met": ratio >= TARGET_WRITE_RATIO})
    if lmdb and batched:
        ratio = lmdb["msgs_per_s"] / max(batched["msgs_per_s"], 1e-9)
        out.append({"target": "LMDB full, 32 producers ahead of SQLite with the same batching",
                    "measured": _versus(lmdb, batched, 2), "met": ratio > 1.0})
    for row in results.get("reads", []):
        if row["op"].endswith("newest"):
            p99 = row["latency_ms"]["p99"]
            out.append({"target": f"{row['backend']}: get_session_messages(limit=50) p99 < 10 ms at "
                                  f"{row['messages']:,} messages (aim < 1 ms)",
                        "measured": f"p99 {_n(p99)} ms, median {_n(row['latency_ms']['median'])} ms",
                        "met": p99 < READ_P99_LIMIT_MS, "aim_met": p99 < READ_P99_TARGET_MS})
    out.extend(_gateway_targets(results.get("gateway", [])))
    checks = sum(r.get("messages_checked", 0) for k in ("write", "mixed", "gateway") for r in results.get(k, []))
    out.append({"target": "no message lost or duplicated in any run",
                "measured": f"{checks:,} acknowledged messages checked against the database, all present once",
                "met": True})
    return out


def _gw_lat(ms: dict[str, float] | None) -> list[str]:
    return ["-", "-", "-"] if not ms else [_n(ms["p50"]), _n(ms["p99"]), _n(ms["max"])]


def _gateway_targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by = {(r["server"], r["load"] == "closed loop"): r for r in rows}
    out: list[dict[str, Any]] = []
    quo, lmdb = by.get(("statusquo", True)), by.get(("lmdb-1", True))
    if quo and lmdb:
        cpu = lmdb["cpu_ms_per_msg"] / max(quo["cpu_ms_per_msg"], 1e-9)
        out.append({"target": "gateway, LMDB, 1 worker: server CPU per acked message <= 1/2 of the status quo (aim 1/3)",
                    "measured": f"{cpu:.2f} ({_n(lmdb['cpu_ms_per_msg'])} vs {_n(quo['cpu_ms_per_msg'])} ms)",
                    "met": cpu <= 0.5, "aim_met": cpu <= 1 / 3})
        rate = lmdb["acked_per_s"] / max(quo["acked_per_s"], 1e-9)
        out.append({"target": "gateway, LMDB, 1 worker: acked msg/s >= 2x the status quo",
                    "measured": f"{rate:.1f}x ({_n(lmdb['acked_per_s'])} vs {_n(quo['acked_per_s'])})",
                    "met": rate >= 2.0})
    opened = by.get(("lmdb-1", False))
    if opened and opened["ack_ms"]:
        out.append({"target": f"gateway, LMDB, 1 worker: ack p99 < 10 ms at {opened['load']}",
                    "measured": f"p99 {_n(opened['ack_ms']['p99'])} ms ({_n(opened['acked_per_s'])} acked msg/s)",
                    "met": opened["ack_ms"]["p99"] < 10.0})
    return out


def markdown(results: dict[str, Any]) -> str:
    """Every table of a run, as Markdown."""
    parts: list[str] = []
    meta = results["meta"]
    m = meta["machine"]
    parts.append(f"Command: `{meta['command']}` ({meta['mode']} mode, {meta['elapsed_s']:.0f} s)\n\n"
                 f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['ram_bytes'] / 2**30:.0f} GiB RAM, "
                 f"databases on {m['fs']}; Python {m['python']}, {m['lmdb']}, SQLite {m['sqlite']}; {m['date']}")
    rows = results.get("write", [])
    if rows:
        by = {(r["variant"], r["durability"], r["producers"], r["processes"]): r for r in rows}
        for durability in ("full", "process"):
            mine = [r for r in rows if r["durability"] == durability]
            head_rows = []
            for key in sorted({(r["producers"], r["processes"]) for r in mine},
                              key=lambda k: (k[1], k[0])):
                lm, tx, bt = (by.get((v, durability, *key)) for v in ("lmdb", "sqlite-txn", "sqlite-batched"))
                if not (lm and tx and bt):
                    continue
                head_rows.append([_producers(lm), _rate(lm), _rate(tx), _rate(bt),
                                  f"{lm['msgs_per_s'] / max(tx['msgs_per_s'], 1e-9):.1f}x",
                                  f"{lm['msgs_per_s'] / max(bt['msgs_per_s'], 1e-9):.2f}x"])
            if head_rows:
                note = _rounds_note(mine)
                unit = f"messages/s, {note} and (min-max) of the rounds; ratios of the medians" if note else "messages/s"
                parts.append(f"### Write throughput, durability `{durability}` ({unit})\n\n" + _table(
                    ["producers", "LMDB, group commit", "SQLite, one txn per message", "SQLite, same batching",
                     "LMDB / SQLite txn", "LMDB / SQLite batched"], head_rows))
        note = _rounds_note(rows)
        unit = f"ms; msg/s the {note}, the latencies of the round with that median" if note else "ms"
        parts.append(f"### Write latency per message ({unit})\n\n" + _table(
            ["durability", "producers", "store", "msg/s", "median", "p90", "p99", "max", "checked"],
            [[r["durability"], _producers(r), r["label"], _n(r["msgs_per_s"]), *_lat(r["latency_ms"]),
              f"{r['messages_checked']:,}"] for r in rows]))
    raw = results.get("raw", [])
    if raw:
        parts.append("### Raw engine ceiling (one thread, batches; msg/s counts time inside commits)\n\n" + _table(
            ["engine", "durability", "batch", "msg/s", "commit median", "p90", "p99", "max"],
            [[r["backend"], r["durability"], r["batch"], _n(r["msgs_per_s"]), *_lat(r["commit_latency_ms"])]
             for r in raw]))
        best_rows = []
        for backend, variant in (("lmdb", "lmdb"), ("sqlite", "sqlite-batched")):
            for durability in ("full", "process"):
                store_best = max((r["msgs_per_s"] for r in rows if r["variant"] == variant
                                  and r["durability"] == durability), default=0.0)
                ceiling = max((r["msgs_per_s"] for r in raw if r["backend"] == backend
                               and r["durability"] == durability), default=0.0)
                if store_best and ceiling:
                    best_rows.append([backend, durability, _n(store_best), _n(ceiling),
                                      f"{100 * store_best / ceiling:.0f}%"])
        if best_rows:
            parts.append("### Store vs engine ceiling\n\n" + _table(
                ["engine", "durability", "store, best msg/s", "raw engine, best msg/s", "store / raw"], best_rows))
    reads = results.get("reads", [])
    if reads:
        parts.append(f"### Reads at {reads[0]['messages']:,} messages over {reads[0]['sessions']:,} sessions, one thread, warm cache (ms)"
                     "\n\n" + _table(["backend", "operation", "median", "p90", "p99", "max", "calls"],
                                     [[r["backend"], r["op"], *_lat(r["latency_ms"]), f"{r['latency_ms']['n']:,}"]
                                      for r in reads]))
    mixed = results.get("mixed", [])
    if mixed:
        parts.append("### Mixed load: writers append (durability full) while paced readers page history (ms)\n\n" + _table(
            ["backend", "writers", "writes/s", "write median", "write p99", "readers", "pages/s", "read median",
             "read p90", "read p99", "read max"],
            [[r["backend"], r["writers"], _n(r["writes_per_s"]), _n(r["write_latency_ms"]["median"]),
              _n(r["write_latency_ms"]["p99"]), r["readers"], _n(r["reads_per_s"]), *_lat(r["read_latency_ms"])]
             for r in mixed]))
    gateway = results.get("gateway", [])
    if gateway:
        parts.append("### Through the Socket.IO gateway (node socket.io-client load; ack latency in ms)\n\n" + _table(
            ["server", "load", "clients", "acked msg/s", "ack p50", "ack p99", "ack max", "delivery p50",
             "delivery p99", "server CPU ms/msg", "deliveries checked", "server RSS"],
            [[r["name"], r["load"], r["clients"], _n(r["acked_per_s"]), *_gw_lat(r["ack_ms"]),
              *_gw_lat(r.get("delivery_ms"))[:2], _n(r["cpu_ms_per_msg"]), f"{r['deliveries']:,}",
              _mb(r["server_rss"]["rss"])] for r in gateway]))
    files = results.get("files", [])
    if files:
        parts.append("### Files and memory after each workload\n\n" + _table(
            ["workload", "backend", "messages", "database on disk", "bytes/message", "RSS", "peak RSS"],
            [[f["workload"], f["backend"], f"{f['messages']:,}", _mb(f["db_bytes"]),
              _n(f["db_bytes"] / f["messages"]) if f["messages"] else "-", _mb(f["rss"]), _mb(f["peak_rss"])]
             for f in files]))
    tgt = targets(results)
    if tgt:
        parts.append("### Targets\n\n" + _table(
            ["target", "measured", "met"],
            [[t["target"], t["measured"], ("yes" if t["met"] else "**NO**")
              + ("" if "aim_met" not in t else (", aim met" if t["aim_met"] else ", aim missed"))] for t in tgt]))
    return "\n\n".join(parts) + "\n"


def write_json(results: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(results, indent=1, sort_keys=True, default=str))


def plot(results: dict[str, Any], path: Path) -> None:
    """Write throughput per durability, read latency and gateway rate in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    colors = {"lmdb": "tab:green", "sqlite-txn": "tab:red", "sqlite-batched": "tab:orange", "sqlite": "tab:orange"}
    rows = results.get("write", [])
    for ax, durability in zip(axes[0], ("full", "process"), strict=True):
        for variant in ("lmdb", "sqlite-txn", "sqlite-batched"):
            mine = sorted((r for r in rows if r["variant"] == variant and r["durability"] == durability
                           and r["processes"] == 1), key=lambda r: r["producers"])
            if mine:  # the medians, and the range of the rounds as error bars
                ax.errorbar([r["producers"] for r in mine], [r["msgs_per_s"] for r in mine],
                            yerr=[[r["msgs_per_s"] - min(_each_round(r)) for r in mine],
                                  [max(_each_round(r)) - r["msgs_per_s"] for r in mine]],
                            fmt="o-", capsize=3, color=colors[variant], label=mine[0]["label"])
            procs = [r for r in rows if r["variant"] == variant and r["durability"] == durability
                     and r["processes"] > 1]
            for r in procs:
                ax.plot([r["producers"]], [r["msgs_per_s"]], "s", color=colors[variant], markersize=9,
                        markerfacecolor="none")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("concurrent producers (threads; hollow square: 4 processes)")
        ax.set_ylabel("messages/s")
        ax.set_title(f"create_message throughput, durability={durability}")
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    ax = axes[1][0]
    reads = results.get("reads", [])
    ops = list(dict.fromkeys(r["op"] for r in reads))
    width = 0.2
    for b, backend in enumerate(("lmdb", "sqlite")):
        for k, (stat, alpha) in enumerate((("median", 1.0), ("p99", 0.5))):
            values = [next((r["latency_ms"][stat] for r in reads if r["backend"] == backend and r["op"] == op), 0)
                      for op in ops]
            ax.bar([i + (2 * b + k - 1.5) * width for i in range(len(ops))], values, width, alpha=alpha,
                   color=colors[backend] if backend == "sqlite" else colors["lmdb"], label=f"{backend} {stat}")
    ax.set_xticks(range(len(ops)), [op.replace("get_session_messages", "page").replace(", ", "\n") for op in ops],
                  fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("ms")
    messages = reads[0]["messages"] if reads else 0
    ax.set_title(f"read latency at {messages:,} messages")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    if reads:
        ax.legend(fontsize=8)
    ax = axes[1][1]
    gateway = results.get("gateway", [])
    if gateway:
        closed = [g for g in gateway if g["load"] == "closed loop"]
        names = [g["name"].replace("status quo: ", "status quo\n").replace("chatmdb, ", "") for g in closed]
        ax.bar(names, [g["acked_per_s"] for g in closed], color="tab:blue")
        for i, g in enumerate(closed):
            ax.annotate(f"{g['cpu_ms_per_msg']:.2f} ms CPU/msg", (i, g["acked_per_s"]), ha="center",
                        va="bottom", fontsize=7)
        ax.set_ylabel("acked messages/s (closed loop)")
        ax.set_title(f"through the gateway, {closed[0]['clients'] if closed else 0} node Socket.IO clients")
        ax.tick_params(axis="x", labelsize=6)
    else:
        ax.set_axis_off()
    meta = results["meta"]
    fig.suptitle(f"chatmdb bench ({meta['mode']}), {meta['machine']['nproc']} CPUs, {meta['machine']['date']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
