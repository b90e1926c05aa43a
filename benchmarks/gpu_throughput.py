"""Encode-stage throughput per stage, against plain ``SentenceTransformer.encode`` on the same device.

    .venv/bin/python benchmarks/gpu_throughput.py                 # GPU: MiniLM-L6 + random BERT-base
    .venv/bin/python benchmarks/gpu_throughput.py --cpu-tiny      # tiny random BERT on CPU, seconds

Per model it measures, on synthetic chunks (whole-word vocabulary tokens, 192-256 tokens each
with ``--tokens 256``):

* ``tokenize``: the CPU tokenize stage in this process (one core); ``cores_to_feed`` is how many
  such cores one device's encode rate needs.
* ``encode``: the model on the device (pre-tokenized ids, token-budget batches), repeated for at
  least ``--min-seconds``; useful TFLOP/s (the estimate's FLOP model,
  :mod:`indexer.estimate.cost`, over real tokens only) and the share of ``--ceiling-tflops`` (default: H100
  bf16 dense ~800 on CUDA, none on CPU), GPU utilisation sampled while it runs, padding share.
* ``postprocess``: MRL truncation + normalisation + quantization on the device, copied back.
* ``encode_actor``: the pipeline's ``Encode`` class in this process, block by block (encode,
  postprocess and the copy back overlapped as in a job).
* ``pipeline_inprocess``: tokenize on a thread pool feeding one ``Encode``, in this process.
* ``pipeline_ray`` (when ray is importable): the same ``Tokenize`` -> ``Encode`` stages through
  ``ray.data`` ``map_batches`` on in-memory data, placed by ``plan_placement``; wall time includes
  actor start-up, ``encode_rows_per_s`` is the encode stage's own span.
* ``sentence_transformers``: ``SentenceTransformer.encode`` of the same texts (fp16 on GPU,
  fp32 on CPU, default batch size), the baseline for ``vs_st``.

The BERT-base model is randomly initialised from ``BertConfig()`` with the MiniLM tokenizer:
weights don't change speed, so results say ``weights: random``. Prints a markdown table and writes
``benchmarks/results/gpu_throughput.json`` (``gpu_throughput_cpu_tiny.json`` with ``--cpu-tiny``).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, markdown_table, write_result  # noqa: E402

PACKAGED = "packaged:all-MiniLM-L6-v2"
H100_BF16_DENSE_TFLOPS = 800.0  # H100 SXM datasheet 989 dense bf16; ~800 is what large GEMMs reach


# -- models and data ------------------------------------------------------------------------

def random_bert(out_dir: Path, size: str) -> str:
    """A randomly initialised BERT (``base`` or ``tiny``) saved as a sentence-transformers model
    (mean pooling) with the packaged MiniLM's tokenizer (the BERT uncased vocabulary)."""
    import torch
    from transformers import BertConfig, BertModel

    try:
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.models import Pooling, Transformer
    from sentence_transformers import SentenceTransformer

    from indexer.encoders.models import load_tokenizer

    cfg = BertConfig() if size == "base" else BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                                         intermediate_size=128)
    max_len = 512 if size == "base" else 128
    torch.manual_seed(0)
    hf_dir, st_dir = out_dir / f"hf-{size}", out_dir / f"st-{size}"
    BertModel(cfg).save_pretrained(hf_dir)
    load_tokenizer(PACKAGED).save_pretrained(hf_dir)
    module = Transformer(str(hf_dir), max_seq_length=max_len)
    SentenceTransformer(modules=[module, Pooling(cfg.hidden_size, "mean")], device="cpu").save(str(st_dir))
    return str(st_dir)


def synthetic_texts(n: int, max_tokens: int, seed: int = 0) -> list[str]:
    """Chunks of whole-word vocabulary entries, so a chunk of k words is k tokens (plus 2 specials);
    lengths uniform in [0.75, 1] x ``max_tokens`` tokens including the specials."""
    from indexer.encoders.models import load_tokenizer

    vocab = np.array(sorted(w for w in load_tokenizer(PACKAGED).get_vocab()
                            if w.isascii() and w.isalpha() and w.islower() and len(w) > 2))
    rng = np.random.default_rng(seed)
    lo = max(1, int(0.75 * max_tokens) - 2)
    words = rng.integers(lo, max_tokens - 2 + 1, size=n)
    return [" ".join(rng.choice(vocab, size=int(k)).tolist()) for k in words]


