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
