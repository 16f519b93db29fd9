#!/bin/sh
# ik_llama.cpp's IQ2_K as a .moeq ggml codec and a GGUF type (docs/GGML-TYPES.md): quantize
# --codec iq2_k (RTN and GPTQ), verify, export gguf copying the blocks, eval of the .moeq equal
# to eval of its GGUF, export --type IQ2_K, and the shape refusal naming the nearest codec.
. tests/cli/lib.sh
F=$FX/tiny-qwen3moe-256
ppl() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['ppl'])" "$1"; }
NTOK=512; [ -n "${MOEQ_TEST_QUICK:-}" ] && NTOK=128
ev() { "$MOEQ" eval "$1" --text $FX/heldout.txt --ctx 128 --max-tokens $NTOK --threads 1 --json -q > "$2"; }

"$MOEQ" quantize $F --codec iq2_k -o "$TMPD/k2.moeq" --json -q > "$TMPD/q.json" && "$MOEQ" verify "$TMPD/k2.moeq" -q \
  && python3 -c "import json,sys; j=json.load(open(sys.argv[1])); sys.exit(not (j['quantized'] == 48 and j['bits_per_weight_total'] == 2.375))" "$TMPD/q.json" \
  && echo "PASS quantize --codec iq2_k: 48 expert matrices at 2.375 bits per weight, verify ok" \
  || echo "FAIL quantize --codec iq2_k: $(cat "$TMPD/q.json")"
"$MOEQ" export gguf "$TMPD/k2.moeq" -o "$TMPD/k2.gguf" --json -q > "$TMPD/x.json"
n=$(python3 tests/cli/ggml_blocks_equal.py "$TMPD/k2.moeq" "$TMPD/k2.gguf")
[ "$n" = 48 ] && echo "PASS export gguf of an iq2_k .moeq: the 48 expert matrices' blocks copied byte for byte" \
  || echo "FAIL export gguf of an iq2_k .moeq: $n"
ev "$TMPD/k2.moeq" "$TMPD/e1"; ev "$TMPD/k2.gguf" "$TMPD/e2"
[ -n "$(ppl "$TMPD/e1")" ] && [ "$(ppl "$TMPD/e1")" = "$(ppl "$TMPD/e2")" ] \
  && echo "PASS eval of the iq2_k .moeq equals eval of its GGUF (ppl $(ppl "$TMPD/e1"))" \
  || echo "FAIL eval iq2_k .moeq $(ppl "$TMPD/e1") vs its GGUF $(ppl "$TMPD/e2")"
expect_exit "verify of the IQ2_K GGUF" 0 "" -- "$MOEQ" verify "$TMPD/k2.gguf" -q

# rows of 96 or 128 values: IQ2_K does not fit; the error names the nearest codec
expect_exit "quantize --codec iq2_k on 128-wide rows: exit 2 naming q2g32s" 2 \
  "is not a multiple of IQ2_K's block of 256; the nearest codec that fits is q2g32s" -- \
  "$MOEQ" quantize $FX/tiny-qwen3moe --codec iq2_k -o "$TMPD/no.moeq"

# the ASan run (MOEQ_TEST_QUICK) stops here: the rest quantizes three more times (IQ2_K's search
# is slow under the sanitizers) for the type of the export and GPTQ's quality, the release run's part
[ -n "${MOEQ_TEST_QUICK:-}" ] && exit 0

# export --type IQ2_K from the float model: the experts in type 137
"$MOEQ" export gguf $F --type IQ2_K -o "$TMPD/t2.gguf" -q && python3 tests/cli/gguf_tensors.py "$TMPD/t2.gguf" | python3 -c "
import json, sys
t = json.load(sys.stdin); exps = [v['type'] for n, v in t.items() if n.endswith('_exps.weight')]
sys.exit(not (exps and all(x == 137 for x in exps)))" \
  && echo "PASS export gguf --type IQ2_K: every routed-expert tensor is type 137" || echo "FAIL export gguf --type IQ2_K"

# GPTQ on the IQ2_K grid with a calibration file: below the weighted search's Hessian error
"$MOEQ" calibrate $F --text $FX/heldout.txt --ctx 128 --max-tokens 1024 -o "$TMPD/cal.h5" -q
"$MOEQ" quantize $F --codec iq2_k --method gptq --calib "$TMPD/cal.h5" -o "$TMPD/g.moeq" --json -q > "$TMPD/g.json"
"$MOEQ" quantize $F --codec iq2_k --method rtn --calib "$TMPD/cal.h5" -o "$TMPD/r.moeq" --json -q > "$TMPD/r.json"
python3 -c "import json,sys; a, b = (json.load(open(f))['hessian_error']['cal'] for f in sys.argv[1:]); sys.exit(not a < b)" "$TMPD/g.json" "$TMPD/r.json" \
  && echo "PASS iq2_k GPTQ's calibration Hessian error is below the weighted search's" \
  || echo "FAIL iq2_k GPTQ vs RTN Hessian error: $(cat "$TMPD/g.json" "$TMPD/r.json" | grep -o '"cal": [0-9.e+-]*' | head -2)"
