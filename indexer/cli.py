"""Command line: ``indexer run | search | eval | compare | estimate | bench | rollback | sample``.

Every command takes a CONFIG file and repeatable ``--set dotted.key=value`` overrides. With
``--json`` stdout carries exactly one JSON object; progress and logs go to stderr.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Any, Iterator, List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .cli_output import emit_json, hold_stdout
from .config import ConfigError, JobConfig, load_config

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
err = Console(stderr=True)

SetOpt = typer.Option(None, "--set", help="Override a config key: dotted.key=value (repeatable).")
JsonOpt = typer.Option(False, "--json", help="Print one JSON object on stdout.")


def _setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "urllib3", "elastic_transport", "filelock", "sentence_transformers", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not verbose:  # read when huggingface_hub is first imported: no weight-loading bars
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def _load(config: Path, overrides: Optional[List[str]]) -> JobConfig:
    try:
        return load_config(config, overrides or [])
    except ConfigError as e:
        err.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from None


@contextlib.contextmanager
def stdout_to_stderr(enabled: bool) -> Iterator[None]:
    """With ``--json``: from here until the process exits, fd 1 (Ray, C libraries, stray prints)
    goes to stderr; only :func:`_emit_json` writes to the real stdout."""
    if enabled:
        hold_stdout()
    yield


def _emit_json(obj: Any) -> None:
    emit_json(obj)


def ensure_sample(cfg: JobConfig) -> None:
    """Build the bundled sample corpus at corpus.path when the config asks for it and it's missing."""
    if cfg.corpus.sample and not cfg.corpus.path.startswith("s3://") and not Path(cfg.corpus.path).exists():
        from .sample_corpus import build_sample

        counts = build_sample(cfg.corpus.path)
        err.print(f"built the sample corpus at {cfg.corpus.path}: {counts}")


def _manifest_table(m: dict[str, Any]) -> Table:
    t = Table(title=f"run {m['run_id']} ({m['status']}, {m['seconds']}s)")
    t.add_column("stage")
    t.add_column("rows", justify="right")
    t.add_column("seconds", justify="right")
    t.add_column("rows/s", justify="right")
    for name, s in m["stages"].items():
        t.add_row(name, str(s.get("rows", "")), str(s.get("seconds", "")), str(s.get("rows_per_s", "")))
    return t


@app.command()
def run(config: Path, set_: Optional[List[str]] = SetOpt, json_out: bool = JsonOpt,
        full: bool = typer.Option(False, "--full", help="Rebuild every chunk into a new version."),
        allow_deletes: bool = typer.Option(
            False, "--allow-deletes", help="Let this run delete more of the live index than "
            "index.max_delete_fraction allows (the deletion guard otherwise refuses it, exit 3)."),
        verbose: bool = typer.Option(False, "-v", "--verbose", help="Show Ray's and the libraries' own logs."),
        progress_every: float = typer.Option(10.0, "--progress-every", help="Seconds between progress lines "
                                             "when stderr is not a terminal (job logs).")) -> None:
    """Index the corpus named in CONFIG. Exit codes: 0 ok, 1 gate failed, 2 config or corpus mistake,
    3 refused by a guard or another run holding the index, 4 succeeded but some files were unreadable,
    5 a store stayed unavailable."""
    _setup_logging(verbose)
    cfg = _load(config, set_)
    from .cli_progress import RunProgress, quiet_libraries
    from .run import exit_codes
    from .run.guard import RunRefused
    from .run.pipeline import RunFailed, run as run_job
    from .sources.parquet import SourceError
    from .stores.base import TransientStoreError

    quiet_libraries(verbose)
    refused: Optional[RunRefused] = None
    with stdout_to_stderr(json_out):
        try:
            ensure_sample(cfg)
            with RunProgress(err, every=progress_every) as progress:
                manifest = run_job(cfg, full=full, allow_deletes=allow_deletes, progress=progress)
            code = exit_codes.exit_code(manifest)
        except RunFailed as e:
            manifest, code = e.manifest, exit_codes.GATE_FAILED
            err.print(f"[red]run failed: {escape(str(e))}[/red] (alias not moved)", soft_wrap=True)
        except RunRefused as e:
            refused = e
        except (ConfigError, SourceError) as e:
            _fail(str(e), exit_codes.USER_ERROR)
        except TransientStoreError as e:  # the store's own retries are spent: the message says what to do
            _fail(str(e), exit_codes.STORE_UNAVAILABLE)
        except KeyboardInterrupt:
            err.print("interrupted: run the same command again to resume where this run stopped", soft_wrap=True)
            raise typer.Exit(130) from None
    if refused is not None:
        err.print(str(refused), style="red", markup=False, soft_wrap=True)
        if json_out:
            _emit_json(refused.to_json())
        raise typer.Exit(exit_codes.REFUSED)
    for f in manifest.get("unreadable_files", []):
        err.print(f"unreadable, its {f['kept_rows']} live chunks kept: {f['file']}: {f['reason']}",
                  style="yellow", markup=False, soft_wrap=True)
    if json_out:
        _emit_json(manifest)
    else:
        print_manifest_summary(manifest, Console())
    raise typer.Exit(code)


