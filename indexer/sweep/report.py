"""Sweep outputs: the markdown table, the quality-vs-bytes plot (or, for a fusion grid, the best
settings as bars), and the JSON, markdown and PNG files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .axes import DENSE_QUANTIZATIONS, fusion_key

def _weights_str(r: dict[str, Any]) -> str:
    if r.get("mode") != "hybrid" or r.get("fusion") == "rrf":
        return ""
    return " ".join(f"{m}:{r['weights'][m]:g}" for m in r.get("fused", []))


def markdown(result: dict[str, Any]) -> str:
    """The sweep table as markdown (one row per mode and setting)."""
    k = result["k"]
    cols = ["mode", "dim", "quantization", "oversample", "fusion", "rrf_k", "fused", "weights", "candidates",
            f"ndcg@{k}", "retained", "recall@100", f"mrr@{k}", "bytes/vector", "RAM bytes/vector", "p50 ms", "p95 ms"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in result["rows"]:
        vals = [r["mode"], r.get("dim", ""), r.get("quantization", ""), _g(r.get("oversample")), r.get("fusion", ""),
                r.get("rrf_k", "") if r.get("fusion") in ("rrf", "weighted_rrf") else "",
                "+".join(r.get("fused", [])), _weights_str(r), r.get("candidates", ""),
                f"{r[f'ndcg@{k}']:.4f}", f"{r['retained']:.3f}" if "retained" in r else "",
                f"{r['recall@100']:.4f}", f"{r[f'mrr@{k}']:.4f}", r.get("bytes_per_vector", ""),
                r.get("ram_bytes_per_vector", ""), f"{r['latency_ms_p50']:.2f}", f"{r['latency_ms_p95']:.2f}"]
        lines.append("| " + " | ".join(str(v) for v in vals) + " |")
    head = (f"{result['collection']}: {result['queries']} queries, {result['documents']} documents, "
            f"model {result['model']} ({result['full_dim']} d), vectors from {result['vectors_from']}.")
    return head + "\n\n" + "\n".join(lines) + "\n"


def _g(v: Any) -> str:
    return "" if v is None else f"{v:g}"


def plot(result: dict[str, Any], path: Path) -> Path:
    """nDCG@k against bytes per vector searched in RAM (log scale): one line per quantization
    through the dimensions, dense dashed and hybrid solid, each point labelled with its dimension.

    Hybrid lines use the first fusion setting of the grid and rescoring settings the index's
    oversample (or the first swept one); BM25 and sparse are horizontal lines.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    k = result["k"]
    metric = f"ndcg@{k}"
    rows = result["rows"]
    if len({(r["dim"], r["quantization"], r.get("oversample")) for r in rows if r["mode"] == "dense"}) == 1:
        return _plot_fusion(result, path)
    overs = [r["oversample"] for r in rows if r.get("oversample")]
    keep_over = result.get("oversample") if result.get("oversample") in overs else (overs[0] if overs else None)
    rows = [r for r in rows if r.get("oversample") in (None, keep_over)]
    hyb = [r for r in rows if r["mode"] == "hybrid"]
    ref = fusion_key(hyb[0]) if hyb else None
    quants = list(dict.fromkeys(r["quantization"] for r in rows if "quantization" in r))
    colors = dict(zip(DENSE_QUANTIZATIONS, ("tab:blue", "tab:green", "tab:olive", "tab:red", "tab:purple", "tab:orange")))
    markers = dict(zip(DENSE_QUANTIZATIONS, ("o", "s", "D", "v", "^", "P")))
    fig, ax = plt.subplots(figsize=(10.5, 6))
    for mode, style in (("dense", "--"), ("hybrid", "-")):
        for q in quants:
            pts = sorted((r for r in rows if r["mode"] == mode and r.get("quantization") == q
                          and (mode == "dense" or fusion_key(r) == ref)), key=lambda r: r["ram_bytes_per_vector"])
            if not pts:
                continue
            xs, ys = [r["ram_bytes_per_vector"] for r in pts], [r[metric] for r in pts]
            ax.plot(xs, ys, linestyle=style, marker=markers.get(q, "o"), color=colors.get(q, "black"), markersize=5)
            for r in pts:
                ax.annotate(str(r["dim"]), (r["ram_bytes_per_vector"], r[metric]), textcoords="offset points",
                            xytext=(3, 3), fontsize=6, color=colors.get(q, "black"))
    for r, style in zip([r for r in rows if r["mode"] in ("bm25", "sparse")], (":", "-.")):
        ax.axhline(r[metric], color="gray", linestyle=style, linewidth=1)
    handles = [Line2D([], [], color=colors.get(q, "black"), marker=markers.get(q, "o"), linestyle="none", label=q)
               for q in quants]
    fusion = f" ({hyb[0]['fusion']}, {'+'.join(hyb[0]['fused'])})" if hyb else ""
    handles += [Line2D([], [], color="black", linestyle="--", label="dense"),
                Line2D([], [], color="black", linestyle="-", label="hybrid" + fusion)]
    handles += [Line2D([], [], color="gray", linestyle=st, label=r["mode"])
                for r, st in zip([r for r in rows if r["mode"] in ("bm25", "sparse")], (":", "-."))]
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.set_xscale("log", base=2)
    over = f", x{keep_over:g} oversample" if keep_over else ""
    ax.set_xlabel("bytes per vector searched in RAM (point labels: dimension)")
    ax.set_ylabel(f"nDCG@{k}")
    ax.set_title(f"{result['collection']}: quality vs bytes per vector ({result['queries']} queries)\n"
                 f"rescoring (+int8, +float{over}) reads its vectors for the candidates only", fontsize=10)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _fusion_label(r: dict[str, Any]) -> str:
    parts = [r["fusion"], "+".join(r["fused"])]
    if r["fusion"] in ("rrf", "weighted_rrf"):
        parts.append(f"k={r['rrf_k']}")
    w = _weights_str(r)
    if w:
        parts.append(w)
    parts.append(f"c={r['candidates']}")
    return " ".join(parts)


