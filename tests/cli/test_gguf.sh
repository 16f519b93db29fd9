#!/bin/sh
# GGUF in and out without a peer: the broken-file catalogue (tests/broken/gguf, each file's exit
# code and message through `moeq verify`), and exports of the fixtures read back by moeq itself:
# F32/BF16 exports give the checkpoint's logits exactly (KLD 0), Q8_0 and Q4_0 stay close, the
# re-export of a GGUF as F32 evaluates like the GGUF. The llama.cpp consumer: test_gguf_llama.sh.
. tests/cli/lib.sh
B=tests/broken/gguf
T=$FX/heldout.safetensors

MOEQ_BROKEN_OUT="$TMPD/regen" python3 tests/broken/make_broken_gguf.py
diff -r "$TMPD/regen" $B > /dev/null && echo "PASS broken GGUF catalogue matches its generator" || echo "FAIL broken GGUF catalogue matches its generator"

grep -v '^#' $B/expected.tsv | while IFS="$(printf '\t')" read -r f status code frags; do
  "$MOEQ" verify "$B/$f" -q > "$TMPD/out" 2> "$TMPD/err"; rc=$?
  ok=1
  [ "$rc" -eq "$code" ] || ok=0
  if [ -n "$frags" ]; then
    grep -qF -- "$B/$f" "$TMPD/err" || ok=0   # the message names the file
    echo "$frags" | tr '|' '\n' > "$TMPD/frags"
    while read -r fr; do grep -qF -- "$fr" "$TMPD/err" || ok=0; done < "$TMPD/frags"
  fi
  if [ $ok -eq 1 ]; then echo "PASS verify broken GGUF $f: exit $code $frags"
  else echo "FAIL verify broken GGUF $f: exit $rc (want $code), stderr: $(head -c 300 "$TMPD/err")"; fi
done
expect_exit "eval of a broken GGUF" 2 "G-9" -- "$MOEQ" eval $B/wrong_offset.gguf --tokens $T --ctx 16 --max-tokens 16
expect_exit "inspect of a GGUF with an unsupported type" 2 "Q8_1" -- "$MOEQ" inspect $B/unsupported_type.gguf

# field: json KEY of $TMPD/out
field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$TMPD/out" "$1"; }
kld_below() { python3 -c "import sys; sys.exit(not float(sys.argv[1]) < float(sys.argv[2]))" "$(field kld_mean)" "$1"; }
ev() {   # ev GGUF REF: eval with --ref into $TMPD/out
  "$MOEQ" eval "$1" --tokens $T --ctx 128 --max-tokens 256 --ref "$2" --json -q > "$TMPD/out"
}
# the same, float32 activations (MOEQ_KERNEL=float): for the checks that two forms of one model
# give the same logits up to the order of sums (bf16 or int8 activations round each form's own way)
evf() { MOEQ_KERNEL=float ev "$@"; }
models="tiny-mixtral tiny-qwen3moe tiny-olmoe"   # tiny-olmoe: grouped KV heads written as heads (MHA)
[ -n "${MOEQ_TEST_QUICK:-}" ] && models="tiny-mixtral"   # the ASan run: the permuted architecture only
for f in $models; do
  # BF16: the checkpoint's own bits, so the same kernels and logits; F32: the same values through
  # the F32 kernel (its sums may round differently in the last bit)
  "$MOEQ" export gguf $FX/$f -o "$TMPD/$f.BF16.gguf" --type BF16 -q
  ev "$TMPD/$f.BF16.gguf" $FX/$f
  [ "$(field kld_mean)" = "0.0" ] && echo "PASS export gguf $f BF16: the same logits as the checkpoint" \
    || echo "FAIL export gguf $f BF16: kld_mean $(field kld_mean)"
  "$MOEQ" export gguf $FX/$f -o "$TMPD/$f.F32.gguf" --type F32 -q
  ev "$TMPD/$f.F32.gguf" $FX/$f
  kld_below 1e-9 && echo "PASS export gguf $f F32: the checkpoint's logits (KLD $(field kld_mean))" \
    || echo "FAIL export gguf $f F32: kld_mean $(field kld_mean)"
  "$MOEQ" export gguf $FX/$f -o "$TMPD/$f.Q8_0.gguf" --type Q8_0 -q
  ev "$TMPD/$f.Q8_0.gguf" $FX/$f
  python3 -c "import sys; k=float(sys.argv[1]); sys.exit(not (0 < k < 1e-3))" "$(field kld_mean)" \
    && echo "PASS export gguf $f Q8_0: KLD $(field kld_mean) in (0, 1e-3)" || echo "FAIL export gguf $f Q8_0: KLD $(field kld_mean)"
