#!/usr/bin/env python3
"""Writes a Llama-architecture GGUF with random Q8_0 weights at the shape of
a real model, for measuring speed and memory at sizes no package ships.

The vocabulary, tokenizer and chat template are taken from a real GGUF (the
default SmolLM2 file), so kb and llama.cpp both run the result; the text it
generates is noise, its speed and memory are exactly those of a real model
of that shape and type. Turn it into any other type with llama.cpp's
quantizer (`llama-quantize --allow-requantize IN OUT Q4_K_M`).

    python3 scripts/synthetic-gguf.py --like SmolLM2-135M-Instruct.Q4_1.gguf \\
        --shape 1.7b --out smollm2-1.7b-shape.Q8_0.gguf

Needs the `gguf` and `numpy` packages (pip install gguf numpy).
"""
import argparse
import sys

import numpy as np

try:
    import gguf
except ImportError:
    sys.exit("needs the gguf package: pip install gguf numpy")

# hidden, layers, feed-forward, heads, key/value heads
SHAPES = {
    "135m": (576, 30, 1536, 9, 3),       # SmolLM2-135M
    "360m": (960, 32, 2560, 15, 5),      # SmolLM2-360M
    "0.5b": (896, 24, 4864, 14, 2),      # Qwen2.5-0.5B body
    "1.7b": (2048, 24, 8192, 32, 32),    # SmolLM2-1.7B
    "3b": (3072, 28, 8192, 24, 8),       # Llama-3.2-3B body
    "7b": (4096, 32, 14336, 32, 8),      # Mistral-7B body
}


def tokenizer_fields(reader):
    """The tokenizer.* metadata of a GGUF, as (key, kind, value)."""
    for field in reader.fields.values():
        if not field.name.startswith("tokenizer."):
            continue
        kind = field.types[0]
        if kind == gguf.GGUFValueType.ARRAY:
            item = field.types[-1]
            if item == gguf.GGUFValueType.STRING:
                value = [bytes(field.parts[i]).decode("utf-8", "surrogateescape") for i in field.data]
            else:
                value = [field.parts[i].tolist()[0] for i in field.data]
        elif kind == gguf.GGUFValueType.STRING:
            value = bytes(field.parts[field.data[0]]).decode("utf-8")
        else:
            value = field.parts[field.data[0]].tolist()[0]
        yield field.name, kind, value


def q8_0(rng, rows, cols):
    """rows × cols random Q8_0 blocks: a small f16 scale, random quants."""
    blocks = rows * cols // 32
    data = np.empty((blocks, 34), dtype=np.uint8)
    scale = np.full(blocks, 0.002, dtype=np.float16).view(np.uint8).reshape(blocks, 2)
    data[:, :2] = scale
    data[:, 2:] = rng.integers(0, 256, size=(blocks, 32), dtype=np.uint8)
    return data.reshape(rows, cols // 32 * 34)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--like", required=True, help="a GGUF to take the tokenizer from")
    parser.add_argument("--shape", required=True, choices=sorted(SHAPES))
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    hidden, layers, ffn, heads, kv_heads = SHAPES[args.shape]
    head_dim = hidden // heads
    reader = gguf.GGUFReader(args.like)
    writer = gguf.GGUFWriter(args.out, "llama")
    writer.add_name(f"synthetic {args.shape} (random weights)")
    writer.add_context_length(4096)
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    vocab = 0
    for key, kind, value in tokenizer_fields(reader):
        if key == "tokenizer.ggml.tokens":
            vocab = len(value)
        if kind == gguf.GGUFValueType.ARRAY:
            writer.add_array(key, value)
        elif kind == gguf.GGUFValueType.STRING:
            writer.add_string(key, value)
        elif kind == gguf.GGUFValueType.BOOL:
            writer.add_bool(key, bool(value))
        elif kind in (gguf.GGUFValueType.FLOAT32, gguf.GGUFValueType.FLOAT64):
            writer.add_float32(key, float(value))
        else:
            writer.add_uint32(key, int(value))

    rng = np.random.default_rng(args.seed)
    q8 = gguf.GGMLQuantizationType.Q8_0

    def matrix(name, rows, cols):
        writer.add_tensor(name, q8_0(rng, rows, cols), raw_dtype=q8)

    def norm(name, size):
        writer.add_tensor(name, np.ones(size, dtype=np.float32))

    matrix("token_embd.weight", vocab, hidden)
    for i in range(layers):
        norm(f"blk.{i}.attn_norm.weight", hidden)
        matrix(f"blk.{i}.attn_q.weight", heads * head_dim, hidden)
        matrix(f"blk.{i}.attn_k.weight", kv_heads * head_dim, hidden)
        matrix(f"blk.{i}.attn_v.weight", kv_heads * head_dim, hidden)
        matrix(f"blk.{i}.attn_output.weight", hidden, heads * head_dim)
        norm(f"blk.{i}.ffn_norm.weight", hidden)
        matrix(f"blk.{i}.ffn_gate.weight", ffn, hidden)
        matrix(f"blk.{i}.ffn_up.weight", ffn, hidden)
        matrix(f"blk.{i}.ffn_down.weight", hidden, ffn)
    norm("output_norm.weight", hidden)
    matrix("output.weight", vocab, hidden)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


if __name__ == "__main__":
    main()
