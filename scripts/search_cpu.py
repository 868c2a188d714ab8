#!/usr/bin/env python3
"""CPU time a running memlayer server spends per search, by search mode.

Sends N sequential searches (3-6 words drawn with a fixed seed from the load
harness's vocabulary, tests/it/load.rs) to a server on this machine and reads
the server's user + system CPU time from /proc/<pid>/stat before and after.
CPU time, unlike latency, barely moves when other work shares the cores, so
it says what one search costs the server. Linux only.

    python3 scripts/search_cpu.py --pid PID --thread THREAD_ID [--port 8080] [--n 300] [--modes vector,lexical,hybrid]

The thread of the load harness's seeded data is in <data-dir>/load-thread
(docs/BENCHMARKS.md, "Under load").
"""
import argparse
import json
import os
import random
import re
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))


def vocabulary():
    src = open(os.path.join(HERE, "..", "tests", "it", "load.rs")).read()
    block = src.split("const WORDS: &[&str] = &[", 1)[1].split("];", 1)[0]
    return re.findall(r'"([^"]+)"', block)


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--thread", required=True)
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--modes", default="vector,lexical,hybrid")
    a = p.parse_args()
    words = vocabulary()
    for mode in a.modes.split(","):
        rng = random.Random(7)
        c0, t0 = cpu_seconds(a.pid), time.monotonic()
        for _ in range(a.n):
            query = " ".join(rng.choice(words) for _ in range(rng.randint(3, 6)))
            body = {"query": query, "mode": mode, "top_k": 10, "scope": {"thread_id": a.thread}}
            req = urllib.request.Request(
                f"http://127.0.0.1:{a.port}/api/search",
                data=json.dumps(body).encode(),
                headers={"content-type": "application/json"},
            )
            urllib.request.urlopen(req).read()
        c1, t1 = cpu_seconds(a.pid), time.monotonic()
        print(f"{mode}: server CPU {1000 * (c1 - c0) / a.n:.2f} ms/search, wall {1000 * (t1 - t0) / a.n:.2f} ms/search")


if __name__ == "__main__":
    main()
