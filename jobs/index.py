"""Ray job entrypoint: ``python jobs/index.py --config FILE [--set key=value ...] [--full]``.

Same code path as ``indexer run``; used with ``ray job submit`` and KubeRay RayJobs. Prints the
run manifest as JSON on stdout and exits non-zero when a gate failed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from indexer.config import ConfigError, load_config  # noqa: E402
from indexer.run.pipeline import RunFailed, run  # noqa: E402
from indexer.sources.parquet import SourceError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="YAML job config")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="dotted.key=value override")
    ap.add_argument("--full", action="store_true", help="rebuild every chunk into a new version")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        print(str(e), file=sys.stderr)
        return 2
    if cfg.corpus.sample:
        from indexer.cli import ensure_sample

        ensure_sample(cfg)
    try:
        manifest = run(cfg, full=args.full)
        code = 0
    except RunFailed as e:
        manifest, code = e.manifest, 1
        print(f"run failed: {e}", file=sys.stderr)
    except (ConfigError, SourceError) as e:  # the corpus path, dense.dim: one line, no traceback
        print(str(e), file=sys.stderr)
        return 2
    print(json.dumps(manifest, default=str))
    return code


if __name__ == "__main__":
    sys.exit(main())
