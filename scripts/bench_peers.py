#!/usr/bin/env python3
"""Helpers of scripts/bench_peers (stdlib only; numpy is used when present).

  bench_peers.py truth --vectors F --dim D --data N --queries Q --threads T --output FILE
      The exact top 10 of each query among the data vectors of its thread (row i of the
      data is in thread i*T//N, query q searches thread q % T), by cosine similarity:
      the reference both sides' results are scored against (recall@10).

  bench_peers.py report --truth FILE [--markdown] RESULT.json ...
      Reads the JSON objects the two sides print (scripts/peers/mastra.mjs and
      crates/app/examples/bench_peers.rs; one file per side and round), takes each
      side's median over its rounds per line, and prints the figures and memlayer's
      ratios against Mastra (above 1: memlayer is faster), recall@10 against exact,
      and the sanity checks. Exits 1 when a check failed.

A side's JSON: {"side", "label", "versions", "settings", "params",
  "lines": {"batched", "single", "concurrent", "fill": messages/s;
            "last10_us", "page_first_us", "page_last_us": median µs; "walk_s": s},
  "vector": {"upsert_s", "query_us", "results": [[row, ...] per query]},
  "checks": [[what, passed], ...]}
"""

import argparse
import array
import json
import math
import statistics
import sys

# (key, what, unit, higher is better)
LINES = [
    ("batched", "saves, 10,000 messages in batches of 1,000", "msg/s", True),
    ("single", "single saves, one call at a time", "msg/s", True),
    ("concurrent", "single saves from concurrent clients", "msg/s", True),
    ("last10_us", "last 10 of the long thread", "µs", False),
    ("page_first_us", "page of 100 at the start", "µs", False),
    ("page_last_us", "page of 100 at the end", "µs", False),
    ("walk_s", "paging through everything (pages of 100)", "s", False),
    ("upsert_s", "vector upsert", "s", False),
    ("query_us", "thread-filtered top-10 query", "µs", False),
    ("fill", "(filling the long thread, batches of 1,000)", "msg/s", True),
]


def read_rows(path, dim):
    a = array.array("f")
    with open(path, "rb") as f:
        a.frombytes(f.read())
    if sys.byteorder != "little":
        a.byteswap()
    return [a[i * dim:(i + 1) * dim] for i in range(len(a) // dim)]


def truth(a):
    rows = read_rows(a.vectors, a.dim)
    if len(rows) < a.data + a.queries:
        raise SystemExit(f"{a.vectors} holds {len(rows)} rows, need {a.data + a.queries}")
    norm = [math.sqrt(sum(x * x for x in r)) or 1.0 for r in rows]
    out = []
    for q in range(a.queries):
        t = q % a.threads
        members = [i for i in range(a.data) if i * a.threads // a.data == t]
        qv, qn = rows[a.data + q], norm[a.data + q]
        scored = [(sum(x * y for x, y in zip(qv, rows[i])) / (qn * norm[i]), i) for i in members]
        scored.sort(key=lambda s: (-s[0], s[1]))
        out.append([i for _, i in scored[:10]])
    with open(a.output, "w") as f:
        json.dump({"dim": a.dim, "data": a.data, "queries": a.queries, "threads": a.threads, "top10": out}, f)


def recall(results, top10):
    if len(results) != len(top10):
        return None
    return statistics.mean(len(set(r[:10]) & set(t)) / len(t) for r, t in zip(results, top10))


def fmt(x, unit):
    if x is None:
        return "–"
    if unit == "s":
        return f"{x:.3f} s" if x < 10 else f"{x:.1f} s"
    if unit == "µs":
        return f"{x:,.0f} µs" if x < 10_000 else f"{x / 1000:,.1f} ms"
    return f"{x:,.0f} {unit}"


def report(a):
    with open(a.truth) as f:
        top10 = json.load(f)["top10"]
    sides = {}
    for path in a.results:
        with open(path) as f:
            r = json.load(f)
        sides.setdefault(r["side"], []).append(r)
    order = (["mastra"] if "mastra" in sides else []) + sorted(s for s in sides if s != "mastra")

    def value(side, key):
        if side not in sides:
            return None
        vals = []
        for r in sides[side]:
            v = r["lines"].get(key, r["vector"].get(key))
            if v is not None:
                vals.append(v)
        return statistics.median(vals) if vals else None

    failed = False
    print("sides:")
    for s in order:
        r = sides[s][0]
        print(f"  {s}: {r['label']}; {r['settings']}; {len(sides[s])} round(s)")
        print(f"    versions: {json.dumps(r['versions'])}")
        for what, ok in (c for r in sides[s] for c in r["checks"]):
            if not ok:
                failed = True
                print(f"    CHECK FAILED: {what}")
    p = sides[order[0]][0]["params"]
    print(f"params: {json.dumps({k: v for k, v in p.items() if k not in ('dir', 'texts', 'vectors')})}")
    mem = [s for s in order if s != "mastra"]
    head = ["line", "Mastra"] + [x for s in mem for x in (s, "ratio")]
    rows = []
    for key, what, unit, higher in LINES:
        m = value("mastra", key)
        row = [what, fmt(m, unit)]
        for s in mem:
            v = value(s, key)
            ratio = None if m is None or v is None else (v / m if higher else m / v)
            row += [fmt(v, unit), "–" if ratio is None else f"**{ratio:.1f}×**" if a.markdown else f"{ratio:.1f}x"]
        rows.append(row)
    def rec_of(side):
        if side not in sides:
            return "–"
        results = sides[side][0]["vector"].get("results")
        r = None if results is None else recall(results, top10)
        return "–" if r is None else f"{r:.3f}"

    rec = ["recall@10 against exact", rec_of("mastra")]
    for s in mem:
        rec += [rec_of(s), ""]
    rows.append(rec)
    if a.markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for r in rows:
            print("| " + " | ".join(r) + " |")
    else:
        widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
        for r in [head] + rows:
            print("  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    for s in mem:
        strategies = sides[s][0]["vector"].get("strategies")
        if strategies:
            print(f"{s}: vector index {sides[s][0]['vector'].get('index')}, queries answered by {json.dumps(strategies)}")
    if failed:
        raise SystemExit(1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("truth")
    t.add_argument("--vectors", required=True)
    t.add_argument("--dim", type=int, required=True)
    t.add_argument("--data", type=int, required=True)
    t.add_argument("--queries", type=int, required=True)
    t.add_argument("--threads", type=int, required=True)
    t.add_argument("--output", required=True)
    r = sub.add_parser("report")
    r.add_argument("--truth", required=True)
    r.add_argument("--markdown", action="store_true")
    r.add_argument("results", nargs="+")
    a = ap.parse_args()
    truth(a) if a.cmd == "truth" else report(a)


if __name__ == "__main__":
    main()