def print_manifest_summary(m: dict[str, Any], out: Console) -> None:
    """What plain ``indexer run`` prints on stdout: per-stage table, counts, where the manifest is."""
    out.print(_manifest_table(m))
    out.print(", ".join(f"{k} {v}" for k, v in m["counts"].items()), soft_wrap=True)
    out.print(f"manifest: {m['rejects_path'].rsplit('rejects.parquet', 1)[0]}manifest.json", soft_wrap=True)


def _fail(msg: str, code: int = 2) -> None:
    """A user mistake: one line on stderr, no traceback."""
    err.print(f"[red]{escape(msg)}[/red]", soft_wrap=True, highlight=False)
    raise typer.Exit(code) from None


@app.command()
def search(config: Path, query: str, set_: Optional[List[str]] = SetOpt,
           mode: str = typer.Option("hybrid", "--mode", help="hybrid | dense | sparse | bm25"),
           k: int = typer.Option(10, "--k", min=1), json_out: bool = JsonOpt) -> None:
    """Search the live index."""
    _setup_logging()
    logging.getLogger().setLevel(logging.WARNING)
    cfg = _load(config, set_)
    from .search import SearchError, Searcher, check_query, hit_json

    with stdout_to_stderr(json_out):
        try:
            check_query(query)
            s = Searcher(cfg)
            hits = s.search(query, mode=mode, k=k)
            s.close()
        except SearchError as e:
            _fail(str(e))
    if json_out:
        _emit_json({"query": query, "mode": mode, "hits": [hit_json(h) for h in hits]})
        return
    t = Table(title=f"{mode}: {query}")
    t.add_column("#", justify="right")
    t.add_column("id")
    t.add_column("score", justify="right")
    t.add_column("text")
    for i, h in enumerate(hits, 1):
        text = (h.payload.get("title", "") + " | " if h.payload.get("title") else "") + h.payload.get("text", "")
        t.add_row(str(i), h.id, f"{h.score:.4f}", text[:120].replace("\n", " "))
    Console().print(t)