# -- measuring helpers ----------------------------------------------------------------------

class UtilSampler:
    """Mean GPU utilisation (%) while the block runs: ``torch.cuda.utilization`` (needs pynvml),
    else ``nvidia-smi``; None on CPU or when neither works."""

    def __init__(self, cuda: bool, interval: float = 0.1):
        self.cuda, self.interval = cuda, interval
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> float | None:
        import torch

        try:
            return float(torch.cuda.utilization())
        except Exception:  # noqa: BLE001 - pynvml missing: ask nvidia-smi
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                      "-i", os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]],
                                     capture_output=True, text=True, timeout=5)
                return float(out.stdout.strip().splitlines()[0])
            except Exception:  # noqa: BLE001
                return None

    def _loop(self) -> None:
        while not self._stop.is_set():
            v = self._sample()
            if v is None:
                return
            self.samples.append(v)
            self._stop.wait(self.interval)

    def __enter__(self) -> "UtilSampler":
        if self.cuda:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    @property
    def mean(self) -> float | None:
        return round(statistics.mean(self.samples), 1) if self.samples else None


def sync(cuda: bool) -> None:
    if cuda:
        import torch

        torch.cuda.synchronize()


def _backbone(dense):
    backbone = getattr(dense.model[0], "auto_model", None)
    return dense.model if backbone is None else backbone


def flop_model(dense) -> dict[str, Any]:
    """Parameter counts and shape of the backbone, reported next to the FLOP rate."""
    import torch

    backbone = _backbone(dense)
    total = sum(p.numel() for p in backbone.parameters())
    emb = sum(p.numel() for m in backbone.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters())
    pooler = sum(p.numel() for n, p in backbone.named_parameters() if n.startswith("pooler."))
    c = backbone.config
    return {"params": int(sum(p.numel() for p in dense.model.parameters())),
            "non_embedding_params": int(total - emb - pooler), "layers": int(c.num_hidden_layers),
            "hidden": int(c.hidden_size)}


def sequence_flops(lengths: np.ndarray, dense) -> float:
    """Useful forward FLOPs of sequences of these lengths (real tokens only), from the estimate's FLOP
    model (:class:`indexer.estimate.cost.ModelShape`) for the backbone's config."""
    from indexer.estimate.cost import shape_from_config

    shape = shape_from_config(_backbone(dense).config.to_dict(), "backbone config")
    return shape.forward_flops(lengths)


def rates(rows: int, tokens: int, seconds: float, **extra) -> dict[str, Any]:
    s = max(seconds, 1e-9)
    return {"chunks": rows, "tokens": int(tokens), "seconds": round(seconds, 4), "chunks_per_s": round(rows / s, 1),
            "tokens_per_s": round(tokens / s, 1), **extra}


def blocks_of(ids: list[np.ndarray], texts: list[str], block_rows: int) -> list[dict[str, np.ndarray]]:
    from indexer import schema
    from indexer.encoders.tokens import ragged

    out = []
    for s in range(0, len(texts), block_rows):
        n = len(texts[s:s + block_rows])
        b = {schema.ID: np.array([str(i) for i in range(s, s + n)], dtype=object),
             schema.TITLE: np.array([""] * n, dtype=object), schema.TEXT: np.array(texts[s:s + n], dtype=object)}
        if ids is not None:
            b[schema.INPUT_IDS] = ragged(ids[s:s + n])
        out.append(b)
    return out


# -- stages ---------------------------------------------------------------------------------

