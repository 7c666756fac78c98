# Builds a BertForSequenceClassification directory from all-MiniLM-L6-v2 with a
# made-up classifier head: the size of ms-marco-MiniLM-L-6-v2, to measure what a
# cross-encoder adds to a search's latency (its rankings mean nothing).
#
# Usage: python3 scripts/minilm-cross-encoder.py OUT_DIR   (after `kb models fetch --all`)
#        kb eval retrieval --dataset eval/heldout.jsonl --rerank cross-encoder:OUT_DIR
import glob, json, math, os, shutil, struct, sys

out = sys.argv[1] if len(sys.argv) > 1 else 'minilm-cross-encoder'
os.makedirs(out, exist_ok=True)
home = os.environ.get('KB_HOME', os.path.expanduser('~/.cache/kb'))
src = glob.glob(os.path.join(home, 'models', 'all-minilm-l6-v2'))[0]
raw = open(os.path.join(src, 'model.safetensors'), 'rb').read()
n = struct.unpack('<Q', raw[:8])[0]
header = json.loads(raw[8:8+n]); data = raw[8+n:]
tensors = {}
for k, v in header.items():
    if k == '__metadata__': continue
    a, b = v['data_offsets']
    tensors['bert.' + k] = (v['dtype'], v['shape'], data[a:b])
hidden = tensors['bert.pooler.dense.bias'][1][0]
w = struct.pack('<%df' % hidden, *[0.08*math.sin(i*0.37) for i in range(hidden)])
tensors['classifier.weight'] = ('F32', [1, hidden], w)
tensors['classifier.bias'] = ('F32', [1], struct.pack('<f', 0.1))
out_header, blobs, off = {}, [], 0
for k, (dt, shape, b) in tensors.items():
    out_header[k] = {'dtype': dt, 'shape': shape, 'data_offsets': [off, off+len(b)]}
    blobs.append(b); off += len(b)
h = json.dumps(out_header).encode(); h += b' ' * ((8 - len(h) % 8) % 8)
with open(os.path.join(out, 'model.safetensors'), 'wb') as f:
    f.write(struct.pack('<Q', len(h))); f.write(h); [f.write(b) for b in blobs]
cfg = json.load(open(os.path.join(src, 'config.json')))
cfg['architectures'] = ['BertForSequenceClassification']; cfg['id2label'] = {'0': 'LABEL_0'}
json.dump(cfg, open(os.path.join(out, 'config.json'), 'w'))
shutil.copy(os.path.join(src, 'tokenizer.json'), os.path.join(out, 'tokenizer.json'))
print(out)
