#!/bin/sh
# moeq unpack F.moeq -o DIR: the directory transformers loaded on the GPU machine
# (tests/fixtures/rtn/unpack_refs.json, make_rtn_refs.py --unpacked) has the perplexity of
# `moeq eval F.moeq` within 0.1%; `moeq eval DIR` equals transformers' figure (moeq matches
# transformers to ~3e-8 on bf16 checkpoints); layout, sharding, determinism, verify, refusals.
. tests/cli/lib.sh
T=$FX/heldout.safetensors
REF=$FX/rtn/unpack_refs.json

expect_exit "unpack --help" 0 "" -- "$MOEQ" unpack --help
expect_exit "unpack without -o" 1 "missing -o" -- "$MOEQ" unpack x.moeq
expect_exit "unpack bad --max-shard-size" 1 "max-shard-size" -- "$MOEQ" unpack x.moeq -o "$TMPD/x" --max-shard-size 5XB
expect_exit "unpack of a directory" 2 "not a .moeq" -- "$MOEQ" unpack $FX/tiny-olmoe -o "$TMPD/x"

fixtures="qwen3moe mixtral"   # fused v5 and per-expert layouts
[ -n "${MOEQ_TEST_QUICK:-}" ] && fixtures="qwen3moe"
for fx in $fixtures; do
  "$MOEQ" quantize $FX/tiny-$fx --bits 4 --group 64 -q -o "$TMPD/$fx.moeq" || echo "FAIL quantize $fx"
  expect_exit "unpack $fx (1MB shards)" 0 "" -- "$MOEQ" unpack "$TMPD/$fx.moeq" -o "$TMPD/$fx" --max-shard-size 1MB --json -q
  # float32 activations: the checks hold the two forms to float32 agreement with transformers
  MOEQ_KERNEL=float "$MOEQ" eval "$TMPD/$fx.moeq" --tokens $T --ctx 128 --json -q > "$TMPD/ep.json"
  MOEQ_KERNEL=float "$MOEQ" eval "$TMPD/$fx" --tokens $T --ctx 128 --json -q > "$TMPD/ed.json"
  python3 - "$TMPD" $fx $REF <<'PY' && echo "PASS unpack $fx: transformers ppl within 0.1% of eval F.moeq" || echo "FAIL unpack $fx: transformers ppl within 0.1% of eval F.moeq"
import json, sys
d, fx, ref = sys.argv[1], sys.argv[2], sys.argv[3]
t = json.load(open(ref))["unpacked"]["tiny-%s-q4g64a" % fx]["ppl"]
p = json.load(open(d + "/ep.json"))["ppl"]
q = json.load(open(d + "/ed.json"))["ppl"]
assert abs(p / t - 1) < 1e-3, (p, t)      # bf16 rounding of the dequantized weights: measured <= 2e-4
assert abs(q / t - 1) < 1e-6, (q, t)      # the same bf16 weights in both: float32 forward passes agree
assert abs(q / p - 1) < 1e-3 and q != p   # eval DIR vs eval F.moeq: differ by the bf16 rounding only
PY
  # layout: the source checkpoint's names and shapes, quantized tensors BF16, the rest byte-identical
  python3 - $FX/tiny-$fx "$TMPD/$fx" <<'PY' && echo "PASS unpack $fx: source names, shapes, raw bytes, index" || echo "FAIL unpack $fx: source names, shapes, raw bytes, index"
import json, os, struct, sys
def tensors(d):
    out = {}
    for f in sorted(os.listdir(d)):
        if not f.endswith(".safetensors"): continue
        b = open(os.path.join(d, f), "rb").read()
        n = struct.unpack("<Q", b[:8])[0]
        assert n % 8 == 0 and b[8 + len(b[8:8 + n].rstrip(b" ")):8 + n].strip(b" ") == b""
        h = json.loads(b[8:8 + n])
        meta = h.pop("__metadata__", None)
        keys = list(h)
        rank = {"F32": 15, "BF16": 12, "F16": 11}
        assert keys == sorted(keys, key=lambda k: (-rank[h[k]["dtype"]], k)), f   # reference writer's order
        end = 0
        for k in keys:
            s, e = h[k]["data_offsets"]
            assert s == end; end = e
            out[k] = (h[k]["dtype"], h[k]["shape"], b[8 + n + s:8 + n + e], f, meta)
        assert 8 + n + end == len(b)
    return out
