#!/usr/bin/env python3
"""Deterministic corpus of real English text for memlayer's benchmarks.

Source: the docstrings and comment blocks of the Python standard library
installed with the interpreter running this script (parsed with `ast` and
`tokenize`, nothing is imported), plus those of any `--extra` directories
(the benchmarks pass the provisioned, version-pinned site-packages and the
source directories of the crates in the workspace's Cargo.lock, whose `//`
comment blocks count too), split into paragraphs and sentences. Every machine with
the same Python version produces the same corpus; the benchmarks record the
Python version beside their figures.

Usage: corpus.py --count N [--output FILE] [--standard]   (JSONL: one JSON string per line)

`--standard` adds the benchmark sources: the provisioned site-packages under
${MEMLAYER_CACHE_DIR:-~/.cache/memlayer}/python and the crates of the
workspace's Cargo.lock (found with `cargo metadata --locked`).
Texts are mixed-length (20 to ~2000 characters), deduplicated, and ordered by
a stable hash so that any prefix is a fair sample.
"""

import argparse
import ast
import hashlib
import json
import re
import io
import sys
import sysconfig
import tokenize
from pathlib import Path


def docstrings(root: Path, skip_site_packages: bool):
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if (skip_site_packages and "site-packages" in rel) or "/test" in rel or rel.startswith("test") or "idlelib" in rel:
            continue
        source = path.read_text(encoding="utf-8", errors="replace")
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node, clean=True)
                if doc:
                    yield doc
        yield from comment_blocks(source)


def rust_comments(root: Path):
    """Runs of consecutive `//`, `///` or `//!` comment lines in .rs files, joined."""
    for path in sorted(root.rglob("*.rs")):
        block = []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            stripped = line.strip()
            if stripped.startswith("//"):
                text = stripped.lstrip("/!").strip()
                if text.startswith("```"):
                    continue
                if text:
                    block.append(text)
                    continue
            if block:
                yield "\n\n".join([" ".join(block)])
                block = []
        if block:
            yield " ".join(block)


def comment_blocks(source: str):
    """Runs of consecutive comment lines, joined."""
    block, last = [], -2
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                text = tok.string.lstrip("#").strip()
                if tok.start[0] != last + 1 and block:
                    yield " ".join(block)
                    block = []
                if text:
                    block.append(text)
                last = tok.start[0]
    except (tokenize.TokenError, SyntaxError, IndentationError):
        pass
    if block:
        yield " ".join(block)


SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def pieces(doc: str):
    for para in re.split(r"\n\s*\n", doc):
        text = " ".join(para.split())
        if len(text) < 20 or text.count(">>>") or sum(c.isalpha() for c in text) < 0.6 * len(text):
            continue
        if len(text) <= 2000:
            yield text
        sentences = SENTENCE.split(text)
        if len(sentences) > 1:
            for sentence in sentences:
                if 20 <= len(sentence) <= 2000:
                    yield sentence


def corpus(extra):
    roots = [(Path(sysconfig.get_paths()["stdlib"]), True)] + [(Path(e), False) for e in extra]
    seen = set()
    out = []
    def texts():
        for root, skip in roots:
            yield from docstrings(root, skip)
            if not skip:
                yield from rust_comments(root)

    for doc in texts():
        for text in pieces(doc):
            if text not in seen:
                seen.add(text)
                out.append(text)
    out.sort(key=lambda t: hashlib.sha256(t.encode()).digest())
    return out


def standard_sources():
    import os
    import subprocess

    cache = Path(os.environ.get("MEMLAYER_CACHE_DIR", Path.home() / ".cache" / "memlayer"))
    sites = sorted((cache / "python" / "lib").glob("python3*/site-packages"))
    if not sites:
        sys.exit("corpus.py: no provisioned site-packages; run scripts/provision first")
    repo = Path(__file__).resolve().parent.parent
    meta = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--locked"],
        cwd=repo, check=True, capture_output=True, text=True,
    )
    crates = sorted(
        str(Path(p["manifest_path"]).parent) for p in json.loads(meta.stdout)["packages"] if p["source"]
    )
    return [str(s) for s in sites] + crates


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--output", default="-")
    ap.add_argument("--extra", action="append", default=[], help="another directory of .py files")
    ap.add_argument("--standard", action="store_true", help="add the standard benchmark sources")
    args = ap.parse_args()
    extra = list(args.extra)
    if args.standard:
        extra += standard_sources()
    texts = corpus(extra)
    if len(texts) < args.count:
        sys.exit(f"corpus.py: only {len(texts)} distinct texts available, {args.count} requested")
    sink = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8")
    for t in texts[: args.count]:
        sink.write(json.dumps(t, ensure_ascii=False) + "\n")
    print(f"corpus.py: wrote {args.count} of {len(texts)} texts (Python {sys.version.split()[0]})", file=sys.stderr)


if __name__ == "__main__":
    main()
