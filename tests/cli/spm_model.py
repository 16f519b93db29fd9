# A model directory with a SentencePiece-style tokenizer (tests/cli/test_gguf_spm.sh): the weights
# and config of SRC (links), and TOKENIZER (a byte-fallback BPE tokenizer.json, e.g.
# tok_legacy.json) cut to SRC's vocabulary: ids below vocab_size kept, merges among them kept in
# order, an added token beyond the cut moved to the last id (normalized false, as llama.cpp
# matches user-defined tokens on the raw text); tokenizer_config.json names <s>, </s>, <unk>.
# Usage: python3 tests/cli/spm_model.py SRC TOKENIZER.json OUT
import json, os, sys
src, tokp, out = sys.argv[1:4]
os.makedirs(out, exist_ok=True)
for f in os.listdir(src):
    if f.endswith(".safetensors") or f in ("config.json", "model.safetensors.index.json", "generation_config.json"):
        dst = os.path.join(out, f)
        if not os.path.lexists(dst): os.symlink(os.path.abspath(os.path.join(src, f)), dst)
V = json.load(open(os.path.join(src, "config.json")))["vocab_size"]
t = json.load(open(tokp))
m = t["model"]
late = [a for a in t["added_tokens"] if a["id"] >= V]
keep = V - len(late)
vocab = {k: v for k, v in m["vocab"].items() if v < keep}
merges = [p for p in m["merges"] if (p if isinstance(p, list) else p.split(" ")) and
          all(x in vocab for x in (p if isinstance(p, list) else p.split(" "))) and
          "".join(p if isinstance(p, list) else p.split(" ")) in vocab]
m["vocab"], m["merges"] = vocab, merges
for i, a in enumerate(late):
    a["id"], a["normalized"] = keep + i, False
    vocab[a["content"]] = a["id"]
t["added_tokens"] = [a for a in t["added_tokens"] if a["id"] < V]
json.dump(t, open(os.path.join(out, "tokenizer.json"), "w"), ensure_ascii=False)
json.dump({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": True},
          open(os.path.join(out, "tokenizer_config.json"), "w"))
