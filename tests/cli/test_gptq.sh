#!/bin/sh
# moeq quantize --method gptq: JSON keys and fallbacks, bit-identical across thread counts,
# GPTQ beats RTN on held-out perplexity at 3 bits g64, bad calibration inputs.
. tests/cli/lib.sh
T=$FX/heldout.safetensors
M=$FX/tiny-mixtral
"$MOEQ" calibrate $M --tokens $T --ctx 256 --max-tokens 4096 -q -o "$TMPD/c.h5" || echo "FAIL gptq: calibrate"
"$MOEQ" calibrate $FX/tiny-olmoe --tokens $T --ctx 256 --max-tokens 512 -q -o "$TMPD/other.h5" || echo "FAIL gptq: calibrate other"

expect_exit "gptq without --calib" 1 "needs --calib" -- "$MOEQ" quantize $M --bits 3 --method gptq -o "$TMPD/x.moeq"
expect_exit "gptq calib of another model" 2 "another model" -- "$MOEQ" quantize $M --bits 3 --method gptq --calib "$TMPD/other.h5" -o "$TMPD/x.moeq"
expect_exit "gptq calib not HDF5" 2 "not an HDF5 file" -- "$MOEQ" quantize $M --bits 3 --method gptq --calib $M/config.json -o "$TMPD/x.moeq"
expect_exit "gptq missing calib" 2 "cannot open" -- "$MOEQ" quantize $M --bits 3 --method gptq --calib "$TMPD/none.h5" -o "$TMPD/x.moeq"
expect_exit "gptq bad --fallback" 1 "--fallback wants" -- "$MOEQ" quantize $M --bits 3 --method gptq --calib "$TMPD/c.h5" --fallback x -o "$TMPD/x.moeq"
[ -e "$TMPD/x.moeq" ] && echo "FAIL gptq: output left after an error" || echo "PASS gptq: no output after an error"

for th in 1 2; do
  "$MOEQ" quantize $M --bits 3 --method gptq --calib "$TMPD/c.h5" --threads $th --json -q -o "$TMPD/g$th.moeq" > "$TMPD/g$th.json" \
    || echo "FAIL gptq threads $th"
done
cmp -s "$TMPD/g1.moeq" "$TMPD/g2.moeq" && echo "PASS gptq bit-identical across thread counts" || echo "FAIL gptq bit-identical across thread counts"
"$MOEQ" quantize $M --bits 3 --method gptq --calib "$TMPD/c.h5" --act-order --fallback layer-mean --json -q -o "$TMPD/ga.moeq" > "$TMPD/ga.json" \
  || echo "FAIL gptq act-order"
"$MOEQ" verify "$TMPD/ga.moeq" > /dev/null 2>&1 && echo "PASS gptq act-order output verifies" || echo "FAIL gptq act-order output verifies"
"$MOEQ" quantize $M --bits 3 -q -o "$TMPD/r.moeq" || echo "FAIL gptq: rtn"
python3 - "$TMPD/g1.json" "$TMPD/ga.json" <<'PY' && echo "PASS gptq json keys and fallbacks" || echo "FAIL gptq json keys and fallbacks"
import json, sys
a = json.load(open(sys.argv[1])); b = json.load(open(sys.argv[2]))
for k in ("bytes", "bits_per_weight", "bits_per_weight_total", "fallbacks"): assert k in a, k
assert a["bits_per_weight"] == 3.0 and a["method"] == "gptq"
# tiny-mixtral: a few experts get fewer than min_tokens in this span: they fall back, with reasons
assert all(f["kind"] in ("rtn", "layer-mean", "shrunk", "damping") and f["reason"] for f in a["fallbacks"])
assert any(f["kind"] == "shrunk" for f in a["fallbacks"])   # the default for undersampled experts
assert any("dead expert" in f["reason"] or "undersampled" in f["reason"] for f in a["fallbacks"]), a["fallbacks"]
assert a["gptq_matrices"] + sum(f["kind"] == "rtn" for f in a["fallbacks"]) == a["quantized"]
assert all(f["kind"] != "rtn" for f in b["fallbacks"])   # layer-mean instead
PY
EVN=8192; [ -n "${MOEQ_TEST_QUICK:-}" ] && EVN=4096   # the ASan run: half the windows (GPTQ still ahead)
for f in r g1; do
  "$MOEQ" eval "$TMPD/$f.moeq" --tokens $T --max-tokens $EVN --ctx 512 --json -q > "$TMPD/e$f.json" || echo "FAIL gptq eval $f"
