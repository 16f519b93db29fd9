#!/bin/sh
# Peak RSS and wall time of every moeq command on a big checkpoint (docs/bench.md, "Memory").
#   bench/bench_memory.sh [MODEL_DIR] [WORK_DIR] [MOEQ]        (make bench-memory)
# MODEL_DIR (default /work/big/q15) is generated when absent by build/rel/bench/make_shaped
# (Qwen1.5-MoE-A2.7B-shaped, 28.6 GB; BENCH_GEN_ARGS='--shape dsv2lite [--fp8]' for the
# DeepSeek-V2-Lite shape, make bench-scale). GPTQ, hessian plans and full-Hessian calibration need a
# calib file with full Hessians (2.9 GB per layer of this shape, 70 GB for 24 layers), so they
# run on MODEL_DIR-l4, the same shapes with 4 layers (also generated when absent). WORK_DIR
# (default MODEL_DIR.work) holds the outputs; the big ones are removed after each step, the
# spectral file and the packed files are kept (name suffix BENCH_TAG) to be compared with cmp
# across builds. Run as root, the page cache is dropped before each command (cold start);
# otherwise it says so. Prints one line per command: name, peak RSS (MiB), wall seconds.
# BENCH_ONLY='name|name...' runs only those commands (names as printed).
set -u
M=${1:-/work/big/q15}
W=${2:-$M.work}
MOEQ=${3:-bin/moeq}
TAG=${BENCH_TAG:-run}
M4=$M-l4
GEN=build/rel/bench/make_shaped
[ -x "$GEN" ] || make -s "$GEN" || exit 1
[ -f "$M/config.json" ] || "$GEN" "$M" ${BENCH_GEN_ARGS:-} || exit 1
case "${BENCH_ONLY:-l4}" in *l4*) [ -f "$M4/config.json" ] || "$GEN" "$M4" --layers 4 ${BENCH_GEN_ARGS:-} || exit 1 ;; esac
mkdir -p "$W" || exit 1
T=$M/tokens.u32
drop=1
sync; if ! { echo 1 > /proc/sys/vm/drop_caches; } 2>/dev/null; then drop=0; echo "(page cache not dropped: not root)"; fi

same() {   # same FILE: with BENCH_CMP=TAG, cmp FILE (named with this run's tag) to that run's
    [ -n "${BENCH_CMP:-}" ] || return 0
    ref=$(echo "$1" | sed "s/-$TAG\./-$BENCH_CMP./")
    if cmp -s "$ref" "$1"; then echo "  $(basename "$1"): identical to $(basename "$ref")"
        [ "${BENCH_CMP_RM:-0}" = 1 ] && rm -f "$ref"   # disk: both q4 files and the unpacked copy do not fit
    else echo "  $(basename "$1"): DIFFERENT from $(basename "$ref")"; fi
}

printf '%-34s %10s %9s %s\n' command peak_MiB seconds status
run() {   # run NAME ARGS...: one measured command
    name=$1; shift
    if [ -n "${BENCH_ONLY:-}" ] && ! echo "$name" | grep -qE "^($BENCH_ONLY)\$"; then return 0; fi
    [ $drop = 1 ] && sync && echo 1 > /proc/sys/vm/drop_caches
    /usr/bin/time -f '%M %e' -o "$W/time.txt" "$MOEQ" "$@" -q > "$W/$name.out" 2> "$W/$name.err"
    rc=$?
    set -- $(tail -n 1 "$W/time.txt")
    awk -v n="$name" -v kb="$1" -v s="$2" -v rc="$rc" \
        'BEGIN { printf "%-34s %10.0f %9.1f %s\n", n, kb / 1024, s, rc == 0 ? "ok" : "exit " rc }'
}

run inspect inspect "$M"
run verify verify "$M"
run spectral-farms spectral "$M" --mode farms -o "$W/spec-$TAG.h5" --json
[ -f "$W/spectral-farms.out" ] && cp "$W/spectral-farms.out" "$W/spec-$TAG.json" && same "$W/spec-$TAG.json" && same "$W/spec-$TAG.h5"
run calibrate-diag calibrate "$M" --tokens "$T" --max-tokens 2048 --ctx 512 --diag -o "$W/calib-diag.h5"
run plan-uniform plan "$M" --budget 3 --cost uniform -o "$W/plan-uniform.json"
run plan-alphaq plan "$M" --budget 3 --cost alphaq --spectral "$W/spec-$TAG.h5" -o "$W/plan-alphaq.json"
run quantize-rtn-q4 quantize "$M" --bits 4 --method rtn -o "$W/q4-$TAG.moeq"; same "$W/q4-$TAG.moeq"
run eval-512 eval "$M" --tokens "$T" --max-tokens 512
run eval-q4-512 eval "$W/q4-$TAG.moeq" --tokens "$T" --max-tokens 512
run eval-q4-512-ref eval "$W/q4-$TAG.moeq" --tokens "$T" --max-tokens 512 --ref "$M"
run verify-q4 verify "$W/q4-$TAG.moeq"
run unpack-q4 unpack "$W/q4-$TAG.moeq" -o "$W/unpacked"
rm -rf "$W/unpacked"
run prune-magnitude prune "$M" --ratio 0.25 --score magnitude -o "$W/pruned"
rm -rf "$W/pruned"
# the 4-layer model: spectral (5 min instead of 30 on 2 quiet cores), full Hessians
run l4-spectral-farms spectral "$M4" --mode farms -o "$W/l4-spec-$TAG.h5" --json
[ -f "$W/l4-spectral-farms.out" ] && cp "$W/l4-spectral-farms.out" "$W/l4-spec-$TAG.json" && same "$W/l4-spec-$TAG.json" && same "$W/l4-spec-$TAG.h5"
run l4-calibrate calibrate "$M4" --tokens "$T" --max-tokens 2048 --ctx 512 -o "$W/l4-calib.h5"
run l4-plan-hessian plan "$M4" --budget 3 --cost hessian --calib "$W/l4-calib.h5" -o "$W/l4-plan-hessian.json"
run l4-quantize-gptq-q4 quantize "$M4" --bits 4 --method gptq --calib "$W/l4-calib.h5" -o "$W/l4-gptq-$TAG.moeq"; same "$W/l4-gptq-$TAG.moeq"
run l4-unpack-gptq unpack "$W/l4-gptq-$TAG.moeq" -o "$W/l4-unpacked"
rm -rf "$W/l4-unpacked"
run l4-prune-camera prune "$M4" --ratio 0.25 --score camera --calib "$W/l4-calib.h5" -o "$W/l4-pruned"
rm -rf "$W/l4-pruned" "$W/l4-calib.h5"
