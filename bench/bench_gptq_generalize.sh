#!/bin/sh
# GPTQ time per matrix with the generalization defaults (weighted grids, --damp auto on the
# validation split, shrunk Hessians for undersampled experts, the Hessian error report) against
# GPTQ as it was (--damp 0.01 --grid-steps 1 --fallback rtn --fit all: the same bytes as before),
# both measured in this run, runs alternated, the faster of BENCH_REPS each. The issue-13 target
# is a ratio <= 1.5. Usage: bench/bench_gptq_generalize.sh [MODEL TOKENS] (default: the 256-wide
# Qwen3-MoE fixture on the held-out tokens; docs/bench.md has the 512-wide results model).
set -eu
M=${1:-tests/fixtures/tiny-qwen3moe-256}
T=${2:-tests/fixtures/heldout.safetensors}
REPS=${BENCH_REPS:-2}
MOEQ=${MOEQ:-bin/moeq}
D=build/bench/gptq-gen && mkdir -p $D
[ -f $D/calib.h5 ] && [ $D/calib.h5 -nt "$M/config.json" ] || \
  "$MOEQ" calibrate "$M" --tokens "$T" --ctx 512 --max-tokens 16384 -q -o $D/calib.h5
for r in $(seq "$REPS"); do
  "$MOEQ" quantize "$M" --bits 3 --method gptq --calib $D/calib.h5 --damp 0.01 --grid-steps 1 --fallback rtn \
    --fit all --json -q -o $D/old.moeq > $D/old-$r.json
  "$MOEQ" quantize "$M" --bits 3 --method gptq --calib $D/calib.h5 --json -q -o $D/new.moeq > $D/new-$r.json
done
python3 - $D "$REPS" "$M" <<'PY'
import json, sys
d, reps, model = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def best(tag):
    runs = [json.load(open("%s/%s-%d.json" % (d, tag, r + 1))) for r in range(reps)]
    x = min(runs, key=lambda j: j["seconds"] / j["gptq_matrices"])
    return x["seconds"] / x["gptq_matrices"], x
so, o = best("old"); sn, n = best("new")
print("GPTQ %s 3-bit g64: %.1f ms/matrix as before (%d matrices), %.1f ms/matrix with the generalization "
      "defaults (%d matrices): ratio %.2f (target <= 1.5); held-out Hessian error %.4g -> %.4g"
      % (model, 1e3 * so, o["gptq_matrices"], 1e3 * sn, n["gptq_matrices"], sn / so,
         o["hessian_error"]["val"], n["hessian_error"]["val"]), file=sys.stderr)
print(json.dumps({"model": model, "ms_per_matrix_before": 1e3 * so, "ms_per_matrix_after": 1e3 * sn,
                  "ratio": sn / so, "val_error_before": o["hessian_error"]["val"],
                  "val_error_after": n["hessian_error"]["val"]}))
PY