@app.command("eval")
def eval_cmd(config: Path, queries: Path = typer.Option(..., "--queries"), qrels: Path = typer.Option(..., "--qrels"),
             set_: Optional[List[str]] = SetOpt, k: int = typer.Option(10, "--k", min=1), json_out: bool = JsonOpt,
             modes: str = typer.Option("hybrid,dense,sparse,bm25", "--modes", help="Comma-separated modes."),
             sweep: Optional[List[str]] = typer.Option(
                 None, "--sweep", help="Sweep an axis: axis=v1,v2 (repeatable; dims, quantization, oversample, "
                 "fusion, rrf_k, hybrid, w_dense, w_sparse, w_bm25, candidates). Re-uses one encode pass."),
             out: Optional[Path] = typer.Option(None, "--out", help="Write sweep.json/.md/.png here (implies a sweep).")
             ) -> None:
    """Evaluate every search mode on BEIR-format queries and qrels (or sweep settings: --sweep, --out)."""
    _setup_logging()
    logging.getLogger().setLevel(logging.WARNING)
    cfg = _load(config, set_)
    from rich.progress import Progress

    from .eval import judged_not_indexed, load_qrels, load_queries, run_eval
    from .search import SearchError, Searcher

    try:
        query_texts, judged = load_queries(queries), load_qrels(qrels)
    except (OSError, ValueError) as e:
        _fail(str(e))
    if sweep or out:
        _eval_sweep(cfg, queries, qrels, sweep or [], out, k, json_out)
        return

    with stdout_to_stderr(json_out):
        try:
            s = Searcher(cfg)
        except SearchError as e:
            _fail(str(e))
        missing = judged_not_indexed(s, judged)
        if missing:
            err.print(f"[yellow]warning: {len(missing)} of {len({d for x in judged.values() for d in x})} "
                      f"documents judged in {qrels} are not in the index (e.g. {escape(missing[0])}): scores are "
                      "lower than the index deserves; are these the qrels of this corpus?[/yellow]", soft_wrap=True)
        with Progress(console=err, transient=True) as prog:
            task = prog.add_task("queries", total=None)
            res = run_eval(s, query_texts, judged, k=k, modes=[m.strip() for m in modes.split(",")],
                           progress=lambda d, t: prog.update(task, completed=d, total=t))
        s.close()
    res["collection"] = s.collection
    res["judged_not_indexed"] = len(missing)
    if json_out:
        _emit_json(res)
        return
    t = Table(title=f"{s.collection}: {res['queries']} queries")
    for c in ("mode", f"ndcg@{k}", "recall@100", f"mrr@{k}", "p50 ms", "p95 ms"):
        t.add_column(c, justify="right" if c != "mode" else "left")
    for m, r in res["modes"].items():
        t.add_row(m, f"{r[f'ndcg@{k}']:.4f}", f"{r['recall@100']:.4f}", f"{r[f'mrr@{k}']:.4f}",
                  f"{r['latency_ms_p50']:.1f}", f"{r['latency_ms_p95']:.1f}")
    Console().print(t)


def _eval_sweep(cfg: JobConfig, queries: Path, qrels: Path, sweep: List[str], out: Optional[Path], k: int,
                json_out: bool) -> None:
    from .eval import load_qrels, load_queries
    from .search import Searcher
    from .sweep import SweepError, markdown, parse_sweep, run_sweep, write_outputs

    try:
        axes = parse_sweep(sweep)
    except SweepError as e:
        err.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from None
    with stdout_to_stderr(json_out):
        s = Searcher(cfg)
        try:
            res = run_sweep(s, load_queries(queries), load_qrels(qrels), axes, k=k, progress=err.print)
        except SweepError as e:
            err.print(f"[red]{e}[/red]")
            raise typer.Exit(2) from None
        finally:
            s.close()
        if out:
            res["outputs"] = write_outputs(res, out)
            err.print(f"wrote {', '.join(res['outputs'].values())}")
    if json_out:
        _emit_json(res)
    else:
        sys.stdout.write(markdown(res))


