#!/bin/sh
# moeq inspect on every fixture: JSON keys of DESIGN.md, and parameter counts equal to an
# independent count of the safetensors headers (python3, stdlib only).
. tests/cli/lib.sh

expect_exit "inspect --help" 0 "" -- "$MOEQ" inspect --help
expect_exit "inspect without MODEL is a usage error" 1 "missing MODEL" -- "$MOEQ" inspect
expect_exit "inspect unknown option" 1 "unknown option --frobnicate" -- "$MOEQ" inspect --frobnicate $FX/tiny-mixtral
expect_exit "moeq without command" 1 "" -- "$MOEQ"
expect_exit "moeq unknown command" 1 "unknown command" -- "$MOEQ" frobnicate

for m in tiny-mixtral tiny-qwen2moe tiny-qwen3moe tiny-olmoe; do
  if ! "$MOEQ" inspect $FX/$m --json > "$TMPD/$m.json" 2> "$TMPD/err"; then
    echo "FAIL inspect $m: exit code"; cat "$TMPD/err" >&2; continue
  fi
  if python3 - "$FX/$m" "$TMPD/$m.json" <<'PY'
import json, os, struct, sys, glob
d, out = sys.argv[1], json.load(open(sys.argv[2]))
cfg = json.load(open(os.path.join(d, "config.json")))
total, nbytes, dtypes = 0, 0, set()
for f in sorted(glob.glob(os.path.join(d, "*.safetensors"))):
    b = open(f, "rb").read(); n = struct.unpack("<Q", b[:8])[0]
    for k, v in json.loads(b[8:8 + n]).items():
        if k == "__metadata__": continue
        c = 1
        for s in v["shape"]: c *= s
        total += c; nbytes += v["data_offsets"][1] - v["data_offsets"][0]; dtypes.add(v["dtype"])
for k in ["model_type", "layers", "experts", "top_k", "hidden", "params", "dtype", "bytes"]:
    assert k in out, "missing key " + k
for k in ["total", "attention", "router", "shared_experts", "routed_experts", "embeddings"]:
    assert k in out["params"], "missing params." + k
assert out["model_type"] == cfg["model_type"]
assert out["layers"] == cfg["num_hidden_layers"]
assert out["experts"] == cfg.get("num_local_experts", cfg.get("num_experts"))
assert out["top_k"] == cfg["num_experts_per_tok"]
assert out["hidden"] == cfg["hidden_size"]
assert out["params"]["total"] == total, (out["params"]["total"], total)
assert out["bytes"] == nbytes
assert out["dtype"] == dtypes.pop()
p = out["params"]
assert sum(p[k] for k in p if k != "total") == p["total"]
H, L, E = cfg["hidden_size"], cfg["num_hidden_layers"], out["experts"]
assert p["router"] == L * E * H or cfg.get("mlp_only_layers"), p["router"]
PY
  then echo "PASS inspect $m json"; else echo "FAIL inspect $m json"; fi
done
expect_exit "inspect human text" 0 "" -- "$MOEQ" inspect $FX/tiny-olmoe
grep -q "olmoe" "$TMPD/out" && echo "PASS inspect human names the family" || echo "FAIL inspect human names the family"
