"""A fastembed encode of the same texts, as the reference a Qdrant user would pick on CPU.

fastembed pins ``huggingface_hub<2``, which the main venv (hub 2.x, transformers 5) can't hold, so it
lives in its own venv and runs in a subprocess:

    python3 -m venv .venv-fastembed && .venv-fastembed/bin/pip install fastembed

fastembed can't download models here, so its model is the project's own packaged MiniLM-L6,
exported to ONNX in the main venv (torch tracer, ``last_hidden_state`` with dynamic batch and
sequence; tokenizer files copied, truncation at the model's 256 tokens, as sentence-transformers and
the project truncate) into ``.indexer/fastembed/<model>-<hash>`` once, and registered with
``TextEmbedding.add_custom_model`` (mean pooling, normalized), as a user adds a model fastembed
doesn't list. ``fastembed_run`` (main venv) prepares the export and runs this same file under
``.venv-fastembed/bin/python`` (``worker`` sub-command: texts from a JSON file, vectors to ``.npy``
and timings to JSON, model load apart from encode). Module-level imports are stdlib and numpy only,
so the file runs in both venvs.

    .venv/bin/python benchmarks/fastembed_ref.py check [--limit 50]   # cosine to sentence-transformers fp32
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VENV_PYTHON = ROOT / ".venv-fastembed" / "bin" / "python"
EXPORT_ROOT = ROOT / ".indexer" / "fastembed"
MODEL = "packaged:all-MiniLM-L6-v2"
FASTEMBED_NAME = "local/all-MiniLM-L6-v2"  # the name registered with add_custom_model
BATCH_SIZE = 256  # TextEmbedding.embed's default
SETUP = "python3 -m venv .venv-fastembed && .venv-fastembed/bin/pip install fastembed"
OPSET = 17
EXPORT_VERSION = 1  # bump when the export below changes
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json", "vocab.txt")
UNAVAILABLE_EXIT = 3


class FastembedUnavailable(RuntimeError):
    """No usable ``.venv-fastembed``: the message is one line saying how to set it up."""


def unavailable_reason() -> str | None:
    """Why the fastembed reference can't run here (None when ``.venv-fastembed`` exists)."""
    if not VENV_PYTHON.exists():
        return f"fastembed row skipped: {VENV_PYTHON.parent.parent.name}/ not found ({SETUP})"
    return None


# ---- main venv: the ONNX export ---------------------------------------------------------------------

def _export_key(folder: Path, max_length: int) -> str:
    import torch
    import transformers

    h = hashlib.sha256()
    for name in sorted({"model.safetensors", "pytorch_model.bin", *TOKENIZER_FILES}):
        p = folder / name
        if p.exists():
            h.update(name.encode())
            with open(p, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
    setting = {"max_length": max_length, "opset": OPSET, "version": EXPORT_VERSION, "torch": torch.__version__,
               "transformers": transformers.__version__}
    h.update(json.dumps(setting, sort_keys=True).encode())
    return h.hexdigest()[:16]


def export_model(model_ref: str = MODEL, root: Path = EXPORT_ROOT) -> tuple[Path, float]:
    """The model as a fastembed-loadable folder (``model.onnx`` + tokenizer files); (folder, export
    seconds, 0 when cached). Written to a temporary folder and renamed into place."""
    from indexer.encoders.models import resolve_model, tokenizer_info, transformer_subdir

    folder = Path(transformer_subdir(resolve_model(model_ref)))
    max_length = tokenizer_info(model_ref).max_seq_length
    name = model_ref.split(":", 1)[1] if model_ref.startswith("packaged:") else Path(resolve_model(model_ref)).name
    target = root / f"{name}-{_export_key(folder, max_length)}"
    if (target / "model.onnx").exists():
        return target, 0.0
    t0 = time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=root))
    try:
        _export_onnx(folder, tmp / "model.onnx")
        for fname in TOKENIZER_FILES:
            if (folder / fname).exists():
                shutil.copy2(folder / fname, tmp / fname)
        cfg_path = tmp / "tokenizer_config.json"
        cfg = json.loads(cfg_path.read_text())
        # fastembed truncates to min(model_max_length, max_length); the tokenizer config says 512, the
        # sentence-transformers config (and the project) 256
        cfg["model_max_length"] = cfg["max_length"] = max_length
        cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
        (tmp / "export.json").write_text(json.dumps({"model": model_ref, "source": str(folder),
                                                     "max_length": max_length, "opset": OPSET}, indent=2) + "\n")
        tmp.chmod(0o755)  # mkdtemp makes it private
        try:
            tmp.rename(target)
        except OSError:  # another process renamed its export into place first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target, time.perf_counter() - t0


