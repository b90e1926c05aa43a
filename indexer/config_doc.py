"""The configuration reference in README.md, generated from the pydantic models.

``python -m indexer.config_doc --write README.md`` replaces the block between the
``<!-- CONFIG-REFERENCE -->`` markers; a test checks that the README is up to date, so every
key a config file may use is documented with its default and what it does.
"""

from __future__ import annotations

import argparse
import enum
import re
import sys
import typing
from pathlib import Path
from typing import Any, Iterator

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from .config import JobConfig

BEGIN = "<!-- CONFIG-REFERENCE -->"
END = "<!-- /CONFIG-REFERENCE -->"


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _type_name(tp: Any) -> str:
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return " \\| ".join(f"`{m.value}`" for m in tp)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        parts = [_type_name(a) for a in args if a is not type(None)]
        return " \\| ".join(parts) + (" \\| null" if type(None) in args else "")
    if origin in (list, tuple):
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return f"map {_type_name(args[0])} → {_type_name(args[1])}" if args else "map"
    return getattr(tp, "__name__", str(tp))


def _default(field) -> str:
    if field.default is not PydanticUndefined:
        v = field.default
    elif field.default_factory is not None:
        v = field.default_factory()
    else:
        return "required"
    if isinstance(v, enum.Enum):
        v = v.value
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {x}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(str(x) for x in v) + "]"
    return str(v)


def _model_doc(model: type) -> str:
    doc = (model.__doc__ or "").strip().split("\n\n")[0]
    return " ".join(doc.split())


def sections(model: type[BaseModel] = JobConfig, prefix: str = "") -> Iterator[tuple[str, str, list[tuple[str, ...]]]]:
    """(section key, section description, rows of (key, type, default, description)), depth first."""
    rows: list[tuple[str, ...]] = []
    nested = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        if _is_model(field.annotation):
            nested.append((key, field.annotation))
            continue
        desc = " ".join((field.description or "").split())
        if not desc and isinstance(field.annotation, type) and issubclass(field.annotation, enum.Enum):
            desc = _model_doc(field.annotation)
        rows.append((f"`{key}`", _type_name(field.annotation), f"`{_default(field)}`", desc.replace("|", "\\|")))
    if rows:
        yield prefix.rstrip(".") or "(top level)", _model_doc(model), rows
    for key, sub in nested:
        yield from sections(sub, key + ".")


def reference_markdown() -> str:
    out = [BEGIN, ""]
    for key, doc, rows in sections():
        out.append(f"#### `{key}`" + (f": {doc}" if doc else ""))
        out.append("")
        out.append("| key | type | default | description |")
        out.append("|---|---|---|---|")
        out.extend("| " + " | ".join(r) + " |" for r in rows)
        out.append("")
    out.append(END)
    return "\n".join(out)


def update(readme: Path) -> bool:
    """Rewrite the reference block in ``readme``; True when it changed."""
    text = readme.read_text()
    block = reference_markdown()
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    if pattern.search(text):
        new = pattern.sub(lambda _: block, text)
    elif BEGIN in text:
        new = text.replace(BEGIN, block, 1)
    else:
        raise ValueError(f"{readme} has no {BEGIN} marker")
    if new != text:
        readme.write_text(new)
        return True
    return False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write", type=Path, help="README to update in place (default: print the block)")
    args = ap.parse_args(argv)
    if args.write:
        print(f"{args.write}: {'updated' if update(args.write) else 'up to date'}", file=sys.stderr)
    else:
        print(reference_markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
