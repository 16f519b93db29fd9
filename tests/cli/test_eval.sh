#!/bin/sh
# moeq eval: JSON keys, window arithmetic, determinism across thread counts, bad token files.
. tests/cli/lib.sh
T=$FX/heldout.safetensors

expect_exit "eval --help" 0 "" -- "$MOEQ" eval --help
expect_exit "eval without tokens" 1 "give --tokens" -- "$MOEQ" eval $FX/tiny-olmoe
expect_exit "eval --ctx 1" 1 "--ctx wants an integer >= 2" -- "$MOEQ" eval $FX/tiny-olmoe --tokens $T --ctx 1
expect_exit "eval --text with a missing file" 2 "no-such.txt" -- "$MOEQ" eval $FX/tiny-olmoe --text $FX/no-such.txt

for th in 1 2; do
  "$MOEQ" eval $FX/tiny-qwen3moe --tokens $T --ctx 128 --max-tokens 1300 --threads $th --json -q > "$TMPD/e$th.json" 2> "$TMPD/err" \
    || { echo "FAIL eval threads $th"; cat "$TMPD/err" >&2; }
done
python3 - "$TMPD/e1.json" "$TMPD/e2.json" <<'PY' && echo "PASS eval json keys and windows" || echo "FAIL eval json keys and windows"
import json, math, sys
a, b = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
for k in ["ppl", "nll_mean", "tokens", "ctx", "windows", "tokens_per_s"]:
    assert k in a, k
assert a["ctx"] == 128 and a["windows"] == 10 and a["tokens"] == 10 * 127
assert abs(math.exp(a["nll_mean"]) - a["ppl"]) < 1e-9 * a["ppl"]
assert a["ppl"] == b["ppl"], (a["ppl"], b["ppl"])   # identical across thread counts
assert 5 < a["ppl"] < 200
PY

"$MOEQ" eval $FX/tiny-qwen3moe --tokens $T --ctx 64 --max-tokens 640 --ref $FX/tiny-qwen3moe --json -q > "$TMPD/self.json" 2>"$TMPD/err"
python3 - "$TMPD/self.json" <<'PY' && echo "PASS eval --ref against itself" || echo "FAIL eval --ref against itself"
import json, sys
a = json.load(open(sys.argv[1]))
for k in ["ppl_ref", "ppl_ratio", "kld_mean", "kld_median", "kld_p99", "same_top1", "delta_p_rms"]:
    assert k in a, k
assert a["kld_mean"] == 0 and a["same_top1"] == 1 and a["ppl_ratio"] == 1 and a["delta_p_rms"] == 0
PY

# Broken token inputs: exit 2 with the file and the offending field named.
printf '' > "$TMPD/empty.u32"
expect_exit "eval empty token file" 2 "empty.u32.*no tokens" -- "$MOEQ" eval $FX/tiny-olmoe --tokens "$TMPD/empty.u32"
printf 'abcdefg' > "$TMPD/odd.u32"
expect_exit "eval raw token file of 7 bytes" 2 "odd.u32" -- "$MOEQ" eval $FX/tiny-olmoe --tokens "$TMPD/odd.u32"
python3 -c "import struct,sys; sys.stdout.buffer.write(struct.pack('<4I', 1, 2, 5000, 3))" > "$TMPD/big.u32"
expect_exit "eval token id >= vocab" 2 "big.u32.*5000" -- "$MOEQ" eval $FX/tiny-olmoe --tokens "$TMPD/big.u32" --ctx 2
expect_exit "eval fewer tokens than a window" 2 "fewer than one window" -- "$MOEQ" eval $FX/tiny-olmoe --tokens $T --max-tokens 100 --ctx 128
expect_exit "eval --ref missing model" 2 "nonexistent" -- "$MOEQ" eval $FX/tiny-olmoe --tokens $T --ref "$TMPD/nonexistent"

# A .moeq file carries its tokenizer: --text on the packed file tokenizes like the directory.
"$MOEQ" quantize $FX/tiny-olmoe --bits 4 --method rtn --group 64 -q -o "$TMPD/o4.moeq" 2> "$TMPD/err" || cat "$TMPD/err" >&2
"$MOEQ" eval $FX/tiny-olmoe --text $FX/heldout.txt --ctx 128 --max-tokens 1280 --json -q > "$TMPD/dir.json" 2> "$TMPD/err"
"$MOEQ" eval "$TMPD/o4.moeq" --text $FX/heldout.txt --ctx 128 --max-tokens 1280 --json -q > "$TMPD/packed.json" 2>> "$TMPD/err"
python3 - "$TMPD/dir.json" "$TMPD/packed.json" <<'PY' && echo "PASS eval --text of a .moeq uses its embedded tokenizer" || { echo "FAIL eval --text of a .moeq uses its embedded tokenizer"; cat "$TMPD/err" >&2; }
import json, sys
a, b = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
assert a["tokens"] == b["tokens"] == 10 * 127, (a["tokens"], b["tokens"])
assert abs(b["ppl"] / a["ppl"] - 1) < 0.05, (a["ppl"], b["ppl"])   # 4-bit RTN is close to bf16
PY
