#!/bin/sh
# The cost of splitting `moeq calibrate` over MPI ranks, and what it sends (docs/scale.md).
# One process with --threads 2 against `mpirun -np 2 --bind-to none` with --threads 1 per rank,
# alternated, the fastest of each kept, outputs compared with cmp. Prints tokens/s, the ratio
# one-process time / MPI time (target >= 0.9) and the bytes sent per layer (comm_bytes / layers)
# beside the formula of docs/calibrate.md.
# Usage: bench/bench_mpi_calibrate.sh [MODEL [TOKENS [MAX_TOKENS [CTX]]]]; MODEL defaults to the
# synthetic checkpoint of bench/make_synthetic.py, TOKENS to tests/fixtures/heldout.safetensors
# (ids taken modulo nothing: they must be below the model's vocabulary).
set -eu
M=${1:-}
TOK=${2:-tests/fixtures/heldout.safetensors}
MAXT=${3:-4096}
CTX=${4:-512}
REPS=${BENCH_REPS:-2}
if [ -z "$M" ]; then
  M=build/bench/synth-mixtral
  [ -f $M/model.safetensors ] || python3 bench/make_synthetic.py $M
fi
MOEQ=${MOEQ:-bin/moeq}
W=${BENCH_WORK:-build/bench/mpi-calib}
mkdir -p "$W"
command -v mpirun > /dev/null || { echo "bench_mpi_calibrate: no mpirun (apt-get install openmpi-bin libopenmpi-dev)"; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader \
  OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_MCA_mpi_yield_when_idle=1
find "$M"/ -name '*.safetensors' -exec cat {} + > /dev/null
now() { date +%s.%N; }
best_one=; best_mpi=
i=0
while [ $i -lt "$REPS" ]; do
  t0=$(now)
  "$MOEQ" calibrate "$M" --tokens "$TOK" --max-tokens "$MAXT" --ctx "$CTX" --threads 2 -q --json -o "$W/one.h5" > "$W/one.json"
  t1=$(now)
  mpirun -np 2 --bind-to none "$MOEQ" calibrate "$M" --tokens "$TOK" --max-tokens "$MAXT" --ctx "$CTX" --threads 1 -q \
    --json -o "$W/mpi.h5" > "$W/mpi.json"
  t2=$(now)
  cmp -s "$W/one.h5" "$W/mpi.h5" || { echo "bench_mpi_calibrate: the MPI output differs from one process's"; exit 1; }
  a=$(echo "$t1 - $t0" | bc); b=$(echo "$t2 - $t1" | bc)
  echo "run $((i + 1)): one process $a s, mpirun -np 2 $b s"
  best_one=$(echo "$a $best_one" | awk '{print ($2 == "" || $1 < $2) ? $1 : $2}')
  best_mpi=$(echo "$b $best_mpi" | awk '{print ($2 == "" || $1 < $2) ? $1 : $2}')
  i=$((i + 1))
done
python3 - "$W/one.json" "$W/mpi.json" "$M/config.json" "$best_one" "$best_mpi" "$CTX" <<'PY'
import json, sys, math
one, mpi, cfg = (json.load(open(p)) for p in sys.argv[1:4])
t1, t2, ctx = float(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
H, E, K = cfg["hidden_size"], cfg.get("num_local_experts", cfg.get("num_experts", 0)), cfg["num_experts_per_tok"]
I = cfg.get("moe_intermediate_size", cfg.get("intermediate_size"))
S = cfg.get("shared_expert_intermediate_size", 0) or 0
L = cfg["num_hidden_layers"]
W = mpi["windows"]; remote = W - math.ceil(W / 2)
moe = 80 + 4 * ctx * E + 16 * E + 4 * K * ctx * (H + I + 1) + 4 * ctx * (H + S if S else 0)
print(f"calibrate {mpi['tokens']} tokens x {L} layers: one process {t1:.2f} s ({mpi['tokens'] / t1:.0f} tokens/s), "
      f"mpirun -np 2 {t2:.2f} s ({mpi['tokens'] / t2:.0f} tokens/s), ratio {t1 / t2:.3f} (target >= 0.9)")
print(f"sent {mpi['comm_bytes']} bytes = {mpi['comm_bytes'] / L / 1048576:.2f} MiB per layer; "
      f"formula {remote} windows x {moe} B = {remote * moe / 1048576:.2f} MiB per MoE layer")
PY