src, dst = tensors(sys.argv[1]), tensors(sys.argv[2])
assert sorted(src) == sorted(dst)
nq = 0
for k in src:
    assert src[k][1] == dst[k][1], k
    assert dst[k][4] == {"format": "pt"}
    if ".experts." in k and "shared" not in k:
        assert dst[k][0] == "BF16" and dst[k][2] != src[k][2], k; nq += 1
    else:
        assert dst[k][0] == src[k][0] and dst[k][2] == src[k][2], k
assert nq > 0
ix = json.load(open(os.path.join(sys.argv[2], "model.safetensors.index.json")))
assert ix["weight_map"] == {k: dst[k][3] for k in dst}
assert ix["metadata"]["total_size"] == sum(len(v[2]) for v in dst.values())
for f in ["config.json", "tokenizer.json", "tokenizer_config.json"]:
    assert open(os.path.join(sys.argv[1], f), "rb").read() == open(os.path.join(sys.argv[2], f), "rb").read(), f
PY
done

fx=qwen3moe
expect_exit "verify unpacked dir" 0 "" -- "$MOEQ" verify "$TMPD/$fx"
expect_exit "inspect unpacked dir" 0 "" -- "$MOEQ" inspect "$TMPD/$fx" -q
"$MOEQ" unpack "$TMPD/$fx.moeq" -o "$TMPD/again" --max-shard-size 1MB -q
diff -r "$TMPD/$fx" "$TMPD/again" > /dev/null && echo "PASS unpack twice bit-identical" || echo "FAIL unpack twice bit-identical"
"$MOEQ" unpack "$TMPD/$fx.moeq" -o "$TMPD/one" --threads 1 -q
[ -f "$TMPD/one/model.safetensors" ] && [ ! -e "$TMPD/one/model.safetensors.index.json" ] && echo "PASS unpack one shard: model.safetensors, no index" || echo "FAIL unpack one shard: model.safetensors, no index"
# a zstd file unpacks to the same bytes
"$MOEQ" quantize $FX/tiny-$fx --bits 4 --group 64 --zstd 3 -q -o "$TMPD/z.moeq"
"$MOEQ" unpack "$TMPD/z.moeq" -o "$TMPD/z" --max-shard-size 1MB -q
diff -r "$TMPD/$fx" "$TMPD/z" > /dev/null && echo "PASS unpack of zstd file identical" || echo "FAIL unpack of zstd file identical"
# never overwrite: a non-empty directory, a file (the input itself); nothing left behind on failure
expect_exit "unpack into non-empty dir" 1 "not an empty directory" -- "$MOEQ" unpack "$TMPD/$fx.moeq" -o "$TMPD/$fx"
cp "$TMPD/$fx.moeq" "$TMPD/in.moeq"
expect_exit "unpack onto its input" 1 "not an empty directory" -- "$MOEQ" unpack "$TMPD/in.moeq" -o "$TMPD/in.moeq"
cmp -s "$TMPD/in.moeq" "$TMPD/$fx.moeq" && echo "PASS input untouched" || echo "FAIL input untouched"
mkdir "$TMPD/empty"
expect_exit "unpack into an empty dir" 0 "" -- "$MOEQ" unpack "$TMPD/$fx.moeq" -o "$TMPD/empty" -q
ls -a "$TMPD" | grep -q '\.tmp\.' && echo "FAIL no temporary left" || echo "PASS no temporary left"
