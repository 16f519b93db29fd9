#!/bin/sh
# The ggml codecs of .moeq (docs/FORMAT.md "Ggml codec layout", docs/quantize.md): quantize with
# --codec and --tensor-type (RTN, and GPTQ on the type's grid with a calibration file), eval,
# export gguf copying the blocks (the same bytes, the same logits), the shape refusal naming the
# nearest codec, and a plan over ggml candidates.
. tests/cli/lib.sh
F=$FX/tiny-qwen3moe-256
ppl() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['ppl'])" "$1"; }
# under the sanitizers (MOEQ_TEST_QUICK) fewer eval tokens and no plan
NTOK=1024; [ -n "${MOEQ_TEST_QUICK:-}" ] && NTOK=256
ev() { "$MOEQ" eval "$1" --text $FX/heldout.txt --ctx 128 --max-tokens $NTOK --threads 1 --json -q > "$2"; }

"$MOEQ" quantize $F --codec q4_k -o "$TMPD/k4.moeq" --json -q > "$TMPD/q.json" && "$MOEQ" verify "$TMPD/k4.moeq" -q \
  && python3 -c "import json,sys; j=json.load(open(sys.argv[1])); sys.exit(not (j['quantized'] == 48 and j['bits_per_weight_total'] == 4.5))" "$TMPD/q.json" \
  && echo "PASS quantize --codec q4_k: 48 expert matrices at 4.5 bits per weight, verify ok" \
  || echo "FAIL quantize --codec q4_k: $(cat "$TMPD/q.json")"
"$MOEQ" export gguf "$TMPD/k4.moeq" -o "$TMPD/k4.gguf" --json -q > "$TMPD/x.json"
n=$(python3 tests/cli/ggml_blocks_equal.py "$TMPD/k4.moeq" "$TMPD/k4.gguf")
[ "$n" = 48 ] && echo "PASS export gguf of a q4_k .moeq: the 48 expert matrices' blocks copied byte for byte" \
  || echo "FAIL export gguf of a q4_k .moeq: $n"
ev "$TMPD/k4.moeq" "$TMPD/e1"; ev "$TMPD/k4.gguf" "$TMPD/e2"
[ -n "$(ppl "$TMPD/e1")" ] && [ "$(ppl "$TMPD/e1")" = "$(ppl "$TMPD/e2")" ] \
  && echo "PASS eval of the q4_k .moeq equals eval of its GGUF (ppl $(ppl "$TMPD/e1"))" \
  || echo "FAIL eval q4_k .moeq $(ppl "$TMPD/e1") vs its GGUF $(ppl "$TMPD/e2")"
"$MOEQ" unpack "$TMPD/k4.moeq" -o "$TMPD/un" -q && ev "$TMPD/un" "$TMPD/e3" \
  && python3 -c "import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); sys.exit(not abs(a - b) < 1e-3 * a)" "$(ppl "$TMPD/e1")" "$(ppl "$TMPD/e3")" \
  && echo "PASS unpack of the q4_k .moeq: ppl $(ppl "$TMPD/e3") (bf16-rounded weights) within 0.1% of $(ppl "$TMPD/e1")" \
  || echo "FAIL unpack of the q4_k .moeq: ppl $(ppl "$TMPD/e3") vs $(ppl "$TMPD/e1")"

# rows of 128 values: no K type fits; the error names the tensor and the nearest codec
expect_exit "quantize --codec q4_k on 128-wide rows: exit 2 naming the tensor and iq4_nl" 2 \
  "tensor 'model.layers.0.mlp.experts.*: cols (96|128) is not a multiple of Q4_K's block of 256; the nearest codec that fits is iq4_nl" -- \
  "$MOEQ" quantize $FX/tiny-qwen3moe --codec q4_k -o "$TMPD/no.moeq"
