"""Reference throughput of the same embedder under sentence-transformers.

Usage: python3 bench_embed_reference.py MODEL_DIR PASSAGES.jsonl
Embeds the passages kb's embedding bench wrote (one JSON string a line) with
sentence-transformers on the CPU, and prints passages/s and single-query p50
latency in the same format as `cargo bench -p kb-embeddings`.
"""

import json
import os
import sys
import time

import torch
from sentence_transformers import SentenceTransformer


def main() -> None:
    model_dir, passages_path = sys.argv[1], sys.argv[2]
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    with open(passages_path, encoding="utf-8") as f:
        passages = [json.loads(line) for line in f if line.strip()]
    model = SentenceTransformer(model_dir, device="cpu")
    model.encode(passages[:64], batch_size=32)
    started = time.perf_counter()
    model.encode(passages, batch_size=32)
    elapsed = time.perf_counter() - started
    print(f"sentence-transformers {model_dir} on {threads} thread(s), torch {torch.__version__}")
    print(f"sentence-transformers (batch 32):            {len(passages) / elapsed:8.1f} passages/s")
    queries = ["what is attention", "how does a KV cache work", "hybrid search with RRF", "LoRA rank"]
    latencies = []
    for i in range(100):
        started = time.perf_counter()
        model.encode([queries[i % len(queries)]])
        latencies.append(time.perf_counter() - started)
    latencies.sort()
    print(f"single query latency: p50 {latencies[50] * 1e3:.2f} ms, p90 {latencies[90] * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
