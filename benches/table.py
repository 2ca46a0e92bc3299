#!/usr/bin/env python3
"""Print BENCHMARKS.md tables from the last `cargo bench --bench sign_verify`.

Reads criterion's estimates under target/criterion and prints, per group,
each implementation's median time and its ratio to raw_hmac_sha256 from the
same run (raw time / implementation time; 1.00x = as fast as raw HMAC).
"""
import json
import os
import sys

ROOT = os.path.join(os.path.dirname(__file__), "..", "target", "criterion")
SIZES = ["256B", "4KiB", "64KiB", "1MiB"]
IMPLS = ["raw_hmac_sha256", "raw_hmac_sha256_prekeyed", "hookway", "standardwebhooks", "svix"]


def median_ns(group, impl):
    path = os.path.join(ROOT, group, impl, "new", "estimates.json")
    try:
        with open(path) as f:
            return json.load(f)["median"]["point_estimate"]
    except FileNotFoundError:
        return None


def fmt_time(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.0f} ns"


def main():
    for op in ["verify", "sign"]:
        print(f"\n### {op}\n")
        print("| implementation | " + " | ".join(SIZES) + " |")
        print("| --- |" + " --- |" * len(SIZES))
        medians = {s: {i: median_ns(f"{op}_{s}", i) for i in IMPLS} for s in SIZES}
        for impl in IMPLS:
            cells = []
            for s in SIZES:
                t, raw = medians[s][impl], medians[s]["raw_hmac_sha256"]
                cells.append("–" if t is None or raw is None else f"{fmt_time(t)}, **{raw / t:.2f}×**")
            print(f"| `{impl}` | " + " | ".join(cells) + " |")
        for peer in ["standardwebhooks", "svix"]:
            cells = []
            for s in SIZES:
                hw, p = medians[s]["hookway"], medians[s][peer]
                cells.append("–" if hw is None or p is None else f"{p / hw:.2f}×")
            print(f"| hookway vs `{peer}` (peer ÷ hookway) | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
