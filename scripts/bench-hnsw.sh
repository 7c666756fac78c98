#!/usr/bin/env bash
# HNSW recall on real embeddings: kb's docs and, where it exists, the sample
# corpus are cut into overlapping windows of sentences and of characters;
# each window is embedded as a passage with the configured embedder (the
# default: multilingual-e5-small), and questions (the eval sets') plus some
# windows as queries. The hybrid bench then compares the HNSW graph with
# exact search on them (recall@10) and times both.
#
#   scripts/bench-hnsw.sh            # about 5 minutes on two cores
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sources=(docs)
[ -d ../shared/corpus ] && sources+=(../shared/corpus)
python3 - "$work" "${sources[@]}" <<'PY'
import json, pathlib, random, re, sys
work, roots = pathlib.Path(sys.argv[1]), sys.argv[2:]
texts = []
for root in roots:
    for path in sorted(pathlib.Path(root).rglob("*")):
        if path.suffix in (".md", ".txt") and path.is_file():
            texts.append(path.read_text(encoding="utf-8", errors="replace"))
windows = []
for text in texts:
    sentences = [s.strip() for s in re.split(r"(?<=[。！？.!?])\s*|\n+", text) if len(s.strip()) > 3]
    for size in (1, 2, 3, 4):
        for i in range(0, max(len(sentences) - size + 1, 0)):
            windows.append(" ".join(sentences[i:i + size]))
    flat = " ".join(text.split())
    for size in (48, 96):
        for i in range(0, max(len(flat) - size, 0), 12):
            windows.append(flat[i:i + size])
windows = sorted(set(w for w in windows if w))
random.Random(7).shuffle(windows)
queries = []
for name in ("../shared/eval/dev.jsonl", "../shared/eval/heldout.jsonl", "eval/heldout.jsonl"):
    p = pathlib.Path(name)
    if p.exists():
        for line in p.read_text(encoding="utf-8").splitlines():
            if line.strip():
                q = json.loads(line).get("question")
                if q:
                    queries.append(q)
queries += windows[:200 - len(queries)] if len(queries) < 200 else []
(work / "passages.txt").write_text("\n".join(w.replace("\n", " ") for w in windows) + "\n", encoding="utf-8")
(work / "queries.txt").write_text("\n".join(q.replace("\n", " ") for q in queries) + "\n", encoding="utf-8")
print(f"{len(windows)} passages, {len(queries)} queries", file=sys.stderr)
PY
cargo build --quiet --release --locked -p kb-cli
kb=target/release/kb
$kb models fetch >/dev/null
echo "embedding the passages…" >&2
$kb embed --json < "$work/passages.txt" > "$work/passages.json"
$kb embed --query --json < "$work/queries.txt" > "$work/queries.json"
cargo bench --quiet --locked -p kb-retrievers --bench hybrid -- \
    --vectors "$work/passages.json" --query-vectors "$work/queries.json"
