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
ev() {   # ev GGUF REF: eval with --ref into $TMPD/out
  "$MOEQ" eval "$1" --tokens $T --ctx 128 --max-tokens 256 --ref "$2" --json -q > "$TMPD/out"
}
for f in tiny-mixtral tiny-qwen3moe tiny-olmoe; do
  for ty in F32 BF16; do
    "$MOEQ" export gguf $FX/$f -o "$TMPD/$f.$ty.gguf" --type $ty -q
    ev "$TMPD/$f.$ty.gguf" $FX/$f
    [ "$(field kld_mean)" = "0.0" ] && echo "PASS export gguf $f $ty: the same logits as the checkpoint" \
      || echo "FAIL export gguf $f $ty: kld_mean $(field kld_mean)"
  done
  "$MOEQ" export gguf $FX/$f -o "$TMPD/$f.Q8_0.gguf" --type Q8_0 -q
  ev "$TMPD/$f.Q8_0.gguf" $FX/$f
  python3 -c "import sys; k=float(sys.argv[1]); sys.exit(not (0 < k < 1e-3))" "$(field kld_mean)" \
    && echo "PASS export gguf $f Q8_0: KLD $(field kld_mean) in (0, 1e-3)" || echo "FAIL export gguf $f Q8_0: KLD $(field kld_mean)"
done
# a GGUF re-exported as F32 is the same model (the dequantized weights)
"$MOEQ" export gguf $FX/tiny-qwen3moe -o "$TMPD/q4.gguf" --type Q4_0 --json -q > "$TMPD/out"
python3 -c "import json,sys; j=json.load(open(sys.argv[1])); sys.exit(not (j['types'].get('Q4_0') == 12 and 4.5 <= j['bits_per_weight'] < 32))" "$TMPD/out" \
  && echo "PASS export gguf --type Q4_0: 12 expert tensors Q4_0" || echo "FAIL export gguf --type Q4_0: $(cat "$TMPD/out")"
"$MOEQ" export gguf "$TMPD/q4.gguf" -o "$TMPD/q4f32.gguf" --type F32 -q
ev "$TMPD/q4f32.gguf" "$TMPD/q4.gguf"
[ "$(field kld_mean)" = "0.0" ] && echo "PASS export gguf of a Q4_0 GGUF as F32: the same logits" \
  || echo "FAIL export gguf of a Q4_0 GGUF as F32: kld_mean $(field kld_mean)"
"$MOEQ" export gguf "$TMPD/q4.gguf" -o "$TMPD/q4again.gguf" --type Q4_0 -q
cmp -s "$TMPD/q4.gguf" "$TMPD/q4again.gguf" && echo "PASS export gguf Q4_0 -> Q4_0: blocks copied, byte-identical file" \
  || echo "FAIL export gguf Q4_0 -> Q4_0 changed the file"
"$MOEQ" verify "$TMPD/q4.gguf" -q && echo "PASS verify of an exported GGUF" || echo "FAIL verify of an exported GGUF"
expect_exit "export of a model with a dense layer (qwen2moe fixture)" 2 "dense MLP layer" -- \
  "$MOEQ" export gguf $FX/tiny-qwen2moe -o "$TMPD/x.gguf"
expect_exit "export --type unknown" 1 "not a ggml type" -- "$MOEQ" export gguf $FX/tiny-olmoe -o "$TMPD/x.gguf" --type Q9_9
[ ! -e "$TMPD/x.gguf" ] && echo "PASS failed exports leave no file" || echo "FAIL failed exports leave no file"
