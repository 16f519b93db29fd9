#!/bin/sh
# moeq plan --target gguf and export --plan (docs/plan.md, "GGUF plans") on tiny-qwen3moe-256
# (expert rows multiples of 256):
# - the plan's bytes are what the exported file holds for those tensors (tensor table parsed by
#   tests/cli/gguf_tensors.py; spans minus alignment padding) and within budget x weights / 8;
# - the exact solver's choice equals brute force over every type combination (python, from the
#   plan's own per-candidate costs and the ggml block sizes);
# - export --plan writes the planned types (independent parse, and moeq inspect's gguf_types);
# - bad plans and budgets out of reach are exit 2 naming the problem.
# llama.cpp loading a planned export is in test_gguf_llama.sh. MOEQ_TEST_QUICK: fewer budgets.
. tests/cli/lib.sh
K=$FX/tiny-qwen3moe-256
T=$FX/heldout.safetensors
"$MOEQ" calibrate $K --tokens $T --ctx 128 --max-tokens 512 -o "$TMPD/k.h5" -q || echo "FAIL calibrate"
TYPES=Q2_K,Q3_K,Q4_K,Q6_K,IQ4_XS
budgets="2.9 3.6 5.5"
[ -n "${MOEQ_TEST_QUICK:-}" ] && budgets="3.6"
# block bytes of the candidates (docs/GGML-TYPES.md), per 256 values
BLK='{"Q2_K":84,"Q3_K":110,"Q4_K":144,"Q5_K":176,"Q6_K":210,"IQ4_XS":136,"Q8_0":272}'
for b in $budgets; do
  "$MOEQ" plan $K --target gguf --budget $b --types $TYPES --calib "$TMPD/k.h5" -o "$TMPD/p$b.json" -q \
    || { echo "FAIL plan --target gguf --budget $b"; continue; }
  python3 - "$TMPD/p$b.json" "$BLK" <<'PY' && echo "PASS plan --budget $b: optimal against brute force, within budget" || echo "FAIL plan --budget $b vs brute force"
import itertools, json, sys
p = json.load(open(sys.argv[1])); blk = json.loads(sys.argv[2])
ms = p["matrices"]; W = sum(m["rows"] * m["cols"] * m["experts"] for m in ms)
cap = int(p["budget"] * W + 1e-6)
def bits(m, t): return m["rows"] * m["experts"] * m["cols"] // 256 * blk[t] * 8
opts = [[(c, bits(m, t), t) for t, c in m["costs"].items()] for m in ms]
best = min((sum(o[0] for o in ch), ch) for ch in itertools.product(*opts) if sum(o[1] for o in ch) <= cap)
used = sum(bits(m, m["type"]) for m in ms)
ok = abs(best[0] - p["predicted_cost"]) <= 1e-9 * best[0] and used <= cap and used == 8 * p["bytes"] \
    and p["exact"] and abs(p["bits_per_weight"] - used / W) < 1e-12 and all(m["bytes"] * 8 == bits(m, m["type"]) for m in ms)
if not ok: print("brute force", best[0], [o[2] for o in best[1]], "plan", p["predicted_cost"], [m["type"] for m in ms], used, cap, file=sys.stderr)
sys.exit(not ok)
PY
done
b=3.6
if [ -z "${MOEQ_TEST_QUICK:-}" ]; then   # costs of one budget reused at another: the plan measured there
  "$MOEQ" plan $K --target gguf --budget 5.5 --types $TYPES --reuse-costs "$TMPD/p$b.json" -o "$TMPD/r.json" -q
  python3 -c "
import json,sys; a, b = (json.load(open(f)) for f in sys.argv[1:]); sys.exit(a['matrices'] != b['matrices'] or a['predicted_cost'] != b['predicted_cost'])" "$TMPD/r.json" "$TMPD/p5.5.json" \
    && echo "PASS --reuse-costs: the same plan as measuring the costs again" || echo "FAIL --reuse-costs differs from a measured plan"
fi
"$MOEQ" export gguf $K --plan "$TMPD/p$b.json" --method gptq --calib "$TMPD/k.h5" -o "$TMPD/x.gguf" -q || echo "FAIL export --plan"
python3 tests/cli/gguf_tensors.py "$TMPD/x.gguf" > "$TMPD/x.tensors" || echo "FAIL parse the planned export"
python3 - "$TMPD/p$b.json" "$TMPD/x.tensors" <<'PY' && echo "PASS export --plan writes the planned types; its tensors hold exactly the plan's bytes" || echo "FAIL export --plan types/bytes"
import json, sys
p = json.load(open(sys.argv[1])); ts = json.load(open(sys.argv[2]))
ID = {"Q2_K": 10, "Q3_K": 11, "Q4_K": 12, "Q5_K": 13, "Q6_K": 14, "Q8_0": 8, "IQ4_XS": 23}
ok = True; real = 0
for m in p["matrices"]:
    t = ts[m["tensor"]]
    ok &= t["type"] == ID[m["type"]] and t["ne"] == [m["cols"], m["rows"], m["experts"]]
    ok &= m["bytes"] <= t["span"] < m["bytes"] + 32   # the rest is alignment padding
    real += m["bytes"]
