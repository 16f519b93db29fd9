#!/bin/sh
# The t1d codec (QMoE's ternary experts, dictionary coded; docs/FORMAT.md "T1d codec layout",
# docs/quantize.md "t1d"): quantize --codec t1d (RTN, and GPTQ with a calibration file: its
# Hessian error below RTN's), verify, eval against the bf16 model (ppl, KLD), the same logits
# under MOEQ_KERNEL=ref and the AVX2 kernel within float rounding, unpack, a --plan file sending
# half the experts to t1d, a plan over t1d and int candidates, the GGUF export (refused without
# --requantize, F16 evaluating the same), and a refused broken tensor.
. tests/cli/lib.sh
F=$FX/tiny-mixtral
NTOK=2048; [ -n "${MOEQ_TEST_QUICK:-}" ] && NTOK=256
ev() { "$MOEQ" eval "$1" --text $FX/heldout.txt --ctx 128 --max-tokens $NTOK --threads 1 --ref $F --json -q > "$2"; }
get() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }

"$MOEQ" quantize $F --codec t1d -o "$TMPD/r.moeq" --json -q > "$TMPD/r.json" && "$MOEQ" verify "$TMPD/r.moeq" -q \
  && python3 -c "import json,sys; j=json.load(open(sys.argv[1])); sys.exit(not (j['quantized'] == 96 and 0.3 < j['bits_per_weight'] < 1.3))" "$TMPD/r.json" \
  && echo "PASS quantize --codec t1d: 96 expert matrices at $(get "$TMPD/r.json" bits_per_weight) coded bits per weight ($(get "$TMPD/r.json" bits_per_weight_total) with levels and offsets), verify ok" \
  || echo "FAIL quantize --codec t1d: $(cat "$TMPD/r.json")"
"$MOEQ" quantize $F --codec t1d -o "$TMPD/r2.moeq" --threads 1 -q && cmp -s "$TMPD/r.moeq" "$TMPD/r2.moeq" \
  && echo "PASS quantize --codec t1d: the same bytes with one thread" || echo "FAIL quantize t1d differs with --threads 1"
"$MOEQ" inspect "$TMPD/r.moeq" | grep -q "t1d x96" && echo "PASS inspect names the t1d codec" || echo "FAIL inspect t1d"

ev "$TMPD/r.moeq" "$TMPD/er"
python3 -c "import json,sys; j=json.load(open(sys.argv[1])); sys.exit(not (j['ppl'] > 0 and j['kld_mean'] > 0))" "$TMPD/er" \
  && echo "PASS eval of the t1d .moeq: ppl $(get "$TMPD/er" ppl) (bf16 $(get "$TMPD/er" ppl_ref)), KLD $(get "$TMPD/er" kld_mean)" \
  || echo "FAIL eval t1d: $(cat "$TMPD/er")"
MOEQ_KERNEL=ref "$MOEQ" eval "$TMPD/r.moeq" --text $FX/heldout.txt --ctx 128 --max-tokens $NTOK --threads 1 --json -q > "$TMPD/eref"
MOEQ_KERNEL=float ev "$TMPD/r.moeq" "$TMPD/ef"
python3 -c "import json,sys; a, b = (json.load(open(f))['ppl'] for f in sys.argv[1:]); sys.exit(not abs(a - b) < 1e-4 * a)" "$TMPD/ef" "$TMPD/eref" \
  && echo "PASS eval t1d: the reference kernel's ppl $(get "$TMPD/eref" ppl) within 1e-4 of the fast float kernels'" \
  || echo "FAIL eval t1d ref vs float kernels: $(get "$TMPD/eref" ppl) vs $(get "$TMPD/ef" ppl)"
# the kernels cpuid picks (bf16 or int8 activations on some CPUs: 7e-4 measured on the Zen 5)
python3 -c "import json,sys; a, b = (json.load(open(f))['ppl'] for f in sys.argv[1:]); sys.exit(not abs(a - b) < 2e-3 * a)" "$TMPD/er" "$TMPD/eref" \
  && echo "PASS eval t1d: the default kernels' ppl $(get "$TMPD/er" ppl) within 2e-3 of the reference's" \
  || echo "FAIL eval t1d ref vs default kernels: $(get "$TMPD/eref" ppl) vs $(get "$TMPD/er" ppl)"
# two forms of one model: both under float32 activations (the bf16 set rounds each its own way)
"$MOEQ" unpack "$TMPD/r.moeq" -o "$TMPD/un" -q && MOEQ_KERNEL=float "$MOEQ" eval "$TMPD/un" --text $FX/heldout.txt --ctx 128 --max-tokens $NTOK --threads 1 --json -q > "$TMPD/eun" \
  && python3 -c "import json,sys; a, b = (json.load(open(f))['ppl'] for f in sys.argv[1:]); sys.exit(not abs(a - b) < 1e-3 * a)" "$TMPD/ef" "$TMPD/eun" \
  && echo "PASS unpack of the t1d .moeq: ppl $(get "$TMPD/eun" ppl) (bf16-rounded levels) within 0.1%" \
  || echo "FAIL unpack t1d"

# GGUF has no t1d: export refuses it without --requantize; an F16 export evaluates the same
expect_exit "export gguf of a t1d .moeq without --requantize: exit 2" 2 "codec t1d .*pass --requantize" -- \
  "$MOEQ" export gguf "$TMPD/r.moeq" --type q4_k -o "$TMPD/no.gguf"
