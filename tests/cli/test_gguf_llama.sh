#!/bin/sh
# moeq's GGUF exports in a real consumer: llama.cpp (node-llama-cpp 3.21.1's prebuilt CPU build,
# tag v0.4.0, installed by scripts/node_deps.sh) loads each file and computes perplexity on the
# held-out ids through controlledEvaluate (tests/node/ppl.mjs, moeq eval's windows);
# @huggingface/gguf 0.4.6 parses every header as an independent reader.
# - F32, BF16, F16, Q8_0 exports: llama.cpp's perplexity equals moeq eval of the same GGUF within 0.3%
#   (deepseek2 included: tiny-deepseekv3, MLA, dense first layer, sigmoid routing, YaRN; gpt-oss:
#   tiny-gptoss and tiny-gptoss-mxfp4 with --yarn-truncate, sinks, sliding layers, SWIGLU_OAI, biases).
# - MXFP4: tiny-gptoss-mxfp4's experts copied as MXFP4 (the default) and tiny-qwen3moe --type MXFP4:
#   llama.cpp's perplexity of the file itself equals moeq eval of it within 0.3%.
# - gpt-oss F32 exports: moeq eval of the GGUF equals moeq eval of the hub directory with rope
#   truncate true (what --yarn-truncate writes) within 1e-4; the gap to the truncate-false
#   checkpoint itself is reported.
# - Q4_0, Q4_1 (and Q4_K, IQ4_XS by GPTQ on tiny-qwen3moe-256, and a plan --target gguf mix of
#   Q3_K/Q4_K/Q6_K): X.gguf exported, then `moeq export gguf X.gguf --type F32` (the dequantized weights):
#   llama.cpp's perplexity of that equals moeq eval X.gguf within 0.3%; llama.cpp's own perplexity
#   of X.gguf (activations quantized to 8 bits in its matmuls) is reported beside it.
# - TQ2_0, TQ1_0 (ternary, GPTQ on tiny-qwen3moe-256): as the 4-bit ones through the F32 copy; and
#   llama.cpp's own perplexity of the TQ1_0 file equals that of the TQ2_0 file exactly (the same
#   ternary values in the two packings, and its integer dots are exact), within 1% of moeq eval
#   (llama.cpp rounds the activations to 8 bits in these dots).
# Fails (never skips) when npm cannot install the consumer. MOEQ_TEST_QUICK (the ASan run): one model.
. tests/cli/lib.sh
# moeq under float32 activations throughout (MOEQ_KERNEL=float): the checks compare its figures
# with llama.cpp's to 0.3%, and llama.cpp's own roundings (its f16 KV cache) already take part of
# that. With the bf16 set's Hessians the GPTQ plan file came out another way, on which moeq and
# llama.cpp running its F32 dequantization differed by 0.5% (moeq itself: the packed file and
# the F32 one to 1e-7, ref kernels and float alike).
export MOEQ_KERNEL=float
T=$FX/heldout.safetensors
CTX=128
N=256
if ! sh scripts/node_deps.sh build/node 2> "$TMPD/npm.err"; then
  echo "FAIL llama.cpp consumer: node-llama-cpp could not be installed with npm: $(tr '\n' ' ' < "$TMPD/npm.err" | head -c 400)"
  exit 0
