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
    assert abs(r["coretype_ratio"] - r["tokens_per_s_no_coretype"] / r["tokens_per_s"]) < 1e-9 * r["coretype_ratio"]
    # one rep: its pair is the whole run, so the paired median is the same ratio
    assert abs(r["coretype_ratio_paired"] - r["coretype_ratio"]) < 1e-9 * r["coretype_ratio"]
    assert r["peer_tokens_per_s"] is None and r["ratio"] is None
assert b["kld"], "no fast variant measured"
for k in b["kld"]:
    assert k["kld_mean_ref"] > 0 and abs(k["ratio"] - k["kld_mean"] / k["kld_mean_ref"]) < 1e-9
    assert k["ratio"] < 1.05, k
assert b["calibrate_tokens_per_s"] > 0
PY

# the peer's speed (docs/bench.md, "peer"): "prompt eval time = T ms / N tokens" when the peer
# prints it at -lv 4 (a fake llama-perplexity: 1024 tokens in 500 ms = 2048 tokens/s), else the
# first pass's "seconds per pass" (a fake that refuses -lv: ctx 64 in 0.25 s = 256 tokens/s),
# each run over --max-tokens / ctx chunks; a peer that prints neither exits 2 with a message,
# never a NaN.
cat > "$TMPD/peer_perf" <<'SH'
#!/bin/sh
case " $* " in *" --chunks 2 "*) ;; *) echo "bad chunks: $*" >&2; exit 1 ;; esac
case " $* " in *" -lv 4 "*) echo "llama_perf_context_print: prompt eval time =     500.00 ms /  1024 tokens (    0.49 ms per token,  2048.00 tokens per second)" >&2 ;; esac
echo "perplexity: 9.99 seconds per pass - ETA 0.01 minutes" >&2
SH
cat > "$TMPD/peer_pass" <<'SH'
#!/bin/sh
case " $* " in *" -lv "*) echo "error: invalid argument: -lv" >&2; exit 1 ;; esac
echo "perplexity: 0.25 seconds per pass - ETA 0.01 minutes" >&2
SH
printf '#!/bin/sh\necho "Final estimate: PPL = 9.0"\n' > "$TMPD/peer_none"
chmod +x "$TMPD/peer_perf" "$TMPD/peer_pass" "$TMPD/peer_none"
for p in perf pass; do
  "$MOEQ" bench eval $FX/tiny-qwen3moe --text $FX/heldout.txt --ctx-list 64 --max-tokens 128 --reps 1 --kld-tokens 64 \
    --no-calibrate --peer "$TMPD/peer_$p" --peer-model "$TMPD/nope.gguf" --json -q > "$TMPD/bp.json" \
    || echo "FAIL bench eval peer $p exit $?"
  python3 - "$TMPD/bp.json" $p <<'PY' && echo "PASS bench eval peer rate ($p)" || echo "FAIL bench eval peer rate ($p)"
import json, sys
b = json.load(open(sys.argv[1])); want = 2048.0 if sys.argv[2] == "perf" else 256.0
for r in b["runs"]:
    assert abs(r["peer_tokens_per_s"] - want) < 1e-6 * want, r
    assert abs(r["ratio"] - r["tokens_per_s"] / want) < 1e-9 * r["ratio"], r
PY
done
expect_exit "bench eval peer without speed" 2 "printed no speed" -- "$MOEQ" bench eval $FX/tiny-qwen3moe --text $FX/heldout.txt \
  --ctx-list 64 --max-tokens 128 --reps 1 --kld-tokens 64 --no-calibrate --peer "$TMPD/peer_none" --peer-model "$TMPD/nope.gguf" -q
expect_exit "bench eval peer failing" 2 "exited with status 1" -- "$MOEQ" bench eval $FX/tiny-qwen3moe --text $FX/heldout.txt \
  --ctx-list 64 --max-tokens 128 --reps 1 --kld-tokens 64 --no-calibrate --peer /bin/false --peer-model "$TMPD/nope.gguf" -q
