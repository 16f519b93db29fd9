#!/bin/sh
# Runs every test of one build: unit binaries, fuzz-corpus replays and CLI scripts.
# Usage: tests/run_tests.sh BUILD_DIR MOEQ_BINARY. Prints PASS/FAIL lines, then "N passed, N failed";
# BUILD_DIR/test-times.txt gets the seconds each test binary and script took (slowest first: sort -rn).
set -u
build=$1
export MOEQ=$2
out=$(mktemp)
: > "$build/test-times.txt"
for t in "$build"/tests/test_*; do
  [ -x "$t" ] || continue
  name=$(basename "$t")
  t0=$(date +%s.%N)
  "$t" > "$out.1" 2> "$out.2"; rc=$?
  echo "$(awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $t0 }") $name" >> "$build/test-times.txt"
  cat "$out.1" >> "$out"
  if [ $rc -ne 0 ] && ! grep -q '^FAIL' "$out.1"; then echo "FAIL $name (exit $rc)" >> "$out"; fi
  if [ $rc -ne 0 ]; then sed 's/^/  /' "$out.2" | tail -n 40 >&2; fi
done
for r in "$build"/tests/replay_*; do
  [ -x "$r" ] || continue
  n=${r##*/replay_}
  if "$r" tests/fuzz/corpus/"$n" > "$out.1" 2>&1; then echo "PASS fuzz-replay $n" >> "$out"
  else echo "FAIL fuzz-replay $n" >> "$out"; tail -n 20 "$out.1" >&2; fi
done
for c in tests/cli/test_*.sh; do
  [ -f "$c" ] || continue
  t0=$(date +%s.%N)
  sh "$c" >> "$out" 2> "$out.2" || { grep -q '^FAIL' "$out" || echo "FAIL $(basename "$c") (exit)" >> "$out"; sed 's/^/  /' "$out.2" | tail -n 40 >&2; }
  echo "$(awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $t0 }") $(basename "$c")" >> "$build/test-times.txt"
done
cat "$out"
p=$(grep -c '^PASS' "$out"); f=$(grep -c '^FAIL' "$out")
echo "$p passed, $f failed"
rm -f "$out" "$out.1" "$out.2"
[ "$f" -eq 0 ]
