#!/usr/bin/env bash
# Fetches llama.cpp's tokenizer test vocabularies: vocabulary-only GGUF files
# of real models (Llama 2's SentencePiece, Phi-3, Llama 3, Qwen 2, GPT-2,
# StarCoder) with llama.cpp's own test inputs and expected token ids.
#
# They ship inside the llama-cpp-python source package on PyPI, which vendors
# llama.cpp; only those files are kept. The tests in llm/tests/vocab.rs read
# them from the directory this prints (KB_VOCAB_DIR overrides it).
#
# Usage: scripts/fetch-vocab-fixtures.sh   (a no-op once fetched)
set -euo pipefail

VERSION=0.3.36
SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
NAMES=(llama-spm phi-3 llama-bpe qwen2 gpt-2 starcoder)

dir="${KB_VOCAB_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kb/fixtures/llama.cpp-vocab-$VERSION}"
if [[ -f "$dir/.complete" ]]; then
    echo "$dir"
    exit 0
fi

read -r -a pip <<<"${KB_PIP:-python3 -m pip}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# --no-binary for this package only: its build tools still come as wheels.
"${pip[@]}" download --quiet --no-deps --no-binary llama-cpp-python \
    "llama-cpp-python==$VERSION" -d "$work" >&2
archive="$work/llama_cpp_python-$VERSION.tar.gz"
echo "$SHA256  $archive" | sha256sum --check --quiet - >&2 || {
    echo "fetch-vocab-fixtures: $archive does not have the pinned checksum" >&2
    exit 1
}

root="llama_cpp_python-$VERSION/vendor/llama.cpp"
members=("$root/LICENSE")
for name in "${NAMES[@]}"; do
    for ext in gguf gguf.inp gguf.out; do
        members+=("$root/models/ggml-vocab-$name.$ext")
    done
done
tar -xzf "$archive" -C "$work" "${members[@]}"

mkdir -p "$dir"
cp "$work/$root/LICENSE" "$dir/LICENSE-llama.cpp"
cp "$work/$root"/models/ggml-vocab-* "$dir/"
touch "$dir/.complete"
echo "$dir"
