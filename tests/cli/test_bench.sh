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

# moeq bench eval on the tiny fixture, small sizes: the runs of DESIGN.md's JSON (weights x ctx),
# positive finite rates, the coretype ratios consistent, the avx2 KLD within 5% of the reference
# kernels', a bad MODEL exits 2 and --peer without --peer-model is a usage error.
FX=tests/fixtures
expect_exit "bench eval --help" 0 "" -- "$MOEQ" bench eval --help
expect_exit "bench eval no tokens" 1 "tokens" -- "$MOEQ" bench eval $FX/tiny-qwen3moe
expect_exit "bench eval peer alone" 1 "peer-model" -- "$MOEQ" bench eval $FX/tiny-qwen3moe --tokens $FX/heldout.safetensors --peer /bin/true
expect_exit "bench eval bad model" 2 "" -- "$MOEQ" bench eval "$TMPD/nope" --tokens $FX/heldout.safetensors -q
"$MOEQ" bench eval $FX/tiny-qwen3moe --tokens $FX/heldout.safetensors --ctx-list 64,128 --max-tokens 256 --reps 1 \
  --kld-tokens 64 --threads 2 --json -q > "$TMPD/be.json" || echo "FAIL bench eval exit $?"
python3 - "$TMPD/be.json" <<'PY' && echo "PASS bench eval: runs, ratios, KLD" || echo "FAIL bench eval: runs, ratios, KLD"
import json, math, sys
b = json.load(open(sys.argv[1]))
assert b["threads"] == 2
assert sorted((r["weights"], r["ctx"]) for r in b["runs"]) == [("bf16", 64), ("bf16", 128), ("packed", 64), ("packed", 128)]
for r in b["runs"]:
    assert r["tokens_per_s"] > 0 and r["tokens_per_s_no_coretype"] > 0
    assert abs(r["coretype_ratio"] - r["tokens_per_s_no_coretype"] / r["tokens_per_s"]) < 1e-9
    assert r["peer_tokens_per_s"] is None and r["ratio"] is None
assert b["kld"], "no fast variant measured"
for k in b["kld"]:
    assert k["kld_mean_ref"] > 0 and abs(k["ratio"] - k["kld_mean"] / k["kld_mean_ref"]) < 1e-9
    assert k["ratio"] < 1.05, k
assert b["calibrate_tokens_per_s"] > 0
PY
