"""Ray Data stages of the indexing job, in flow order: read -> validate -> diff -> tokenize -> encode.

Each stage is a small callable class (see :class:`indexer.stages.base.Stage`) that Ray runs as
tasks or, for the encoder, as an actor pool; the pure logic they call lives in ``sources`` and
``encoders`` so it can be used (and tested) without Ray.
"""
