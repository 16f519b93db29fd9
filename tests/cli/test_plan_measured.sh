#!/bin/sh
# plan --cost measured (issue 13): does a plan's predicted cost rank plans as their KLD on
# held-out text does? 20 random plans at one budget (plan --cost random --seed S), each quantized
# and evaluated against bf16 on held-out documents; the predicted cost of each under the measured
# costs (Σ over matrices of the chosen candidate's cost, from plan.json "costs") must have
# Spearman rank correlation >= 0.9 with the measured KLD. The hessian cost's correlation is
# printed beside it. The measured plan must beat uniform 3-bit at the same budget.
# Calibration and validation tokens from the training corpus, evaluation on heldout.safetensors.
# MOEQ_TEST_QUICK (the ASan run): 2 plans, only the run and the files' consistency are checked.
. tests/cli/lib.sh
M=$FX/tiny-mixtral
gzip -dc $FX/corpus.txt.gz > "$TMPD/corpus.txt"
"$MOEQ" tokenize $M --text "$TMPD/corpus.txt" -o "$TMPD/corpus.safetensors" -q || echo "FAIL plan measured: tokenize"
NPLANS=20; CAL=16384; EVAL=8192
if [ -n "${MOEQ_TEST_QUICK:-}" ]; then NPLANS=2; CAL=2048; EVAL=1024; fi
python3 - "$TMPD" $CAL <<'PY'
import json, struct, sys
d, cal = sys.argv[1], int(sys.argv[2])
b = open(d + "/corpus.safetensors", "rb").read()
n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n]); t = h[[k for k in h if k != "__metadata__"][0]]
raw = b[8 + n + t["data_offsets"][0]: 8 + n + t["data_offsets"][1]]; N = len(raw) // 4; s = N // 2
open(d + "/cal.u32", "wb").write(raw[s * 4:(s + cal) * 4])
open(d + "/val.u32", "wb").write(raw[(s + cal) * 4:(s + cal + 2048) * 4])   # validation: after the calibration span
PY
"$MOEQ" calibrate $M --tokens "$TMPD/cal.u32" --ctx 256 -q -o "$TMPD/c.h5" || echo "FAIL plan measured: calibrate"
MT=2048; [ -n "${MOEQ_TEST_QUICK:-}" ] && MT=256
"$MOEQ" plan $M --budget 3 --bits 2,3,4 --cost measured --calib "$TMPD/c.h5" --tokens "$TMPD/val.u32" \
  --measure-tokens $MT --ctx 256 -q -o "$TMPD/pm.json" && echo "PASS plan --cost measured" || echo "FAIL plan --cost measured"
"$MOEQ" plan $M --budget 3 --bits 2,3,4 --cost hessian --calib "$TMPD/c.h5" -q -o "$TMPD/ph.json" || echo "FAIL plan --cost hessian"
expect_exit "plan measured without tokens" 1 "needs validation tokens" -- "$MOEQ" plan $M --budget 3 --cost measured --calib "$TMPD/c.h5" -o "$TMPD/x.json"
expect_exit "plan measured without calib" 1 "needs --calib" -- "$MOEQ" plan $M --budget 3 --cost measured --tokens "$TMPD/val.u32" -o "$TMPD/x.json"
expect_exit "plan measured: fewer tokens than a window" 2 "fewer than one window" -- "$MOEQ" plan $M --budget 3 --cost measured --calib "$TMPD/c.h5" --tokens "$TMPD/val.u32" --measure-tokens 100 --ctx 256 -o "$TMPD/x.json"
ev() {   # ev FILE.moeq OUT.json: KLD against bf16 on held-out documents
  "$MOEQ" eval "$1" --tokens $FX/heldout.safetensors --max-tokens $EVAL --ctx 256 --ref $M --json -q > "$2" || echo "FAIL plan measured: eval $1"
}
s=1
while [ $s -le $NPLANS ]; do
  "$MOEQ" plan $M --budget 3 --bits 2,3,4 --cost random --seed $s -q -o "$TMPD/r$s.json" || echo "FAIL plan --cost random --seed $s"
  "$MOEQ" quantize $M --plan "$TMPD/r$s.json" -q -o "$TMPD/r$s.moeq" || echo "FAIL quantize random plan $s"
  ev "$TMPD/r$s.moeq" "$TMPD/e$s.json"
  s=$((s + 1))
