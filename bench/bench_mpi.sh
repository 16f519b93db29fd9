#!/bin/sh
# make bench-mpi [BENCH_MODEL=DIR] [BENCH_REPS=N]: the cost of splitting `moeq spectral --mode
# farms` over MPI ranks. One process with --threads 2 against `mpirun -np 2 --bind-to none`
# with --threads 1 per rank, on the same machine, runs alternated (one, mpi, one, mpi, ...) and
# the fastest of each kept; both outputs compared with cmp. Prints the wall seconds, the
# seconds of the run itself (the JSON `seconds`: after the model is opened) and
# ratio = one-process time / MPI time (target >= 0.9: MPI costs at most 10%).
# Usage: bench/bench_mpi.sh [MODEL] [REPS]; MODEL defaults to the synthetic Mixtral-style
# checkpoint of bench/make_synthetic.py (build/bench/synth-mixtral).
set -eu
M=${1:-}
REPS=${2:-2}
if [ -z "$M" ]; then
  M=build/bench/synth-mixtral
  [ -f $M/model.safetensors ] || python3 bench/make_synthetic.py $M
fi
MOEQ=${MOEQ:-bin/moeq}
W=${BENCH_WORK:-build/bench/mpi}
mkdir -p "$W"
command -v mpirun > /dev/null || { echo "bench_mpi: no mpirun (apt-get install openmpi-bin libopenmpi-dev)"; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader \
  OMPI_MCA_btl_vader_single_copy_mechanism=none
# the weights into the page cache first, so neither side pays for the disk
find "$M"/ -name '*.safetensors' -exec cat {} + > /dev/null
now() { date +%s.%N; }
secs() { sed -n 's/^ *"seconds": \([0-9.eE+-]*\),*$/\1/p' "$1"; }
best_one=; best_mpi=; run_one=; run_mpi=
i=0
while [ $i -lt "$REPS" ]; do
  t0=$(now)
  "$MOEQ" spectral "$M" --mode farms --threads 2 -q --json -o "$W/one.h5" > "$W/one.json"
  t1=$(now)
  mpirun -np 2 --bind-to none "$MOEQ" spectral "$M" --mode farms --threads 1 -q --json -o "$W/mpi.h5" > "$W/mpi.json"
  t2=$(now)
  cmp -s "$W/one.h5" "$W/mpi.h5" || { echo "bench_mpi: the MPI output differs from one process's"; exit 1; }
  a=$(echo "$t1 - $t0" | bc); b=$(echo "$t2 - $t1" | bc); ra=$(secs "$W/one.json"); rb=$(secs "$W/mpi.json")
  echo "run $((i + 1)): one process $a s (run $ra s), mpirun -np 2 $b s (run $rb s)"
  best_one=$(echo "$a $best_one" | awk '{print ($2 == "" || $1 < $2) ? $1 : $2}')
  best_mpi=$(echo "$b $best_mpi" | awk '{print ($2 == "" || $1 < $2) ? $1 : $2}')
  run_one=$(echo "$ra $run_one" | awk '{print ($2 == "" || $1 < $2) ? $1 : $2}')
  run_mpi=$(echo "$rb $run_mpi" | awk '{print ($2 == "" || $1 < $2) ? $1 : $2}')
  i=$((i + 1))
done
n=$(grep -c '"tensor"' "$W/one.json")
echo "spectral --mode farms on $M: $n matrices, best of $REPS"
echo "  one process, --threads 2:                      wall $best_one s, run $run_one s"
echo "  mpirun -np 2 --bind-to none, --threads 1 each: wall $best_mpi s, run $run_mpi s"
echo "  ratio (one process / mpi): wall $(echo "scale=3; $best_one / $best_mpi" | bc), run $(echo "scale=3; $run_one / $run_mpi" | bc) (target >= 0.9); outputs identical (cmp)"
