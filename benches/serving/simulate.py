#!/usr/bin/env python3
"""What a scheduler could reach at best on this machine, free of HTTP and noise.

Simulates closed-loop clients sending one Cranfield title each to one model instance whose run
takes RUN_MS + TOKEN_MS x rows x longest text (measured with onnxruntime 1.31.1, 2 threads,
all-MiniLM-L6-v2 int8: 1x16 tokens 2.9 ms, 32x16 65 ms, 32x64 290 ms). Prints throughput and
latency for three policies:

  fifo     one run of every waiting text, padded to the longest (what FastAPI-style or plain
           count-based batching does)
  oldest   sparkbrain's: plan runs by length over the queued texts, run the one holding the
           oldest request
  by-age   plan the same runs, run all of them, oldest run first

Usage: simulate.py CRANFIELD_FILE TOKENIZER_JSON
"""

import heapq
import random
import re
import statistics
import sys

from tokenizers import Tokenizer

RUN_MS, TOKEN_MS, OVERHEAD_TOKENS, MAX_BATCH, WINDOW, THINK_MS = 1.0, 0.13, 8, 32, 128, 0.5


def cost(rows, width):
    return RUN_MS + TOKEN_MS * rows * width


def plan(lengths):
    """sparkbrain's planner (TextTask::plan): least padded tokens plus a per-run overhead."""
    n = len(lengths)
    best, start_of = [0] + [float("inf")] * n, [0] * (n + 1)
    for end in range(1, n + 1):
        width = max(lengths[end - 1], 1)
        for start in range(end - 1, -1, -1):
            if end - start > MAX_BATCH:
                break
            c = best[start] + OVERHEAD_TOKENS + (end - start) * width
            if c < best[end]:
                best[end], start_of[end] = c, start
    runs, end = [], n
    while end > 0:
        runs.append(range(start_of[end], end))
        end = start_of[end]
    return runs[::-1]


def simulate(policy, lengths, clients, duration_ms=60_000, seed=1):
    rng = random.Random(seed)
    now, queue, latencies = 0.0, [], []
    arrivals = [(THINK_MS * rng.random(), c) for c in range(clients)]
    heapq.heapify(arrivals)
    while now < duration_ms:
        while arrivals and arrivals[0][0] <= now:
            at, c = heapq.heappop(arrivals)
            queue.append((at, rng.choice(lengths), c))
        if not queue:
            now = arrivals[0][0]
            continue
        queue.sort()
        cands = queue[:WINDOW]
        if policy == "fifo":
            chosen = [list(range(min(len(cands), MAX_BATCH)))]
        else:
            order = sorted(range(len(cands)), key=lambda i: cands[i][1])
            runs = [[order[k] for k in r] for r in plan([cands[i][1] for i in order])]
            chosen = [r for r in runs if 0 in r] if policy == "oldest" else sorted(runs, key=min)
        for run in chosen:
            now += cost(len(run), max(cands[i][1] for i in run))
            for i in run:
                latencies.append(now - cands[i][0])
                heapq.heappush(arrivals, (now + THINK_MS, cands[i][2]))
        taken = {i for run in chosen for i in run}
        queue = [j for i, j in enumerate(cands) if i not in taken] + queue[WINDOW:]
    latencies.sort()
    return (len(latencies) / duration_ms * 1000, statistics.median(latencies),
            latencies[int(len(latencies) * 0.99)])


def main(cranfield, tokenizer_json):
    text = open(cranfield).read()
    titles = [" ".join(t.split()) for t in re.findall(r"\.T\n(.*?)\n\.A", text, re.S)]
    tok = Tokenizer.from_file(tokenizer_json)
    tok.no_padding()
    tok.enable_truncation(max_length=256)
    lengths = [len(tok.encode(t).ids) for t in titles if t]
    ordered = sorted(lengths)
    batches = [ordered[i:i + 32] for i in range(0, len(ordered), 32)]
    ceiling = len(ordered) / sum(cost(len(b), max(b)) for b in batches) * 1000
    print(f"in-process ceiling (whole set sorted, batches of 32): {ceiling:.0f} sentences/s")
    print(f"{'clients':>7} {'policy':>7} {'sentences/s':>12} {'p50 ms':>8} {'p99 ms':>8}")
    for clients in (32, 128):
        for policy in ("fifo", "oldest", "by-age"):
            rate, p50, p99 = simulate(policy, lengths, clients)
            print(f"{clients:>7} {policy:>7} {rate:>12.1f} {p50:>8.1f} {p99:>8.1f}")


if __name__ == "__main__":
    main(*sys.argv[1:])