done
"$MOEQ" quantize $M --plan "$TMPD/pm.json" -q -o "$TMPD/pm.moeq" || echo "FAIL quantize measured plan"
"$MOEQ" quantize $M --bits 3 -q -o "$TMPD/u3.moeq" || echo "FAIL quantize uniform 3-bit"
ev "$TMPD/pm.moeq" "$TMPD/epm.json"; ev "$TMPD/u3.moeq" "$TMPD/eu3.json"
python3 - "$TMPD" $NPLANS "${MOEQ_TEST_QUICK:-}" <<'PY' && echo "PASS plan measured: predicted cost ranks random plans as their held-out KLD" || echo "FAIL plan measured: ranking"
import json, sys
d, n, quick = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def load(f): return json.load(open(f"{d}/{f}"))
def table(p):   # tensor -> {codec: cost}
    cands = [f"q{b}g64a" for b in p["bits"]]
    return {m["tensor"]: dict(zip(cands, m["costs"])) for m in p["matrices"]}
pm, ph = table(load("pm.json")), table(load("ph.json"))
def rank(v):
    o = sorted(range(len(v)), key=lambda i: v[i]); r = [0.0] * len(v)
    i = 0
    while i < len(o):   # ties get their mean rank
        j = i
        while j + 1 < len(o) and v[o[j + 1]] == v[o[i]]: j += 1
        for t in range(i, j + 1): r[o[t]] = (i + j) / 2
        i = j + 1
    return r
def spearman(a, b):
    ra, rb = rank(a), rank(b); ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    num = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    den = (sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb)) ** 0.5
    return num / den if den else 0.0
kld, predm, predh = [], [], []
for s in range(1, n + 1):
    r = load(f"r{s}.json")
    assert abs(r["bits_per_weight"] - 3) < 0.02, r["bits_per_weight"]
    predm.append(sum(pm[m["tensor"]][m["codec"]] for m in r["matrices"]))
    predh.append(sum(ph[m["tensor"]][m["codec"]] for m in r["matrices"]))
    kld.append(load(f"e{s}.json")["kld_mean"])
p = load("pm.json")
for g in p["measured"]:   # each group's measured KLD falls with more bits (one window in the quick run: noise)
    assert min(g["kld"]) >= 0 and (quick or g["kld"][0] > g["kld"][1] > g["kld"][2] > 0), g
tot = sum(m["cost"] for m in p["matrices"])
assert abs(tot - p["predicted_cost"]) <= 1e-9 * tot, (tot, p["predicted_cost"])
km, ku = load("epm.json")["kld_mean"], load("eu3.json")["kld_mean"]
sm, sh = spearman(predm, kld), spearman(predh, kld)
print(f"  {n} random plans at 3 bits: KLD {min(kld):.5f}..{max(kld):.5f}; Spearman measured {sm:.3f}, hessian {sh:.3f}; "
      f"measured plan KLD {km:.5f} vs uniform 3-bit {ku:.5f}", file=sys.stderr)
if not quick:
    assert sm >= 0.9, (sm, sh)
    assert km < ku, (km, ku)
PY
# --gamma auto: AlphaQ's exponent chosen on the measured group KLDs (the best-ranking gamma)
"$MOEQ" spectral $M -q -o "$TMPD/sp.h5" || echo "FAIL plan gamma auto: spectral"
"$MOEQ" plan $M --budget 3 --bits 2,3,4 --cost alphaq --spectral "$TMPD/sp.h5" --gamma auto --calib "$TMPD/c.h5" \
  --tokens "$TMPD/val.u32" --measure-tokens $MT --ctx 256 -q -o "$TMPD/pa.json" || echo "FAIL plan --gamma auto"