@app.command()
def compare(config: Path,
            model: List[str] = typer.Option(..., "--model", help="A model to compare (repeatable): packaged:NAME, "
                                            "a local sentence-transformers folder or a cached hub name."),
            queries: Optional[Path] = typer.Option(None, "--queries", help="BEIR queries.jsonl (with --qrels)."),
            qrels: Optional[Path] = typer.Option(None, "--qrels", help="BEIR qrels TSV (with --queries)."),
            pseudo_queries: Optional[int] = typer.Option(
                None, "--pseudo-queries", help="No qrels: build N queries from the corpus (a sentence taken out "
                "of a chunk; that chunk is relevant)."),
            dims: Optional[str] = typer.Option(None, "--dims", help="Comma-separated dimensions; each model skips "
                                               "those above its own (default: its own and dense.dim)."),
            quantization: Optional[str] = typer.Option(
                None, "--quantization", help="Comma-separated: none, int8, uint8, binary, binary+int8, binary+float "
                "(default: dense.quantization)."),
            sample_docs: Optional[int] = typer.Option(
                None, "--sample-docs", help="Search every judged document plus N random distractors (default: "
                "the whole corpus up to 100,000 documents, else 100,000 distractors)."),
            seed: int = typer.Option(0, "--seed", help="Seed of the document sample and the pseudo-queries."),
            tolerance: float = typer.Option(0.01, "--tolerance", help="Recommend the cheapest setting within this "
                                            "many nDCG@10 points of the best."),
            bench_seconds: float = typer.Option(10.0, "--bench-seconds", help="Throughput measurement per model."),
            out: Optional[Path] = typer.Option(None, "--out", help="Write compare.json/.md/.png here."),
            set_: Optional[List[str]] = SetOpt, k: int = typer.Option(10, "--k", min=1),
            json_out: bool = JsonOpt) -> None:
    """Compare models on this corpus: quality, encode cost and size per model x dim x quantization."""
    _setup_logging()
    logging.getLogger().setLevel(logging.WARNING)
    cfg = _load(config, set_)
    from .compare import CompareError, CompareOptions, markdown as compare_markdown, run_compare, write_outputs
    from .compare.report import jsonable
    from .eval import load_qrels, load_queries

    def fail(msg: str) -> None:
        err.print(f"[red]{msg}[/red]", soft_wrap=True)
        raise typer.Exit(2)

    if pseudo_queries is None and (queries is None or qrels is None):
        fail("compare needs --queries FILE --qrels FILE, or --pseudo-queries N for a corpus without qrels")
    if pseudo_queries is not None and (queries is not None or qrels is not None):
        fail("give either --queries/--qrels or --pseudo-queries, not both")
    try:
        dim_list = [int(x) for x in dims.split(",") if x.strip()] if dims else None
    except ValueError:
        fail(f"--dims {dims!r}: expected comma-separated integers, e.g. 384,256")
    opts = CompareOptions(models=list(model), dims=dim_list,
                          quantizations=[x.strip() for x in quantization.split(",") if x.strip()] if quantization
                          else None, sample_docs=sample_docs, pseudo_queries=pseudo_queries, seed=seed, k=k,
                          tolerance=tolerance, bench_seconds=bench_seconds)
    try:
        q = load_queries(queries) if queries else None
        r = load_qrels(qrels) if qrels else None
    except (OSError, ValueError) as e:
        fail(str(e))
    with stdout_to_stderr(json_out):
        try:
            res = run_compare(cfg, opts, q, r, progress=err.print)
        except CompareError as e:
            fail(str(e))
        if out:
            write_outputs(res, out)
            err.print(f"wrote {', '.join(res['outputs'].values())}")
    if json_out:
        _emit_json(jsonable(res))
    else:
        sys.stdout.write(compare_markdown(res))


