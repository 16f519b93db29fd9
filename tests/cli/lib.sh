# Helpers for CLI tests: each expect_* prints one PASS/FAIL line. $MOEQ is the binary under test.
: "${MOEQ:=bin/moeq}"
FX=tests/fixtures
TMPD=$(mktemp -d)
trap 'rm -rf "$TMPD"' EXIT

# expect_exit NAME CODE [PATTERN] -- CMD...: runs CMD, checks its exit code and that stderr
# contains PATTERN (a grep -E expression; empty means no check).
expect_exit() {
  name=$1; code=$2; pat=$3; shift 4
  "$@" > "$TMPD/out" 2> "$TMPD/err"; rc=$?
  if [ "$rc" -ne "$code" ]; then
    echo "FAIL $name: exit $rc, wanted $code"; sed 's/^/    /' "$TMPD/err" | head -n 5 >&2; return
  fi
  if [ -n "$pat" ] && ! grep -qE -- "$pat" "$TMPD/err"; then
    echo "FAIL $name: stderr lacks /$pat/"; sed 's/^/    /' "$TMPD/err" | head -n 5 >&2; return
  fi
  echo "PASS $name"
}

# mpi N CMD...: runs CMD under `mpirun -np N` on this machine (loopback only, more ranks than
# cores allowed, root allowed). Leak checking is off for it: Open MPI's own allocations are
# never freed and LeakSanitizer would report them.
mpi() {
  np=$1; shift
  OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader \
    OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_btl_vader_single_copy_mechanism=none \
    ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0" \
    mpirun --oversubscribe -np "$np" "$@"
}
