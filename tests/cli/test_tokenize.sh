#!/bin/sh
# moeq tokenize / detokenize and eval --text: ids against the reference files, safetensors output
# readable by --tokens, round trip, determinism, and the bad-input catalogue (exit codes, messages).
. tests/cli/lib.sh
TK=$FX/tokenizers

expect_exit "tokenize --help" 0 "" -- "$MOEQ" tokenize --help
expect_exit "detokenize --help" 0 "" -- "$MOEQ" detokenize --help
expect_exit "tokenize without --text" 1 "give --text" -- "$MOEQ" tokenize $FX/tiny-mixtral
expect_exit "tokenize without MODEL" 1 "missing MODEL" -- "$MOEQ" tokenize --text $FX/heldout.txt
expect_exit "tokenize -o onto its input" 1 "overwrite an input" -- "$MOEQ" tokenize $FX/tiny-mixtral --text $FX/heldout.txt -o $FX/heldout.txt

# one id per line, identical to tokenizers 0.23 (refs.json) for every reference tokenizer
for name in bytelevel llama3 nfkc metaspace legacy; do
  f=$(python3 -c "import json,sys; print(json.load(open('$TK/refs.json'))['tokenizers']['$name']['file'])")
  "$MOEQ" tokenize "$f" --text $TK/torture.txt -q > "$TMPD/ids.txt" 2> "$TMPD/err" || cat "$TMPD/err" >&2
  python3 - "$TK/refs.json" "$name" "$TMPD/ids.txt" <<'PY' && echo "PASS tokenize $name torture.txt = tokenizers" || echo "FAIL tokenize $name torture.txt = tokenizers"
import json, sys
ref = json.load(open(sys.argv[1]))["tokenizers"][sys.argv[2]]["texts"]["torture"]["ids_special"]
got = [int(x) for x in open(sys.argv[3]).read().split()]
assert got == ref, (len(got), len(ref))
PY
done

# -o: a safetensors file with one I32 tensor "tokens", header padded to 8, bit-identical across runs
"$MOEQ" tokenize $FX/tiny-qwen2moe --text $FX/heldout.txt -o "$TMPD/a.safetensors" --json > "$TMPD/t.json" 2>/dev/null
"$MOEQ" tokenize $FX/tiny-qwen2moe --text $FX/heldout.txt -o "$TMPD/b.safetensors" --threads 1 -q
python3 - "$TMPD/a.safetensors" "$FX/heldout.safetensors" "$TMPD/t.json" <<'PY' && echo "PASS tokenize -o safetensors = fixture token file" || echo "FAIL tokenize -o safetensors = fixture token file"
import json, struct, sys
def load(p):
    b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n])
    return b, n, h
b, n, h = load(sys.argv[1])
assert n % 8 == 0 and h["__metadata__"] == {"format": "pt"} and list(h) == ["__metadata__", "tokens"]
t = h["tokens"]; assert t["dtype"] == "I32" and len(t["shape"]) == 1
ids = struct.unpack("<%di" % t["shape"][0], b[8 + n:])
rb, rn, rh = load(sys.argv[2])
ref = struct.unpack("<%di" % rh["tokens"]["shape"][0], rb[8 + rn:])
assert ids[:len(ref)] == ref
j = json.load(open(sys.argv[3])); assert j["tokens"] == len(ids) and j["bytes"] == 62101 and j["mb_per_s"] > 0
PY
cmp -s "$TMPD/a.safetensors" "$TMPD/b.safetensors" && echo "PASS tokenize output bit-identical across runs" || echo "FAIL tokenize output bit-identical across runs"
expect_exit "verify reads the tokenize output" 0 "" -- "$MOEQ" verify "$TMPD/a.safetensors"

# round trip through the CLI (byte-level BPE is lossless)
"$MOEQ" detokenize $FX/tiny-qwen2moe --tokens "$TMPD/a.safetensors" -q > "$TMPD/back.txt"
cmp -s "$TMPD/back.txt" $FX/heldout.txt && echo "PASS detokenize(tokenize(heldout)) == heldout" || echo "FAIL detokenize(tokenize(heldout)) == heldout"
"$MOEQ" tokenize $FX/tiny-mixtral --text $TK/torture.txt -o "$TMPD/t.safetensors" -q
"$MOEQ" detokenize $FX/tiny-mixtral --tokens "$TMPD/t.safetensors" -q > "$TMPD/back.txt"
cmp -s "$TMPD/back.txt" $TK/torture.txt && echo "PASS detokenize(tokenize(torture)) == torture" || echo "FAIL detokenize(tokenize(torture)) == torture"
"$MOEQ" detokenize $FX/tiny-mixtral --tokens "$TMPD/t.safetensors" --skip-special --json -q > "$TMPD/d.json"
python3 -c "
import json,sys; d=json.load(open('$TMPD/d.json')); assert '<|endoftext|>' not in d['text'] and d['tokens'] > 1000
" && echo "PASS detokenize --skip-special --json" || echo "FAIL detokenize --skip-special --json"