done
# --scope all: the embeddings, attention and the LM head as Q8_0 too (the head of a GGUF block
# type is widened chunk by chunk: read as float it gave garbage logits or a segfault)
"$MOEQ" export gguf $FX/tiny-qwen3moe -o "$TMPD/all.Q8_0.gguf" --type Q8_0 --scope all -q
ev "$TMPD/all.Q8_0.gguf" $FX/tiny-qwen3moe
python3 -c "import sys; k=float(sys.argv[1]); sys.exit(not (0 < k < 5e-3 and float(sys.argv[2]) > 0.95))" "$(field kld_mean)" "$(field same_top1)" \
  && echo "PASS export gguf --scope all Q8_0 (quantized head): KLD $(field kld_mean) in (0, 5e-3)" \
  || echo "FAIL export gguf --scope all Q8_0 (quantized head): KLD $(field kld_mean), same top-1 $(field same_top1)"
# a GGUF re-exported as F32 is the same model (the dequantized weights)
"$MOEQ" export gguf $FX/tiny-qwen3moe -o "$TMPD/q4.gguf" --type Q4_0 --json -q > "$TMPD/out"
python3 -c "import json,sys; j=json.load(open(sys.argv[1])); sys.exit(not (j['types'].get('Q4_0') == 12 and 4.5 <= j['bits_per_weight'] < 32))" "$TMPD/out" \
  && echo "PASS export gguf --type Q4_0: 12 expert tensors Q4_0" || echo "FAIL export gguf --type Q4_0: $(cat "$TMPD/out")"
"$MOEQ" export gguf "$TMPD/q4.gguf" -o "$TMPD/q4f32.gguf" --type F32 -q
evf "$TMPD/q4f32.gguf" "$TMPD/q4.gguf"
kld_below 1e-9 && echo "PASS export gguf of a Q4_0 GGUF as F32: the same logits (up to the order of sums)" \
  || echo "FAIL export gguf of a Q4_0 GGUF as F32: kld_mean $(field kld_mean)"
"$MOEQ" export gguf "$TMPD/q4.gguf" -o "$TMPD/q4again.gguf" --type Q4_0 -q
cmp -s "$TMPD/q4.gguf" "$TMPD/q4again.gguf" && echo "PASS export gguf Q4_0 -> Q4_0: blocks copied, byte-identical file" \
  || echo "FAIL export gguf Q4_0 -> Q4_0 changed the file"
"$MOEQ" verify "$TMPD/q4.gguf" -q && echo "PASS verify of an exported GGUF" || echo "FAIL verify of an exported GGUF"
expect_exit "export of a model with a dense layer (qwen2moe fixture)" 2 "dense MLP layer" -- \
  "$MOEQ" export gguf $FX/tiny-qwen2moe -o "$TMPD/x.gguf"
if [ -z "${MOEQ_TEST_QUICK:-}" ]; then   # the quick run exports tiny-mixtral only
  "$MOEQ" inspect "$TMPD/tiny-olmoe.F32.gguf" --json -q > "$TMPD/out" 2>/dev/null
  [ "$(field heads) $(field kv_heads)" = "4 4" ] && echo "PASS export gguf of an OLMoE with 2 KV heads for 4: written with 4 (the same logits above)" \
    || echo "FAIL OLMoE KV heads in the GGUF: $(field heads) $(field kv_heads)"
fi
expect_exit "export of a DeepSeek without q_lora_rank and 3 layers (llama.cpp would not load it)" 2 "no q_lora_rank.*26- or 27-layer" -- \
  "$MOEQ" export gguf $FX/tiny-deepseekv2 -o "$TMPD/x.gguf"