expect_exit "plan --gamma auto without alphaq" 1 "is for --cost alphaq" -- "$MOEQ" plan $M --budget 3 --gamma auto -o "$TMPD/x.json"
python3 - "$TMPD" <<'PY' && echo "PASS plan --gamma auto: the best-ranking gamma" || echo "FAIL plan --gamma auto"
import json, sys
p = json.load(open(sys.argv[1] + "/pa.json")); ga = p["gamma_auto"]
assert [g["gamma"] for g in ga] == [0, 0.25, 0.5, 1, 2, 4, 10], ga
assert all(-1 <= g["spearman"] <= 1 for g in ga), ga
best = max(g["spearman"] for g in ga)
assert p["gamma"] == min(g["gamma"] for g in ga if g["spearman"] >= best - 1e-12), (p["gamma"], ga)
print("  gamma auto: " + ", ".join(f"{g['gamma']:g}: {g['spearman']:.3f}" for g in ga) + f" -> {p['gamma']:g}", file=sys.stderr)
PY
# GGUF plans: a 3-D expert tensor is one layer x projection, so its measured cost is that group's
# KLD itself (tiny-qwen3moe-256, Q2_K..Q6_K at 3.5 GGUF bits per weight, exported with the
# calibration's importances): the measured plan does at least as well as the hessian plan
K=$FX/tiny-qwen3moe-256
"$MOEQ" calibrate $K --tokens "$TMPD/cal.u32" --ctx 256 -q -o "$TMPD/k.h5" || echo "FAIL plan measured gguf: calibrate"
for c in hessian measured; do
  "$MOEQ" plan $K --target gguf --budget 3.5 --types Q2_K,Q3_K,Q4_K,Q6_K --cost $c --calib "$TMPD/k.h5" --tokens "$TMPD/val.u32" \
    --measure-tokens $MT --ctx 256 -q -o "$TMPD/kp_$c.json" || echo "FAIL plan --target gguf --cost $c"
  "$MOEQ" export gguf $K --plan "$TMPD/kp_$c.json" --calib "$TMPD/k.h5" -q -o "$TMPD/kp_$c.gguf" || echo "FAIL export gguf --plan ($c)"
  "$MOEQ" eval "$TMPD/kp_$c.gguf" --tokens $FX/heldout.safetensors --max-tokens $EVAL --ctx 256 --ref $K --json -q > "$TMPD/ekp_$c.json" || echo "FAIL eval gguf plan $c"
done
# --scope all: attention, embeddings and head measured too (their own overrides: the KLD of each
# matrix quantized alone, on the scale of the experts' costs), then exported as planned
"$MOEQ" calibrate $K --tokens "$TMPD/cal.u32" --ctx 256 --scope all -q -o "$TMPD/ka.h5" || echo "FAIL plan measured gguf: calibrate --scope all"
"$MOEQ" plan $K --target gguf --budget 4.5 --scope all --types Q2_K,Q8_0 --cost measured --hessian-quant gptq --calib "$TMPD/ka.h5" \
  --tokens "$TMPD/val.u32" --measure-tokens $MT --ctx 256 -q -o "$TMPD/kpa.json" || echo "FAIL plan --target gguf --cost measured --scope all"
"$MOEQ" export gguf $K --plan "$TMPD/kpa.json" --method gptq --calib "$TMPD/ka.h5" -q -o "$TMPD/kpa.gguf" || echo "FAIL export gguf --plan (measured, scope all)"
python3 tests/cli/gguf_tensors.py "$TMPD/kpa.gguf" > "$TMPD/kpa.tensors"
python3 - "$TMPD" <<'PY' && echo "PASS plan --target gguf --cost measured --scope all: every matrix measured, Q2_K costs more than Q8_0, written as planned" || echo "FAIL plan --target gguf --cost measured --scope all"
import json, sys
d = sys.argv[1]
p = json.load(open(d + "/kpa.json")); ts = json.load(open(d + "/kpa.tensors"))
names = {m["tensor"] for m in p["matrices"]}
assert {"token_embd.weight", "output.weight", "blk.0.attn_q.weight", "blk.0.attn_output.weight"} <= names, names
assert all(m["hessian"] == "measured" for m in p["matrices"])
for m in p["matrices"]:
    c2, c8 = m["costs"]["Q2_K"], m["costs"]["Q8_0"]
    assert 0 <= c8 < c2, (m["tensor"], c2, c8)
    assert ts[m["tensor"]]["type"] == {"Q2_K": 10, "Q8_0": 8}[m["type"]], m
