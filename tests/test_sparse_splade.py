"""Learned sparse (sparse.kind=splade) through the whole pipeline and search, with tiny randomly
initialised models built locally: a SPLADE model (MLM head + max pooling on both sides) and an
inference-free one (documents through the MLM, queries through a static per-token weight table,
like opensearch-neural-sparse-encoding-doc). Random weights say nothing about quality; these
tests pin the code path: encode, store (no IDF modifier), query encoding, sparse and hybrid search."""

from __future__ import annotations

import pytest

from tests.conftest import write_parquet

DOCS = [
    ("d1", "Parsing JSON", "json.loads parses a JSON document into Python dicts and lists."),
    ("d2", "Subprocesses", "subprocess.run starts a child process and waits for it to finish."),
    ("d3", "SQLite", "sqlite3 cursors execute SQL statements against a database file."),
    ("d4", "Regular expressions", "re.compile builds a pattern object for matching text."),
]


def build_tiny_sparse_models(root):
    """Save a tiny random BertForMaskedLM (packaged MiniLM tokenizer) as two SparseEncoders."""
    import torch
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sentence_transformer.modules import Router, Transformer
    from sentence_transformers.sparse_encoder.modules import SparseStaticEmbedding, SpladePooling
    from transformers import BertConfig, BertForMaskedLM

    from indexer.encoders.models import load_tokenizer

    torch.manual_seed(0)
    tok = load_tokenizer("packaged:all-MiniLM-L6-v2")
    mlm = root / "mlm"
    BertForMaskedLM(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=64, max_position_embeddings=128)).save_pretrained(mlm)
    tok.save_pretrained(mlm)

    def doc_side():
        return [Transformer(str(mlm), transformer_task="fill-mask"), SpladePooling("max")]

    SparseEncoder(modules=doc_side()).save(str(root / "splade"))
    router = Router.for_query_document(query_modules=[SparseStaticEmbedding(tokenizer=tok, frozen=True)],
                                       document_modules=doc_side())
    SparseEncoder(modules=[router]).save(str(root / "doc_only"))
    return root / "splade", root / "doc_only"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return build_tiny_sparse_models(tmp_path_factory.mktemp("sparse_models"))


def test_splade_model_encodes_both_sides(models):
    from indexer.encoders.sparse import SpladeModel

    splade, doc_only = models
    for path in (splade, doc_only):
        m = SpladeModel(str(path))
        idx, val = m.encode_documents([d[2] for d in DOCS])
        assert len(idx) == len(DOCS) and all(len(i) == len(v) > 0 for i, v in zip(idx, val))
        assert all((v > 0).all() for v in val) and all((i[1:] > i[:-1]).all() for i in idx)
    # inference-free: the query side is a lookup of the query's own tokens, no expansion
    from indexer.encoders.models import load_tokenizer

    q = SpladeModel(str(doc_only)).encode_query("parse json")
    own = set(load_tokenizer("packaged:all-MiniLM-L6-v2")("parse json")["input_ids"])
    assert set(q.indices) <= own and q.indices
    assert len(SpladeModel(str(splade)).encode_query("parse json").indices) > len(own)


@pytest.mark.parametrize("which", ["splade", "doc_only"])
def test_splade_index_and_search(models, which, tmp_path, ray_local):
    from indexer.config import load_config
    from indexer.run.pipeline import run
    from indexer.search import Searcher

    path = dict(zip(("splade", "doc_only"), models))[which]
    write_parquet(tmp_path / "c.parquet", [{"id": i, "title": t, "text": x} for i, t, x in DOCS])
    cfg = load_config("configs/local.yaml", [f"corpus.path={tmp_path / 'c.parquet'}", "corpus.sample=false",
                                             f"index.dir={tmp_path / 'index'}", "sparse.kind=splade",
                                             f"sparse.model={path}", "encode.block_rows=64"])
    m = run(cfg)
    assert m["counts"]["indexed"] == len(DOCS)
    s = Searcher(cfg)
    try:
        assert s.version["sparse"]["kind"] == "splade" and not s.spec.sparse_idf
        hits = s.search("parse a json document", mode="sparse", k=4, with_text=False)
        assert hits and {h.id for h in hits} <= {d[0] for d in DOCS} and all(h.score > 0 for h in hits)
        hybrid = s.search("parse a json document", mode="hybrid", k=4, with_text=False)
        assert hybrid[0].id == "d1"  # dense and BM25 carry the hybrid while sparse weights are random
    finally:
        s.close()