"$MOEQ" export gguf $FX/tiny-deepseekv3 -o "$TMPD/d3.gguf" --type BF16 -q || echo "FAIL export gguf tiny-deepseekv3"
ev "$TMPD/d3.gguf" $FX/tiny-deepseekv3
[ "$(field kld_mean)" = "0.0" ] && echo "PASS deepseek2 GGUF read back (MLA, YaRN, sigmoid routing): the checkpoint's logits" \
  || echo "FAIL deepseek2 GGUF read back: kld_mean $(field kld_mean)"
python3 tests/cli/gguf_tensors.py "$TMPD/d3.gguf" | python3 -c "
import json, sys
t = json.load(sys.stdin)
want = {'blk.0.ffn_gate.weight': [128, 256], 'blk.0.attn_kv_b.weight': [32, 256], 'blk.1.attn_q_b.weight': [64, 192],
        'blk.1.attn_kv_a_mqa.weight': [128, 48], 'blk.1.exp_probs_b.bias': [16], 'blk.1.ffn_gate_exps.weight': [128, 64, 16],
        'blk.2.ffn_down_shexp.weight': [64, 128], 'output.weight': [128, 1024]}
sys.exit(any(t.get(k, {}).get('ne') != v for k, v in want.items()) or 'blk.1.ffn_gate.weight' in t)" \
  && echo "PASS deepseek2 export: MLA tensors (kv_b whole), a leading dense layer, router bias, shared expert" \
  || echo "FAIL deepseek2 export tensor table"