ok &= real == p["bytes"] and real * 8 <= p["budget"] * p["weights"]
sys.exit(not ok)
PY
want=$(python3 -c "
import json,collections; p=json.load(open('$TMPD/p$b.json')); print(sorted(collections.Counter(m['type'] for m in p['matrices']).items()))")
got=$("$MOEQ" inspect "$TMPD/x.gguf" --json -q | python3 -c "
import json,sys; g=json.load(sys.stdin)['gguf_types']; print(sorted((k,v) for k,v in g.items() if k not in ('F32','BF16')))")
[ "$want" = "$got" ] && echo "PASS moeq's GGUF reader sees the planned types: $got" || echo "FAIL moeq inspect: $got, plan $want"
# the plan's scope all: every matrix but the routers gets a type, in budget
"$MOEQ" plan $K --target gguf --budget 5 --scope all --types Q4_K,Q8_0 --calib "$TMPD/k.h5" -o "$TMPD/pa.json" -q || echo "FAIL plan --scope all"
"$MOEQ" export gguf $K --plan "$TMPD/pa.json" -o "$TMPD/a.gguf" -q || echo "FAIL export --plan (scope all)"
python3 tests/cli/gguf_tensors.py "$TMPD/a.gguf" > "$TMPD/a.tensors"
python3 - "$TMPD/pa.json" "$TMPD/a.tensors" <<'PY' && echo "PASS plan --scope all: embeddings, attention, head and experts planned, written as planned" || echo "FAIL plan --scope all"
import json, sys
p = json.load(open(sys.argv[1])); ts = json.load(open(sys.argv[2]))
names = {m["tensor"] for m in p["matrices"]}
mats = {n for n, t in ts.items() if n != "__file__" and len(t["ne"]) >= 2 and "ffn_gate_inp" not in n}
ok = names == mats and all(ts[m["tensor"]]["type"] == {"Q4_K": 12, "Q8_0": 8}[m["type"]] for m in p["matrices"])
ok &= sum(m["bytes"] for m in p["matrices"]) * 8 <= 5 * p["weights"] and "isotropic proxy" in {m["hessian"] for m in p["matrices"]}
sys.exit(not ok)
PY
# the layer matrices weighed by their own Hessians (calibrate --scope all: attn_in, attn_o): GPTQ
# on the type's grid for attention too, against the same export from an experts-only calibration
# (attention then has no importances, noted in fallbacks): lower KLD on held-out tokens
"$MOEQ" calibrate $K --tokens $T --ctx 128 --max-tokens 512 --scope all -o "$TMPD/ka.h5" -q || echo "FAIL calibrate --scope all"
python3 - "$T" "$TMPD/ev.u32" <<'PY'   # evaluation tokens after the 512 calibrated on
import json, struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n]); t = h[[k for k in h if k != "__metadata__"][0]]
raw = b[8 + n + t["data_offsets"][0]: 8 + n + t["data_offsets"][1]]
open(sys.argv[2], "wb").write(raw[512 * 4:2560 * 4])
PY
for c in k ka; do
  "$MOEQ" export gguf $K --type Q3_K --scope all --method gptq --calib "$TMPD/$c.h5" --json -q -o "$TMPD/h_$c.gguf" > "$TMPD/h_$c.json" \
    || echo "FAIL export --scope all --method gptq ($c)"
  "$MOEQ" eval "$TMPD/h_$c.gguf" --tokens "$TMPD/ev.u32" --ctx 256 --ref $K --json -q > "$TMPD/eh_$c.json" || echo "FAIL eval h_$c"