fi
# model:exact types:lower types (the 4-bit ones also through the dequantized F32 copy); a few
# seconds of llama.cpp per file, so each type is covered once: Mixtral for the q/k permutation,
# OLMoE for grouped KV heads written as heads
plan="tiny-qwen3moe:F32,BF16,F16,Q8_0:Q4_0 tiny-mixtral:F32,Q8_0:Q4_1 tiny-olmoe:F32,Q8_0:"
kq="Q4_K IQ4_XS TQ2_0 TQ1_0"   # 256-block types on tiny-qwen3moe-256 (rows multiples of 256), GPTQ on their grids
if [ -n "${MOEQ_TEST_QUICK:-}" ]; then plan="tiny-qwen3moe:F32,Q8_0:Q4_0"; kq="Q4_K"; fi
K=tiny-qwen3moe-256
"$MOEQ" calibrate $FX/$K --tokens $T --ctx 128 --max-tokens 512 -o "$TMPD/k.h5" -q || echo "FAIL calibrate $K"
files=""
for p in $plan; do
  f=${p%%:*}; r=${p#*:}; exact=$(echo "${r%%:*}" | tr , ' '); lower=$(echo "${r#*:}" | tr , ' ')
  for ty in $exact $lower; do
    "$MOEQ" export gguf $FX/$f -o "$TMPD/$f.$ty.gguf" --type $ty -q || echo "FAIL export gguf $f --type $ty"
    files="$files $TMPD/$f.$ty.gguf"
  done
  for ty in $lower; do
    "$MOEQ" export gguf "$TMPD/$f.$ty.gguf" -o "$TMPD/$f.$ty.F32.gguf" --type F32 -q || echo "FAIL export gguf $f.$ty.gguf --type F32"
    files="$files $TMPD/$f.$ty.F32.gguf"
  done
done
# a mixed-type export planned by moeq plan --target gguf (docs/plan.md), GPTQ on each type's grid
"$MOEQ" plan $FX/$K --target gguf --budget 4.2 --types Q3_K,Q4_K,Q6_K --calib "$TMPD/k.h5" -o "$TMPD/plan.json" -q || echo "FAIL plan --target gguf"
"$MOEQ" export gguf $FX/$K -o "$TMPD/$K.plan.gguf" --plan "$TMPD/plan.json" --method gptq --calib "$TMPD/k.h5" -q || echo "FAIL export gguf --plan"
"$MOEQ" export gguf "$TMPD/$K.plan.gguf" -o "$TMPD/$K.plan.F32.gguf" --type F32 -q || echo "FAIL export gguf $K.plan.gguf --type F32"
files="$files $TMPD/$K.plan.gguf $TMPD/$K.plan.F32.gguf"
# deepseek2 (MLA, a leading dense layer, sigmoid group routing with bias, YaRN): exact types, and
# Q4_0 through its F32 copy
D=tiny-deepseekv3
dtypes="F32 Q8_0"; [ -n "${MOEQ_TEST_QUICK:-}" ] && dtypes=F32
for ty in $dtypes Q4_0; do
  "$MOEQ" export gguf $FX/$D -o "$TMPD/$D.$ty.gguf" --type $ty -q || echo "FAIL export gguf $D --type $ty"
  files="$files $TMPD/$D.$ty.gguf"
done
"$MOEQ" export gguf "$TMPD/$D.Q4_0.gguf" -o "$TMPD/$D.Q4_0.F32.gguf" --type F32 -q || echo "FAIL export gguf $D.Q4_0.gguf --type F32"
files="$files $TMPD/$D.Q4_0.F32.gguf"
# gpt-oss (attention sinks, sliding/full layers, YaRN, clamped SwiGLU with biases, interleaved
# gate_up split): bf16 and MXFP4 experts (the latter dequantized); hub copies with truncate true
# are the models the GGUFs compute
gpt="tiny-gptoss:F32,Q8_0 tiny-gptoss-mxfp4:F32,Q8_0"; [ -n "${MOEQ_TEST_QUICK:-}" ] && gpt="tiny-gptoss:F32"
if [ -z "${MOEQ_TEST_QUICK:-}" ]; then   # every layer sliding: attention.sliding_window_pattern 0
  mkdir -p "$TMPD/gs"; for x in $FX/tiny-gptoss/*; do ln -s "$PWD/$x" "$TMPD/gs/"; done; rm "$TMPD/gs/config.json"
  sed 's/"truncate": false/"truncate": true/; s/"full_attention"/"sliding_attention"/g' $FX/tiny-gptoss/config.json > "$TMPD/gs/config.json"
  "$MOEQ" export gguf "$TMPD/gs" -o "$TMPD/gptoss-all-sliding.gguf" --type F32 -q || echo "FAIL export gguf of an all-sliding gpt-oss"
  files="$files $TMPD/gptoss-all-sliding.gguf"
fi
for p in $gpt; do
  f=${p%%:*}
  mkdir -p "$TMPD/$f.trunc"
  for x in $FX/$f/*; do ln -s "$PWD/$x" "$TMPD/$f.trunc/"; done
  rm "$TMPD/$f.trunc/config.json"
  sed 's/"truncate": false/"truncate": true/' $FX/$f/config.json > "$TMPD/$f.trunc/config.json"
  for ty in $(echo "${p#*:}" | tr , ' '); do
    "$MOEQ" export gguf $FX/$f -o "$TMPD/$f.$ty.gguf" --type $ty --yarn-truncate -q || echo "FAIL export gguf $f --type $ty --yarn-truncate"
    files="$files $TMPD/$f.$ty.gguf"
  done
done
# MXFP4: gpt-oss's MXFP4 experts copied as they are (the default export), and --type MXFP4 of a
# bf16 model (every layer's experts); llama.cpp runs both files themselves (its MXFP4 dot takes
# 8-bit activations: 0.04% and 0.1% from moeq's float32 ones on these)
"$MOEQ" export gguf $FX/tiny-gptoss-mxfp4 -o "$TMPD/gptoss-mxfp4.gguf" --yarn-truncate -q || echo "FAIL export gguf tiny-gptoss-mxfp4 (MXFP4 experts)"
files="$files $TMPD/gptoss-mxfp4.gguf"
mxq=""; [ -z "${MOEQ_TEST_QUICK:-}" ] && mxq="$TMPD/tiny-qwen3moe.MXFP4.gguf"
if [ -n "$mxq" ]; then
  "$MOEQ" export gguf $FX/tiny-qwen3moe -o "$mxq" --type MXFP4 -q || echo "FAIL export gguf tiny-qwen3moe --type MXFP4"
  files="$files $mxq"
fi
for ty in $kq; do
  "$MOEQ" export gguf $FX/$K -o "$TMPD/$K.$ty.gguf" --type $ty --method gptq --calib "$TMPD/k.h5" -q || echo "FAIL export gguf $K --type $ty --method gptq"
  "$MOEQ" export gguf "$TMPD/$K.$ty.gguf" -o "$TMPD/$K.$ty.F32.gguf" --type F32 -q || echo "FAIL export gguf $K.$ty.gguf --type F32"
  files="$files $TMPD/$K.$ty.gguf $TMPD/$K.$ty.F32.gguf"
done
# shellcheck disable=SC2086
if ! (cd build/node && node ppl.mjs "$OLDPWD/$T" $CTX $N $files) > "$TMPD/llama.jsonl" 2> "$TMPD/llama.err"; then
  echo "FAIL llama.cpp perplexity run: $(grep -v '^ *at ' "$TMPD/llama.err" | head -c 600)"
  exit 0
fi
moeq_ppl() { "$MOEQ" eval "$1" --tokens $T --ctx $CTX --max-tokens $N --json -q | python3 -c "import json,sys; print(json.load(sys.stdin)['ppl'])"; }
llama_field() { python3 -c "
import json,sys
for l in open(sys.argv[1]):
    j = json.loads(l)
    if j['path'] == sys.argv[2]: print(eval(sys.argv[3], {}, {'j': j}))" "$TMPD/llama.jsonl" "$1" "$2"; }
close() { python3 -c "import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); sys.exit(not abs(a / b - 1) < 0.003)" "$1" "$2"; }
check_lower() {   # check_lower MODEL TYPE
  lf=$(llama_field "$TMPD/$1.$2.F32.gguf" "j['ppl']"); lq=$(llama_field "$TMPD/$1.$2.gguf" "j['ppl']"); mp=$(moeq_ppl "$TMPD/$1.$2.gguf")
  close "$lf" "$mp" && echo "PASS llama.cpp $1 $2 dequantized to F32: ppl $lf, moeq eval of the $2 file $mp (within 0.3%); llama.cpp on the $2 file itself: $lq" \
    || echo "FAIL llama.cpp $1 $2 dequantized: ppl $lf, moeq eval of the $2 file $mp; llama.cpp on $2: $lq"
}
for ty in $kq plan; do check_lower $K $ty; done
case " $kq " in *" TQ1_0 "*)
  l1=$(llama_field "$TMPD/$K.TQ1_0.gguf" "j['ppl']"); l2=$(llama_field "$TMPD/$K.TQ2_0.gguf" "j['ppl']")
  t1=$(llama_field "$TMPD/$K.TQ1_0.gguf" "j['header']['gate_exps_dtype']"); t2=$(llama_field "$TMPD/$K.TQ2_0.gguf" "j['header']['gate_exps_dtype']")
  mp=$(moeq_ppl "$TMPD/$K.TQ1_0.gguf")
  [ "$t1" = 34 ] && [ "$t2" = 35 ] && [ "$l1" = "$l2" ] && python3 -c "import sys; sys.exit(not abs(float(sys.argv[1]) / float(sys.argv[2]) - 1) < 0.01)" "$l1" "$mp" \
    && echo "PASS llama.cpp runs TQ1_0 and TQ2_0 experts: ppl $l1 for both packings, moeq eval $mp (within 1%, 8-bit activations in llama.cpp's dots)" \
    || echo "FAIL llama.cpp TQ1_0 ($t1) ppl $l1, TQ2_0 ($t2) ppl $l2, moeq eval $mp"
  ;;
esac
for g in "$TMPD/gptoss-mxfp4.gguf" $mxq; do
  lp=$(llama_field "$g" "j['ppl']"); mp=$(moeq_ppl "$g"); dt=$(llama_field "$g" "j['header']['gate_exps_dtype']")
  [ "$dt" = 39 ] && close "$lp" "$mp" && echo "PASS llama.cpp runs MXFP4 experts ($(basename "$g")): ppl $lp, moeq eval $mp (within 0.3%: $(python3 -c "import sys; print('%.2g' % abs(float(sys.argv[1]) / float(sys.argv[2]) - 1))" "$lp" "$mp"))" \
    || echo "FAIL llama.cpp MXFP4 $(basename "$g") (expert type $dt): ppl $lp, moeq eval $mp"
done
for ty in $dtypes; do
  g="$TMPD/$D.$ty.gguf"; lp=$(llama_field "$g" "j['ppl']"); mp=$(moeq_ppl "$g"); arch=$(llama_field "$g" "j['header']['architecture']")
  [ "$arch" = deepseek2 ] && close "$lp" "$mp" && echo "PASS llama.cpp loads $D $ty as deepseek2: ppl $lp, moeq eval $mp (within 0.3%)" \
    || echo "FAIL llama.cpp $D $ty ($arch): ppl $lp, moeq eval $mp"
done
check_lower $D Q4_0
if [ -z "${MOEQ_TEST_QUICK:-}" ]; then
  g="$TMPD/gptoss-all-sliding.gguf"; lp=$(llama_field "$g" "j['ppl']"); mp=$(moeq_ppl "$g")
  close "$lp" "$mp" && echo "PASS llama.cpp loads a gpt-oss with every layer sliding (pattern 0): ppl $lp, moeq eval $mp (within 0.3%)" \
    || echo "FAIL llama.cpp gpt-oss with every layer sliding: ppl $lp, moeq eval $mp"
fi
rel() { python3 -c "import sys; print('%.2g' % abs(float(sys.argv[1]) / float(sys.argv[2]) - 1))" "$1" "$2"; }
for p in $gpt; do
  f=${p%%:*}
  for ty in $(echo "${p#*:}" | tr , ' '); do
    g="$TMPD/$f.$ty.gguf"; lp=$(llama_field "$g" "j['ppl']"); mp=$(moeq_ppl "$g"); arch=$(llama_field "$g" "j['header']['architecture']")
    [ "$arch" = gpt-oss ] && close "$lp" "$mp" && echo "PASS llama.cpp loads $f $ty as gpt-oss: ppl $lp, moeq eval $mp (within 0.3%: $(rel "$lp" "$mp"))" \
      || echo "FAIL llama.cpp $f $ty ($arch): ppl $lp, moeq eval $mp"
    [ $ty = F32 ] || continue
    ht=$(moeq_ppl "$TMPD/$f.trunc"); h=$(moeq_ppl $FX/$f)
    python3 -c "import sys; sys.exit(not abs(float(sys.argv[1]) / float(sys.argv[2]) - 1) < 1e-4)" "$mp" "$ht" \
      && echo "PASS moeq eval of $f F32 GGUF $mp equals the hub directory with truncate true $ht (within 1e-4: $(rel "$mp" "$ht")); the truncate-false checkpoint: $h ($(rel "$mp" "$h"))" \
      || echo "FAIL moeq eval of $f F32 GGUF $mp, hub directory with truncate true $ht"
  done
done
for p in $plan; do
  f=${p%%:*}; r=${p#*:}; exact=$(echo "${r%%:*}" | tr , ' '); lower=$(echo "${r#*:}" | tr , ' ')
  H=$(python3 -c "import json; print(json.load(open('$FX/$f/config.json'))['hidden_size'])")
  for ty in $exact; do
    g="$TMPD/$f.$ty.gguf"; lp=$(llama_field "$g" "j['ppl']"); mp=$(moeq_ppl "$g")
    close "$lp" "$mp" && echo "PASS llama.cpp loads $f $ty: ppl $lp, moeq eval $mp (within 0.3%)" \
      || echo "FAIL llama.cpp $f $ty: ppl $lp, moeq eval $mp (more than 0.3% apart)"
    hdr=$(llama_field "$g" "(j['header']['version'], j['header']['block_count_type'], j['header']['eps_type'], j['header']['token_type_subtype'], j['header']['n_tokens'], j['header']['gate_exps_shape'][0] == $H)")
    [ "$hdr" = "(3, 4, 6, 5, 1024, True)" ] && echo "PASS @huggingface/gguf reads $f $ty: v3, UINT32 counts, FLOAT32 eps, INT32 token types, expert ne[0] = hidden" \
      || echo "FAIL @huggingface/gguf header of $f $ty: $hdr"
  done
  for ty in $lower; do check_lower $f $ty; done
done
