#!/bin/sh
# make results-gguf: moeq's GGUF (plan --target gguf + GPTQ on each type's grid) against
# llama.cpp's own llama-quantize --imatrix at Q2_K, Q3_K, Q4_K and IQ4_XS, experts only and whole
# model, at equal size (moeq's budget = the bits per weight llama-quantize's file spends on the same
# tensors). Both calibrate on the same text (the first CAL_BYTES of TRAIN: moeq calibrate, and
# llama-imatrix for llama.cpp); KLD against the bf16 model on held-out documents (the first
# EVAL_BYTES of HELD) by llama-perplexity --kl-divergence and by moeq eval --ref. Writes
# docs/RESULTS-gguf.md. llama.cpp: built outside the repo (LLAMA, its commit in ../COMMIT); an
# ik_llama.cpp build works too (LLAMA=/path/to/ik/build/bin TYPES="IQ2_K IQ2_KS" DOC=...).
set -e
MOEQ=${MOEQ:-bin/moeq}
LLAMA=${LLAMA:-/work/peers/llama.cpp/build/bin}
MODEL=${MODEL:-/work/big/q3-512}
TRAIN=${TRAIN:-/work/big/train.txt}
HELD=${HELD:-/work/big/heldout.txt}
OUT=${OUT:-build/results-gguf}
DOC=${DOC:-docs/RESULTS-gguf.md}
CAL_BYTES=${CAL_BYTES:-330000}
EVAL_BYTES=${EVAL_BYTES:-60000}
TYPES=${TYPES:-Q2_K Q3_K Q4_K IQ4_XS}
SCOPES=${SCOPES:-experts all}
CTX=512
TH=${TH:-2}
for b in llama-quantize llama-imatrix llama-perplexity; do
  [ -x "$LLAMA/$b" ] || { echo "results-gguf: $LLAMA/$b is missing (build llama.cpp outside the repo, set LLAMA)" >&2; exit 1; }
done
mkdir -p "$OUT"
# whole lines: the first N bytes of a text
head -c "$CAL_BYTES" "$TRAIN" | sed '$d' > "$OUT/cal.txt"
head -c "$EVAL_BYTES" "$HELD" | sed '$d' > "$OUT/eval.txt"
# the measured plans' validation text: the training text after the calibration text (whole lines)
tail -c +"$((CAL_BYTES + 1))" "$TRAIN" | head -c "${VAL_BYTES:-60000}" | sed '1d;$d' > "$OUT/val.txt"
[ -f "$OUT/bf16.gguf" ] || "$MOEQ" export gguf "$MODEL" --type BF16 -o "$OUT/bf16.gguf" -q
# (ik_llama.cpp's llama-imatrix aborts on the BF16 file on an AVX2 CPU, 8337e4cd: it reads an F32
# export of the same weights, which bf16 widens exactly)
IMODEL="$OUT/bf16.gguf"
if grep -q -a -- "--custom-q" "$LLAMA/llama-quantize"; then
  IMODEL="$OUT/f32.gguf"
  [ -f "$IMODEL" ] || "$MOEQ" export gguf "$MODEL" --type F32 -o "$IMODEL" -q
fi
[ -f "$OUT/imatrix.gguf" ] || "$LLAMA/llama-imatrix" -m "$IMODEL" -f "$OUT/cal.txt" -c $CTX -t $TH -o "$OUT/imatrix.gguf" > "$OUT/imatrix.log" 2>&1
[ -f "$OUT/calib.h5" ] || "$MOEQ" calibrate "$MODEL" --text "$OUT/cal.txt" --ctx $CTX --scope all -q -o "$OUT/calib.h5"
[ -f "$OUT/base.kld" ] || "$LLAMA/llama-perplexity" -m "$OUT/bf16.gguf" -f "$OUT/eval.txt" -c $CTX -t $TH \
  --kl-divergence-base "$OUT/base.kld" > "$OUT/base.log" 2>&1
