"""indexer: Parquet chunks to a hybrid (dense + sparse + BM25) search index, on Ray."""

__version__ = "0.1.0"
