#!/bin/sh
# moeq quantize --method rtn -> .moeq: accuracy against torch (tests/fixtures/rtn/rtn_refs.json,
# make_rtn_refs.py on the GPU machine), bit-identical output across runs and thread counts,
# verify, zstd, eval speed against bf16, broken files.
. tests/cli/lib.sh
T=$FX/heldout.safetensors

expect_exit "quantize --help" 0 "" -- "$MOEQ" quantize --help
expect_exit "quantize without -o" 1 "missing -o" -- "$MOEQ" quantize $FX/tiny-olmoe --bits 4
expect_exit "quantize --bits 5" 1 "--bits wants" -- "$MOEQ" quantize $FX/tiny-olmoe --bits 5 -o "$TMPD/x.moeq"
expect_exit "quantize --group 48" 1 "--group wants" -- "$MOEQ" quantize $FX/tiny-olmoe --bits 4 --group 48 -o "$TMPD/x.moeq"
expect_exit "quantize --method gptq without --calib" 1 "needs --calib" -- "$MOEQ" quantize $FX/tiny-olmoe --bits 4 --method gptq -o "$TMPD/x.moeq"
expect_exit "quantize bad --tensor-type" 1 "tensor-type" -- "$MOEQ" quantize $FX/tiny-olmoe --bits 4 --tensor-type 'x=q5g64a' -o "$TMPD/x.moeq"

fixtures="mixtral qwen3moe"   # per-expert and fused layouts; all four were checked by hand (docs/quantize.md)
[ -n "${MOEQ_TEST_QUICK:-}" ] && fixtures="qwen3moe"
for fx in $fixtures; do
  for b in 4 3; do
    "$MOEQ" quantize $FX/tiny-$fx --bits $b --group 64 -q -o "$TMPD/$fx$b.moeq" || echo "FAIL quantize $fx $b"
    "$MOEQ" eval "$TMPD/$fx$b.moeq" --tokens $T --ctx 128 --json -q > "$TMPD/e.json" 2>"$TMPD/err" || cat "$TMPD/err" >&2
    python3 - "$TMPD/e.json" $fx $b <<'PY' && echo "PASS rtn q${b}g64a $fx within 0.5% of torch" || echo "FAIL rtn q${b}g64a $fx within 0.5% of torch"
import json, sys
e = json.load(open(sys.argv[1]))
ref = json.load(open("tests/fixtures/rtn/rtn_refs.json"))["rtn"]["tiny-" + sys.argv[2]]
r = ref["q%sg64a" % sys.argv[3]]["ppl"]
assert abs(e["ppl"] / r - 1) < 0.005, (e["ppl"], r)
assert e["ppl"] > ref["bf16"]["ppl"] * 0.999   # quantization does not help
PY
  done
done

# bit-identical across runs and thread counts; verify passes; corrupt copies fail
"$MOEQ" quantize $FX/tiny-qwen3moe --bits 3 --group 128 --sym --threads 1 -q -o "$TMPD/a.moeq"
"$MOEQ" quantize $FX/tiny-qwen3moe --bits 3 --group 128 --sym --threads 2 -q -o "$TMPD/b.moeq"
cmp -s "$TMPD/a.moeq" "$TMPD/b.moeq" && echo "PASS quantize bit-identical across threads" || echo "FAIL quantize bit-identical across threads"
expect_exit "verify .moeq" 0 "" -- "$MOEQ" verify "$TMPD/a.moeq"
head -c 3000 "$TMPD/a.moeq" > "$TMPD/trunc.moeq"
expect_exit "verify truncated .moeq" 2 "F-5" -- "$MOEQ" verify "$TMPD/trunc.moeq"
python3 -c "
import sys; d = bytearray(open(sys.argv[1], 'rb').read()); d[4000] ^= 0x10; open(sys.argv[2], 'wb').write(d)" "$TMPD/a.moeq" "$TMPD/flip.moeq"
expect_exit "verify bit flip" 2 "checksum mismatch \(F-9\)" -- "$MOEQ" verify "$TMPD/flip.moeq"
python3 -c "
import sys; d = bytearray(open(sys.argv[1], 'rb').read()); d[8] = 2; open(sys.argv[2], 'wb').write(d)" "$TMPD/a.moeq" "$TMPD/v2.moeq"
expect_exit "verify version 2" 2 "version 2 .*F-2" -- "$MOEQ" verify "$TMPD/v2.moeq"

# mixed precision per tensor, zstd sizes, eval of the zstd file equals the plain one
"$MOEQ" quantize $FX/tiny-mixtral --bits 4 --tensor-type 'experts\.[0-3]\.w2=q2g32a' --tensor-type 'layers\.0\..*experts=q8ca' \
  --json -q -o "$TMPD/mix.moeq" > "$TMPD/mix.json" && echo "PASS quantize --tensor-type" || echo "FAIL quantize --tensor-type"
"$MOEQ" quantize $FX/tiny-mixtral --bits 4 --zstd 3 --json -q -o "$TMPD/z.moeq" > "$TMPD/z.json"
"$MOEQ" quantize $FX/tiny-mixtral --bits 4 --json -q -o "$TMPD/p.moeq" > "$TMPD/p.json"
"$MOEQ" eval "$TMPD/z.moeq" --tokens $T --ctx 128 --max-tokens 2048 --json -q > "$TMPD/ez.json"
"$MOEQ" eval "$TMPD/p.moeq" --tokens $T --ctx 128 --max-tokens 2048 --json -q > "$TMPD/ep.json"
"$MOEQ" verify "$TMPD/z.moeq" -q && echo "PASS verify zstd .moeq" || echo "FAIL verify zstd .moeq"
python3 - "$TMPD" <<'PY' && echo "PASS zstd sizes and identical eval" || echo "FAIL zstd sizes and identical eval"
import json, sys, os
d = sys.argv[1]
z, p = json.load(open(d + "/z.json")), json.load(open(d + "/p.json"))
assert z["bytes"] < p["bytes"] and z["bytes_without_zstd"] == p["bytes_without_zstd"]
assert 3.0 < p["entropy_bits"] <= 4.0 and p["bits_per_weight"] == 4.0
# gate/up [160,128]: 2 groups of 64 per row; down [128,160]: 64+64+32 -> 3 groups per row
assert abs(p["bits_per_weight_total"] - (2 * (4 + 32 * 2 / 128) + (4 + 32 * 3 / 160)) / 3) < 1e-9
assert json.load(open(d + "/ez.json"))["ppl"] == json.load(open(d + "/ep.json"))["ppl"]
m = json.load(open(d + "/mix.json"))
assert 2 < m["bits_per_weight"] < 8 and m["bits_per_weight"] != 4.0
PY
