#!/bin/sh
# moeq quantize over MPI ranks (mpirun -np 2 and 3 give files cmp-identical to one process: GPTQ
# and RTN, --bits and a plan, --scope all, a per-expert and a fused fixture) and --resume (a run
# stopped after its first layer checkpoint, resumed, equals an uninterrupted run; one and two
# ranks; other options refused with exit 2 naming them).
. tests/cli/lib.sh
T=$FX/heldout.safetensors
M=$FX/tiny-mixtral
Q=$FX/tiny-qwen3moe
"$MOEQ" calibrate $M --tokens $T --ctx 256 --max-tokens 2048 -q -o "$TMPD/cm.h5" || echo "FAIL mpi quantize: calibrate mixtral"
"$MOEQ" calibrate $Q --tokens $T --ctx 256 --max-tokens 2048 -q -o "$TMPD/cq.h5" || echo "FAIL mpi quantize: calibrate qwen3moe"
"$MOEQ" plan $M --budget 3 -o "$TMPD/plan.json" -q || echo "FAIL mpi quantize: plan"
"$MOEQ" plan $Q --budget 3.5 -o "$TMPD/planq.json" -q || echo "FAIL mpi quantize: plan qwen3moe"

NPS="2 3"
# same NAME ARGS...: one process, then 2 and 3 ranks; outputs and fallback lists compared
same() {
  name=$1; shift
  "$MOEQ" quantize "$@" --json -q -o "$TMPD/one.moeq" > "$TMPD/one.json" 2> "$TMPD/one.err" \
    || { echo "FAIL mpi $name: one process"; sed 's/^/    /' "$TMPD/one.err" | head -n 5 >&2; return; }
  for np in $NPS; do
    mpi $np "$MOEQ" quantize "$@" --threads 1 --json -q -o "$TMPD/np$np.moeq" > "$TMPD/np$np.json" 2> "$TMPD/np$np.err" \
      || { echo "FAIL mpi $name: -np $np"; sed 's/^/    /' "$TMPD/np$np.err" | head -n 5 >&2; continue; }
    if ! cmp -s "$TMPD/one.moeq" "$TMPD/np$np.moeq"; then echo "FAIL mpi $name: -np $np differs from one process"; continue; fi
    python3 - "$TMPD/one.json" "$TMPD/np$np.json" $np <<'PY' && echo "PASS mpi $name: -np $np cmp-identical, same report" \
      || echo "FAIL mpi $name: -np $np report"
import json, sys
a = json.load(open(sys.argv[1])); b = json.load(open(sys.argv[2]))
assert b["ranks"] == int(sys.argv[3]) and a["ranks"] == 1
for k in ("bytes", "bits_per_weight", "bits_per_weight_total", "entropy_bits", "fallbacks", "gptq_matrices",
          "tensors", "quantized", "quant_weights"):
    assert a[k] == b[k], (k, a[k], b[k])
PY
  done
}
same "gptq bits" $M --bits 3 --method gptq --calib "$TMPD/cm.h5"
[ -n "${MOEQ_TEST_QUICK:-}" ] && NPS=2   # ASan run: 3 ranks for the first case only
same "gptq plan scope all" $M --plan "$TMPD/plan.json" --method gptq --calib "$TMPD/cm.h5" --scope all --act-order
same "gptq fused layer-mean" $Q --bits 4 --group 32 --sym --method gptq --calib "$TMPD/cq.h5" --fallback layer-mean
same "rtn bits scope all" $M --bits 4 --scope all --tensor-type 'experts\.[0-3]\.w2=q2g32a'
same "rtn plan fused zstd" $Q --plan "$TMPD/planq.json" --zstd 3

# only rank 0 prints: one summary, from one rank
mpi 2 "$MOEQ" quantize $M --bits 3 -o "$TMPD/p.moeq" > "$TMPD/p.out" 2> "$TMPD/p.err"
n=$(cat "$TMPD/p.out" "$TMPD/p.err" | grep -c "tensors, .* quantized")
[ "$n" -eq 1 ] && echo "PASS mpi quantize: one rank prints" || echo "FAIL mpi quantize: one rank prints ($n summaries)"
# input errors are agreed: every rank exits with the code, rank 0 tells it once
mpi 2 "$MOEQ" quantize $M --bits 3 --method gptq --calib "$TMPD/none.h5" -o "$TMPD/x.moeq" > /dev/null 2> "$TMPD/e.err"; rc=$?
n=$(grep -c "cannot open" "$TMPD/e.err")
[ $rc -eq 2 ] && [ "$n" -eq 1 ] && echo "PASS mpi quantize: missing calib agreed (exit 2, one message)" \
  || echo "FAIL mpi quantize: missing calib agreed (exit $rc, $n messages)"