[ ! -e "$TMPD/no.moeq" ] && echo "PASS the refused quantize left no output" || echo "FAIL the refused quantize left an output"
expect_exit "quantize --codec iq4_nl on 128-wide rows" 0 "" -- "$MOEQ" quantize $FX/tiny-qwen3moe --codec iq4_nl -o "$TMPD/nl.moeq" -q

# GPTQ on the type's grid, K types mixed per expert by rules; the GGUF export refuses the mix
"$MOEQ" calibrate $F --text $FX/heldout.txt --ctx 128 --max-tokens 2048 -o "$TMPD/cal.h5" -q
"$MOEQ" quantize $F --codec q3_k --tensor-type 'down_proj=iq4_xs' --tensor-type 'experts\.[0-3]\.up=q2_k' \
  --method gptq --calib "$TMPD/cal.h5" -o "$TMPD/g.moeq" --json -q > "$TMPD/g.json"
python3 - "$TMPD/g.json" <<'PY' && echo "PASS GPTQ with q3_k/iq4_xs/q2_k: every expert matrix through GPTQ, held-out Hessian error reported" || echo "FAIL GPTQ ggml: $(cat "$TMPD/g.json")"
import json, sys
j = json.load(open(sys.argv[1]))
ok = j["quantized"] == 48 and j["gptq_matrices"] + len(j["fallbacks"]) >= 48 and j["gptq_matrices"] > 0
ok = ok and j["hessian_error"]["val"] > 0 and abs(j["bits_per_weight_total"] - (16 * 4.25 + 24 * 3.4375 + 8 * 2.625) / 48) < 1e-9
sys.exit(not ok)
PY
"$MOEQ" quantize $F --codec q3_k --tensor-type 'down_proj=iq4_xs' --tensor-type 'experts\.[0-3]\.up=q2_k' \
  --method rtn --calib "$TMPD/cal.h5" -o "$TMPD/r.moeq" --json -q > "$TMPD/r.json"
python3 -c "import json,sys; a, b = (json.load(open(f))['hessian_error']['cal'] for f in sys.argv[1:]); sys.exit(not a < b)" "$TMPD/g.json" "$TMPD/r.json" \
  && echo "PASS GPTQ's calibration Hessian error is below the weighted search's (same codecs)" \
  || echo "FAIL GPTQ vs RTN Hessian error: $(cat "$TMPD/g.json" "$TMPD/r.json" | grep -o '"cal": [0-9.e+-]*' | head -2)"
expect_exit "export gguf of mixed ggml codecs without --requantize: exit 2" 2 "one type to all experts" -- \
  "$MOEQ" export gguf "$TMPD/g.moeq" -o "$TMPD/g.gguf"

# a plan over ggml candidates at 3.44 bits per weight
[ -n "${MOEQ_TEST_QUICK:-}" ] && exit 0
"$MOEQ" plan $F --budget 3.44 --budget-total --codecs q2_k,q3_k,q4_k,iq4_xs --cost hessian --calib "$TMPD/cal.h5" \
  -o "$TMPD/plan.json" --json -q > "$TMPD/p.json" \
  && "$MOEQ" quantize $F --plan "$TMPD/plan.json" -o "$TMPD/p.moeq" --json -q > "$TMPD/pq.json" \
  && python3 - "$TMPD/p.json" "$TMPD/pq.json" <<'PY' && echo "PASS plan --codecs: a mix of ggml types within 3.44 bits per weight, quantized as planned" || echo "FAIL plan --codecs: $(cat "$TMPD/p.json" | head -c 600)"
import json, sys
p, q = (json.load(open(f)) for f in sys.argv[1:])
used = {m["codec"] for m in p["matrices"]}
sys.exit(not (len(used) >= 2 and used <= {"q2_k", "q3_k", "q4_k", "iq4_xs"} and p["bits_per_weight_total"] <= 3.44
              and abs(q["bits_per_weight_total"] - p["bits_per_weight_total"]) < 1e-9))
PY