def _plot_fusion(result: dict[str, Any], path: Path, top: int = 30) -> Path:
    """A fusion grid (one dense setting): the best ``top`` settings as bars, single modes as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = f"ndcg@{result['k']}"
    hyb = sorted((r for r in result["rows"] if r["mode"] == "hybrid"), key=lambda r: -r[metric])[:top]
    fig, ax = plt.subplots(figsize=(10.5, 0.28 * len(hyb) + 1.8))
    colors = {"rrf": "tab:blue", "weighted_rrf": "tab:cyan", "dbsf": "tab:green", "minmax": "tab:red"}
    ax.barh(range(len(hyb)), [r[metric] for r in hyb], color=[colors.get(r["fusion"], "gray") for r in hyb])
    ax.set_yticks(range(len(hyb)), [_fusion_label(r) for r in hyb], fontsize=7)
    ax.invert_yaxis()
    singles = [r for r in result["rows"] if r["mode"] != "hybrid"]
    for r, style in zip(singles, (":", "-.", "--")):
        ax.axvline(r[metric], color="black", linestyle=style, linewidth=1, label=f"{r['mode']} {r[metric]:.4f}")
    lo = min([r[metric] for r in hyb] + [r[metric] for r in singles])
    ax.set_xlim(max(0.0, lo - 0.02), max(r[metric] for r in hyb) + 0.01)
    ax.set_xlabel(f"nDCG@{result['k']}")
    ax.set_title(f"{result['collection']}: best {len(hyb)} fusion settings ({result['queries']} queries)", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_outputs(result: dict[str, Any], out_dir: str | Path, name: str = "sweep") -> dict[str, str]:
    """Write ``<name>.json``, ``<name>.md`` and ``<name>.png`` under ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / f"{name}.json", "md": out / f"{name}.md", "png": out / f"{name}.png"}
    paths["json"].write_text(json.dumps(result, indent=2, default=str) + "\n")
    paths["md"].write_text(markdown(result))
    plot(result, paths["png"])
    return {kind: str(p) for kind, p in paths.items()}
