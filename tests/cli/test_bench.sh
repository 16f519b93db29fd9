#!/bin/sh
# moeq bench kernel --quick: the JSON keys of DESIGN.md, every rate positive and finite, the
# ratios consistent with the rates they divide (the full-size figures are in docs/bench.md).
. tests/cli/lib.sh
expect_exit "bench --help" 0 "" -- "$MOEQ" bench --help
expect_exit "bench without name" 1 "missing" -- "$MOEQ" bench
expect_exit "bench unknown" 1 "unknown benchmark" -- "$MOEQ" bench disk
"$MOEQ" bench kernel --quick --json -q --threads 1 > "$TMPD/b.json" || echo "FAIL bench kernel --quick exit $?"
python3 - "$TMPD/b.json" <<'PY' && echo "PASS bench kernel --quick: keys and ratios" || echo "FAIL bench kernel --quick: keys and ratios"
import json, math, sys
b = json.load(open(sys.argv[1]))
assert b["membw_gbs"] > 0 and b["threads"] == 1
assert {g["bits"] for g in b["gemv"] if g["variant"] == b["kernel"]} == {2, 3, 4, 8}
for g in b["gemv"]:
    assert {"bits", "group", "rows", "cols", "gbs", "ratio_to_membw"} <= set(g)
    assert g["gbs"] > 0 and math.isfinite(g["gbs"])
    assert abs(g["ratio_to_membw"] - g["gbs"] / b["membw_gbs"]) < 1e-9 * g["gbs"] / b["membw_gbs"] + 1e-12
for g in b["gemm"]:
    assert {"bits", "group", "rows", "cols", "batch", "gflops", "ratio_to_sgemm"} <= set(g)
    assert g["gflops"] > 0 and abs(g["ratio_to_sgemm"] - g["gflops"] / g["sgemm_gflops"]) < 1e-6 * g["ratio_to_sgemm"]
PY
