"""The tokenizer cache: built once through transformers, then read by every later process (read and
tokenize workers, encoder actors, the driver) without importing transformers, with the same ids."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from indexer.config import PACKAGED_MODEL
from indexer.encoders import models

TEXTS = ["Hello world", "Ünïcode, 汉字 and punctuation!?", "", "a " * 300, "Mitochondria make ATP."]

PROBE = """
import json, sys
from indexer.encoders.models import tokenizer_info
from indexer.encoders.tokens import content_ids
texts = json.loads(sys.argv[2])
info = tokenizer_info(sys.argv[1])
print(json.dumps({"ids": content_ids(texts, sys.argv[1]), "transformers": "transformers" in sys.modules,
                  "info": [info.max_seq_length, list(info.prefix_ids), list(info.suffix_ids), info.pad_id,
                           list(info.special_ids), info.vocab_size]}))
"""


def _tokenizer_folder(tmp_path: Path) -> Path:
    """The packaged model's tokenizer files (no weights) in a folder of their own."""
    src = Path(models.tokenizer_folder(PACKAGED_MODEL))
    dst = tmp_path / "model"
    dst.mkdir()
    for f in src.iterdir():
        if f.is_file() and models.TOKENIZER_FILES.search(f.name):
            shutil.copy(f, dst / f.name)
    return dst


def _probe(folder: Path, cache: Path) -> dict:
    env = {**os.environ, "INDEXER_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", PROBE, str(folder), json.dumps(TEXTS)], env=env, check=True,
                         capture_output=True, text=True, timeout=120).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_later_processes_read_the_cached_tokenizer_without_transformers_and_get_the_same_ids(tmp_path):
    folder, cache = _tokenizer_folder(tmp_path), tmp_path / "cache"
    first = _probe(folder, cache)
    assert first["transformers"]  # nothing cached yet: built through transformers, then saved
    (entry,) = (cache / "tokenizers").iterdir()
    assert {p.name for p in entry.iterdir()} == {"facts.json", "tokenizer.json"}
    second = _probe(folder, cache)
    assert not second["transformers"]
    assert second["ids"] == first["ids"] and second["info"] == first["info"]

    tok = models.load_tokenizer(str(folder))  # transformers itself, in this process
    assert first["ids"] == tok(TEXTS, add_special_tokens=False)["input_ids"]
    assert first["info"][1:3] == [[tok.cls_token_id], [tok.sep_token_id]]
    assert first["info"][3] == tok.pad_token_id and first["info"][5] == len(tok)


def test_the_key_follows_the_tokenizer_files(tmp_path):
    folder = _tokenizer_folder(tmp_path)
    key = models.tokenizer_key(str(folder))
    assert key == models.tokenizer_key(str(folder))
    (folder / "model.safetensors").write_bytes(b"weights do not matter")
    assert models.tokenizer_key(str(folder)) == key
    cfg = folder / "tokenizer_config.json"
    cfg.write_text(cfg.read_text().replace("}", ', "extra": 1}', 1))
    assert models.tokenizer_key(str(folder)) != key
    assert models.tokenizer_key("some-org/hub-name") is None  # not a folder: no cache
