"""Build, here, what tests/device/msra_gpu.py trains on a lent GPU: a copy of the converted
Gemma-3-270M whose vocabulary keeps only the tokens MSRA uses (their embedding rows copied, every
other weight as is, in bf16 shards of 45 MB), and MSRA's splits encoded by the real tokenizer with
doctune's NER plugin, remapped to that vocabulary (dev: 300 train sentences held out).

    python tests/device/prune_gemma_for_msra.py OUT_DIR   # then see tests/device/run_msra_gpu.sh
"""
import json, sys, torch
sys.path.insert(0, "platform")
from transformers import AutoTokenizer, AutoModelForCausalLM
from doctune.base_models import resolve_base_model
from doctune.tasks import get_task
from doctune.tasks.ner import load_msra
import random
base = resolve_base_model("gemma-3-270m")
tok = AutoTokenizer.from_pretrained(base)
plugin = get_task("ner")
train, test = load_msra("train"), load_msra("test")
random.Random(7).shuffle(train)
dev, train = train[:300], train[300:]
info = plugin.check_splits({"train": train, "dev": dev, "test": test})
enc = {n: plugin.encode(r, tok, info, 112) for n, r in (("train", train), ("dev", dev), ("test", test))}
used = sorted({i for part in enc.values() for e in part for i in e["input_ids"]} | {tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id})
remap = {old: new for new, old in enumerate(used)}
print("vocab kept", len(used))
for part in enc.values():
    for e in part:
        e["input_ids"] = [remap[i] for i in e["input_ids"]]
model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
emb = model.get_input_embeddings().weight.data[used].clone()
model.resize_token_embeddings(len(used))
model.get_input_embeddings().weight.data.copy_(emb)
model.config.pad_token_id = remap[tok.pad_token_id]; model.config.bos_token_id = remap[tok.bos_token_id]; model.config.eos_token_id = remap[tok.eos_token_id]
model = model.to(torch.bfloat16)
out = sys.argv[1]
model.save_pretrained(f"{out}/gemma-msra", max_shard_size="45MB")
torch.save({"enc": enc, "info": info, "pad_id": remap[tok.pad_token_id]}, f"{out}/msra-encoded.pt")