# gpt-oss: hub copies with a changed config.json (cfg SRC DST SED-EXPR)
cfg() { mkdir -p "$2"; for x in $FX/$1/*; do ln -sf "$PWD/$x" "$2/"; done; rm "$2/config.json"; sed "$3" $FX/$1/config.json > "$2/config.json"; }
cfg tiny-gptoss "$TMPD/go" 's/"truncate": false/"truncate": true/'
expect_exit "export of gpt-oss with YaRN truncate false is refused without --yarn-truncate" 2 \
  "tiny-gptoss: YaRN truncate false \(llama.cpp rounds the correction range, ggml_rope_yarn_corr_dims; pass --yarn-truncate to accept that\): llama.cpp's gpt-oss graph cannot express it" -- \
  "$MOEQ" export gguf $FX/tiny-gptoss -o "$TMPD/x.gguf"
cfg tiny-gptoss "$TMPD/go_lt" 's/"truncate": false/"truncate": true/; s/"full_attention",$/"sliding_attention",/; 0,/"sliding_attention"/s//"full_attention"/'
expect_exit "export of gpt-oss whose sliding layers are no period of llama.cpp's is refused" 2 \
  "layer_types: the sliding layers are not llama.cpp's pattern \(layer l slides when l % p < p - 1 for a period p: attention.sliding_window_pattern\): llama.cpp's gpt-oss graph cannot express it" -- \
  "$MOEQ" export gguf "$TMPD/go_lt" -o "$TMPD/x.gguf"
cfg tiny-gptoss "$TMPD/go_nb" 's/"truncate": false/"truncate": true/; s/"attention_bias": true/"attention_bias": false/'
expect_exit "export of gpt-oss without attention biases is refused" 2 \
  "attention_bias false \(the loader requires attn_output.bias\): llama.cpp's gpt-oss graph cannot express it" -- \
  "$MOEQ" export gguf "$TMPD/go_nb" -o "$TMPD/x.gguf"
# o200k's pre-tokenizer (gpt-oss's Split + ByteLevel without regex) is llama.cpp's gpt-4o
cfg tiny-gptoss "$TMPD/go_tok" 's/"truncate": false/"truncate": true/'
python3 - "$TMPD/go_tok/tokenizer.json" <<'PY'
import json, sys
p = sys.argv[1]
t = json.load(open(p))
r = ("[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"
     "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"
     "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")
t["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
    {"type": "Split", "pattern": {"Regex": r}, "behavior": "Isolated", "invert": False},
    {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
import os; os.remove(p); json.dump(t, open(p, "w"))
PY
"$MOEQ" export gguf "$TMPD/go_tok" -o "$TMPD/go_tok.gguf" --type F32 -q && python3 - "$TMPD/go_tok.gguf" <<'PY' \
  && echo "PASS gpt-oss's o200k pre-tokenizer regex is written as tokenizer.ggml.pre gpt-4o" || echo "FAIL o200k pre-tokenizer name"
import struct, sys
b = open(sys.argv[1], "rb").read()
k = b"tokenizer.ggml.pre"
i = b.index(struct.pack("<Q", len(k)) + k) + 8 + len(k)
t, n = struct.unpack_from("<iQ", b, i)
sys.exit(not (t == 8 and b[i + 12:i + 12 + n] == b"gpt-4o"))
PY
cfg tiny-gptoss "$TMPD/gf" 's/"truncate": false/"truncate": true/; s/"sliding_attention"/"full_attention"/g'
expect_exit "export of gpt-oss without a sliding layer is refused" 2 \
  "layer_types without a sliding_attention layer \(the loader asserts one for its iSWA cache\): llama.cpp's gpt-oss graph cannot express it" -- \
  "$MOEQ" export gguf "$TMPD/gf" -o "$TMPD/x.gguf"
if [ -z "${MOEQ_TEST_QUICK:-}" ]; then   # test_gguf_llama.sh runs tiny-gptoss under ASan
  # default types: bf16 experts stay BF16 (de-interleaved gate/up, transposed), read back as the
  # truncate-true checkpoint; re-export is byte-identical (MXFP4 experts: below)
  "$MOEQ" export gguf $FX/tiny-gptoss -o "$TMPD/go.gguf" --yarn-truncate --json -q > "$TMPD/out" || echo "FAIL export gguf tiny-gptoss"
  python3 -c "import json,sys; t=json.load(open(sys.argv[1]))['types']; sys.exit(t.get('BF16') != 30)" "$TMPD/out" || echo "FAIL gpt-oss default types: $(cat "$TMPD/out")"
  ev "$TMPD/go.gguf" "$TMPD/go"
  kld_below 1e-9 && echo "PASS gpt-oss GGUF read back (sinks, sliding layers, YaRN, SWIGLU_OAI, biases): the truncate-true checkpoint's logits (KLD $(field kld_mean))" \
    || echo "FAIL gpt-oss GGUF read back: kld_mean $(field kld_mean)"
  python3 tests/cli/gguf_tensors.py "$TMPD/go.gguf" | python3 -c "
import json, sys
t = json.load(sys.stdin)
want = {'blk.0.attn_sinks.weight': [4], 'blk.0.attn_output.bias': [128], 'blk.0.post_attention_norm.weight': [128],
        'blk.0.ffn_gate_inp.weight': [128, 8], 'blk.0.ffn_gate_inp.bias': [8], 'blk.3.ffn_gate_exps.weight': [128, 128, 8],
        'blk.3.ffn_up_exps.bias': [128, 8], 'blk.3.ffn_down_exps.weight': [128, 128, 8], 'blk.3.ffn_down_exps.bias': [128, 8],
        'blk.1.attn_k.weight': [128, 64], 'blk.1.attn_v.bias': [64], 'output.weight': [128, 1024]}
sys.exit(any(t.get(k, {}).get('ne') != v for k, v in want.items()) or 'blk.0.ffn_norm.weight' in t or
         t['blk.0.ffn_gate_exps.weight']['type'] != 30 or t['blk.0.ffn_gate_exps.bias']['type'] != 0)" \
    && echo "PASS gpt-oss export: sinks, post_attention_norm, router and expert biases, 3-D experts" \
    || echo "FAIL gpt-oss export tensor table"
  "$MOEQ" export gguf "$TMPD/go.gguf" -o "$TMPD/go2.gguf" -q && cmp -s "$TMPD/go.gguf" "$TMPD/go2.gguf" \
    && echo "PASS export gguf of a gpt-oss GGUF: byte-identical" || echo "FAIL re-export of a gpt-oss GGUF changed the file"
  # every layer sliding: llama.cpp's period 0, written as attention.sliding_window_pattern
  cfg tiny-gptoss "$TMPD/gs" 's/"truncate": false/"truncate": true/; s/"full_attention"/"sliding_attention"/g'
  "$MOEQ" export gguf "$TMPD/gs" -o "$TMPD/gs.gguf" --type F32 -q || echo "FAIL export gguf of an all-sliding gpt-oss"
  ev "$TMPD/gs.gguf" "$TMPD/gs"
  kld_below 1e-9 && echo "PASS gpt-oss with every layer sliding: sliding_window_pattern 0, read back as the checkpoint (KLD $(field kld_mean))" \
    || echo "FAIL gpt-oss with every layer sliding: kld_mean $(field kld_mean)"
fi
# gpt-oss MXFP4 experts (docs/export.md, "MXFP4"): copied into GGUF MXFP4 tensors by default, the
# bytes llama.cpp's converter writes (its repack re-done in gguf_mxfp4_check.py) and the same
# values, so moeq eval gives the source's perplexity; re-export is byte-identical
cfg tiny-gptoss-mxfp4 "$TMPD/gm" 's/"truncate": false/"truncate": true/'
"$MOEQ" export gguf $FX/tiny-gptoss-mxfp4 -o "$TMPD/gm.gguf" --yarn-truncate --json -q > "$TMPD/out" || echo "FAIL export gguf tiny-gptoss-mxfp4"
python3 -c "import json,sys; t=json.load(open(sys.argv[1]))['types']; sys.exit(t.get('MXFP4') != 12)" "$TMPD/out" \
  && echo "PASS gpt-oss MXFP4 export: 12 expert tensors MXFP4 by default" || echo "FAIL gpt-oss MXFP4 export types: $(cat "$TMPD/out")"
python3 tests/cli/gguf_mxfp4_check.py $FX/tiny-gptoss-mxfp4 "$TMPD/gm.gguf" > "$TMPD/mx.json" \
  && echo "PASS gpt-oss MXFP4 experts: llama.cpp converter's bytes and the hub's values exactly $(cat "$TMPD/mx.json")" \
  || echo "FAIL gpt-oss MXFP4 experts against the converter's repack: $(cat "$TMPD/mx.json")"
ppl() { MOEQ_KERNEL=float "$MOEQ" eval "$1" --tokens $T --ctx 128 --max-tokens 256 --json -q | python3 -c "import json,sys; print(json.load(sys.stdin)['ppl'])"; }
pg=$(ppl "$TMPD/gm.gguf"); ph=$(ppl "$TMPD/gm")
python3 -c "import sys; sys.exit(not abs(float(sys.argv[1]) / float(sys.argv[2]) - 1) < 1e-6)" "$pg" "$ph" \
  && echo "PASS moeq eval of the MXFP4 GGUF $pg equals the MXFP4 checkpoint's $ph (within 1e-6)" \
  || echo "FAIL moeq eval of the MXFP4 GGUF $pg, MXFP4 checkpoint $ph"
"$MOEQ" export gguf "$TMPD/gm.gguf" -o "$TMPD/gm2.gguf" -q && cmp -s "$TMPD/gm.gguf" "$TMPD/gm2.gguf" \
  && echo "PASS export gguf of an MXFP4 GGUF: byte-identical" || echo "FAIL re-export of an MXFP4 GGUF changed the file"
"$MOEQ" verify "$TMPD/gm.gguf" -q && echo "PASS verify of an MXFP4 GGUF" || echo "FAIL verify of an MXFP4 GGUF"
# --type MXFP4 from float (any architecture, rows multiples of 32): the exponent of least error per
# block; --tensor-type puts q/k/v in MXFP4 too
"$MOEQ" export gguf $FX/tiny-qwen3moe -o "$TMPD/mx.gguf" --type MXFP4 --tensor-type 'attn_(q|k|v)\.weight=MXFP4' --json -q > "$TMPD/out"
python3 -c "import json,sys; j=json.load(open(sys.argv[1])); sys.exit(not (j['types'].get('MXFP4') == 12 + 3 * 4 and 4.25 <= j['bits_per_weight'] < 32))" "$TMPD/out" \
  && echo "PASS export gguf --type MXFP4: experts and q/k/v MXFP4" || echo "FAIL export gguf --type MXFP4: $(cat "$TMPD/out")"
ev "$TMPD/mx.gguf" $FX/tiny-qwen3moe
python3 -c "import sys; k=float(sys.argv[1]); sys.exit(not (0 < k < 0.05))" "$(field kld_mean)" \
  && echo "PASS export gguf --type MXFP4 read back: KLD $(field kld_mean) to the checkpoint in (0, 0.05)" || echo "FAIL export gguf --type MXFP4: KLD $(field kld_mean)"
# an mxfp4 codec in a .moeq (FORMAT.md F-12): its blocks copied into the GGUF, the same logits
"$MOEQ" quantize $FX/tiny-qwen3moe --bits 4 --tensor-type 'experts=mxfp4' -o "$TMPD/mx.moeq" -q || echo "FAIL quantize --tensor-type experts=mxfp4"
"$MOEQ" export gguf "$TMPD/mx.moeq" -o "$TMPD/mxm.gguf" --json -q > "$TMPD/out"
python3 -c "import json,sys; sys.exit(json.load(open(sys.argv[1]))['types'].get('MXFP4') != 12)" "$TMPD/out" || echo "FAIL export of an mxfp4 .moeq: $(cat "$TMPD/out")"
ev "$TMPD/mxm.gguf" "$TMPD/mx.moeq"
[ "$(field kld_mean)" = "0.0" ] && echo "PASS export gguf of an mxfp4 .moeq: MXFP4 blocks copied, the .moeq's logits" \
  || echo "FAIL export gguf of an mxfp4 .moeq: kld_mean $(field kld_mean)"
rm -f "$TMPD/x.gguf"
expect_exit "export --type unknown" 1 "not a ggml type" -- "$MOEQ" export gguf $FX/tiny-olmoe -o "$TMPD/x.gguf" --type Q9_9
[ ! -e "$TMPD/x.gguf" ] && echo "PASS failed exports leave no file" || echo "FAIL failed exports leave no file"

# from a .moeq: codecs that map are copied (4-bit g32 sym -> Q4_0 exactly; 4-bit g64 asym -> Q4_1
# with m = -s*z, rounded to f16), others refused naming the mapping unless --requantize
for q in "4 32 --sym Q4_0 1e-10" "4 64 --asym Q4_1 1e-6" "8 32 --sym Q8_0 1e-10"; do
  set -- $q
  "$MOEQ" quantize $FX/tiny-qwen3moe --bits $1 --group $2 $3 -o "$TMPD/m.moeq" -q
  "$MOEQ" export gguf "$TMPD/m.moeq" -o "$TMPD/m.gguf" --json -q > "$TMPD/out"
  python3 -c "import json,sys; sys.exit(json.load(open(sys.argv[1]))['types'].get(sys.argv[2]) != 12)" "$TMPD/out" $4 \
    || echo "FAIL export gguf of a $1-bit g$2 .moeq: not 12 $4 tensors: $(cat "$TMPD/out")"
  # both through the reference kernels: the .moeq's int8-activation (VNNI) path rounds activations,
  # the GGUF's does not, and the claim here is about the weights
  MOEQ_KERNEL=ref "$MOEQ" eval "$TMPD/m.gguf" --tokens $T --ctx 128 --max-tokens 256 --ref "$TMPD/m.moeq" --json -q > "$TMPD/out"
  kld_below $5 && echo "PASS export gguf of a $1-bit g$2 ${3#--} .moeq: $4 copied, KLD $(field kld_mean) against the .moeq" \
    || echo "FAIL export gguf of a $1-bit g$2 .moeq as $4: KLD $(field kld_mean)"
done
"$MOEQ" quantize $FX/tiny-qwen3moe --bits 3 --group 32 --sym -o "$TMPD/m3.moeq" -q
expect_exit "export gguf of a 3-bit .moeq is refused" 2 "no exact ggml type.*--requantize" -- "$MOEQ" export gguf "$TMPD/m3.moeq" -o "$TMPD/x.gguf"
expect_exit "export gguf of a 3-bit .moeq as Q4_1 is refused, naming the nearest mapping" 2 "nearest codec that maps is 4-bit g32 sym \(Q4_0\)" -- \
  "$MOEQ" export gguf "$TMPD/m3.moeq" -o "$TMPD/x.gguf" --type Q4_1
"$MOEQ" export gguf "$TMPD/m3.moeq" -o "$TMPD/m3.gguf" --type Q4_0 --requantize -q && "$MOEQ" verify "$TMPD/m3.gguf" -q \
  && echo "PASS export gguf --requantize of a 3-bit .moeq" || echo "FAIL export gguf --requantize of a 3-bit .moeq"
# --text reads the tokenizer.json a moeq export embeds (tokenizer.huggingface.json)
"$MOEQ" eval "$TMPD/tiny-mixtral.BF16.gguf" --text $FX/heldout.txt --ctx 128 --max-tokens 256 --json -q > "$TMPD/out" 2> "$TMPD/err" \
  && "$MOEQ" eval $FX/tiny-mixtral --text $FX/heldout.txt --ctx 128 --max-tokens 256 --json -q > "$TMPD/out2" \
  && python3 -c "import json,sys; a, b = (json.load(open(f)) for f in sys.argv[1:]); sys.exit(a['ppl'] != b['ppl'])" "$TMPD/out" "$TMPD/out2" \
  && echo "PASS eval --text of a GGUF: its embedded tokenizer, the checkpoint's ppl" || echo "FAIL eval --text of a GGUF: $(head -c 300 "$TMPD/err")"
# --tensor-type by GGUF name; a 256-block type on 128-wide rows falls back as llama-quantize does
"$MOEQ" export gguf $FX/tiny-qwen3moe -o "$TMPD/tt.gguf" --type Q8_0 --tensor-type 'ffn_down_exps=Q4_0' --tensor-type '^blk\.0\.attn_q\.=Q4_K' --json -q > "$TMPD/out"
python3 - "$TMPD/out" <<'PY' && echo "PASS export gguf --tensor-type and the Q4_K -> Q5_0 fallback" || echo "FAIL export gguf --tensor-type: $(cat "$TMPD/out")"
import json, sys
j = json.load(open(sys.argv[1]))
fb = j["fallbacks"]
ok = j["types"].get("Q4_0") == 4 and j["types"].get("Q8_0") == 8 and len(fb) == 1
ok = ok and fb[0]["tensor"] == "blk.0.attn_q.weight" and fb[0]["fallback"] in ("Q5_0", "F16")
sys.exit(not ok)
PY
# the ternary types on 128-wide experts: TQ1_0/TQ2_0 -> Q4_0 (llama-quantize's tensor_type_fallback)
"$MOEQ" export gguf $FX/tiny-qwen3moe -o "$TMPD/tq.gguf" --type TQ1_0 --json -q > "$TMPD/out" && "$MOEQ" verify "$TMPD/tq.gguf" -q
python3 - "$TMPD/out" <<'PY' && echo "PASS export gguf --type TQ1_0 on 128-wide rows falls back to Q4_0" || echo "FAIL export gguf --type TQ1_0 fallback: $(head -c 400 "$TMPD/out")"
import json, sys
j = json.load(open(sys.argv[1]))
fb = [f for f in j["fallbacks"] if f.get("type") == "TQ1_0"]
sys.exit(not (fb and all(f["fallback"] == "Q4_0" for f in fb) and "TQ1_0" not in j["types"] and j["types"].get("Q4_0")))
PY
# without tokenizer.huggingface.json (as in llama.cpp's own files) the tokenizer is rebuilt from
# tokenizer.ggml.*: the same ids as the checkpoint's tokenizer.json on the held-out and torture texts
python3 tests/cli/gguf_drop_key.py "$TMPD/tiny-mixtral.F32.gguf" "$TMPD/nohf.gguf" tokenizer.huggingface.json
for txt in $FX/heldout.txt $FX/tokenizers/torture.txt; do
  "$MOEQ" tokenize $FX/tiny-mixtral --text $txt -o "$TMPD/ids_ref.safetensors" -q
  "$MOEQ" tokenize "$TMPD/nohf.gguf" --text $txt -o "$TMPD/ids_gguf.safetensors" -q \
    && cmp -s "$TMPD/ids_ref.safetensors" "$TMPD/ids_gguf.safetensors" \
    && echo "PASS tokenizer rebuilt from tokenizer.ggml.*: the checkpoint's ids on $(basename $txt)" \
    || echo "FAIL tokenizer rebuilt from tokenizer.ggml.* differs on $(basename $txt)"
done
