#!/usr/bin/env bash
# Crash consistency at scale: 100 SIGKILLs at random moments of `kb ingest`
# (building, updating, pruning) and of `kb serve` taking an upload, over a
# synthetic corpus of 2,000 notes. After each kill the work is run again,
# and the knowledge base must equal a clean build (files, hashes, chunk ids,
# `kb check`, counts, spot searches). Prints the tally; exits non-zero on any
# mismatch. About an hour on two cores.
#
#   KB_CRASH_FILES=2000 KB_CRASH_KILLS=100 scripts/crash-test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --quiet --locked -p kb-cli -- models fetch all-minilm-l6-v2 smollm2-135m-instruct >/dev/null
exec cargo test --locked -p kb-cli --test crash -- --ignored --nocapture a_hundred_kills