def _export_onnx(folder: Path, path: Path) -> None:
    import warnings

    import torch
    from transformers import AutoModel

    # eager attention: the graph ONNX Runtime's BERT fusions recognise, as in the hub's ONNX exports
    bert = AutoModel.from_pretrained(str(folder), attn_implementation="eager").eval()

    class LastHiddenState(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            # keywords: transformers 5 changed BertModel.forward's positional order
            return self.model(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

    ids = torch.tensor([[101, 7592, 2088, 2003, 102], [101, 7592, 102, 0, 0]], dtype=torch.int64)
    mask = (ids != 0).to(torch.int64)  # padded example, so no all-ones shortcut is traced in
    axes = {0: "batch", 1: "sequence"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(LastHiddenState(bert), (ids, mask, torch.zeros_like(ids)), str(path), dynamo=False,
                          input_names=["input_ids", "attention_mask", "token_type_ids"],
                          output_names=["last_hidden_state"], opset_version=OPSET,
                          dynamic_axes={"input_ids": axes, "attention_mask": axes, "token_type_ids": axes,
                                        "last_hidden_state": axes})


def fastembed_run(texts: list[str], threads: int, batch_size: int = BATCH_SIZE, warmup: int = 0,
                  model_ref: str = MODEL) -> tuple[np.ndarray, dict]:
    """Encode ``texts`` with fastembed in ``.venv-fastembed``; (vectors, what the worker reports: model load
    and encode seconds, versions, truncation, and the export).

    ``warmup`` texts are embedded once after loading and before the timed encode (not counted).
    Raises ``FastembedUnavailable`` when the venv or fastembed in it is missing."""
    reason = unavailable_reason()
    if reason:
        raise FastembedUnavailable(reason)
    model_dir, export_s = export_model(model_ref)
    with tempfile.TemporaryDirectory(prefix="fastembed-") as tmp:
        (Path(tmp) / "texts.json").write_text(json.dumps(texts))
        cmd = [str(VENV_PYTHON), str(Path(__file__).resolve()), "worker", "--model-dir", str(model_dir),
               "--texts", str(Path(tmp) / "texts.json"), "--threads", str(threads), "--batch-size",
               str(batch_size), "--warmup", str(warmup), "--out", tmp]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
               "OMP_NUM_THREADS": str(threads)}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode == UNAVAILABLE_EXIT:
            raise FastembedUnavailable(f"fastembed row skipped: {proc.stderr.strip().splitlines()[-1]} ({SETUP})")
        if proc.returncode != 0:
            raise RuntimeError(f"fastembed worker exited {proc.returncode}:\n{proc.stderr[-3000:]}")
        vecs = np.load(Path(tmp) / "vectors.npy")
        info = json.loads((Path(tmp) / "timing.json").read_text())
    info |= {"export_s": export_s, "model_dir": str(model_dir), "batch_size": batch_size, "threads": threads,
             "warmup": warmup}
    return vecs, info


# ---- .venv-fastembed: the worker ---------------------------------------------------------------------

def _worker(args: argparse.Namespace) -> None:
    try:
        import fastembed
        import onnxruntime
        from fastembed import TextEmbedding
        from fastembed.common.model_description import ModelSource, PoolingType
    except ImportError as e:
        sys.stderr.write(f"fastembed is not importable in {sys.prefix}: {e}\n")
        raise SystemExit(UNAVAILABLE_EXIT) from e

    texts = json.loads(Path(args.texts).read_text())
    dim = json.loads((Path(args.model_dir) / "config.json").read_text())["hidden_size"]
    with tempfile.TemporaryDirectory(prefix="fastembed-cache-") as cache:
        t0 = time.perf_counter()
        TextEmbedding.add_custom_model(model=FASTEMBED_NAME, pooling=PoolingType.MEAN, normalization=True,
                                       sources=ModelSource(hf=FASTEMBED_NAME), dim=dim, model_file="model.onnx")
        model = TextEmbedding(model_name=FASTEMBED_NAME, specific_model_path=args.model_dir, threads=args.threads,
                              cache_dir=cache)
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        if args.warmup:
            list(model.embed(texts[:args.warmup], batch_size=args.batch_size))
        warmup_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        vecs = np.stack(list(model.embed(texts, batch_size=args.batch_size))).astype(np.float32)
        encode_s = time.perf_counter() - t0
    tok = getattr(getattr(model, "model", None), "tokenizer", None)
    truncation = (tok.truncation or {}).get("max_length") if tok is not None else None
    np.save(Path(args.out) / "vectors.npy", vecs)
    (Path(args.out) / "timing.json").write_text(json.dumps({
        "load_s": load_s, "warmup_s": warmup_s, "encode_s": encode_s, "docs": len(texts),
        "truncation": truncation, "fastembed": fastembed.__version__, "onnxruntime": onnxruntime.__version__,
    }))


def _check(args: argparse.Namespace) -> None:
    """Cosine of the fastembed vectors to a bare sentence-transformers fp32 encode of the same texts."""
    sys.path.insert(0, str(ROOT))
    import torch
    from sentence_transformers import SentenceTransformer

    from benchmarks.common import beir_texts
    from indexer.encoders.models import resolve_model

    texts = beir_texts(args.dataset, args.limit)
    vecs, info = fastembed_run(texts, args.threads)
    torch.set_num_threads(args.threads)
    ref = SentenceTransformer(resolve_model(MODEL), device="cpu").encode(texts, normalize_embeddings=True,
                                                                       show_progress_bar=False)
    cos = (vecs * ref).sum(1) / np.linalg.norm(vecs, axis=1) / np.linalg.norm(ref, axis=1)
    print(json.dumps({"docs": len(texts), "cos_mean": round(float(cos.mean()), 8),
                      "cos_min": round(float(cos.min()), 8), **info}, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("worker", help="(runs under .venv-fastembed) embed texts from a JSON file")
    w.add_argument("--model-dir", required=True)
    w.add_argument("--texts", required=True)
    w.add_argument("--threads", type=int, required=True)
    w.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    w.add_argument("--warmup", type=int, default=0)
    w.add_argument("--out", required=True)
    c = sub.add_parser("check", help="(main venv) cosine to a sentence-transformers fp32 encode")
    c.add_argument("--dataset", default="scifact")
    c.add_argument("--limit", type=int, default=50)
    c.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    _worker(args) if args.cmd == "worker" else _check(args)


if __name__ == "__main__":
    main()
