"""Ray job entrypoint: ``python jobs/index.py --config FILE [--set key=value ...] [--full] [--allow-deletes]``.

Same code path as ``indexer run``; used with ``ray job submit`` and KubeRay RayJobs. Prints the
run manifest as JSON on stdout. Exit codes as ``indexer run``: 0 ok, 1 gate failed, 2 config or
corpus mistake, 3 refused by a guard or another run holding the index (nothing written), 4 succeeded
but some files were unreadable, 5 a store stayed unavailable past its retry budget (nothing published;
rerun to resume).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from indexer.config import ConfigError, load_config  # noqa: E402
from indexer.run import exit_codes  # noqa: E402
from indexer.run.guard import RunRefused  # noqa: E402
from indexer.run.pipeline import RunFailed, run  # noqa: E402
from indexer.sources.parquet import SourceError  # noqa: E402
from indexer.stores.base import TransientStoreError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="YAML job config")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="dotted.key=value override")
    ap.add_argument("--full", action="store_true", help="rebuild every chunk into a new version")
    ap.add_argument("--allow-deletes", action="store_true",
                    help="let this run delete more of the live index than index.max_delete_fraction allows")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        print(str(e), file=sys.stderr)
        return exit_codes.USER_ERROR
    if cfg.corpus.sample:
        from indexer.cli import ensure_sample

        ensure_sample(cfg)
    try:
        manifest = run(cfg, full=args.full, allow_deletes=args.allow_deletes)
        code = exit_codes.exit_code(manifest)
    except RunFailed as e:
        manifest, code = e.manifest, exit_codes.GATE_FAILED
        print(f"run failed: {e}", file=sys.stderr)
    except RunRefused as e:
        print(str(e), file=sys.stderr)
        print(json.dumps(e.to_json()))
        return exit_codes.REFUSED
    except (ConfigError, SourceError) as e:  # the corpus path, dense.dim: one line, no traceback
        print(str(e), file=sys.stderr)
        return exit_codes.USER_ERROR
    except TransientStoreError as e:  # the store's own retries are spent: the message says what to do
        print(str(e), file=sys.stderr)
        return exit_codes.STORE_UNAVAILABLE
    print(json.dumps(manifest, default=str))
    return code


if __name__ == "__main__":
    sys.exit(main())
