#!/usr/bin/env python3
"""Writes a synthetic memlayer export (docs/EXPORT.md, version 1) of THREADS
threads with MESSAGES messages each, for the export benchmark
(docs/BENCHMARKS.md, "Export and import"): import it into an empty store with
`memlayer import`, then time `memlayer export`.

usage: bench-export-data.py THREADS MESSAGES OUT.jsonl [TENANT]
"""
import json
import sys

threads, per, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
tenant = sys.argv[4] if len(sys.argv) > 4 else "default"
words = ("refund order kettle shipping invoice account password weather travel booking "
         "meeting summary budget report schedule question answer support billing").split()


def uid(kind, a, b=0):
    n = (kind << 120) | (a << 40) | b
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def ts(i):
    s, us = divmod(i, 1_000_000)
    m, s = divmod(s, 60)
    return f"2026-01-01T00:{m % 60:02d}:{s:02d}.{us:06d}Z"


with open(out, "w") as f:
    records = 0

    def put(rec):
        global records
        f.write(json.dumps(rec, separators=(",", ":")) + "\n")
        records += 1

    put({"type": "header", "format": "memlayer-export", "version": 1, "memlayer_version": "bench",
         "tenant": tenant, "exported_at": ts(0),
         "embedding": {"model": "sentence-transformers/all-MiniLM-L6-v2", "dim": 384},
         "vectors": False, "resource_id": None, "thread_id": None})
    for t in range(threads):
        tid = uid(1, t)
        put({"type": "thread", "id": tid, "tenant": tenant, "resource_id": f"user-{t % 100}",
             "agent_id": "support", "title": f"Conversation {t}", "model": "gpt-4o", "metadata": {"n": t},
             "last_seq": per, "created_at": ts(t), "updated_at": ts(t)})
        for s in range(1, per + 1):
            text = " ".join(words[(t * 7 + s * k) % len(words)] for k in range(1, 20))
            put({"type": "message", "id": uid(2, t, s), "thread_id": tid, "seq": s,
                 "role": "user" if s % 2 else "assistant", "content": f"{s}: {text}",
                 "tool_call_id": None, "tool_name": None, "tool_calls": [], "metadata": {},
                 "token_count": None, "created_at": ts(t * per + s)})
    f.write(json.dumps({"type": "end", "records": records, "threads": threads,
                        "messages": threads * per, "vectors": 0}) + "\n")