def measure_model(name: str, ref: str, weights: str, texts: list[str], args, cuda: bool) -> dict[str, Any]:
    import torch

    from indexer import schema
    from indexer.encoders.dense import Postprocess
    from indexer.encoders.tokens import tokenize_texts
    from indexer.quantize import calibrate, truncate_normalize
    from indexer.stages.encode import Encode, EncodeSpec
    from indexer.stages.tokenize import Tokenize

    device = "cuda" if cuda else "cpu"
    res: dict[str, Any] = {"model": name, "ref": ref, "weights": weights}
    stages: dict[str, Any] = {}

    t0 = time.perf_counter()
    ids, n_tokens, truncated, _ = tokenize_texts(texts, ref)
    stages["tokenize"] = rates(len(texts), int(sum(len(x) for x in ids)), time.perf_counter() - t0, device="cpu x1")
    lengths = np.array([len(x) for x in ids])
    tokens = int(lengths.sum())
    res["mean_tokens"] = round(float(lengths.mean()), 1)
    res["truncated"] = int(truncated.sum())

    params = {"model": ref, "device": device, "dtype": args.dtype, "attention": args.attention,
              "backend": args.backend, "max_seq_length": None, "torch_threads": None,
              "batch_tokens": args.batch_tokens, "dim": None, "quantization": "none", "calibration": None}
    t0 = time.perf_counter()
    enc = Encode(EncodeSpec(**params))
    res["load_seconds"] = round(time.perf_counter() - t0, 2)
    model = enc.model
    fm = flop_model(model)
    res.update(fm, dtype=str(model.torch_dtype).removeprefix("torch."), attention=model.attention,
               backend=model.backend, unpadded=model.flatten)
    flops = sequence_flops(lengths, model)
    res["flops_per_token"] = round(flops / tokens)

    # encode on the device
    warm = ids if (cuda or args.backend != "torch" or len(ids) <= 1000) else ids[:64]
    model.embed_ids(warm, args.batch_tokens)
    sync(cuda)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    passes, pad0, real0 = 0, model.padding_tokens, model.real_tokens
    with UtilSampler(cuda) as util:
        t0 = time.perf_counter()
        while True:
            emb = model.embed_ids(ids, args.batch_tokens)
            sync(cuda)
            passes += 1
            if time.perf_counter() - t0 >= args.min_seconds:
                break
        dt = time.perf_counter() - t0
    pad, real = model.padding_tokens - pad0, model.real_tokens - real0
    tflops = flops * passes / dt / 1e12
    stages["encode"] = rates(len(ids) * passes, tokens * passes, dt, device=device, passes=passes,
                             padding_share=round(pad / max(1, pad + real), 4), tflops=round(tflops, 4),
                             pct_ceiling=round(100 * tflops / args.ceiling_tflops, 2) if args.ceiling_tflops else None,
                             gpu_util=util.mean,
                             peak_gpu_mem_gb=(round(torch.cuda.max_memory_allocated() / 2 ** 30, 2) if cuda else None))

    # postprocess on the device (MRL + normalise + quantize), then the copy back
    dim = min(args.dim, model.full_dim) if args.dim else None
    cal = calibrate(truncate_normalize(emb.float().cpu().numpy(), dim), "int8") if args.quantization in (
        "int8", "uint8", "binary") else None
    if cal is not None and args.quantization == "uint8":
        cal = calibrate(truncate_normalize(emb.float().cpu().numpy(), dim), "uint8")
    post = Postprocess(dim, args.quantization, cal, rescore=True)
    [o.cpu() for o in post(emb)]  # warm-up
    sync(cuda)
    t0 = time.perf_counter()
    outs = [o.cpu().numpy() for o in post(emb)]
    stages["postprocess"] = rates(len(ids), tokens, time.perf_counter() - t0, device=device,
                                  dim=dim, quantization=args.quantization,
                                  bytes_per_chunk=int(sum(o.shape[1] * o.itemsize for o in outs)))
    del emb

    # the Encode stage as an actor runs it: blocks in, storage-form vectors out
    enc.spec = dataclasses.replace(enc.spec, dim=dim, quantization=args.quantization,
                                   calibration=cal.to_json() if cal else None, rescore=True)
    enc.post = Postprocess(dim, args.quantization, cal, rescore=True)
    blocks = blocks_of(ids, texts, args.block_rows)
    enc(dict(blocks[0]))  # warm-up
    with UtilSampler(cuda) as util:
        t0 = time.perf_counter()
        rows = sum(len(enc(dict(b))[schema.DENSE]) for b in blocks)
        dt = time.perf_counter() - t0
    stages["encode_actor"] = rates(rows, tokens, dt, device=device, block_rows=args.block_rows, gpu_util=util.mean)

    # tokenize threads feeding one encoder, in this process (the path without ray)
    tok = Tokenize(ref, None, "", None)
    raw = blocks_of(None, texts, args.block_rows)
    workers = max(1, min(args.tokenize_workers or (os.cpu_count() or 2) - 1, len(raw)))
    with UtilSampler(cuda) as util, ThreadPoolExecutor(workers) as pool:
        t0 = time.perf_counter()
        rows = sum(len(enc(f)[schema.DENSE]) for f in pool.map(tok, raw))
        dt = time.perf_counter() - t0
    stages["pipeline_inprocess"] = rates(rows, tokens, dt, device=device, tokenize_threads=workers, gpu_util=util.mean)
    del enc, model
    if cuda:
        torch.cuda.empty_cache()

    if args.ray:
        for share in args.gpus_per_worker if cuda else [None]:
            key = "pipeline_ray" if share in (None, 1.0) else f"pipeline_ray_gpus_per_worker_{share}"
            stages[key] = ray_pipeline(ref, texts, tokens, args, share, dim, cal, cuda)

    stages["sentence_transformers"] = st_baseline(ref, texts, tokens, cuda)
    base = stages["sentence_transformers"]["tokens_per_s"]
    for key, st in stages.items():
        if st and (key in ("encode", "encode_actor") or key.startswith("pipeline")):
            st["vs_st"] = round(st["tokens_per_s"] / base, 3) if base else None
    res["cores_to_feed"] = round(stages["encode"]["tokens_per_s"] / max(1.0, stages["tokenize"]["tokens_per_s"]), 2)
    res["stages"] = stages
    return res