mpi 3 "$MOEQ" quantize $M --bits 3 -o /nonexistent-dir/x.moeq > /dev/null 2> "$TMPD/e.err"; rc=$?
[ $rc -eq 4 ] && echo "PASS mpi quantize: unwritable output agreed (exit 4)" || echo "FAIL mpi quantize: unwritable output agreed (exit $rc)"
[ -e "$TMPD/x.moeq" ] && echo "FAIL mpi quantize: output left after an error" || echo "PASS mpi quantize: no output after an error"

# ---- resume -----------------------------------------------------------------------------------
G="$M --bits 3 --method gptq --calib $TMPD/cm.h5"
"$MOEQ" quantize $G -q -o "$TMPD/ref.moeq" || echo "FAIL resume: reference run"
# stopped after the first layer checkpoint (test hook), then resumed
MOEQ_TEST_STOP_AFTER_LAYER=1 "$MOEQ" quantize $G --resume "$TMPD/ck" -q -o "$TMPD/r.moeq" 2> "$TMPD/r.err"; rc=$?
n=$(ls "$TMPD/ck" | grep -c '^unit-.*\.bin$')
[ $rc -ne 0 ] && [ "$n" -eq 1 ] && [ ! -e "$TMPD/r.moeq" ] && echo "PASS resume: stopped after one layer checkpoint" \
  || echo "FAIL resume: stopped after one layer checkpoint (exit $rc, $n units)"
"$MOEQ" quantize $G --resume "$TMPD/ck" --json -q -o "$TMPD/r.moeq" > "$TMPD/r.json" || echo "FAIL resume: resumed run"
cmp -s "$TMPD/ref.moeq" "$TMPD/r.moeq" && echo "PASS resume: cmp-identical to an uninterrupted run" \
  || echo "FAIL resume: cmp-identical to an uninterrupted run"
python3 - "$TMPD/r.json" <<'PY' && echo "PASS resume: json counts" || echo "FAIL resume: json counts"
import json, sys
j = json.load(open(sys.argv[1]))
assert j["resume_layers_done"] == 1 and j["resume_layers_written"] == 3, j
PY
# a finished checkpoint: everything from it, same bytes
"$MOEQ" quantize $G --resume "$TMPD/ck" -q -o "$TMPD/r2.moeq" && cmp -s "$TMPD/ref.moeq" "$TMPD/r2.moeq" \
  && echo "PASS resume: from a complete checkpoint" || echo "FAIL resume: from a complete checkpoint"
