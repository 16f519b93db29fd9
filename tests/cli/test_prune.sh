#!/bin/sh
# moeq prune: bad inputs (exit codes, nothing left behind), JSON keys, the score ordering at 25%
# (camera and hessian below magnitude, OBS compensation helps) on a held-out span disjoint from
# the calibration span, ragged = zero-filled, expert pruning, fused source, prune then quantize.
. tests/cli/lib.sh
M=$FX/tiny-mixtral
python3 - "$TMPD" <<'PY'
import json, struct, sys
f = open("tests/fixtures/heldout.safetensors", "rb").read()
n = struct.unpack("<Q", f[:8])[0]; h = json.loads(f[8:8 + n]); a, b = h["tokens"]["data_offsets"]
d = f[8 + n + a:8 + n + b]
open(sys.argv[1] + "/calib.u32", "wb").write(d[:4096 * 4])
open(sys.argv[1] + "/eval.u32", "wb").write(d[8192 * 4:(8192 + 2048) * 4])
PY
"$MOEQ" calibrate $M --tokens "$TMPD/calib.u32" --ctx 256 -q -o "$TMPD/c.h5" || echo "FAIL prune: calibrate"
"$MOEQ" calibrate $FX/tiny-olmoe --tokens "$TMPD/calib.u32" --ctx 256 --max-tokens 512 -q -o "$TMPD/other.h5" || echo "FAIL prune: calibrate other"
"$MOEQ" calibrate $FX/tiny-qwen3moe --tokens "$TMPD/calib.u32" --ctx 256 --max-tokens 1024 -q -o "$TMPD/q3.h5" || echo "FAIL prune: calibrate qwen3"

expect_exit "prune ratio 0" 2 "outside \(0, 1\)" -- "$MOEQ" prune $M --ratio 0 --score magnitude -o "$TMPD/x"
expect_exit "prune ratio 1" 2 "outside \(0, 1\)" -- "$MOEQ" prune $M --ratio 1 --score magnitude -o "$TMPD/x"
expect_exit "prune ratio -0.2" 2 "outside \(0, 1\)" -- "$MOEQ" prune $M --ratio -0.2 --score magnitude -o "$TMPD/x"
expect_exit "prune ratio not a number" 1 "wants a number" -- "$MOEQ" prune $M --ratio abc -o "$TMPD/x"
expect_exit "prune camera without calib" 1 "needs --calib" -- "$MOEQ" prune $M --ratio 0.25 --score camera -o "$TMPD/x"
expect_exit "prune calib of another model" 2 "another model" -- "$MOEQ" prune $M --ratio 0.25 --score camera --calib "$TMPD/other.h5" -o "$TMPD/x"
expect_exit "prune hessian calib of another model" 2 "another model" -- "$MOEQ" prune $M --ratio 0.25 --score hessian --calib "$TMPD/other.h5" -o "$TMPD/x"
expect_exit "prune bad score" 1 "--score wants" -- "$MOEQ" prune $M --ratio 0.25 --score foo -o "$TMPD/x"
[ -e "$TMPD/x" ] && echo "FAIL prune: output left after an error" || echo "PASS prune: no output after an error"

"$MOEQ" eval $M --tokens "$TMPD/eval.u32" --ctx 256 --json -q > "$TMPD/e_base.json" || echo "FAIL prune: eval base"
for s in magnitude camera hessian; do
  "$MOEQ" prune $M --ratio 0.25 --score $s --calib "$TMPD/c.h5" --json -q -o "$TMPD/$s" > "$TMPD/p_$s.json" || echo "FAIL prune $s"
  "$MOEQ" eval "$TMPD/$s" --tokens "$TMPD/eval.u32" --ctx 256 --json -q > "$TMPD/e_$s.json" || echo "FAIL prune eval $s"
