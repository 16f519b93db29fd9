#!/bin/sh
# moeq plan: JSON keys, budgets met, costs (uniform, alphaq from a spectral file, hessian from a
# calib file), pins, quantize --plan executes it (bits per weight as planned), bad inputs.
. tests/cli/lib.sh
T=$FX/heldout.safetensors
M=$FX/tiny-qwen3moe
"$MOEQ" calibrate $M --tokens $T --ctx 256 --max-tokens 2048 -q -o "$TMPD/c.h5" || echo "FAIL plan: calibrate"
"$MOEQ" calibrate $FX/tiny-olmoe --tokens $T --ctx 256 --max-tokens 512 -q -o "$TMPD/other.h5" || echo "FAIL plan: calibrate other"
"$MOEQ" spectral $M -q -o "$TMPD/s.h5" > /dev/null || echo "FAIL plan: spectral"

expect_exit "plan --help" 0 "" -- "$MOEQ" plan --help
expect_exit "plan without --budget" 1 "missing --budget" -- "$MOEQ" plan $M -o "$TMPD/p.json"
expect_exit "plan alphaq without --spectral" 1 "needs --spectral" -- "$MOEQ" plan $M --budget 3 --cost alphaq -o "$TMPD/p.json"
expect_exit "plan budget below reach" 2 "outside what the candidates reach" -- "$MOEQ" plan $M --budget 1.5 -o "$TMPD/p.json"
expect_exit "plan budget above reach" 2 "outside what the candidates reach" -- "$MOEQ" plan $M --budget 9 -o "$TMPD/p.json"
expect_exit "plan calib of another model" 2 "another model" -- "$MOEQ" plan $M --budget 3 --cost hessian --calib "$TMPD/other.h5" -o "$TMPD/p.json"
expect_exit "plan spectral file is a calib file" 2 "not moeq-spectral" -- "$MOEQ" plan $M --budget 3 --cost alphaq --spectral "$TMPD/c.h5" -o "$TMPD/p.json"
[ -e "$TMPD/p.json" ] && echo "FAIL plan: output left after an error" || echo "PASS plan: no output after an error"

for c in uniform alphaq hessian; do
  for b in 2.5 3.0; do
    "$MOEQ" plan $M --budget $b --cost $c --spectral "$TMPD/s.h5" --calib "$TMPD/c.h5" -o "$TMPD/p_${c}_$b.json" --json -q \
      > "$TMPD/j_${c}_$b.json" || echo "FAIL plan $c $b"
  done
done
"$MOEQ" plan $M --budget 3.8 --weight count --budget-total --tensor-type 'layers\.0\..*down=q8g32s' -o "$TMPD/p_pin.json" -q \
  || echo "FAIL plan pins"
python3 - "$TMPD" <<'PY' && echo "PASS plan json keys, budgets met, pins, hessian differs from uniform" || echo "FAIL plan json keys, budgets met, pins, hessian differs from uniform"
import json, sys, os
d = sys.argv[1]
for c in ("uniform", "alphaq", "hessian"):
    for b in (2.5, 3.0):
        p = json.load(open(os.path.join(d, "p_%s_%s.json" % (c, b))))
        j = json.load(open(os.path.join(d, "j_%s_%s.json" % (c, b))))
        assert p == j
        for k in ("budget", "bits_per_weight", "bits_per_weight_total", "matrices"): assert k in p, k
        assert p["budget"] == b and p["bits_per_weight"] <= b + 1e-9 and p["exact"]
        assert p["bits_per_weight_total"] > p["bits_per_weight"]
        assert len(p["matrices"]) == 4 * 8 * 3     # every routed-expert matrix
        for m in p["matrices"]: assert m["codec"].startswith("q%d" % m["bits"]) and m["bits"] in (2, 3, 4, 8)
u = json.load(open(os.path.join(d, "p_uniform_3.0.json"))); h = json.load(open(os.path.join(d, "p_hessian_3.0.json")))
assert all(m["bits"] == 3 for m in u["matrices"])
assert len(set(m["bits"] for m in h["matrices"])) > 1
pin = json.load(open(os.path.join(d, "p_pin.json")))
assert all(m["codec"] == "q8g32s" and m["pinned"] for m in pin["matrices"] if m["layer"] == 0 and m["proj"] == "down")
PY
"$MOEQ" quantize $M --plan "$TMPD/p_hessian_2.5.json" --json -q -o "$TMPD/h.moeq" > "$TMPD/q.json" || echo "FAIL plan: quantize --plan"
"$MOEQ" quantize $M --plan "$TMPD/p_hessian_2.5.json" --method gptq --calib "$TMPD/c.h5" -q -o "$TMPD/hg.moeq" || echo "FAIL plan: quantize --plan gptq"
python3 - "$TMPD/p_hessian_2.5.json" "$TMPD/q.json" <<'PY' && echo "PASS quantize --plan bits per weight as planned" || echo "FAIL quantize --plan bits per weight as planned"
import json, sys
p = json.load(open(sys.argv[1])); q = json.load(open(sys.argv[2]))
assert abs(p["bits_per_weight"] - q["bits_per_weight"]) < 1e-9 and abs(p["bits_per_weight_total"] - q["bits_per_weight_total"]) < 1e-9
PY
python3 - "$TMPD/p_uniform_3.0.json" "$TMPD/bad.json" <<'PY'
import json, sys
p = json.load(open(sys.argv[1])); p["matrices"][0]["tensor"] = "model.layers.0.mlp.no_such.weight"
json.dump(p, open(sys.argv[2], "w"))
PY
expect_exit "quantize --plan naming a missing tensor" 2 "no_such" -- "$MOEQ" quantize $M --plan "$TMPD/bad.json" -o "$TMPD/x.moeq"
expect_exit "quantize --plan not JSON" 2 "not a plan" -- "$MOEQ" quantize $M --plan $M/tokenizer.json -o "$TMPD/x.moeq"
expect_exit "quantize --plan of another model" 2 "another model" -- "$MOEQ" quantize $FX/tiny-olmoe --plan "$TMPD/p_uniform_3.0.json" -o "$TMPD/x.moeq"
