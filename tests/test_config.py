import pytest

from indexer.config import ConfigError, JobConfig, Quantization, apply_overrides, load_config, parse_override
from tests.conftest import ROOT


def test_overrides_parse_yaml_scalars():
    assert parse_override("dense.dim=256") == (["dense", "dim"], 256)
    assert parse_override("index.incremental=false") == (["index", "incremental"], False)
    assert parse_override("corpus.path=s3://b/p/") == (["corpus", "path"], "s3://b/p/")
    assert parse_override("search.rrf_k=60")[1] == 60


def test_override_applies_nested_and_keeps_original():
    base = {"dense": {"dim": 384}}
    out = apply_overrides(base, ["dense.dim=128", "sparse.kind=none"])
    assert out == {"dense": {"dim": 128}, "sparse": {"kind": "none"}}
    assert base == {"dense": {"dim": 384}}


def test_bad_override_is_clear():
    with pytest.raises(ConfigError, match="dotted.key=value"):
        parse_override("dense.dim")


def test_load_local_config_with_overrides(tmp_path):
    cfg = load_config("configs/local.yaml", ["dense.dim=256", "dense.quantization=int8"])
    assert cfg.dense.dim == 256 and cfg.dense.quantization is Quantization.int8
    assert cfg.corpus.title_column == "title"


def test_unknown_key_names_key_and_allowed(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("dense:\n  dimension: 12\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert "dense.dimension" in msg and "allowed here" in msg and "quantization" in msg


def test_bad_enum_names_allowed_values():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["dense.quantization=int4"])
    msg = str(e.value)
    assert "dense.quantization" in msg and "binary" in msg and "int4" in msg


def test_cross_field_checks():
    with pytest.raises(ConfigError, match="sparse.model is required"):
        load_config(None, ["sparse.kind=splade"])
    with pytest.raises(ConfigError, match="max_workers"):
        load_config(None, ["encode.workers=4", "encode.max_workers=2"])


def test_defaults_run_locally():
    cfg = JobConfig()
    assert cfg.vector_store.kind.value == "edge" and cfg.text_store.kind.value == "tantivy"
    assert cfg.corpus.id_column == "id" and cfg.corpus.text_column == "text"


def test_missing_file_is_clear(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_readme_config_reference_is_current():
    """Every config key is documented in README.md (regenerate: python -m indexer.config_doc --write README.md)."""
    from indexer.config_doc import BEGIN, END, reference_markdown

    text = (ROOT / "README.md").read_text()
    assert BEGIN in text and END in text, "README.md lacks the config reference markers"
    current = text[text.index(BEGIN): text.index(END) + len(END)]
    assert current == reference_markdown(), "README config reference is stale: python -m indexer.config_doc --write README.md"
