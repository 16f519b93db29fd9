#!/bin/sh
# moeq quantize --method gptq --sequential: bad inputs, bit-identical across thread counts, the
# same file from --text as from the same ids through --tokens, and held-out KLD against the bf16
# model no worse than non-sequential GPTQ at 3 bits g64 on tiny-mixtral (calibrated on held-out
# tokens 8192..12287, evaluated on 0..8191; measured in docs/quantize.md).
. tests/cli/lib.sh
T=$FX/heldout.safetensors
M=$FX/tiny-mixtral
python3 - "$T" "$TMPD" <<'PY' || echo "FAIL gptq sequential: token files"
import json, struct, sys
b = open(sys.argv[1], 'rb').read(); n = struct.unpack('<Q', b[:8])[0]
t = json.loads(b[8:8 + n])['tokens']; s, e = t['data_offsets']; data = b[8 + n + s:8 + n + e]
def write(path, sub):
    h = json.dumps({"tokens": {"dtype": "I32", "shape": [len(sub) // 4], "data_offsets": [0, len(sub)]}}).encode()
    h += b' ' * ((8 - len(h) % 8) % 8)
    open(path, 'wb').write(struct.pack('<Q', len(h)) + h + sub)
write(sys.argv[2] + '/calib.safetensors', data[8192 * 4:12288 * 4])
write(sys.argv[2] + '/few.safetensors', data[:100 * 4])
PY
Q="$MOEQ quantize $M --bits 3 --method gptq"
expect_exit "sequential without tokens" 1 "needs calibration tokens" -- $Q --sequential -o "$TMPD/x.moeq"
expect_exit "sequential with --calib" 1 "not --calib" -- $Q --sequential --calib x.h5 --tokens $T -o "$TMPD/x.moeq"
expect_exit "sequential with rtn" 1 "needs --method gptq" -- "$MOEQ" quantize $M --bits 3 --sequential --tokens $T -o "$TMPD/x.moeq"
expect_exit "sequential fewer tokens than a window" 2 "fewer than one window" -- $Q --sequential --tokens "$TMPD/few.safetensors" --ctx 256 -o "$TMPD/x.moeq"
expect_exit "sequential missing token file" 2 "no-such.*cannot open" -- $Q --sequential --tokens "$TMPD/no-such.safetensors" -o "$TMPD/x.moeq"
expect_exit "sequential empty text" 2 "" -- $Q --sequential --text /dev/null -o "$TMPD/x.moeq"
[ -e "$TMPD/x.moeq" ] && echo "FAIL gptq sequential: output left after an error" || echo "PASS gptq sequential: no output after an error"

for th in 1 2; do
  $Q --sequential --tokens "$TMPD/calib.safetensors" --ctx 256 --threads $th --json -q -o "$TMPD/s$th.moeq" > "$TMPD/s$th.json" \
    || echo "FAIL gptq sequential threads $th"
done
cmp -s "$TMPD/s1.moeq" "$TMPD/s2.moeq" && echo "PASS gptq sequential bit-identical across thread counts" \
  || echo "FAIL gptq sequential bit-identical across thread counts"
python3 - "$TMPD/s1.json" <<'PY' && echo "PASS gptq sequential json" || echo "FAIL gptq sequential json"
import json, sys
a = json.load(open(sys.argv[1]))
assert a["sequential"] is True and a["calib_tokens"] == 4096 and a["calib_windows"] == 16, a
assert a["gptq_matrices"] + sum(f["kind"] == "rtn" for f in a["fallbacks"]) == a["quantized"]
PY
# --text: the ids moeq tokenize writes give the same file
head -c 3000 $FX/heldout.txt > "$TMPD/t.txt"
"$MOEQ" tokenize $M --text "$TMPD/t.txt" -o "$TMPD/t.safetensors" -q 2>/dev/null || echo "FAIL gptq sequential: tokenize"
$Q --sequential --text "$TMPD/t.txt" --ctx 128 -q -o "$TMPD/tx.moeq" || echo "FAIL gptq sequential --text"
$Q --sequential --tokens "$TMPD/t.safetensors" --ctx 128 -q -o "$TMPD/tt.moeq" || echo "FAIL gptq sequential --tokens"
cmp -s "$TMPD/tx.moeq" "$TMPD/tt.moeq" && echo "PASS gptq sequential --text equals --tokens" || echo "FAIL gptq sequential --text equals --tokens"

# the quality comparison is the release run's (under the sanitizers it is minutes of eval).
# Under float32 activations (MOEQ_KERNEL=float): sequential GPTQ's gain is 2.4% of KLD here
# (0.0542 -> 0.0529), and under the bf16 set's bf16 and int8 ones it vanished (0.05415 both:
# docs/quantize.md "Sequential"), too close for an ordering to hold
[ -n "${MOEQ_TEST_QUICK:-}" ] && exit 0
export MOEQ_KERNEL=float
"$MOEQ" calibrate $M --tokens "$TMPD/calib.safetensors" --ctx 256 -q -o "$TMPD/c.h5" || echo "FAIL gptq sequential: calibrate"
$Q --calib "$TMPD/c.h5" -q -o "$TMPD/g.moeq" || echo "FAIL gptq sequential: non-sequential"
$Q --sequential --tokens "$TMPD/calib.safetensors" --ctx 256 -q -o "$TMPD/sf.moeq" || echo "FAIL gptq sequential (float kernels)"
for f in g sf; do
  "$MOEQ" eval "$TMPD/$f.moeq" --tokens $T --max-tokens 8192 --ctx 512 --ref $M --json -q > "$TMPD/e$f.json" || echo "FAIL gptq sequential eval $f"
done
python3 - "$TMPD/eg.json" "$TMPD/esf.json" <<'PY' && echo "PASS gptq sequential KLD not above non-sequential (tiny-mixtral, 3 bits)" \
  || echo "FAIL gptq sequential KLD not above non-sequential (tiny-mixtral, 3 bits)"
import json, sys
g = json.load(open(sys.argv[1])); s = json.load(open(sys.argv[2]))
print("    kld gptq %.5f sequential %.5f; ppl %.4f %.4f" % (g["kld_mean"], s["kld_mean"], g["ppl"], s["ppl"]), file=sys.stderr)
assert s["kld_mean"] <= g["kld_mean"]
PY