# the bits per weight a GGUF spends on the tensors of a scope (experts: *_exps; all: every matrix
# but the routers), from its tensor table
bpw() { python3 tests/cli/gguf_tensors.py "$1" | python3 -c "
import json, sys
t = json.load(sys.stdin); t.pop('__file__'); sc = sys.argv[1]
sel = [v for n, v in t.items() if (n.endswith('_exps.weight') if sc == 'experts' else len(v['ne']) >= 2 and 'ffn_gate_inp' not in n)]
w = sum(__import__('math').prod(v['ne']) for v in sel); print('%.6f' % (8 * sum(v['span'] for v in sel) / w))" "$2"; }
llq() { case $1 in Q3_K) echo Q3_K_M ;; Q4_K) echo Q4_K_M ;; *) echo "$1" ;; esac; }
: > "$OUT/rows.txt"
for scope in $SCOPES; do
  for ty in $TYPES; do
    L="$OUT/llama.$ty.$scope.gguf"; M="$OUT/moeq.$ty.$scope.gguf"
    if [ ! -f "$L" ]; then
      if [ $scope = experts ]; then
        # llama-quantize applies --tensor-type only under a quantized file type (with BF16 as the
        # type it copies every tensor unchanged): the type itself, the experts named, the first
        # matching rule wins, every other matrix kept BF16 by the catch-all
        # (ik_llama.cpp spells the rules --custom-q, one comma-separated list, first match wins too)
        if grep -q -a -- "--custom-q" "$LLAMA/llama-quantize"; then
          lt=$(echo "$ty" | tr A-Z a-z)   # (its rules want ggml's lower-case type names)
          "$LLAMA/llama-quantize" --imatrix "$OUT/imatrix.gguf" --custom-q "ffn_gate_exps=$lt,ffn_up_exps=$lt,ffn_down_exps=$lt,.*=bf16" \
            "$OUT/bf16.gguf" "$L" "$ty" $TH > "$L.log" 2>&1
        else
          "$LLAMA/llama-quantize" --imatrix "$OUT/imatrix.gguf" --tensor-type "ffn_gate_exps=$ty" --tensor-type "ffn_up_exps=$ty" \
            --tensor-type "ffn_down_exps=$ty" --tensor-type ".*=BF16" "$OUT/bf16.gguf" "$L" "$ty" $TH > "$L.log" 2>&1
        fi
      else
        "$LLAMA/llama-quantize" --imatrix "$OUT/imatrix.gguf" "$OUT/bf16.gguf" "$L" "$(llq $ty)" $TH > "$L.log" 2>&1
      fi
    fi
    B=$(bpw "$L" $scope)
    python3 -c "import sys; sys.exit(float('$B') >= 16)" || { echo "results-gguf: $L spends $B bits per weight on the $scope: llama-quantize did not quantize them (see $L.log)" >&2; exit 1; }
    reuse=""
    [ -f "$OUT/costs.$scope.json" ] && reuse="--reuse-costs $OUT/costs.$scope.json"
    # (re-running the script keeps what is done: a plan made for this budget and its export)
    if [ ! -f "$M" ] || [ "$(python3 -c "import json; print(json.load(open('$OUT/plan.$ty.$scope.json'))['budget'])" 2>/dev/null)" != "$(python3 -c "print(float('$B'))")" ]; then
      # shellcheck disable=SC2086
      # measured costs (each tensor's KLD with each type, quantized as the export does: GPTQ with
      # its Hessian, at the best of DAMPS; on validation text from the training side: VAL_BYTES
      # after the calibration text)
      cost="--cost measured --hessian-quant gptq --damps ${DAMPS:-0.01,0.1,1} --text $OUT/val.txt --measure-tokens 4096 --ctx $CTX"
      # shellcheck disable=SC2086
      # CAND: the plan's candidate types (plan --types), default plan's own list
      cand=""
      [ -n "${CAND:-}" ] && cand="--types $CAND"
      # shellcheck disable=SC2086
      "$MOEQ" plan "$MODEL" --target gguf --budget "$B" --scope $scope --calib "$OUT/calib.h5" $cost $cand $reuse -o "$OUT/plan.$ty.$scope.json" -q
      [ -f "$OUT/costs.$scope.json" ] || cp "$OUT/plan.$ty.$scope.json" "$OUT/costs.$scope.json"
      "$MOEQ" export gguf "$MODEL" --plan "$OUT/plan.$ty.$scope.json" --method gptq --calib "$OUT/calib.h5" -o "$M" -q
      rm -f "$M.kld.log" "$M.eval.json"
    fi
    # whole model: llama-perplexity without its CPU weight repacking, which segfaults on these
    # files (Q2_K..Q6_K attention, embeddings and head; llama.cpp 80fb11ac, AVX-512 + AMX CPU)
    nr=""
    [ $scope = all ] && nr=--no-repack
    for f in "$L" "$M"; do
      grep -q "Mean    KLD" "$f.kld.log" 2>/dev/null || "$LLAMA/llama-perplexity" -m "$f" -f "$OUT/eval.txt" -c $CTX -t $TH $nr \
        --kl-divergence-base "$OUT/base.kld" --kl-divergence > "$f.kld.log" 2>&1
      [ -s "$f.eval.json" ] || "$MOEQ" eval "$f" --text "$OUT/eval.txt" --ctx $CTX --ref "$OUT/bf16.gguf" --json -q > "$f.eval.json"
    done
    echo "$ty $scope $L $M $(bpw "$M" $scope) $B" >> "$OUT/rows.txt"
    # experts only, the plan's counterpart: every expert matrix at the type itself, GPTQ (does the
    # gain or loss come from the plan's mix or from GPTQ on the type's grid?)
    if [ $scope = experts ]; then
      U="$OUT/uniform.$ty.experts.gguf"
      [ -f "$U" ] || "$MOEQ" export gguf "$MODEL" --type "$ty" --method gptq --calib "$OUT/calib.h5" -o "$U" -q
      grep -q "Mean    KLD" "$U.kld.log" 2>/dev/null || "$LLAMA/llama-perplexity" -m "$U" -f "$OUT/eval.txt" -c $CTX -t $TH \
        --kl-divergence-base "$OUT/base.kld" --kl-divergence > "$U.kld.log" 2>&1
      [ -s "$U.eval.json" ] || "$MOEQ" eval "$U" --text "$OUT/eval.txt" --ctx $CTX --ref "$OUT/bf16.gguf" --json -q > "$U.eval.json"
    fi
  done
done
python3 scripts/results_gguf_doc.py "$OUT" "$DOC" "$LLAMA" "$MODEL"