def ray_pipeline(ref: str, texts: list[str], tokens: int, args, share: float | None, dim: int | None,
                 cal, cuda: bool) -> dict[str, Any]:
    """Tokenize -> Encode through ray.data on in-memory blocks, placed like a job."""
    import pyarrow as pa
    import ray

    from indexer import schema
    from indexer.config import config_from_dict
    from indexer.run.placement import plan_placement
    from indexer.stages.encode import EncodeSpec, encode_stage
    from indexer.stages.stats import StageReporter, start_stats_actor
    from indexer.stages.tokenize import Tokenize

    started = not ray.is_initialized()
    if started:
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False,
                 runtime_env={"env_vars": {"HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
                                           "TOKENIZERS_PARALLELISM": "false"}})
    try:
        cfg = config_from_dict({
            "dense": {"model": ref, "dim": dim, "dtype": args.dtype, "attention": args.attention,
                      "backend": args.backend, "quantization": args.quantization},
            "encode": {"batch_tokens": args.batch_tokens, "block_rows": args.block_rows,
                       "gpus_per_worker": share, "device": "cuda" if cuda else "cpu"},
        })
        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        placement = plan_placement(cfg, ray.cluster_resources(), nodes)
        stats = start_stats_actor()
        reporter = StageReporter(stats)
        table = pa.table({schema.ID: [str(i) for i in range(len(texts))], schema.TITLE: [""] * len(texts),
                          schema.TEXT: texts})
        ds = ray.data.from_arrow([table.slice(s, args.block_rows) for s in range(0, len(texts), args.block_rows)])
        ds = ds.map_batches(Tokenize(ref, None, "", None, reporter), batch_size=None, batch_format="numpy",
                            num_cpus=getattr(placement, "task_cpus", 1.0))
        spec = EncodeSpec.from_config(cfg, device=placement.device, torch_threads=placement.torch_threads, dim=dim,
                                      quantization=args.quantization, calibration=cal.to_json() if cal else None)
        ds = encode_stage(ds, spec, block_rows=cfg.encode.block_rows, workers=placement.workers,
                          max_workers=placement.max_workers, num_cpus=placement.num_cpus,
                          num_gpus=placement.num_gpus, reporter=reporter)
        t0 = time.perf_counter()
        rows = sum(len(b[schema.DENSE]) for b in ds.select_columns([schema.DENSE]).iter_batches(
            batch_size=None, batch_format="numpy"))
        wall = time.perf_counter() - t0
        snap = ray.get(stats.snapshot.remote())
        ray.kill(stats)
    finally:
        if started:
            ray.shutdown()
    e = snap.get("encode", {})
    pad, real = e.get("padding_tokens", 0), e.get("tokens", 0)
    return rates(rows, tokens, wall, device=placement.device, workers=placement.workers,
                 gpus_per_worker=placement.num_gpus or None, cpus_per_worker=placement.num_cpus,
                 encode_rows_per_s=e.get("rows_per_s"), tokenize_rows_per_s=snap.get("tokenize", {}).get("rows_per_s"),
                 padding_share=round(pad / max(1, pad + real), 4))


