#!/usr/bin/env python3
"""Helpers of scripts/bench_vectors (stdlib only).

  bench_vectors.py to-f32 --dim D --count N --output FILE   < vectors.jsonl
      Reads one JSON array of D floats per line (embed_reference.py's output)
      and writes them as raw little-endian f32, row-major, to FILE (through a
      temporary file renamed at the end). Fails unless exactly N rows of D
      finite numbers arrive.
"""

import argparse
import array
import json
import math
import os
import sys


def to_f32(dim: int, count: int, output: str) -> None:
    tmp = output + ".tmp"
    rows = 0
    with open(tmp, "wb") as out:
        for n, line in enumerate(sys.stdin, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if not isinstance(row, list) or len(row) != dim:
                raise SystemExit(f"line {n}: expected an array of {dim} numbers")
            if not all(isinstance(x, (int, float)) and math.isfinite(x) for x in row):
                raise SystemExit(f"line {n}: non-finite or non-numeric element")
            a = array.array("f", row)
            if sys.byteorder != "little":
                a.byteswap()
            a.tofile(out)
            rows += 1
    if rows != count:
        os.unlink(tmp)
        raise SystemExit(f"expected {count} rows, got {rows}")
    os.replace(tmp, output)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("to-f32")
    c.add_argument("--dim", type=int, required=True)
    c.add_argument("--count", type=int, required=True)
    c.add_argument("--output", required=True)
    a = ap.parse_args()
    if a.cmd == "to-f32":
        to_f32(a.dim, a.count, a.output)


if __name__ == "__main__":
    main()
