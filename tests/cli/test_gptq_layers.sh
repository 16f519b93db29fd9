#!/bin/sh
# GPTQ of the layer matrices (quantize --scope all --method gptq|rtn --calib F): attention
# (MLA's q_a, q_b, kv_a, kv_b included, with the latents' Hessians q_b_in / kv_b_in), shared
# and dense MLPs use their calibration subgroup's Hessian when the file has it (calibrate
# --scope all), and fall back to RTN, listed with the reason, when it does not. Checked: no
# layer matrix falls back with a --scope all file; every one does, naming the missing group,
# with an experts-only file; held-out KLD improves over the experts-only Hessians (the layer
# matrices then RTN); the file is identical across thread counts.
# MOEQ_TEST_QUICK (the ASan run): tiny-deepseekv3 only, fewer tokens, no KLD comparison.
. tests/cli/lib.sh
gzip -dc $FX/corpus.txt.gz > "$TMPD/corpus.txt"
models="tiny-deepseekv3 tiny-qwen2moe"; CAL=16384
if [ -n "${MOEQ_TEST_QUICK:-}" ]; then models=tiny-deepseekv3; CAL=1024; fi
for F in $models; do
  M=$FX/$F
  "$MOEQ" tokenize $M --text "$TMPD/corpus.txt" -o "$TMPD/c.safetensors" -q || echo "FAIL gptq layers $F: tokenize"
  python3 - "$TMPD" $CAL <<'PY'
import json, struct, sys
d, cal = sys.argv[1], int(sys.argv[2])
b = open(d + "/c.safetensors", "rb").read()
n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n]); t = h[[k for k in h if k != "__metadata__"][0]]
raw = b[8 + n + t["data_offsets"][0]: 8 + n + t["data_offsets"][1]]; s = len(raw) // 8
open(d + "/cal.u32", "wb").write(raw[s * 4:(s + cal) * 4])
PY
  "$MOEQ" calibrate $M --tokens "$TMPD/cal.u32" --ctx 256 --scope all -q -o "$TMPD/$F.all.h5" || echo "FAIL gptq layers $F: calibrate --scope all"
  "$MOEQ" calibrate $M --tokens "$TMPD/cal.u32" --ctx 256 -q -o "$TMPD/$F.ex.h5" || echo "FAIL gptq layers $F: calibrate"
  for c in all ex; do
    "$MOEQ" quantize $M --bits 3 --scope all --method gptq --calib "$TMPD/$F.$c.h5" --json -q -o "$TMPD/$F.$c.moeq" > "$TMPD/$F.$c.json" ||
      echo "FAIL gptq layers $F: quantize ($c)"
  done
  "$MOEQ" quantize $M --bits 3 --scope all --method gptq --calib "$TMPD/$F.all.h5" --threads 1 -q -o "$TMPD/$F.t1.moeq" ||
    echo "FAIL gptq layers $F: quantize --threads 1"
  cmp -s "$TMPD/$F.all.moeq" "$TMPD/$F.t1.moeq" && echo "PASS gptq layers $F: identical across thread counts" ||
    echo "FAIL gptq layers $F: differs across thread counts"
  if [ -z "${MOEQ_TEST_QUICK:-}" ]; then
    for c in all ex; do
      "$MOEQ" eval "$TMPD/$F.$c.moeq" --tokens $FX/heldout.safetensors --max-tokens 8192 --ctx 256 --ref $M --json -q > "$TMPD/e.$F.$c.json" ||
        echo "FAIL gptq layers $F: eval ($c)"
    done
  fi
  python3 - "$TMPD" $F "${MOEQ_TEST_QUICK:-}" <<'PY' && echo "PASS gptq layers $F: layer matrices by their subgroups' Hessians" || echo "FAIL gptq layers $F"
import json, sys
d, f, quick = sys.argv[1], sys.argv[2], sys.argv[3]
a, x = (json.load(open(f"{d}/{f}.{c}.json")) for c in ("all", "ex"))
layer = lambda fb: [r for r in fb if "experts." not in r["tensor"]]
assert not layer(a["fallbacks"]), layer(a["fallbacks"])[:3]
lx = layer(x["fallbacks"])
assert lx and all(r["kind"] == "rtn" and "Hessian in the calibration file (calibrate --scope all)" in r["reason"] for r in lx), lx[:3]
assert a["gptq_matrices"] >= x["gptq_matrices"] + len(lx), (a["gptq_matrices"], x["gptq_matrices"], len(lx))
if f == "tiny-deepseekv3":   # MLA's latent projections are among them
    names = " ".join(r["tensor"] for r in lx)
    assert "kv_b_proj" in names and "kv_a_proj_with_mqa" in names and "o_proj" in names, names
if not quick:
    ka, kx = (json.load(open(f"{d}/e.{f}.{c}.json"))["kld_mean"] for c in ("all", "ex"))
    print(f"  {f} GPTQ 3-bit --scope all: KLD {ka:.5f} with the layer Hessians, {kx:.5f} with RTN layer matrices", file=sys.stderr)
    assert ka < kx, (ka, kx)
PY
done
