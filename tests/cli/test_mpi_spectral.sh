#!/bin/sh
# spectral and plan under mpirun (issue 16): `mpi N` runs give files byte-identical (cmp) to one
# process and JSON identical but for the timing keys, whatever N; input errors are agreed (one
# message, the same exit code); a failure on one rank ends the run non-zero and leaves neither
# the output file nor its temporary file. MOEQ_TEST_QUICK (the ASan run) keeps fewer cases.
. tests/cli/lib.sh
if ! command -v mpirun > /dev/null 2>&1; then echo "FAIL mpi spectral/plan: no mpirun (scripts/deps.sh installs openmpi-bin)"; exit 1; fi
Q=${MOEQ_TEST_QUICK:-}

# same NAME A B: cmp of two files
same() {
  if cmp -s "$2" "$3"; then echo "PASS $1"; else echo "FAIL $1: $2 and $3 differ"; fi
}
# same_json NAME A B: equal but for the timing keys ("seconds", "seconds_costs", "seconds_solve")
same_json() {
  grep -v '"seconds[a-z_]*":' "$2" > "$TMPD/sj.a"; grep -v '"seconds[a-z_]*":' "$3" > "$TMPD/sj.b"
  if [ -s "$TMPD/sj.a" ] && cmp -s "$TMPD/sj.a" "$TMPD/sj.b"; then echo "PASS $1"; else echo "FAIL $1: $2 and $3 differ"; fi
}
# run NP OUT CMD...: one process for NP = 1, else `mpi NP`; stdout to OUT.json, stderr to OUT.err
run() {
  np=$1; o=$2; shift 2
  if [ "$np" -eq 1 ]; then "$@" > "$o.json" 2> "$o.err"; else mpi "$np" "$@" > "$o.json" 2> "$o.err"; fi
  rc=$?
  [ $rc -eq 0 ] || { echo "FAIL mpi run ($np ranks, exit $rc): $*"; sed 's/^/    /' "$o.err" | head -n 5 >&2; }
}

NPS="2 3"; [ -n "$Q" ] && NPS=2

# --- spectral ---------------------------------------------------------------------------------
# farms (the default mode) with tiles small enough that the seeded tile choice matters
S1="spectral $FX/tiny-qwen3moe --mode farms --tile 32 --max-blocks 6 --seed 7 --save-eigs --threads 1 --json -q"
run 1 "$TMPD/f1" "$MOEQ" $S1 -o "$TMPD/f1.h5"
for np in $NPS; do
  run $np "$TMPD/f$np" "$MOEQ" $S1 -o "$TMPD/f$np.h5"
  same "mpi spectral farms h5, $np ranks" "$TMPD/f1.h5" "$TMPD/f$np.h5"
  same_json "mpi spectral farms json, $np ranks" "$TMPD/f1.json" "$TMPD/f$np.json"
done
[ -s "$TMPD/f2.err" ] && echo "FAIL mpi spectral -q prints nothing" || echo "PASS mpi spectral -q prints nothing"

# full mode, scope all (1 x N and router matrices flagged), --save-eigs, --randomize, plots
S2="spectral $FX/tiny-qwen2moe --mode full --scope all --save-eigs --randomize --threads 1 --json"
run 1 "$TMPD/a1" "$MOEQ" $S2 -o "$TMPD/a1.h5" --plot "$TMPD/plot1"
for np in $NPS; do
  run $np "$TMPD/a$np" "$MOEQ" $S2 -o "$TMPD/a$np.h5" --plot "$TMPD/plot$np"
  same "mpi spectral full scope all h5, $np ranks" "$TMPD/a1.h5" "$TMPD/a$np.h5"
  same_json "mpi spectral full scope all json, $np ranks" "$TMPD/a1.json" "$TMPD/a$np.json"
  if diff -r "$TMPD/plot1" "$TMPD/plot$np" > /dev/null && [ "$(ls "$TMPD/plot$np" | wc -l)" -ge 5 ]; then
    echo "PASS mpi spectral plots, $np ranks"; else echo "FAIL mpi spectral plots, $np ranks"; fi
  # the human summary once, the same as one process's but for the timing line
  sed -e 1d -e "s|a1.h5|aN.h5|; s|plot1|plotN|" "$TMPD/a1.err" > "$TMPD/sum.1"
  sed -e 1d -e "s|a$np.h5|aN.h5|; s|plot$np|plotN|" "$TMPD/a$np.err" > "$TMPD/sum.n"
  if [ "$(grep -c '^moeq spectral:' "$TMPD/a$np.err")" -eq 1 ] && cmp -s "$TMPD/sum.1" "$TMPD/sum.n"; then
    echo "PASS mpi spectral summary once, $np ranks"; else echo "FAIL mpi spectral summary once, $np ranks"; fi
done

