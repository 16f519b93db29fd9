#!/bin/sh
# IQ2_KS (ik_llama.cpp's type 145: an f16 scale at the start of each row) through moeq's GGUF
# path: export of the routed experts, verify, eval of the file by moeq itself (the row meta in
# every chunk of the matmul), the blocks copied unchanged when a GGUF is re-exported (expert
# rows sliced with their meta), and llama-quantize's fallback (IQ4_NL) for rows 256 does not
# divide. Mainline llama.cpp cannot load the type; with MOEQ_IK_BIN set (ik_llama.cpp's build/bin,
# holding llama-quantize and llama-perplexity; an absolute path) ik's F32 of the export must be moeq's bit for bit
# and its perplexity run must finish with a finite estimate.
. tests/cli/lib.sh
T=$FX/heldout.safetensors
M=$FX/tiny-qwen3moe-256
field() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$TMPD/out" "$1"; }

"$MOEQ" export gguf $M -o "$TMPD/a.gguf" --type IQ2_KS --json -q > "$TMPD/out"
[ "$(field "d['types'].get('IQ2_KS')")" = "6" ] && echo "PASS export gguf IQ2_KS: the 6 expert tensors" \
  || echo "FAIL export gguf IQ2_KS: types $(field "d['types']")"
expect_exit "verify IQ2_KS GGUF" 0 "" -- "$MOEQ" verify "$TMPD/a.gguf" -q
"$MOEQ" eval "$TMPD/a.gguf" --tokens $T --ctx 128 --max-tokens 256 --ref $M --json -q > "$TMPD/out"
python3 -c "import sys; k = float(sys.argv[1]); sys.exit(not 0 < k < 0.3)" "$(field "d['kld_mean']")" \
  && echo "PASS eval IQ2_KS GGUF: KLD $(field "d['kld_mean']") in (0, 0.3)" \
  || echo "FAIL eval IQ2_KS GGUF: KLD $(field "d['kld_mean']")"

"$MOEQ" export gguf "$TMPD/a.gguf" -o "$TMPD/b.gguf" -q
python3 - "$TMPD/a.gguf" "$TMPD/b.gguf" <<'PY' && echo "PASS re-export of an IQ2_KS GGUF copies its blocks" || echo "FAIL re-export of an IQ2_KS GGUF copies its blocks"
import sys
sys.path.insert(0, "tests/fixtures/ggml")
import gguf_min as G
a, b = G.read(sys.argv[1]), G.read(sys.argv[2])
ks = [k for k in a if a[k][1] == 145]
sys.exit(not (len(ks) == 6 and all(b.get(k) == a[k] for k in ks)))
PY

"$MOEQ" export gguf $FX/tiny-qwen3moe -o "$TMPD/c.gguf" --type IQ2_KS --json -q > "$TMPD/out"
[ "$(field "sorted(set(f['fallback'] for f in d['fallbacks'] if f['type'] == 'IQ2_KS'))")" = "['IQ4_NL']" ] \
  && echo "PASS export gguf IQ2_KS on rows of 128 and 96: IQ4_NL fallbacks" \
  || echo "FAIL export gguf IQ2_KS fallbacks: $(field "d['fallbacks']")"

if [ -n "${MOEQ_IK_BIN:-}" ] && [ -x "$MOEQ_IK_BIN/llama-quantize" ]; then
  (cd "$TMPD" && "$MOEQ_IK_BIN/llama-quantize" --pure --allow-requantize a.gguf ik.gguf F32 1 > ikq 2>&1)
  "$MOEQ" export gguf "$TMPD/a.gguf" -o "$TMPD/mq.gguf" --type F32 -q
  python3 - "$TMPD/a.gguf" "$TMPD/ik.gguf" "$TMPD/mq.gguf" <<'PY' && echo "PASS ik_llama.cpp's F32 of moeq's IQ2_KS experts is moeq's" || echo "FAIL ik_llama.cpp's F32 of moeq's IQ2_KS experts is moeq's"
import sys
sys.path.insert(0, "tests/fixtures/ggml")
import gguf_min as G
a, ik, mq = (G.read(p) for p in sys.argv[1:4])
ks = [k for k in a if a[k][1] == 145]
sys.exit(not (len(ks) == 6 and all(ik[k][1] == 0 and ik[k] == mq[k] for k in ks)))
PY
  head -c 3000 $FX/heldout.txt > "$TMPD/held.txt"
  # in $TMPD: ik's tools leave a llama.log in the working directory
  (cd "$TMPD" && "$MOEQ_IK_BIN/llama-perplexity" -m a.gguf -f held.txt -c 128 -t 2 > ikp 2>&1)
  ppl=$(sed -n 's/.*Final estimate: PPL over .* = \([0-9.]*\).*/\1/p' "$TMPD/ikp")
  python3 -c "import sys, math; sys.exit(not math.isfinite(float(sys.argv[1])))" "${ppl:-nan}" \
    && echo "PASS ik_llama.cpp runs moeq's IQ2_KS GGUF: PPL $ppl" || echo "FAIL ik_llama.cpp perplexity: $(tail -3 "$TMPD/ikp")"
fi
