"""Comparison outputs: Pareto fronts, the one-line recommendation, the table, the plot and the files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def cost_axis(rows: list[dict[str, Any]]) -> str:
    """``cost_usd`` when any row has a price, else ``encode_hours`` (a config without a price)."""
    return "cost_usd" if any((r.get("cost_usd") or 0) > 0 for r in rows) else "encode_hours"


def pareto_front(rows: list[dict[str, Any]], x: str, y: str) -> list[int]:
    """Indices of the rows no other row beats: at most the same ``x`` (cost) and at least the same
    ``y`` (quality), better in one. Sorted by ``x``."""
    front = []
    for i, r in enumerate(rows):
        dominated = any((o[x] <= r[x] and o[y] >= r[y]) and (o[x] < r[x] or o[y] > r[y])
                        for j, o in enumerate(rows) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (rows[i][x], -rows[i][y]))


def add_pareto(result: dict[str, Any]) -> None:
    """``result["pareto"]``: the front of quality against cost and against bytes per vector."""
    rows, metric = result["rows"], f"ndcg@{result['k']}"
    cost = cost_axis(rows)
    result["pareto"] = {"cost_axis": cost, "cost": pareto_front(rows, cost, metric),
                        "bytes": pareto_front(rows, "bytes_per_vector", metric)}
    for n, r in enumerate(rows):
        r["pareto_cost"] = n in result["pareto"]["cost"]
        r["pareto_bytes"] = n in result["pareto"]["bytes"]


def _label(r: dict[str, Any]) -> str:
    return f"{r['model']} {r['dim']}-d {r['quantization']} {r['mode']}"


def recommend(result: dict[str, Any], tolerance: float) -> dict[str, Any]:
    """The cheapest setting within ``tolerance`` nDCG@k of the best: lowest encode cost (dollars, or
    hours without a price), then fewest bytes per vector, then lowest p50 latency."""
    rows, metric = result["rows"], f"ndcg@{result['k']}"
    if not rows:
        return {"text": "no setting to recommend", "row": None}
    best = max(range(len(rows)), key=lambda i: rows[i][metric])
    floor = rows[best][metric] - tolerance
    cost = cost_axis(rows)
    ok = [i for i, r in enumerate(rows) if r[metric] >= floor - 1e-12]
    pick = min(ok, key=lambda i: (rows[i][cost], rows[i]["bytes_per_vector"], rows[i]["p50_ms"], -rows[i][metric]))
    r, b = rows[pick], rows[best]
    price = f"${r['cost_usd']:,.2f}" if cost == "cost_usd" else f"{r['encode_hours']:.3g} encode hours (no price set)"
    text = (f"Recommended: {_label(r)}: nDCG@{result['k']} {r[metric]:.4f}, within {tolerance:g} of the best "
            f"{b[metric]:.4f} ({_label(b)}); full-corpus encode {price}, {r['bytes_per_vector']} bytes/vector, "
            f"p50 {r['p50_ms']:.2f} ms. Cheapest = lowest encode cost, then fewest bytes per vector.")
    return {"row": pick, "best_row": best, "tolerance": tolerance, "metric": metric, "cost_axis": cost, "text": text}


def markdown(result: dict[str, Any]) -> str:
    """The table (one row per model x dim x quantization x mode), the notes and the recommendation."""
    k = result["k"]
    cols = ["model", "dim", "quantization", "mode", f"ndcg@{k}", "recall@100", f"mrr@{k}", "tokens/s",
            "encode h", "cost $", "bytes/vector", "index RAM", "p50 ms", "p95 ms", "front"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in result["rows"]:
        front = "+".join(x for x, on in (("cost", r.get("pareto_cost")), ("bytes", r.get("pareto_bytes"))) if on)
        vals = [r["model"], r["dim"], r["quantization"], r["mode"], f"{r[f'ndcg@{k}']:.4f}", f"{r['recall@100']:.4f}",
                f"{r[f'mrr@{k}']:.4f}", f"{r['tokens_per_s']:,.0f}", f"{r['encode_hours']:.4g}",
                f"{r['cost_usd']:,.2f}", r["bytes_per_vector"], _human(r["index_ram_bytes"]), f"{r['p50_ms']:.2f}",
                f"{r['p95_ms']:.2f}", front]
        lines.append("| " + " | ".join(str(v) for v in vals) + " |")
    base = "; ".join(f"{b['mode']}{' (' + b['model'] + ')' if b.get('model') else ''} nDCG@{k} {b[f'ndcg@{k}']:.4f}"
                     for b in result.get("baselines", []))
    q = result["queries"]
    qline = (f"{q['count']} pseudo-queries: {q['pseudo']['method']}" if q["source"] == "pseudo"
             else f"{q['count']} judged queries")
    est = "; ".join(f"{m['model']}: {m['tokens_per_s']:,.0f} tokens/s measured on {m['bench_device']}, estimate on "
                    f"{m['estimate']['device']} ({m['estimate']['throughput_basis']}), price: "
                    f"{m['estimate'].get('gpu_hour_source') or 'none set'}" for m in result["models"])
    skipped = "; ".join(f"{m['model']} skips dims {m['skipped_dims']} (above its {m['full_dim']})"
                        for m in result["models"] if m["skipped_dims"])
    head = [f"Documents: {result['corpus']['note']}.", f"Queries: {qline}.",
            f"Lexical baselines: {base}." if base else "", f"Throughput and cost: {est}." if est else "",
            f"Dims: {skipped}." if skipped else ""]
    return ("\n\n".join(h for h in head if h) + "\n\n" + "\n".join(lines) + "\n\n"
            + result["recommendation"]["text"] + "\n")


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024:
            return f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} PB"


def plot(result: dict[str, Any], path: Path) -> Path:
    """Two panels: nDCG@k against full-corpus encode cost and against bytes per vector, one color
    per model, circles dense and squares hybrid, the Pareto front drawn as a step line through its
    points (ringed), the recommendation starred and BM25 as a dotted line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    k, rows = result["k"], result["rows"]
    metric = f"ndcg@{k}"
    models = list(dict.fromkeys(r["model"] for r in rows))
    palette = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray"]
    color = {m: palette[i % len(palette)] for i, m in enumerate(models)}
    cost = result["pareto"]["cost_axis"]
    rec = result["recommendation"].get("row")
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=True)
    for ax, x, front, xlabel in ((axes[0], cost, result["pareto"]["cost"],
                                  "full-corpus encode cost ($)" if cost == "cost_usd" else "full-corpus encode hours"),
                                 (axes[1], "bytes_per_vector", result["pareto"]["bytes"], "bytes per vector (stored)")):
        for r in rows:
            ax.scatter(r[x], r[metric], color=color[r["model"]], marker="o" if r["mode"] == "dense" else "s", s=28,
                       alpha=0.85, zorder=3)
            ax.annotate(f"{r['dim']}/{r['quantization']}", (r[x], r[metric]), textcoords="offset points",
                        xytext=(3, 3), fontsize=6, color=color[r["model"]])
        pts = [(rows[i][x], rows[i][metric]) for i in front]
        if pts:
            ax.step([p[0] for p in pts], [p[1] for p in pts], where="post", color="black", linewidth=1, zorder=2)
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], facecolors="none", edgecolors="black", s=90, zorder=4)
        if rec is not None:
            ax.scatter(rows[rec][x], rows[rec][metric], marker="*", color="gold", edgecolors="black", s=220, zorder=5)
        for b in result.get("baselines", []):
            if b["mode"] == "bm25":
                ax.axhline(b[metric], color="gray", linestyle=":", linewidth=1)
        if x == "bytes_per_vector" and len({r[x] for r in rows}) > 1:
            ax.set_xscale("log", base=2)
        ax.set_xlabel(xlabel)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel(f"nDCG@{k}")
    handles = [Line2D([], [], color=color[m], marker="o", linestyle="none", label=m.rsplit("/", 1)[-1]) for m in models]
    handles += [Line2D([], [], color="black", marker="o", linestyle="none", markerfacecolor="none", label="dense"),
                Line2D([], [], color="black", marker="s", linestyle="none", markerfacecolor="none", label="hybrid"),
                Line2D([], [], color="black", linewidth=1, label="Pareto front"),
                Line2D([], [], color="gold", marker="*", linestyle="none", markeredgecolor="black",
                       markersize=12, label=f"recommended (tolerance {result['tolerance']:g})"),
                Line2D([], [], color="gray", linestyle=":", label="bm25")]
    axes[1].legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    q = result["queries"]
    fig.suptitle(f"{Path(result['config_corpus']).name}: {result['corpus']['documents']:,} documents, {q['count']} "
                 f"{'pseudo-' if q['source'] == 'pseudo' else ''}queries (labels: dim/quantization)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_outputs(result: dict[str, Any], out_dir: str | Path, name: str = "compare") -> dict[str, str]:
    """``<name>.json``, ``<name>.md``, ``<name>.png`` (and the pseudo-queries as BEIR files) under ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / f"{name}.json", "md": out / f"{name}.md", "png": out / f"{name}.png"}
    pseudo = result.get("pseudo_set")
    files = {kind: str(p) for kind, p in paths.items()}
    if pseudo is not None:
        files.update({f"pseudo_{k}": v for k, v in pseudo.write(out).items()})
    result["outputs"] = files
    paths["json"].write_text(json.dumps(jsonable(result), indent=2, default=str) + "\n")
    paths["md"].write_text(markdown(result))
    plot(result, paths["png"])
    return files


def jsonable(result: dict[str, Any]) -> dict[str, Any]:
    """The result without the in-memory pseudo-query set (it is written as its own files)."""
    return {k: v for k, v in result.items() if k != "pseudo_set"}