def st_baseline(ref: str, texts: list[str], tokens: int, cuda: bool) -> dict[str, Any]:
    """Plain ``SentenceTransformer.encode``: fp16 on GPU, fp32 on CPU, default batching."""
    from sentence_transformers import SentenceTransformer

    from indexer.encoders.models import resolve_model, tokenizer_info

    device = "cuda" if cuda else "cpu"
    model = SentenceTransformer(resolve_model(ref), device=device)
    model.max_seq_length = tokenizer_info(ref).max_seq_length
    if cuda:
        model.half()
    model.encode(texts[:64], show_progress_bar=False)
    sync(cuda)
    with UtilSampler(cuda) as util:
        t0 = time.perf_counter()
        model.encode(texts, show_progress_bar=False)
        sync(cuda)
        dt = time.perf_counter() - t0
    del model
    return rates(len(texts), tokens, dt, device=device, dtype="float16" if cuda else "float32", gpu_util=util.mean)


# -- main -----------------------------------------------------------------------------------

def parse_args(argv: list[str] | None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu-tiny", action="store_true", help="tiny random BERT, a few hundred short chunks, on CPU")
    ap.add_argument("--models", default=None, help="comma list of minilm, bert-base, tiny (default: minilm,bert-base)")
    ap.add_argument("--chunks", type=int, default=None, help="default: 20000 on GPU, 512 on CPU, 300 with --cpu-tiny")
    ap.add_argument("--tokens", type=int, default=None,
                    help="longest chunk in tokens (default 256; 32 with --cpu-tiny)")
    ap.add_argument("--batch-tokens", type=int, default=None, help="padded tokens per forward pass (default: config)")
    ap.add_argument("--block-rows", type=int, default=None, help="rows per Encode call (default: config)")
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"])
    ap.add_argument("--attention", default="auto", choices=["auto", "sdpa", "flash_attention_2", "eager"])
    ap.add_argument("--backend", default="torch", choices=["torch", "compile", "cudagraphs"])
    ap.add_argument("--dim", type=int, default=None,
                    help="MRL dimension for postprocess (default 256; 32 with --cpu-tiny; 0 = the model's)")
    ap.add_argument("--quantization", default="int8", choices=["none", "int8", "uint8", "binary"])
    ap.add_argument("--ceiling-tflops", type=float, default=None,
                    help=f"device FLOP ceiling (default {H100_BF16_DENSE_TFLOPS:.0f} on CUDA: H100 bf16 dense; "
                         "none on CPU)")
    ap.add_argument("--min-seconds", type=float, default=None, help="encode stage timed for at least this long")
    ap.add_argument("--gpus-per-worker", default="1", help="comma list of GPU shares for the Ray path on GPU")
    ap.add_argument("--tokenize-workers", type=int, default=None, help="threads of the in-process pipeline")
    ap.add_argument("--no-ray", action="store_true", help="skip the Ray pipeline path")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--torch-threads", type=int, default=None,
                    help="torch CPU threads in this process (default: torch's; 1 with --cpu-tiny, where "
                         "thread synchronisation would cost more than the tiny model's work)")
    ap.add_argument("--out", type=Path, default=None)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    from indexer.config import EncodeConfig

    args = parse_args(argv)
    cuda = (args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())) and not args.cpu_tiny
    defaults = EncodeConfig()
    models = (args.models or ("tiny" if args.cpu_tiny else "minilm,bert-base")).split(",")
    args.chunks = args.chunks or (300 if args.cpu_tiny else 20000 if cuda else 512)
    args.tokens = args.tokens or (32 if args.cpu_tiny else 256)
    args.batch_tokens = args.batch_tokens or defaults.tokens_per_batch("cuda" if cuda else "cpu")
    args.block_rows = args.block_rows or (64 if args.cpu_tiny else defaults.block_rows)
    args.min_seconds = args.min_seconds if args.min_seconds is not None else (3.0 if cuda else 0.0)
    args.ceiling_tflops = args.ceiling_tflops or (H100_BF16_DENSE_TFLOPS if cuda else None)
    args.gpus_per_worker = [float(x) for x in args.gpus_per_worker.split(",")]
    args.ray = not args.no_ray and importlib.util.find_spec("ray") is not None
    args.dim = (args.dim if args.dim is not None else 32 if args.cpu_tiny else 256) or None
    args.torch_threads = args.torch_threads or (1 if args.cpu_tiny else None)
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)

    texts = synthetic_texts(args.chunks, args.tokens)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            if name == "minilm":
                ref, weights = PACKAGED, "pretrained"
            elif name in ("bert-base", "tiny"):
                ref, weights = random_bert(Path(tmp), "base" if name == "bert-base" else "tiny"), "random"
            else:
                raise SystemExit(f"unknown model {name!r}: use minilm, bert-base or tiny")
            print(f"measuring {name} on {'cuda' if cuda else 'cpu'} ...", file=sys.stderr, flush=True)
            results.append(measure_model(name, ref, weights, texts, args, cuda))

    rows = []
    for r in results:
        for stage, st in r["stages"].items():
            if not st:
                continue
            rows.append({"model": f"{r['model']} ({r['weights']})", "stage": stage, "device": st.get("device"),
                         "chunks/s": st["chunks_per_s"], "tokens/s": st["tokens_per_s"],
                         "padding": st.get("padding_share", ""), "TFLOP/s": st.get("tflops", ""),
                         "% ceiling": st.get("pct_ceiling") if st.get("pct_ceiling") is not None else "",
                         "GPU util %": st.get("gpu_util") if st.get("gpu_util") is not None else "",
                         "vs ST": st.get("vs_st") if st.get("vs_st") is not None else ""})
    print(markdown_table(rows, list(rows[0])))
    for r in results:
        print(f"\n{r['model']}: {r['dtype']}, attention {r['attention']} (unpadded: {r['unpadded']}), backend "
              f"{r['backend']}, {r['flops_per_token'] / 1e6:.1f} MFLOP/token, {r['cores_to_feed']} tokenize cores "
              f"per device at the encode rate")
    payload = {
        "mode": "cpu-tiny" if args.cpu_tiny else "full",
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "ceiling_tflops": args.ceiling_tflops,
        "settings": {k: getattr(args, k) for k in (
            "chunks", "tokens", "batch_tokens", "block_rows", "dtype", "attention", "backend", "dim", "quantization",
            "min_seconds", "gpus_per_worker", "torch_threads")},
        "ray": args.ray,
        "note": "BERT models marked weights=random are randomly initialised (speed only: weights don't change speed).",
        "models": results,
    }
    default_name = "gpu_throughput_cpu_tiny" if args.cpu_tiny else "gpu_throughput"
    path = write_result(default_name, payload, args.out or RESULTS / f"{default_name}.json")
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()