done
python3 - "$TMPD" <<'PY' && echo "PASS export --scope all: attention quantized with its Hessians (GPTQ) beats no importances" || echo "FAIL export --scope all with attention Hessians"
import json, sys
d = sys.argv[1]
fk, fa = (json.load(open(f"{d}/h_{c}.json"))["fallbacks"] for c in ("k", "ka"))
noimp = {f["tensor"] for f in fk if f["fallback"] == "no importances"}
assert {"blk.0.attn_q.weight", "blk.0.attn_output.weight"} <= noimp, noimp
assert not any(f["fallback"] == "no importances" for f in fa), fa
kk, ka = (json.load(open(f"{d}/eh_{c}.json"))["kld_mean"] for c in ("k", "ka"))
print(f"  Q3_K whole model: KLD {ka:.5f} with attention Hessians, {kk:.5f} without", file=sys.stderr)
assert ka < kk, (ka, kk)
PY
# errors
expect_exit "budget out of reach" 2 "outside what the candidates reach" -- "$MOEQ" plan $K --target gguf --budget 1.5 --types $TYPES --calib "$TMPD/k.h5" -o "$TMPD/bad.json"
expect_exit "candidates no runtime loads together refused" 1 "TQ1_0 and IQ2_K: no runtime loads both" -- "$MOEQ" plan $K --target gguf --budget 2.2 --types TQ1_0,IQ2_K --cost uniform -o "$TMPD/bad.json"
expect_exit "hessian needs --calib" 1 "needs --calib" -- "$MOEQ" plan $K --target gguf --budget 4 -o "$TMPD/bad.json"
python3 -c "
import json; p=json.load(open('$TMPD/p$b.json')); p['matrices'][0]['tensor']='blk.9.ffn_up_exps.weight'; json.dump(p, open('$TMPD/unk.json','w'))
p=json.load(open('$TMPD/p$b.json')); p['model_type']='mixtral'; json.dump(p, open('$TMPD/other.json','w'))
p=json.load(open('$TMPD/p$b.json')); p['matrices'][1]['tensor']=p['matrices'][0]['tensor']; json.dump(p, open('$TMPD/twice.json','w'))
p=json.load(open('$TMPD/p$b.json')); p['matrices'][0]['type']='Q9_K'; json.dump(p, open('$TMPD/type.json','w'))"
expect_exit "export --plan naming a tensor the file lacks" 2 "blk.9.ffn_up_exps.weight" -- "$MOEQ" export gguf $K --plan "$TMPD/unk.json" -o "$TMPD/bad.gguf"
expect_exit "export --plan of another model_type" 2 "model_type mixtral" -- "$MOEQ" export gguf $K --plan "$TMPD/other.json" -o "$TMPD/bad.gguf"
expect_exit "export --plan listing a tensor twice" 2 "listed twice" -- "$MOEQ" export gguf $K --plan "$TMPD/twice.json" -o "$TMPD/bad.gguf"
expect_exit "export --plan with an unknown type" 2 "not a ggml type" -- "$MOEQ" export gguf $K --plan "$TMPD/type.json" -o "$TMPD/bad.gguf"
expect_exit "export --plan of a .moeq plan" 2 "not a GGUF plan" -- sh -c "python3 -c \"import json; p=json.load(open('$TMPD/p$b.json')); del p['target']; json.dump(p, open('$TMPD/moeq.json','w'))\" && \"$MOEQ\" export gguf $K --plan $TMPD/moeq.json -o $TMPD/bad.gguf"
[ -e "$TMPD/bad.gguf" ] && echo "FAIL a refused export left a file" || echo "PASS refused exports leave no file"
# export --method gptq --damp auto (the default): per expert tensor, the damping of 0.01 0.03 0.1
# 0.3 1 with the smallest validation-split error, reported in JSON damps (the chosen value is the
# argmin of its val_err); a fixed --damp reports none
"$MOEQ" calibrate $K --tokens $T --ctx 128 --max-tokens 1024 --val-every 2 -o "$TMPD/kv.h5" -q || echo "FAIL calibrate --val-every 2"
"$MOEQ" export gguf $K --type Q4_K --method gptq --calib "$TMPD/kv.h5" --json -q -o "$TMPD/da.gguf" > "$TMPD/da.json" || echo "FAIL export --damp auto"
python3 - "$TMPD/da.json" <<'PY' && echo "PASS export --damp auto: each expert tensor's damping by validation error" || echo "FAIL export --damp auto"
import json, sys
j = json.load(open(sys.argv[1])); d = j["damps"]
assert len(d) > 0 and all(r["tensor"].endswith("_exps.weight") for r in d), d
cand = [0.01, 0.03, 0.1, 0.3, 1.0]
for r in d:
    assert r["experts"] > 0 and len(r["val_err"]) == 5, r
    assert r["damp"] == cand[min(range(5), key=lambda i: (r["val_err"][i], i))], r
PY
"$MOEQ" export gguf $K --type Q4_K --method gptq --calib "$TMPD/kv.h5" --damp 0.1 --json -q -o "$TMPD/d1.gguf" > "$TMPD/d1.json" || echo "FAIL export --damp 0.1"
python3 -c "import json,sys; assert json.load(open(sys.argv[1]))['damps'] == []" "$TMPD/d1.json" && echo "PASS export --damp 0.1: no choice reported" || echo "FAIL export --damp 0.1 reports damps"
expect_exit "export --damp 0" 1 "positive number" -- "$MOEQ" export gguf $K --type Q4_K --method gptq --calib "$TMPD/k.h5" --damp 0 -o "$TMPD/x.gguf"