if [ -z "$Q" ]; then
  # gram mode, two shards' model, --plot-matrix owned by rank 1, ks estimator, threads 2 per rank
  S3="spectral $FX/tiny-olmoe --mode gram --estimator ks --threads 2 --json -q"
  P='model.layers.1.mlp.experts.0.up_proj.weight'
  run 1 "$TMPD/g1" "$MOEQ" $S3 -o "$TMPD/g1.h5" --plot "$TMPD/gp1" --plot-matrix "$P"
  run 2 "$TMPD/g2" "$MOEQ" $S3 -o "$TMPD/g2.h5" --plot "$TMPD/gp2" --plot-matrix "$P"
  same "mpi spectral gram h5, 2 ranks" "$TMPD/g1.h5" "$TMPD/g2.h5"
  same_json "mpi spectral gram json, 2 ranks" "$TMPD/g1.json" "$TMPD/g2.json"
  diff -r "$TMPD/gp1" "$TMPD/gp2" > /dev/null && echo "PASS mpi spectral --plot-matrix, 2 ranks" \
    || echo "FAIL mpi spectral --plot-matrix, 2 ranks"
  # the sharded mixtral, default options, JSON only
  run 1 "$TMPD/m1" "$MOEQ" spectral $FX/tiny-mixtral --threads 1 --json -q
  run 3 "$TMPD/m3" "$MOEQ" spectral $FX/tiny-mixtral --threads 1 --json -q
  same_json "mpi spectral mixtral json, 3 ranks" "$TMPD/m1.json" "$TMPD/m3.json"
fi

# input errors are agreed: every rank returns the same code, rank 0 alone says it
expect_exit "mpi spectral missing model" 2 "" -- mpi 2 "$MOEQ" spectral "$TMPD/nope" -q
[ "$(grep -c 'moeq spectral' "$TMPD/err")" -eq 1 ] && echo "PASS mpi spectral error said once" \
  || echo "FAIL mpi spectral error said once"
expect_exit "mpi spectral output dir missing" 4 "cannot|No such" -- mpi 2 "$MOEQ" spectral $FX/tiny-mixtral -o "$TMPD/no/dir/x.h5" -q
expect_exit "mpi spectral unknown --plot-matrix" 2 "no such matrix" -- \
  mpi 2 "$MOEQ" spectral $FX/tiny-mixtral --plot "$TMPD/p0" --plot-matrix nope -q
expect_exit "mpi spectral usage error" 1 "--mode wants" -- mpi 2 "$MOEQ" spectral $FX/tiny-mixtral --mode svd

# a failure on one rank mid-run: non-zero, no output file, no temporary file left
for spec in 1:5 0:4; do
  rm -f "$TMPD"/x.h5*
  export MOEQ_TEST_FAIL_SPECTRAL=$spec
  expect_exit "mpi spectral failure on rank ${spec%%:*}" 4 "injected failure" -- \
    mpi 2 "$MOEQ" spectral $FX/tiny-mixtral -o "$TMPD/x.h5" --save-eigs --threads 1 -q
  unset MOEQ_TEST_FAIL_SPECTRAL
  if ls "$TMPD"/x.h5* > /dev/null 2>&1; then echo "FAIL mpi spectral failure leaves no file (rank ${spec%%:*})"
  else echo "PASS mpi spectral failure leaves no file (rank ${spec%%:*})"; fi
done

# --- plan -------------------------------------------------------------------------------------
M=$FX/tiny-qwen3moe
"$MOEQ" calibrate $M --tokens $FX/heldout.safetensors --ctx 256 --max-tokens 1024 -q -o "$TMPD/c.h5" \
  || echo "FAIL mpi plan: calibrate"
PL="plan $M --budget 3 --calib $TMPD/c.h5 --threads 1 --json -q"
for cost in hessian hessian-gptq uniform alphaq; do
  [ -n "$Q" ] && [ "$cost" != hessian ] && continue
  case $cost in
    hessian) extra="--cost hessian" ;;
    hessian-gptq) extra="--cost hessian --hessian-quant gptq --budget 2.5" ;;
    uniform) extra="--cost uniform --tensor-type layers\.1\..*=q4g64a" ;;
    alphaq) extra="--cost alphaq --spectral $TMPD/f1.h5 --gamma 3" ;;
  esac
  rm -f "$TMPD"/pl*.plan
  run 1 "$TMPD/pl1" "$MOEQ" $PL $extra -o "$TMPD/pl1.plan"
  nps=$NPS; [ "$cost" != hessian ] && nps=2   # 3 ranks for the dealt costs only
  for np in $nps; do
    run $np "$TMPD/pl$np" "$MOEQ" $PL $extra -o "$TMPD/pl$np.plan"
    same_json "mpi plan $cost plan.json, $np ranks" "$TMPD/pl1.plan" "$TMPD/pl$np.plan"
    same_json "mpi plan $cost json, $np ranks" "$TMPD/pl1.json" "$TMPD/pl$np.json"
  done
done
expect_exit "mpi plan budget out of reach" 2 "outside what the candidates reach" -- \
  mpi 2 "$MOEQ" $PL --cost hessian --budget 30 -o "$TMPD/x.plan"
[ "$(grep -c 'moeq plan' "$TMPD/err")" -eq 1 ] && echo "PASS mpi plan error said once" || echo "FAIL mpi plan error said once"
rm -f "$TMPD"/x.plan*
export MOEQ_TEST_FAIL_PLAN=1:3
expect_exit "mpi plan failure on rank 1" 4 "rank 1.*injected failure" -- mpi 2 "$MOEQ" $PL --cost hessian -o "$TMPD/x.plan"
unset MOEQ_TEST_FAIL_PLAN
ls "$TMPD"/x.plan* > /dev/null 2>&1 && echo "FAIL mpi plan failure leaves no file" || echo "PASS mpi plan failure leaves no file"