"$MOEQ" export gguf "$TMPD/r.moeq" --type f16 -o "$TMPD/r.gguf" -q \
  && MOEQ_KERNEL=float "$MOEQ" eval "$TMPD/r.gguf" --text $FX/heldout.txt --ctx 128 --max-tokens $NTOK --threads 1 --json -q > "$TMPD/egg" \
  && python3 -c "import json,sys; a, b = (json.load(open(f))['ppl'] for f in sys.argv[1:]); sys.exit(not abs(a - b) < 1e-3 * a)" "$TMPD/ef" "$TMPD/egg" \
  && echo "PASS export gguf --type f16 of the t1d .moeq: ppl $(get "$TMPD/egg" ppl)" || echo "FAIL export gguf f16 of t1d"

# GPTQ ternary through each expert's Hessian (QMoE's damping 0.1)
"$MOEQ" calibrate $F --text $FX/heldout.txt --ctx 128 --max-tokens 2048 --val-every 8 -o "$TMPD/cal.h5" -q
"$MOEQ" quantize $F --codec t1d --method gptq --calib "$TMPD/cal.h5" -o "$TMPD/g.moeq" --json -q > "$TMPD/g.json"
"$MOEQ" quantize $F --codec t1d --method rtn --calib "$TMPD/cal.h5" -o "$TMPD/gr.moeq" --json -q > "$TMPD/gr.json"
python3 - "$TMPD/g.json" "$TMPD/gr.json" <<'PY' && echo "PASS GPTQ ternary: Hessian error below RTN's on the calibration and the held-out split" || echo "FAIL GPTQ t1d: $(cat "$TMPD/g.json")"
import json, sys
g, r = (json.load(open(f)) for f in sys.argv[1:])
ok = g["quantized"] == 96 and g["gptq_matrices"] > 0 and g["hessian_error"]["cal"] < r["hessian_error"]["cal"]
ok = ok and g["hessian_error"]["val"] < r["hessian_error"]["val"]
sys.exit(not ok)
PY
ev "$TMPD/g.moeq" "$TMPD/eg"
python3 -c "import json,sys; a, b = (json.load(open(f))['kld_mean'] for f in sys.argv[1:]); sys.exit(not a < b)" "$TMPD/eg" "$TMPD/er" \
  && echo "PASS eval GPTQ t1d: KLD $(get "$TMPD/eg" kld_mean) below RTN's $(get "$TMPD/er" kld_mean) (ppl $(get "$TMPD/eg" ppl), $(get "$TMPD/g.json" bits_per_weight) bits)" \
  || echo "FAIL GPTQ t1d KLD $(get "$TMPD/eg" kld_mean) vs RTN $(get "$TMPD/er" kld_mean)"

# a plan file: experts 4-7 to t1d, the others q3g64a; and a plan over t1d and int candidates
"$MOEQ" plan $F --budget 3 -o "$TMPD/plan.json" -q
python3 - "$TMPD/plan.json" "$TMPD/plan_t1d.json" <<'PY'
import json, sys
p = json.load(open(sys.argv[1]))
for m in p["matrices"]:
    if m["expert"] >= 4:
        m["codec"] = "t1d"
json.dump(p, open(sys.argv[2], "w"))
PY
"$MOEQ" quantize $F --plan "$TMPD/plan_t1d.json" -o "$TMPD/p.moeq" -q && "$MOEQ" inspect "$TMPD/p.moeq" | grep -q "q3g64a x48 t1d x48" \
  && ev "$TMPD/p.moeq" "$TMPD/ep" && [ -n "$(get "$TMPD/ep" ppl)" ] \
  && echo "PASS --plan with t1d for experts 4-7: q3g64a x48 t1d x48, ppl $(get "$TMPD/ep" ppl)" || echo "FAIL --plan with t1d"
[ -n "${MOEQ_TEST_QUICK:-}" ] || {
"$MOEQ" plan $F --budget 1.5 --codecs t1d,q2g64a,q3g64a --cost hessian --calib "$TMPD/cal.h5" -o "$TMPD/plan2.json" -q \
  && "$MOEQ" quantize $F --plan "$TMPD/plan2.json" --method gptq --calib "$TMPD/cal.h5" -o "$TMPD/p2.moeq" -q \
  && ev "$TMPD/p2.moeq" "$TMPD/ep2" \
  && python3 -c "import json,sys; h=json.load(open(sys.argv[1]))['histogram']; sys.exit(not (h['t1d'] > 0 and sum(h.values()) == 96))" "$TMPD/plan2.json" \
  && echo "PASS plan --codecs t1d,q2g64a,q3g64a at 1.5 bits (estimate): $(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['histogram'])" "$TMPD/plan2.json"), KLD $(get "$TMPD/ep2" kld_mean)" \
  || echo "FAIL plan over t1d candidates"
}

# a broken t1d tensor: the error names the tensor and the offset (the catalogue has the rest)
expect_exit "eval of a .moeq with an unused t1d codeword: exit 2 naming tensor and offset" 2 \
  "tensor 'model.layers.0.block_sparse_moe.experts.0.w3.weight' .*row 0 codeword 65535 at offset 292.*F-13" -- \
  "$MOEQ" eval tests/broken/moeq/t1d_codeword_unused.moeq --text $FX/heldout.txt --ctx 16 --max-tokens 16
