#!/usr/bin/env bash
# Embedding speed: kb's bench, then the same passages under sentence-transformers
# when PYTHON (default python3) can import it, and the throughput ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
passages=$(mktemp --suffix=.jsonl)
trap 'rm -f "$passages"' EXIT

KB_BENCH_PASSAGES="$passages" cargo bench --quiet -p kb-embeddings --bench embed | tee /tmp/kb-bench-embed.$$
kb_rate=$(awk '/^kb batched/ { print $(NF-1) }' /tmp/kb-bench-embed.$$)
rm -f /tmp/kb-bench-embed.$$

if ! "$python" -c 'import sentence_transformers' 2>/dev/null; then
    echo "sentence-transformers is not importable by $python: skipping the reference (set PYTHON to a Python that has it)"
    exit 0
fi
model_dir=$(cargo run --quiet -p kb-cli -- models list --json | "$python" -c 'import json,sys; print([m["path"] for m in json.load(sys.stdin) if m["kind"] == "embedder"][0])')
echo
"$python" scripts/bench_embed_reference.py "$model_dir" "$passages" | tee /tmp/kb-bench-ref.$$
ref_rate=$(awk '/^sentence-transformers \(batch/ { print $(NF-1) }' /tmp/kb-bench-ref.$$)
rm -f /tmp/kb-bench-ref.$$
echo
awk -v kb="$kb_rate" -v ref="$ref_rate" 'BEGIN { printf "kb / sentence-transformers throughput: %.2fx\n", kb / ref }'
