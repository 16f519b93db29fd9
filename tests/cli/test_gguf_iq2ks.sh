#!/bin/sh
# IQ2_KS (ik_llama.cpp's type 145: an f16 scale at the start of each row) through moeq's GGUF
# path: export of the routed experts, verify, eval of the file by moeq itself (the row meta in
# every chunk of the matmul), the blocks copied unchanged when a GGUF is re-exported (expert
# rows sliced with their meta), and llama-quantize's fallback (IQ4_NL) for rows 256 does not
# divide. Mainline llama.cpp cannot load the type, so no consumer test here.
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