# eval --text gives the same numbers as eval --tokens on the fixture token file
"$MOEQ" eval $FX/tiny-olmoe --text $FX/heldout.txt --ctx 128 --max-tokens 1300 --json -q > "$TMPD/e1.json"
"$MOEQ" eval $FX/tiny-olmoe --tokens $FX/heldout.safetensors --ctx 128 --max-tokens 1300 --json -q > "$TMPD/e2.json"
python3 -c "
import json; a=json.load(open('$TMPD/e1.json')); b=json.load(open('$TMPD/e2.json'))
assert a['ppl'] == b['ppl'] and a['tokens'] == b['tokens'] == 1270
" && echo "PASS eval --text = eval --tokens" || echo "FAIL eval --text = eval --tokens"

# bad input: exit 2 with the file and the component named
printf 'ok\377bad' > "$TMPD/bad.txt"
expect_exit "tokenize invalid UTF-8" 2 "bad.txt.*invalid UTF-8 at byte offset 2" -- "$MOEQ" tokenize $FX/tiny-mixtral --text "$TMPD/bad.txt"
expect_exit "eval --text invalid UTF-8" 2 "invalid UTF-8 at byte offset 2" -- "$MOEQ" eval $FX/tiny-olmoe --text "$TMPD/bad.txt"
expect_exit "tokenize missing text" 2 "nope.txt" -- "$MOEQ" tokenize $FX/tiny-mixtral --text "$TMPD/nope.txt"
expect_exit "tokenize missing model" 2 "no-model" -- "$MOEQ" tokenize "$TMPD/no-model" --text $FX/heldout.txt
mkdir -p "$TMPD/m"
expect_exit "tokenize dir without tokenizer.json" 2 "no tokenizer.json" -- "$MOEQ" tokenize "$TMPD/m" --text $FX/heldout.txt
sed 's/"type": *"BPE"/"type":"Unigram"/; s/"type":"BPE"/"type":"Unigram"/' $FX/tiny-mixtral/tokenizer.json > "$TMPD/m/tokenizer.json"
expect_exit "tokenize unknown model type" 2 "unsupported model type 'Unigram'" -- "$MOEQ" tokenize "$TMPD/m" --text $FX/heldout.txt
python3 -c "
import json; t=json.load(open('$FX/tiny-mixtral/tokenizer.json')); t['pre_tokenizer']={'type':'Sequence','pretokenizers':[t['pre_tokenizer'],{'type':'BertPreTokenizer'}]}
json.dump(t, open('$TMPD/m/tokenizer.json','w'))"
expect_exit "tokenize unknown pre-tokenizer" 2 "pre_tokenizer.pretokenizers\[1\]: unsupported pre-tokenizer type 'BertPreTokenizer'" -- "$MOEQ" tokenize "$TMPD/m" --text $FX/heldout.txt
mkdir -p "$TMPD/olmoe"
for f in $FX/tiny-olmoe/*; do ln -s "$PWD/$f" "$TMPD/olmoe/"; done
rm "$TMPD/olmoe/tokenizer.json"; cp "$TMPD/m/tokenizer.json" "$TMPD/olmoe/"
expect_exit "eval --text unknown pre-tokenizer" 2 "BertPreTokenizer" -- "$MOEQ" eval "$TMPD/olmoe" --text $FX/heldout.txt
head -c 3000 $FX/tiny-mixtral/tokenizer.json > "$TMPD/m/tokenizer.json"
expect_exit "tokenize truncated tokenizer.json" 2 "tokenizer.json: not valid JSON" -- "$MOEQ" tokenize "$TMPD/m" --text $FX/heldout.txt
python3 -c "import struct,sys; sys.stdout.buffer.write(struct.pack('<3I', 1, 2, 99999))" > "$TMPD/big.u32"
expect_exit "detokenize id outside the vocabulary" 2 "big.u32.*99999" -- "$MOEQ" detokenize $FX/tiny-mixtral --tokens "$TMPD/big.u32"
