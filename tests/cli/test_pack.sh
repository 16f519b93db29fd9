#!/bin/sh
# The .moeq format's catalogue of broken files (tests/broken/moeq, make_broken_moeq.py): each
# through `moeq verify` with the exit code and the rule id of expected.tsv; the committed files
# are what the generator writes; `moeq inspect F.moeq` (dtype from the codecs).
. tests/cli/lib.sh
B=tests/broken/moeq

MOEQ_BROKEN_OUT="$TMPD/regen" python3 tests/broken/make_broken_moeq.py
diff -r "$TMPD/regen" $B > /dev/null && echo "PASS broken .moeq catalogue matches its generator" || echo "FAIL broken .moeq catalogue matches its generator"

grep -v '^#' $B/expected.tsv | while IFS="$(printf '\t')" read -r f status code frags; do
  "$MOEQ" verify "$B/$f" -q > "$TMPD/out" 2> "$TMPD/err"; rc=$?
  ok=1
  [ "$rc" -eq "$code" ] || ok=0
  if [ -n "$frags" ]; then
    grep -qF -- "$B/$f" "$TMPD/err" || ok=0   # the message names the file
    echo "$frags" | tr '|' '\n' > "$TMPD/frags"
    while read -r fr; do grep -qF -- "$fr" "$TMPD/err" || ok=0; done < "$TMPD/frags"
  fi
  if [ $ok -eq 1 ]; then echo "PASS verify broken .moeq $f: exit $code $frags"
  else echo "FAIL verify broken .moeq $f: exit $rc (want $code), stderr: $(head -c 300 "$TMPD/err")"; fi
done

# eval and inspect of a broken file give the same rule
expect_exit "eval bad magic .moeq" 2 "F-1" -- "$MOEQ" eval $B/bad_magic.moeq --tokens $FX/heldout.safetensors --ctx 16 --max-tokens 16
expect_exit "inspect zstd corrupt .moeq" 2 "F-14" -- "$MOEQ" inspect $B/zstd_frame_corrupt.moeq

# inspect of a packed file: same keys as for a checkpoint, dtype from the codecs
"$MOEQ" quantize $FX/tiny-olmoe --bits 4 -q -o "$TMPD/a.moeq"
"$MOEQ" quantize $FX/tiny-olmoe --bits 4 --tensor-type 'experts\.0\.=q3g32s' -q -o "$TMPD/m.moeq"
"$MOEQ" inspect "$TMPD/a.moeq" --json -q > "$TMPD/a.json"
"$MOEQ" inspect "$TMPD/m.moeq" --json -q > "$TMPD/m.json"
"$MOEQ" inspect $FX/tiny-olmoe --json -q > "$TMPD/o.json"
python3 - "$TMPD" <<'PY' && echo "PASS inspect .moeq: keys, dtype, codecs, bytes" || echo "FAIL inspect .moeq: keys, dtype, codecs, bytes"
import json, os, sys
d = sys.argv[1]
a, m, o = (json.load(open(os.path.join(d, x + ".json"))) for x in "amo")
assert set(o) <= set(a) and set(a) - set(o) == {"codecs"}, set(a) ^ set(o)
for k in ("model_type", "layers", "experts", "top_k", "hidden", "params", "vocab", "expert_layout"):
    assert a[k] == o[k], k
assert a["dtype"] == "q4g64a" and m["dtype"] == "mixed" and o["dtype"] == "BF16"
L = o["moe_layers"]
assert a["codecs"]["q4g64a"] == 3 * 8 * L and m["codecs"]["q3g32s"] == 3 * L, (a["codecs"], m["codecs"])
assert a["bytes"] == os.path.getsize(os.path.join(d, "a.moeq")) and a["shards"] == 1
PY
