#!/usr/bin/env bash
# kb's local engine against llama.cpp on the GGUF files people run, in one
# run on this machine: for each model, each kernel family this processor has
# (AVX-512 VNNI against llama.cpp built natively, AVX2 against llama.cpp
# built for AVX2 only) and 2 and 1 threads, pp512 and tg128 of both, kb's
# peak memory against the file, and the decoding speed the memory bandwidth
# allows. Prints a Markdown table (the one in docs/llm.md).
#
#   scripts/bench-llm.sh [--quick] [--models "135m-q4_1 135m-q4_k_m gemma3 1.7b-q4_k_m 1.7b-q8_0 7b-q4_k_m"]
#
# --quick: the small models only, 2 threads, 2 repetitions.
# Models are built once under $KB_BENCH (default ~/.cache/kb-bench): the
# SmolLM2 file requantized by llama.cpp's own quantizer, and Llama-shaped
# files with random weights at real sizes (scripts/synthetic-gguf.py; needs
# `pip install gguf numpy`). The 7B shape needs about 12 GB of disk while it
# is built and 4.4 GB after.
set -euo pipefail
cd "$(dirname "$0")/.."
models="135m-q4_1 135m-q4_k_m gemma3 1.7b-q4_k_m 1.7b-q8_0 7b-q4_k_m"
threads="2 1"
reps=3
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) models="135m-q4_1 135m-q4_k_m gemma3"; threads=2; reps=2 ;;
    --models) models="$2"; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
bench_dir=${KB_BENCH:-$HOME/.cache/kb-bench}
mkdir -p "$bench_dir"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/kb/ci-target}

# The CLI only fetches and lists models here: the test build serves.
cargo build --quiet --locked -p kb-cli
kb="$CARGO_TARGET_DIR/debug/kb"
cargo bench --quiet --locked -p kb-llm --bench generate --no-run 2>/dev/null
bench=$(ls -t "$CARGO_TARGET_DIR"/release/deps/generate-* | grep -v '\.d$' | head -1)
native=$(scripts/llamacpp.sh llama-bench llama-quantize)
avx2=$(scripts/llamacpp.sh --avx2 llama-bench)
"$kb" models fetch smollm2-135m-instruct gemma3-270m >&2
smol=$("$kb" models list --json | python3 -c 'import json,sys; print([m["path"] for m in json.load(sys.stdin) if m["name"]=="smollm2-135m-instruct"][0])')
gemma=$("$kb" models list --json | python3 -c 'import json,sys; print([m["path"] for m in json.load(sys.stdin) if m["name"]=="gemma3-270m"][0])')

# The file for a model name, built if missing.
model_file() {
  local name=$1 shape type
  case "$name" in
    135m-q4_1) echo "$smol"; return ;;
    gemma3) echo "$gemma"; return ;;
    135m-*) type=${name#135m-} ;;
    *) shape=${name%%-*}; type=${name#*-} ;;
  esac
  local out="$bench_dir/$name.gguf"
  if [ ! -f "$out" ]; then
    local source=$smol
    if [ -n "${shape:-}" ]; then
      source="$bench_dir/$shape.q8_0.gguf"
      [ -f "$source" ] || python3 scripts/synthetic-gguf.py --like "$smol" --shape "$shape" --out "$source" >&2
    fi
    if [ "$type" = q8_0 ] && [ -n "${shape:-}" ]; then
      cp "$source" "$out"
    else
      "$native/llama-quantize" --allow-requantize "$source" "$out.tmp" "${type^^}" >/dev/null 2>&1
      mv "$out.tmp" "$out"
    fi
  fi
  echo "$out"
}

# llama.cpp's native build can fail where its own fast paths do (its AMX
# code crashes on some Xeons): the VNNI rows then use its AVX2 build, and
# the table says so.
native_label="native build"
if ! "$native/llama-bench" -m "$smol" -p 8 -n 1 -r 1 >/dev/null 2>&1; then
  echo "llama.cpp's native build fails on this processor: the VNNI rows compare with its AVX2 build" >&2
  native=$avx2
  native_label="AVX2 build; the native one fails here"
fi

families=()
grep -q avx512_vnni /proc/cpuinfo && families+=(avx512-vnni)
grep -q avx2 /proc/cpuinfo && families+=(avx2)
results=$(mktemp)
trap 'rm -f "$results"' EXIT
for name in $models; do
  file=$(model_file "$name")
  for family in "${families[@]}"; do
    llama=$native; [ "$family" = avx2 ] && llama=$avx2
    for t in $threads; do
      r=$reps
      case "$name" in 7b-*) r=1 ;; esac
      line=$("$bench" --model "$file" --threads "$t" --reps "$r" --kernels "$family" \
        --llama-bench "$llama/llama-bench" --json | tail -1)
      label=$native_label; [ "$family" = avx2 ] && label="AVX2 build"
      echo "{\"name\": \"$name\", \"family\": \"$family\", \"build\": \"$label\", \"run\": $line}" >> "$results"
      echo "$name $family $t: $line" >&2
    done
  done
done
python3 - "$results" <<'PY'
import json, sys
print("| model | file | kernels (llama.cpp build) | threads | kb pp512 | llama.cpp pp512 | × "
      "| kb tg128 | llama.cpp tg128 | × | tg128 the bandwidth allows | kb peak RSS (× file + KV cache) |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for line in open(sys.argv[1]):
    row = json.loads(line)
    r = row["run"]
    build = row["build"]
    mib = lambda b: b / 1048576
    def ratio(a, b):
        return "{:.2f}".format(a / b) if b else "–"
    print("| {} | {:.0f} MiB | {} ({}) | {} | {:.1f} | {:.1f} | {} | {:.1f} | {:.1f} | {} | {:.0f} ({:.1f} GB/s) | {:.0f} MiB ({:.2f}× {:.0f} + {:.0f} MiB) |".format(
        row["name"], mib(r["file_bytes"]), row["family"], build, r["threads"],
        r["pp512"], r["llama_pp512"] or 0, ratio(r["pp512"], r["llama_pp512"]),
        r["tg128"], r["llama_tg128"] or 0, ratio(r["tg128"], r["llama_tg128"]),
        r["tg_ceiling"], r["bandwidth_gbs"],
        mib(r["peak_rss_bytes"]), r["peak_rss_bytes"] / (r["file_bytes"] + r["kv_bytes"]),
        mib(r["file_bytes"]), mib(r["kv_bytes"])))
PY