done
"$MOEQ" prune $M --ratio 0.25 --score hessian --no-compensate --calib "$TMPD/c.h5" --json -q -o "$TMPD/hnc" > "$TMPD/p_hnc.json" || echo "FAIL prune hnc"
"$MOEQ" eval "$TMPD/hnc" --tokens "$TMPD/eval.u32" --ctx 256 --json -q > "$TMPD/e_hnc.json" || echo "FAIL prune eval hnc"
python3 - "$TMPD" <<'PY' && echo "PASS prune 25%: camera and hessian below magnitude, compensation helps" || echo "FAIL prune 25%: score ordering"
import json, sys
d = sys.argv[1]; e = {s: json.load(open("%s/e_%s.json" % (d, s)))["ppl"] for s in ("base", "magnitude", "camera", "hessian", "hnc")}
print("   ", e, file=sys.stderr)
assert e["camera"] < e["magnitude"] and e["hessian"] < e["magnitude"] and e["hessian"] < e["hnc"], e
assert all(e[s] > e["base"] * 0.99 for s in e)
PY
python3 - "$TMPD/p_camera.json" "$TMPD/camera/config.json" <<'PY' && echo "PASS prune json keys and widths" || echo "FAIL prune json keys and widths"
import json, sys
j = json.load(open(sys.argv[1])); c = json.load(open(sys.argv[2]))
for k in ("ratio", "removed_channels", "removed_experts", "params_before", "params_after", "bytes_before", "bytes_after"): assert k in j, k
assert j["ratio"] == 0.25 and j["removed_channels"] == j["channels_total"] // 4
assert j["params_before"] - j["params_after"] == 3 * 128 * j["removed_channels"] + 128 * j["removed_experts"]
w = c["moeq_expert_widths"]; assert w == j["widths"]
I = c["intermediate_size"]; assert sum(I - x for l in w for x in l) == j["removed_channels"]
assert all(sum(I - x for x in l) == I * 8 // 4 for l in w)   # per layer by default
PY
# the zero-filled output is what transformers loads: every tensor of the source, same shapes
python3 - $M "$TMPD/camera" <<'PY' && echo "PASS prune zero-fill keeps names and shapes" || echo "FAIL prune zero-fill keeps names and shapes"
import json, struct, sys, glob, os
def hdr(d):
    out = {}
    for f in glob.glob(os.path.join(d, "*.safetensors")):
        b = open(f, "rb").read(); n = struct.unpack("<Q", b[:8])[0]
        out.update({k: v["shape"] for k, v in json.loads(b[8:8 + n]).items() if k != "__metadata__"})
    return out
assert hdr(sys.argv[1]) == hdr(sys.argv[2])
PY
# ragged = zero-filled numerically, smaller on disk
"$MOEQ" prune $M --ratio 0.25 --score hessian --calib "$TMPD/c.h5" --layout ragged --json -q -o "$TMPD/hr" > "$TMPD/p_hr.json" || echo "FAIL prune ragged"
# (float32 activations: with bf16 ones, the float-rounding differences between the layouts can
# flip an activation's bf16 rounding and the two differ by ~1e-4)
for s in hr hessian; do
  MOEQ_KERNEL=float "$MOEQ" eval "$TMPD/$s" --tokens "$TMPD/eval.u32" --ctx 256 --json -q > "$TMPD/ef_$s.json" || echo "FAIL prune eval $s (float)"
done
python3 - "$TMPD" <<'PY' && echo "PASS prune ragged equals zero-filled, fewer bytes" || echo "FAIL prune ragged equals zero-filled"
import json, sys
d = sys.argv[1]; a = json.load(open(d + "/ef_hessian.json"))["ppl"]; b = json.load(open(d + "/ef_hr.json"))["ppl"]
assert abs(a - b) <= 1e-5 * a, (a, b)
p = json.load(open(d + "/p_hr.json")); assert p["bytes_written"] < p["bytes_before"] and p["bytes_written"] <= p["bytes_after"] + 4096
PY
"$MOEQ" prune $M --ratio 0.25 --score hessian --calib "$TMPD/c.h5" --layout ragged -q -o "$TMPD/hr2" || echo "FAIL prune ragged again"
cmp -s "$TMPD/hr/model.safetensors" "$TMPD/hr2/model.safetensors" && echo "PASS prune output bit-identical across runs" || echo "FAIL prune output bit-identical across runs"
# widths that disagree with the tensors: exit 2 naming the key
mkdir "$TMPD/bad" && cp "$TMPD/hr/"* "$TMPD/bad/" && python3 - "$TMPD/bad/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1])); w = c["moeq_expert_widths"]
w[0][0] = w[0][0] - 1 if w[0][0] > 1 else 2
json.dump(c, open(sys.argv[1], "w"))
PY
expect_exit "prune: widths disagree with the tensors" 2 "moeq_expert_widths" -- "$MOEQ" eval "$TMPD/bad" --tokens "$TMPD/eval.u32" --ctx 256
python3 - "$TMPD/bad/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1])); c["moeq_expert_widths"] = c["moeq_expert_widths"][:2]
json.dump(c, open(sys.argv[1], "w"))
PY
expect_exit "prune: widths of the wrong length" 2 "moeq_expert_widths" -- "$MOEQ" inspect "$TMPD/bad"
expect_exit "prune: a pruned model again" 2 "already pruned" -- "$MOEQ" prune "$TMPD/hr" --ratio 0.1 --score magnitude -o "$TMPD/y"
# whole experts: 2 of 8 per layer, routing masked
"$MOEQ" prune $M --ratio 0.25 --score expert --calib "$TMPD/c.h5" --layout ragged --json -q -o "$TMPD/ex" > "$TMPD/p_ex.json" || echo "FAIL prune expert"
"$MOEQ" eval "$TMPD/ex" --tokens "$TMPD/eval.u32" --ctx 256 --json -q > "$TMPD/e_ex.json" || echo "FAIL prune eval expert"
python3 - "$TMPD" <<'PY' && echo "PASS prune expert: 2 experts per layer, finite perplexity" || echo "FAIL prune expert"
import json, sys, math
d = sys.argv[1]; p = json.load(open(d + "/p_ex.json")); e = json.load(open(d + "/e_ex.json"))
assert p["removed_experts"] == 8 and all(sum(x == 0 for x in l) == 2 for l in p["widths"]), p["widths"]
assert math.isfinite(e["ppl"]) and e["ppl"] > 1
PY
# fused (transformers v5) source: ragged output uses per-expert tensors
"$MOEQ" prune $FX/tiny-qwen3moe --ratio 0.3 --score camera --calib "$TMPD/q3.h5" --scope global --layout ragged -q -o "$TMPD/q3r" || echo "FAIL prune qwen3 ragged"
"$MOEQ" prune $FX/tiny-qwen3moe --ratio 0.3 --score camera --calib "$TMPD/q3.h5" --scope global -q -o "$TMPD/q3z" || echo "FAIL prune qwen3 zero-fill"
for d in q3r q3z; do "$MOEQ" eval "$TMPD/$d" --tokens "$TMPD/eval.u32" --ctx 256 --json -q > "$TMPD/e_$d.json" || echo "FAIL prune eval $d"; done
python3 - "$TMPD" <<'PY' && echo "PASS prune fused source: ragged equals zero-filled" || echo "FAIL prune fused source"
import json, sys
d = sys.argv[1]; a = json.load(open(d + "/e_q3r.json"))["ppl"]; b = json.load(open(d + "/e_q3z.json"))["ppl"]
assert abs(a - b) <= 1e-5 * a, (a, b)
PY
# prune then quantize: ragged per-expert pieces in the .moeq, which eval, plan and verify read
"$MOEQ" prune $M --ratio 0.25 --score hessian --calib "$TMPD/c.h5" --layout ragged --multiple 32 -q -o "$TMPD/h32" || echo "FAIL prune --multiple"
python3 - "$TMPD/h32/config.json" <<'PY' && echo "PASS prune --multiple 32" || echo "FAIL prune --multiple 32"
import json, sys
w = json.load(open(sys.argv[1]))["moeq_expert_widths"]; assert all(x % 32 == 0 for l in w for x in l), w
PY
"$MOEQ" eval "$TMPD/h32" --tokens "$TMPD/eval.u32" --ctx 256 --json -q > "$TMPD/e_hr.json" || echo "FAIL prune eval h32"
"$MOEQ" quantize "$TMPD/h32" --bits 4 --json -q -o "$TMPD/hr.moeq" > /dev/null || echo "FAIL prune then quantize"
"$MOEQ" verify "$TMPD/hr.moeq" > /dev/null 2>&1 && echo "PASS prune then quantize: .moeq verifies" || echo "FAIL prune then quantize: .moeq verifies"
"$MOEQ" eval "$TMPD/hr.moeq" --tokens "$TMPD/eval.u32" --ctx 256 --json -q > "$TMPD/e_hrq.json" || echo "FAIL prune then quantize: eval"
"$MOEQ" plan "$TMPD/h32" --budget 3 --bits 2,3,4 -q -o "$TMPD/plan.json" && echo "PASS prune then plan" || echo "FAIL prune then plan"
"$MOEQ" quantize "$TMPD/h32" --plan "$TMPD/plan.json" -q -o "$TMPD/h32p.moeq" && "$MOEQ" verify "$TMPD/h32p.moeq" > /dev/null 2>&1 && echo "PASS prune then plan: the plan quantizes and verifies" || echo "FAIL prune then plan: quantize --plan"
# widths that no code block fits: plan refuses them as quantize would, not a plan that cannot run
expect_exit "plan: ragged widths off the code block" 2 "is not a multiple of 32" -- "$MOEQ" plan "$TMPD/hr" --budget 3 --bits 2,3,4 -q -o "$TMPD/plan2.json"
expect_exit "quantize: ragged widths off the code block" 2 "is not a multiple of 32" -- "$MOEQ" quantize "$TMPD/hr" --bits 4 -q -o "$TMPD/hr2.moeq"
python3 - "$TMPD" <<'PY' && echo "PASS prune then quantize: 4-bit close to the pruned bf16" || echo "FAIL prune then quantize: 4-bit close"
import json, sys
d = sys.argv[1]; a = json.load(open(d + "/e_hr.json"))["ppl"]; b = json.load(open(d + "/e_hrq.json"))["ppl"]
assert a * 0.98 < b < a * 1.1, (a, b)
PY

# Calibrating a pruned model: the zero-filled form works (and so GPTQ on it); the ragged one is
# refused with exit 2 and the way out.
"$MOEQ" prune $FX/tiny-mixtral --ratio 0.25 --score magnitude -q -o "$TMPD/cz" 2>/dev/null
"$MOEQ" prune $FX/tiny-mixtral --ratio 0.25 --score magnitude --layout ragged -q -o "$TMPD/cr" 2>/dev/null
expect_exit "calibrate a zero-filled pruned model" 0 "" -- "$MOEQ" calibrate "$TMPD/cz" --tokens $FX/heldout.safetensors --max-tokens 1024 --ctx 256 -q -o "$TMPD/cz.h5"
expect_exit "gptq on a zero-filled pruned model" 0 "" -- "$MOEQ" quantize "$TMPD/cz" --bits 4 --method gptq --calib "$TMPD/cz.h5" --group 32 -q -o "$TMPD/cz.moeq"
expect_exit "calibrate a ragged pruned model is refused" 2 "pruned width.*zero-fill" -- "$MOEQ" calibrate "$TMPD/cr" --tokens $FX/heldout.safetensors --max-tokens 1024 --ctx 256 -q -o "$TMPD/cr.h5"
