#!/bin/sh
# calibrate over MPI ranks and --resume (docs/scale.md): the file of `mpirun -np 2` and `-np 3`
# is byte-identical to one process's; a run killed after a layer and started again with
# --resume writes the same bytes; a resume with other inputs is refused; a rank that cannot
# read the model ends the job with exit 4 naming the rank, and no output is left.
. tests/cli/lib.sh
T=$FX/heldout.safetensors
CAL="calibrate --tokens $T --ctx 128 -q"
# the ASan run (MOEQ_TEST_QUICK): one fixture, one scope and the uneven split (3 ranks) alone;
# the release run covers the rest
scopes="experts all"; nps="2 3"
if [ -n "${MOEQ_TEST_QUICK:-}" ]; then fixtures="tiny-qwen2moe"; scopes=all; nps=3; else fixtures="tiny-mixtral tiny-qwen2moe tiny-qwen3moe tiny-olmoe"; fi

for fx in $fixtures; do
  for scope in $scopes; do
    "$MOEQ" $CAL $FX/$fx --scope $scope --max-tokens 4096 -o "$TMPD/one.h5" 2> "$TMPD/err" \
      || { echo "FAIL mpi calibrate $fx $scope: one process"; cat "$TMPD/err" >&2; continue; }
    for np in $nps; do
      th=$((np == 3 ? 1 : 2))
      mpi $np "$MOEQ" $CAL $FX/$fx --scope $scope --max-tokens 4096 --threads $th -o "$TMPD/np$np.h5" \
        > /dev/null 2> "$TMPD/err"
      cmp -s "$TMPD/one.h5" "$TMPD/np$np.h5" && echo "PASS mpi calibrate $fx --scope $scope -np $np byte-identical" \
        || { echo "FAIL mpi calibrate $fx --scope $scope -np $np byte-identical"; tail -n 5 "$TMPD/err" >&2; }
    done
  done
done

# JSON comes from rank 0 alone, with the same counts as one process
M=$FX/tiny-qwen2moe
"$MOEQ" $CAL $M --max-tokens 2048 --json -o "$TMPD/j1.h5" > "$TMPD/j1.json" 2>/dev/null
mpi 2 "$MOEQ" $CAL $M --max-tokens 2048 --json -o "$TMPD/j2.h5" > "$TMPD/j2.json" 2>/dev/null
python3 - "$TMPD/j1.json" "$TMPD/j2.json" <<'PY' && echo "PASS mpi calibrate json once, same counts" || echo "FAIL mpi calibrate json once, same counts"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
assert a["layers"] == b["layers"] and a["tokens"] == b["tokens"] and a["ranks"] == 1 and b["ranks"] == 2
PY

# --resume: killed (SIGKILL) after layer 1's statistics, then started again (one process and
# three ranks): the same bytes as the uninterrupted run, the checkpoint removed at the end
"$MOEQ" $CAL $M -o "$TMPD/full.h5"
for np in 1 3; do
  R="$TMPD/resume$np"
  if [ $np = 1 ]; then run="" ; else run="mpi $np"; fi
  MOEQ_TEST_KILL_AFTER_LAYER=2 $run "$MOEQ" $CAL $M --resume "$R" -o "$TMPD/res$np.h5" > /dev/null 2>&1
  rc=$?
  [ $rc -ne 0 ] && [ ! -e "$TMPD/res$np.h5" ] && [ -f "$R/manifest" ] && [ -f "$R/unit-00000002.bin" ] \
    && [ -f "$R/stream-0001.bin" ] && [ ! -e "$R/stream-0002.bin" ] \
    && echo "PASS calibrate --resume -np $np: killed after layer 2, 2 layers recorded, no output" \
    || echo "FAIL calibrate --resume -np $np: killed after layer 2 (rc $rc)"
  $run "$MOEQ" calibrate --tokens $T --ctx 128 --json --resume "$R" $M -o "$TMPD/res$np.h5" > "$TMPD/res.json" 2>/dev/null
  grep -q '"resumed_layers": 2' "$TMPD/res.json" && cmp -s "$TMPD/full.h5" "$TMPD/res$np.h5" && [ ! -e "$R" ] \
    && echo "PASS calibrate --resume -np $np: continues after layer 2, byte-identical, checkpoint removed" \
    || echo "FAIL calibrate --resume -np $np: continues after layer 2, byte-identical, checkpoint removed"
done

# a checkpoint of other inputs is refused, naming the field
MOEQ_TEST_KILL_AFTER_LAYER=1 "$MOEQ" $CAL $M --resume "$TMPD/rx" -o "$TMPD/rx.h5" > /dev/null 2>&1
expect_exit "calibrate --resume with another --ctx refused" 2 "ctx" -- \
  "$MOEQ" calibrate $M --tokens $T --ctx 64 -q --resume "$TMPD/rx" -o "$TMPD/rx.h5"