assert sum(m["bytes"] for m in p["matrices"]) * 8 <= 4.5 * p["weights"]
PY
# --damps: each (tensor, type) costs the best of its GPTQ dampings on the validation tokens, and
# export --plan quantizes with the recorded one: the costs of --damps 0.01,1 are the smaller of
# --damps 0.01's and --damps 1's (the same measurements, bit for bit), the damp the one that gave
# it; a one-damping plan exports the same bytes as --damp with that damping
for d in 0.01 1 0.01,1; do
  "$MOEQ" plan $K --target gguf --budget 3.5 --types Q2_K,Q4_K --cost measured --hessian-quant gptq --damps $d --calib "$TMPD/k.h5" \
    --tokens "$TMPD/val.u32" --measure-tokens $MT --ctx 256 -q -o "$TMPD/kd_$d.json" || echo "FAIL plan --damps $d"
done
"$MOEQ" export gguf $K --plan "$TMPD/kd_1.json" --method gptq --calib "$TMPD/k.h5" -q -o "$TMPD/kd1.gguf" || echo "FAIL export --plan with damps"
python3 -c "
import json,sys; p=json.load(open('$TMPD/kd_1.json'))
for m in p['matrices']: m['damp'] = None
json.dump(p, open('$TMPD/kd_none.json', 'w'))"
"$MOEQ" export gguf $K --plan "$TMPD/kd_none.json" --method gptq --calib "$TMPD/k.h5" --damp 1 -q -o "$TMPD/kdn.gguf" || echo "FAIL export --plan --damp 1"
cmp -s "$TMPD/kd1.gguf" "$TMPD/kdn.gguf" && echo "PASS export --plan: the plan's damping is GPTQ's" || echo "FAIL export --plan: the plan's damping is not the one used"
python3 - "$TMPD" <<'PY' && echo "PASS plan --damps: each cost the best damping's, recorded with it" || echo "FAIL plan --damps"
import json, sys
d = sys.argv[1]
a, b, ab = (json.load(open(f"{d}/kd_{x}.json")) for x in ("0.01", "1", "0.01,1"))
assert ab["damp_candidates"] == [0.01, 1]
for ma, mb, m in zip(a["matrices"], b["matrices"], ab["matrices"]):
    for t in ("Q2_K", "Q4_K"):
        ca, cb = ma["costs"][t], mb["costs"][t]
        assert m["costs"][t] == min(ca, cb), (m["tensor"], t, ca, cb, m["costs"][t])
        assert m["damps"][t] == (0.01 if ca <= cb else 1), (m["tensor"], t, m["damps"])
    assert m["damp"] == m["damps"][m["type"]]
    assert mb["damp"] == 1
PY
expect_exit "plan --damps without measured GPTQ costs" 1 "needs --cost measured --hessian-quant gptq" -- "$MOEQ" plan $K --target gguf --budget 3.5 --cost hessian --damps 0.1 --calib "$TMPD/k.h5" -o "$TMPD/x.json"
python3 - "$TMPD" "${MOEQ_TEST_QUICK:-}" <<'PY' && echo "PASS plan --target gguf --cost measured" || echo "FAIL plan --target gguf --cost measured"
import json, sys
d, quick = sys.argv[1], sys.argv[2]
p = json.load(open(d + "/kp_measured.json"))
assert p["cost"] == "measured" and all(m["hessian"] == "measured" for m in p["matrices"]), p["cost"]
for m in p["matrices"]:   # a group's KLD falls with the type's bits
    c = [m["costs"][t] for t in ("Q2_K", "Q3_K", "Q4_K", "Q6_K")]
    assert min(c) >= 0 and (quick or all(a > b for a, b in zip(c, c[1:]))), (m["tensor"], c)
km, kh = (json.load(open(f"{d}/ekp_{c}.json"))["kld_mean"] for c in ("measured", "hessian"))
print(f"  gguf plans at 3.5: measured KLD {km:.5f}, hessian {kh:.5f}", file=sys.stderr)
if not quick: assert km <= kh, (km, kh)
PY