done
python3 - "$TMPD/er.json" "$TMPD/eg1.json" <<'PY' && echo "PASS gptq 3-bit g64 perplexity below RTN's" || echo "FAIL gptq 3-bit g64 perplexity below RTN's"
import json, sys
r = json.load(open(sys.argv[1]))["ppl"]; g = json.load(open(sys.argv[2]))["ppl"]
print("    rtn %.4f gptq %.4f" % (r, g), file=sys.stderr)
assert g < r
PY

# generalization (docs/quantize.md): the validation split, --damp auto, the Hessian error report
expect_exit "gptq bad --grid-steps" 1 "--grid-steps wants" -- "$MOEQ" quantize $M --bits 3 --method gptq --calib "$TMPD/c.h5" --grid-steps 999 -o "$TMPD/x.moeq"
expect_exit "gptq bad --fit" 1 "--fit wants" -- "$MOEQ" quantize $M --bits 3 --method gptq --calib "$TMPD/c.h5" --fit x -o "$TMPD/x.moeq"
expect_exit "calibrate --val-every 1" 1 "no calibration windows" -- "$MOEQ" calibrate $M --tokens $T --val-every 1 -o "$TMPD/x.h5"
"$MOEQ" quantize $M --bits 3 --calib "$TMPD/c.h5" --json -q -o "$TMPD/rc.moeq" > "$TMPD/rc.json" || echo "FAIL gptq: rtn --calib"
"$MOEQ" quantize $M --bits 3 --method gptq --calib "$TMPD/c.h5" --damp 0.01 --grid-steps 1 --fallback rtn --fit all --json -q \
  -o "$TMPD/gold.moeq" > "$TMPD/gold.json" || echo "FAIL gptq: legacy flags"
"$MOEQ" calibrate $M --tokens $T --ctx 256 --max-tokens 4096 --val-every 0 -q -o "$TMPD/nv.h5" || echo "FAIL gptq: calibrate --val-every 0"
"$MOEQ" quantize $M --bits 3 --method gptq --calib "$TMPD/nv.h5" --json -o "$TMPD/nv.moeq" > "$TMPD/nv.json" 2> "$TMPD/nv.err" || echo "FAIL gptq: no split"
grep -q "no validation split" "$TMPD/nv.err" && echo "PASS gptq --damp auto without a split: note, 0.01" || echo "FAIL gptq --damp auto without a split: note, 0.01"
python3 - "$TMPD/g1.json" "$TMPD/rc.json" "$TMPD/gold.json" "$TMPD/nv.json" <<'PY' && echo "PASS gptq hessian error report, damp auto choices" || echo "FAIL gptq hessian error report, damp auto choices"
import json, sys
g, r, old, nv = (json.load(open(p)) for p in sys.argv[1:5])
for x in (g, r, old):
    he = x["hessian_error"]
    assert he["val_tokens"] == 512 and he["cal"] > 0 and he["val"] > 0, he   # 16 windows of 256: 2 held out
    assert abs(sum(l["cal"] for l in he["layers"]) - he["cal"]) < 1e-9 * he["cal"]
    assert len(he["layers"]) == 4
assert g["hessian_error"]["fit"] == "cal" and old["hessian_error"]["fit"] == "all"
# GPTQ beats RTN on the held-out windows, and RTN has no damping
assert g["hessian_error"]["val"] < r["hessian_error"]["val"], (g["hessian_error"]["val"], r["hessian_error"]["val"])
assert all(l["damp_in"] is None for l in r["hessian_error"]["layers"]) and r["fallbacks"] == []
# one choice per layer and input, each the argmin of its validation errors
assert len(g["damp_auto"]) == 8 and g["damp_candidates"] == [0.01, 0.03, 0.1, 0.3]
for c in g["damp_auto"]:
    ve = c["val_err"]; best = min(v for v in ve if v is not None)
    assert c["damp"] == g["damp_candidates"][ve.index(best)] and len(c["experts"]) >= 1, c
    lay = g["hessian_error"]["layers"][c["layer"]]
    assert abs(lay["damp_in" if c["input"] == "gate_up" else "damp_down"] - c["damp"]) < 1e-12
assert old["damp_auto"] == [] and nv["damp_auto"] == [] and nv["hessian_error"]["val"] is None
PY
