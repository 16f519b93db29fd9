#!/bin/sh
# make bench-mpi: GPTQ with `mpirun -np 2 --bind-to none`, one thread per rank, against one
# process with --threads 2, on the same model and calibration file, alternately, best of REPS
# each; both outputs must be cmp-identical. Prints the time per GPTQ matrix and the ratio
# (one process's time / MPI's time: >= 0.9 means MPI costs at most 10%).
#
# usage: bench/bench_mpi_quantize.sh [MODEL [CALIB.h5]] [--layers N] [--bits B] [--reps R]
#   MODEL    a Hugging Face MoE directory (e.g. /work/big/q15-l4); default: a synthetic
#            Mixtral-style model with Qwen1.5-MoE's expert shape (hidden 2048, 1408 wide,
#            16 experts, 1 layer) made by bench/make_synthetic.py under build/bench/
#   CALIB    its calibration file; default: made by moeq calibrate on MODEL/tokens.u32
#            (--max-tokens 4096, --ctx 512, --min-tokens 64 so the random model's experts all get
#            GPTQ) next to the outputs
#   --layers N  quantize layers 0..N-1 only (the others kept, through --tensor-type rules)
set -eu
MOEQ=${MOEQ:-bin/moeq}
model= calib= layers= bits=3 reps=2
while [ $# -gt 0 ]; do
  case $1 in
    --layers) layers=$2; shift 2 ;;
    --bits) bits=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) if [ -z "$model" ]; then model=$1; elif [ -z "$calib" ]; then calib=$1; else echo "bench-mpi: too many arguments" >&2; exit 1; fi; shift ;;
  esac
done
W=build/bench/mpi
mkdir -p $W
if [ -z "$model" ]; then
  model=build/bench/synth-q15e
  [ -f $model/model.safetensors ] || python3 bench/make_synthetic.py $model --hidden 2048 --inter 1408 --layers 1 --experts 16
fi
if [ -z "$calib" ]; then
  calib=$W/$(basename "$model").h5
  if [ ! -f "$calib" ]; then
    echo "bench-mpi: calibrating $model (4096 tokens) into $calib" >&2
    "$MOEQ" calibrate "$model" --tokens "$model/tokens.u32" --max-tokens 4096 --ctx 512 --min-tokens 64 -q -o "$calib"
  fi
fi
set -- "$model" --bits "$bits" --method gptq --calib "$calib"
if [ -n "$layers" ]; then
  L=$("$MOEQ" inspect "$model" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["layers"])')
  if [ "$layers" -lt "$L" ]; then
    alt=$(seq -s '|' "$layers" $((L - 1)))
    set -- "$@" --tensor-type "layers\\.($alt)\\.=keep"
  fi
fi
mpi2() {
  OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader \
    OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_MCA_mpi_yield_when_idle=1 mpirun --bind-to none -np 2 "$@"
}
now() { python3 -c 'import time; print(time.monotonic())'; }
best_one= best_mpi= in_one= in_mpi=
i=0
while [ $i -lt "$reps" ]; do
  t0=$(now); "$MOEQ" quantize "$@" --threads 2 --json -q -o $W/one.moeq > $W/one.json; t1=$(now)
  mpi2 "$MOEQ" quantize "$@" --threads 1 --json -q -o $W/mpi.moeq > $W/mpi.json; t2=$(now)
  cmp -s $W/one.moeq $W/mpi.moeq || { echo "bench-mpi: FAIL: the MPI output differs from one process's" >&2; exit 1; }
  eval "$(python3 - "$t0" "$t1" "$t2" "$W" "${best_one:-1e99}" "${best_mpi:-1e99}" "${in_one:-1e99}" "${in_mpi:-1e99}" <<'PY'
import json, sys
t0, t1, t2 = map(float, sys.argv[1:4]); w = sys.argv[4]
b1, b2, i1, i2 = map(float, sys.argv[5:9])
one = json.load(open(w + "/one.json")); mpi = json.load(open(w + "/mpi.json"))
print("best_one=%.4f best_mpi=%.4f in_one=%.4f in_mpi=%.4f" % (min(b1, t1 - t0), min(b2, t2 - t1),
      min(i1, one["seconds"]), min(i2, mpi["seconds"])))
PY
)"
  i=$((i + 1))
done
python3 - "$W" "$best_one" "$best_mpi" "$in_one" "$in_mpi" "$model" <<'PY'
import json, sys
w = sys.argv[1]; t1, t2, i1, i2 = map(float, sys.argv[2:6])
j = json.load(open(w + "/one.json"))
n = j["gptq_matrices"]; q = j["quantized"]
print("bench-mpi: %s: %d matrices quantized (%d GPTQ), output %d bytes, cmp-identical" % (sys.argv[6], q, n, j["bytes"]))
print("  one process, --threads 2:          %7.2f s wall, %7.2f s quantizing, %.3f s per matrix" % (t1, i1, i1 / max(q, 1)))
print("  mpirun -np 2 --bind-to none, 1 each: %5.2f s wall, %7.2f s quantizing, %.3f s per matrix" % (t2, i2, i2 / max(q, 1)))
print("  load average at the end: %s (other jobs on the host distort both)" % open("/proc/loadavg").read().split()[0])
print("  ratio one/MPI: %.3f wall, %.3f quantizing (target >= 0.9)" % (t1 / t2, i1 / i2))
PY