expect_exit "calibrate --resume with other tokens refused" 2 "tokens" -- \
  "$MOEQ" calibrate $M --tokens $T --ctx 128 --max-tokens 1024 -q --resume "$TMPD/rx" -o "$TMPD/rx.h5"
"$MOEQ" quantize $M --bits 4 --resume "$TMPD/rq" -q -o "$TMPD/rq.moeq"
expect_exit "calibrate --resume of a quantize checkpoint refused" 2 "quantize" -- \
  "$MOEQ" $CAL $M --resume "$TMPD/rq" -o "$TMPD/rq.h5"
printf 'x' > "$TMPD/rf"
expect_exit "calibrate --resume at a file refused" 2 "wants a directory" -- "$MOEQ" $CAL $M --resume "$TMPD/rf" -o "$TMPD/rf.h5"

# one rank cannot read a shard the other reads (MPMD launch: rank 1 gets a broken copy)
cp -r $FX/tiny-mixtral "$TMPD/bad" && rm "$TMPD/bad/model-00003-of-00006.safetensors"
expect_exit "mpi calibrate: a rank that cannot map a shard ends the job with exit 4" 4 \
  "rank 1 \(.*\): .*model-00003-of-00006.safetensors does not exist" -- \
  mpi 1 "$MOEQ" $CAL $FX/tiny-mixtral -o "$TMPD/f.h5" : -np 1 "$MOEQ" $CAL "$TMPD/bad" -o "$TMPD/f.h5"
[ ! -e "$TMPD/f.h5" ] && echo "PASS mpi calibrate: no output after a rank's failure" || echo "FAIL mpi calibrate: no output after a rank's failure"
# a command that does not split its work refuses mpirun
expect_exit "mpi eval refused" 1 "does not split its work over MPI ranks" -- mpi 2 "$MOEQ" eval $M --tokens $T

# sequential GPTQ over ranks (windows split, each layer's experts dealt to ranks, codes
# broadcast) and its --resume: the same .moeq as one process
Q="quantize --method gptq --sequential --tokens $T --ctx 128 --max-tokens 4096 --bits 3 -q"
if [ -n "${MOEQ_TEST_QUICK:-}" ]; then sfx="tiny-qwen2moe"; else sfx="tiny-qwen2moe tiny-mixtral"; fi
for fx in $sfx; do
  for scope in $scopes; do
    "$MOEQ" $Q --scope $scope $FX/$fx -o "$TMPD/s1.moeq" 2> "$TMPD/err" || { echo "FAIL seq gptq $fx one process"; cat "$TMPD/err" >&2; }
    for np in $nps; do
      mpi $np "$MOEQ" $Q --scope $scope --threads 1 $FX/$fx -o "$TMPD/s$np.moeq" > /dev/null 2> "$TMPD/err"
      cmp -s "$TMPD/s1.moeq" "$TMPD/s$np.moeq" && echo "PASS mpi quantize --sequential $fx --scope $scope -np $np byte-identical" \
        || { echo "FAIL mpi quantize --sequential $fx --scope $scope -np $np byte-identical"; tail -n 5 "$TMPD/err" >&2; }
    done
  done
  R="$TMPD/sres-$fx"
  MOEQ_TEST_KILL_AFTER_LAYER=1 "$MOEQ" $Q --scope all --resume "$R" $FX/$fx -o "$TMPD/sr-$fx.moeq" > /dev/null 2>&1
  [ -f "$R/unit-00000001.bin" ] && [ ! -e "$TMPD/sr-$fx.moeq" ] \
    && echo "PASS quantize --sequential --resume $fx: killed after layer 1, recorded" \
    || echo "FAIL quantize --sequential --resume $fx: killed after layer 1, recorded"
  mpi 2 "$MOEQ" $Q --scope all --resume "$R" --json $FX/$fx -o "$TMPD/sr-$fx.moeq" > "$TMPD/sr.json" 2>/dev/null
  "$MOEQ" $Q --scope all $FX/$fx -o "$TMPD/sa.moeq" 2>/dev/null
  grep -q '"resumed_layers": 1' "$TMPD/sr.json" && cmp -s "$TMPD/sa.moeq" "$TMPD/sr-$fx.moeq" && [ ! -e "$R" ] \
    && echo "PASS quantize --sequential --resume $fx: continued on 2 ranks, byte-identical" \
    || echo "FAIL quantize --sequential --resume $fx: continued on 2 ranks, byte-identical"
done
# (tiny-mixtral: every layer is MoE, so layer 1's checkpoint is committed when layer 2 ends)
MOEQ_TEST_KILL_AFTER_LAYER=2 "$MOEQ" $Q $FX/tiny-mixtral --resume "$TMPD/sx" -o "$TMPD/sx.moeq" > /dev/null 2>&1
expect_exit "quantize --sequential --resume with other bits refused" 2 "codecs_gptq_scope" -- \
  "$MOEQ" quantize --method gptq --sequential --tokens $T --ctx 128 --max-tokens 4096 --bits 4 -q $FX/tiny-mixtral \
  --resume "$TMPD/sx" -o "$TMPD/sx.moeq"