# other options or inputs: refused, naming what differs
expect_exit "resume: other bits refused" 2 "'bits' was '3', now '4'" -- "$MOEQ" quantize $M --bits 4 --method gptq --calib "$TMPD/cm.h5" --resume "$TMPD/ck" -o "$TMPD/x.moeq"
expect_exit "resume: other damping refused" 2 "'damp'" -- "$MOEQ" quantize $G --damp 0.1 --resume "$TMPD/ck" -o "$TMPD/x.moeq"
"$MOEQ" calibrate $M --tokens $T --ctx 256 --max-tokens 1024 -q -o "$TMPD/cm2.h5"
expect_exit "resume: other calib refused" 2 "'calib'" -- "$MOEQ" quantize $M --bits 3 --method gptq --calib "$TMPD/cm2.h5" --resume "$TMPD/ck" -o "$TMPD/x.moeq"
expect_exit "resume: other model refused" 2 "'model'" -- "$MOEQ" quantize $FX/tiny-olmoe --bits 3 --resume "$TMPD/ck" -o "$TMPD/x.moeq"
mkdir -p "$TMPD/notck" && : > "$TMPD/notck/file"
expect_exit "resume: a directory of other files refused" 2 "no checkpoint manifest" -- "$MOEQ" quantize $G --resume "$TMPD/notck" -o "$TMPD/x.moeq"
expect_exit "resume: a calibrated-GPTQ checkpoint refused by --sequential" 2 "resume" -- "$MOEQ" quantize $M --bits 3 --method gptq --sequential --tokens $T --resume "$TMPD/ck" -o "$TMPD/x.moeq"
# a corrupt layer file is named
cp -r "$TMPD/ck" "$TMPD/ckbad" && printf 'X' | dd of="$TMPD/ckbad/unit-00000001.bin" bs=1 seek=100 conv=notrunc 2> /dev/null
expect_exit "resume: corrupt layer checkpoint" 2 "unit-00000001.bin: checksum" -- "$MOEQ" quantize $G --resume "$TMPD/ckbad" -o "$TMPD/x.moeq"
# a leftover temporary of a killed write is ignored and removed
cp -r "$TMPD/ck" "$TMPD/cktmp" && rm "$TMPD/cktmp/unit-00000003.bin" && : > "$TMPD/cktmp/unit-00000003.bin.tmp"
"$MOEQ" quantize $G --resume "$TMPD/cktmp" -q -o "$TMPD/r3.moeq" && cmp -s "$TMPD/ref.moeq" "$TMPD/r3.moeq" \
  && [ ! -e "$TMPD/cktmp/unit-00000003.bin.tmp" ] && echo "PASS resume: a partial write is redone" || echo "FAIL resume: a partial write is redone"

# resume over MPI: stopped with 2 ranks after one layer, resumed with 3 (and with one process)
MOEQ_TEST_STOP_AFTER_LAYER=1 mpi 2 "$MOEQ" quantize $G --threads 1 --resume "$TMPD/ckm" -q -o "$TMPD/m.moeq" > /dev/null 2>&1; rc=$?
n=$(ls "$TMPD/ckm" | grep -c '^unit-.*\.bin$')
[ $rc -ne 0 ] && [ "$n" -eq 1 ] && echo "PASS resume mpi: stopped after one layer" || echo "FAIL resume mpi: stopped after one layer (exit $rc, $n)"
cp -r "$TMPD/ckm" "$TMPD/ckm1"
mpi 3 "$MOEQ" quantize $G --threads 1 --resume "$TMPD/ckm" -q -o "$TMPD/m.moeq" && cmp -s "$TMPD/ref.moeq" "$TMPD/m.moeq" \
  && echo "PASS resume mpi: -np 3 resume cmp-identical" || echo "FAIL resume mpi: -np 3 resume cmp-identical"
"$MOEQ" quantize $G --resume "$TMPD/ckm1" -q -o "$TMPD/m1.moeq" && cmp -s "$TMPD/ref.moeq" "$TMPD/m1.moeq" \
  && echo "PASS resume mpi: one-process resume of an MPI checkpoint" || echo "FAIL resume mpi: one-process resume of an MPI checkpoint"
mpi 2 "$MOEQ" quantize $M --bits 4 --method gptq --calib "$TMPD/cm.h5" --resume "$TMPD/ckm" -o "$TMPD/x.moeq" > /dev/null 2> "$TMPD/e.err"; rc=$?
[ $rc -eq 2 ] && [ "$(grep -c "'bits'" "$TMPD/e.err")" -eq 1 ] && echo "PASS resume mpi: other options refused on every rank (exit 2)" \
  || echo "FAIL resume mpi: other options refused (exit $rc)"
# RTN resumes the same way, with a fused fixture
"$MOEQ" quantize $Q --bits 4 -q -o "$TMPD/qref.moeq"
MOEQ_TEST_STOP_AFTER_LAYER=2 "$MOEQ" quantize $Q --bits 4 --resume "$TMPD/ckq" -q -o "$TMPD/q.moeq" 2> /dev/null
"$MOEQ" quantize $Q --bits 4 --resume "$TMPD/ckq" -q -o "$TMPD/q.moeq" && cmp -s "$TMPD/qref.moeq" "$TMPD/q.moeq" \
  && echo "PASS resume: rtn fused fixture" || echo "FAIL resume: rtn fused fixture"