@app.command()
def estimate(config: Path, set_: Optional[List[str]] = SetOpt, json_out: bool = JsonOpt,
             exact: bool = typer.Option(False, "--exact", help="Tokenize everything on the cluster's CPUs."),
             workers: Optional[int] = typer.Option(None, "--workers", help="Encoder workers for wall time."),
             full: bool = typer.Option(False, "--full", help="Price a full rebuild, not the delta.")) -> None:
    """Dry run: tokens, GPU-hours, wall time, cost and storage (of the delta when a live index
    exists). Writes nothing."""
    _setup_logging()
    logging.getLogger().setLevel(logging.WARNING)
    cfg = _load(config, set_)
    from .estimate import estimate as run_estimate

    from .sources.parquet import SourceError

    with stdout_to_stderr(json_out):
        try:
            est = run_estimate(cfg, exact=exact, workers=workers, full=full)
        except (ConfigError, SourceError) as e:
            _fail(str(e))
    if json_out:
        _emit_json(est)
        return
    t = Table(title=f"estimate: {cfg.corpus.path}")
    t.add_column("item")
    t.add_column("value", justify="right")
    st = est.get("storage", {})
    d = est.get("delta") or {}
    for name, val in [
        ("chunks", f"{est['chunks']:,}"),
        (f"chunks to encode ({est['mode']})", f"{est['chunks_to_encode']:,}" + (
            f" (new {d['new']:,}, changed {d['changed']:,}, unchanged {d['unchanged']:,}, deleted {d['deleted']:,})"
            if est["mode"] == "incremental" else "")),
        ("tokens", f"{est['tokens']:,} ({est['tokens_method']})"),
        ("tokens encoded (after truncation)", f"{est['tokens_encoded']:,}"),
        ("throughput", f"{est['throughput_tokens_per_s']:,.0f} tokens/s ({est['device']}, {est['throughput_basis']})"),
        ("encode time", f"{est['encode_seconds']:,.0f} s"),
        ("GPU-hours", f"{est['gpu_hours']:.4f}"), (f"wall hours ({est['workers']} workers)", f"{est['wall_hours']:.4f}"),
        ("cost", f"${est['cost_usd']:,.2f} at ${est['gpu_hour_usd']}/h"),
        ("vector store", _human(st.get("vector_bytes", 0)) + f" (RAM {_human(st.get('vector_ram_bytes', 0))})"),
        ("text store", _human(st.get("text_bytes", 0))),
        *[(f"hosted API: {k}", f"${v:,.2f}") for k, v in est["api_comparison_usd"].items()],
    ]:
        t.add_row(name, val)
    g = est["guard"]
    t.add_row("deletion guard", f"{g['would_delete']:,} of {g['live']:,} live chunks would be deleted"
              + (f", {g['kept_unreadable']:,} kept (unreadable files)" if g["kept_unreadable"] else ""))
    Console().print(t)
    err.print(f"throughput source: {est['throughput_source']}; API prices: {est['api_price_source']}")
    if g["refused"]:
        err.print(f"warning: indexer run would be {g['message']}", style="yellow", markup=False, soft_wrap=True)


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024:
            return f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} PB"


@app.command()
def bench(config: Path, set_: Optional[List[str]] = SetOpt, json_out: bool = JsonOpt,
          seconds: float = typer.Option(20.0, "--seconds"), rows: int = typer.Option(512, "--rows")) -> None:
    """Measure the configured model's tokens/s on this hardware and save it as a throughput profile."""
    _setup_logging()
    cfg = _load(config, set_)
    from .estimate import bench_throughput, save_profile

    with stdout_to_stderr(json_out):
        prof = bench_throughput(cfg, rows=rows, seconds=seconds)
        path = save_profile(cfg, prof)
    prof["profile_path"] = str(path)
    if json_out:
        _emit_json(prof)
    else:
        err.print(f"{prof['tokens_per_s']:,.0f} tokens/s on {prof['device']}; saved to {path}")


@app.command()
def rollback(config: Path, set_: Optional[List[str]] = SetOpt, json_out: bool = JsonOpt,
             to: Optional[str] = typer.Option(None, "--to", help="Version to serve (default: the previous one).")) -> None:
    """Undo the latest run: an incremental run from its undo record (the live version as before it), a full
    build by moving the alias back to the previous version (or --to VERSION) in both stores."""
    _setup_logging()
    cfg = _load(config, set_)
    from .run.exit_codes import REFUSED
    from .run.guard import RunRefused
    from .run.publish import rollback as do_rollback

    try:
        res = do_rollback(cfg, to)
    except RunRefused as e:
        err.print(str(e), style="red", markup=False, soft_wrap=True)
        raise typer.Exit(REFUSED) from None
    except RuntimeError as e:
        err.print(f"[red]rollback failed: {e}[/red]")
        raise typer.Exit(1) from None
    if json_out:
        _emit_json(res)
    else:
        if res.get("undone_run"):
            err.print(f"undid run {res['undone_run']} on {res['to']}: {res['deleted']} added chunks deleted, "
                      f"{res['restored']} chunks restored")
        else:
            err.print(f"alias {res['alias']}: {res['from']} -> {res['to']}")


@app.command()
def sample(out: Path = typer.Option(Path(".indexer/sample"), "--out"),
           limit: Optional[int] = typer.Option(None, "--limit")) -> None:
    """Write the bundled sample corpus (stdlib docstrings) as Parquet."""
    from .sample_corpus import build_sample

    err.print(build_sample(out, limit))


def main() -> None:  # pragma: no cover - console entry
    try:
        app()
    except ConfigError as e:
        err.print(f"[red]{e}[/red]")
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
