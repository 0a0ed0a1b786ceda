#!/usr/bin/env python3
"""Where one order's CPU goes in the chain bench: a `perf record` of it, in microseconds per order.

    FRLAB_BENCH_ONLY=SQLite perf record -e cpu-clock -F 199 --call-graph dwarf,16384 \
        -o chain.perf target/release/deps/chain-<hash> --bench
    perf script -i chain.perf -F time,ip,sym > chain.txt
    scripts/chain-profile.py chain.txt --lab <orders/s> --bare <orders/s> [--hz 199]

`--lab` and `--bare` are the mean orders/s the bench printed for the two chains in that run.
Samples are split into the lab's and the bare chain's rounds by half-second windows (a
window belongs to the lab if any sample in it ran lab code, to the bare chain if any ran its
handlers); each sample goes to the layer of the innermost frame that names one. Per order is
samples x sampling period / (orders/s x seconds of the rounds): the rounds' seconds include
their 1 s of warm-up and a stack's start, so the figures are a few percent high, alike for
both chains.
"""

import argparse
import collections
import re
import sys

LAB_MARKS = ("lab_store", "orders::", "inventory::", "payments::", "notifications::",
             "lab_resilience", "lab_runtime", "sqlite3")
BARE_MARKS = ("Bare",)
# (layer, pattern on a frame's symbol), tried innermost frame first.
LAYERS = [
    ("SQLite (C), its file I/O and locks", r"sqlite3|^pcache|^wal|^btree|^unix|^pager"),
    ("TCP send (writev, kernel)", r"writev"),
    ("TCP receive (kernel)", r"recvfrom|ksys_read|__libc_read"),
    ("scheduler: park, wake, futex", r"epoll_wait|park|futex|schedule|finish_task_switch"),
    ("h2 (HTTP/2 frames, HPACK)", r"hpack|^h2::|^<h2::"),
    ("hyper", r"hyper"),
    ("tonic", r"tonic"),
    ("prost (messages)", r"prost"),
    ("lab-resilience (client stacks)", r"lab_resilience"),
    ("lab-runtime (server layers)", r"lab_runtime"),
    ("lab-store (binds, rows)", r"lab_store"),
    ("tracing", r"tracing"),
    ("prometheus-client", r"prometheus"),
    ("serde_json", r"serde_json"),
    ("uuid", r"uuid"),
    ("the five services' handlers", r"orders::|payments::|inventory::|notifications::|gateway::"),
    ("tokio (tasks, timers, channels)", r"tokio"),
]


def read(path):
    samples, current = [], None
    with open(path) as f:
        for line in f:
            if not line.startswith("\t") and line.strip().endswith(":"):
                if current:
                    samples.append(current)
                current = (float(line.strip()[:-1]), [])
            elif line.startswith("\t") and current is not None:
                parts = line.strip().split(None, 1)
                current[1].append(parts[1] if len(parts) > 1 else "?")
    if current:
        samples.append(current)
    return samples


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("script", help="`perf script -F time,ip,sym` output")
    p.add_argument("--lab", type=float, required=True, help="the lab chain's mean orders/s")
    p.add_argument("--bare", type=float, required=True, help="the bare chain's mean orders/s")
    p.add_argument("--hz", type=float, default=199, help="perf record's -F")
    a = p.parse_args()
    samples = read(a.script)
    if not samples:
        sys.exit(f"{a.script}: no samples (was it made with `perf script -F time,ip,sym`?)")
    lab_w, bare_w = set(), set()
    for t, stack in samples:
        if any(m in f for f in stack for m in LAB_MARKS):
            lab_w.add(int(t * 2))
        if any(m in f for f in stack for m in BARE_MARKS):
            bare_w.add(int(t * 2))
    both = lab_w & bare_w
    lab_w, bare_w = lab_w - both, bare_w - both
    compiled = [(name, re.compile(pat)) for name, pat in LAYERS]

    def per_order(windows, rate):
        counts = collections.Counter()
        for t, stack in samples:
            if int(t * 2) not in windows:
                continue
            layer = next((n for f in stack for n, pat in compiled if pat.search(f)), "other")
            counts[layer] += 1
        scale = 1e6 / a.hz / (rate * len(windows) / 2)
        return {k: v * scale for k, v in counts.items()}

    lab, bare = per_order(lab_w, a.lab), per_order(bare_w, a.bare)
    print("| layer | lab, SQLite + memory (µs/order) | bare tonic (µs/order) |")
    print("|---|---|---|")
    for layer in sorted(set(lab) | set(bare), key=lambda k: -lab.get(k, 0)):
        print(f"| {layer} | {lab.get(layer, 0):.0f} | {bare.get(layer, 0):.0f} |")
    print(f"| **all** | **{sum(lab.values()):.0f}** | **{sum(bare.values()):.0f}** |")


if __name__ == "__main__":
    main()
