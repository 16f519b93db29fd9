#!/bin/sh
# moeq spectral through the CLI: JSON keys and counts on every fixture, the HDF5 file read back
# with h5dump and compared with the JSON, bit-identical files across thread counts, scope all
# (1 x N and 8 x N matrices flagged), NaN weights flagged, SVG plots well-formed, usage errors.
. tests/cli/lib.sh

expect_exit "spectral --help" 0 "" -- "$MOEQ" spectral --help
expect_exit "spectral no model" 1 "missing MODEL" -- "$MOEQ" spectral
expect_exit "spectral bad mode" 1 "--mode wants" -- "$MOEQ" spectral $FX/tiny-mixtral --mode svd
expect_exit "spectral bad estimator" 1 "--estimator wants" -- "$MOEQ" spectral $FX/tiny-mixtral --estimator mle
expect_exit "spectral save-eigs without -o" 1 "needs -o" -- "$MOEQ" spectral $FX/tiny-mixtral --save-eigs
expect_exit "spectral missing model" 2 "" -- "$MOEQ" spectral "$TMPD/nope"

# JSON on every fixture: record count = MoE layers x experts x 3, the fixed keys present
for spec in tiny-mixtral:96 tiny-qwen2moe:72 tiny-qwen3moe:96 tiny-olmoe:96; do
  m=${spec%%:*}; want=${spec##*:}
  "$MOEQ" spectral $FX/$m --json --mode full > "$TMPD/$m.json" 2> "$TMPD/err"; rc=$?
  if [ $rc -eq 0 ] && python3 - "$TMPD/$m.json" "$want" <<'PY'
import json, math, sys
d = json.load(open(sys.argv[1])); want = int(sys.argv[2])
assert d["mode"] == "full" and d["estimator"] == "hill", d
ms = d["matrices"]; assert len(ms) == want, len(ms)
keys = "tensor layer expert proj rows cols n_eigs alpha alpha_hill alpha_ks ks_xmin ks_d stable_rank log_norm log_spectral_norm var".split()
for r in ms:
    for k in keys: assert k in r, k
    assert r["proj"] in ("gate", "up", "down") and r["expert"] >= 0
    assert r["alpha"] is None or (r["alpha"] == r["alpha_hill"] and 1 < r["alpha"] < 50), r
    assert r["n_eigs"] == min(r["rows"], r["cols"]), r
PY
  then echo "PASS spectral json $m"; else echo "FAIL spectral json $m"; head -n 5 "$TMPD/err" >&2; fi
done
grep -q '"tensor": "model.layers.0.mlp.experts.gate_up_proj\[3\]"' "$TMPD/tiny-qwen3moe.json" \
  && echo "PASS spectral fused tensor names" || echo "FAIL spectral fused tensor names"

# HDF5: h5dump reads it; the layer tables are [experts, 3]; /matrices/alpha equals the JSON
"$MOEQ" spectral $FX/tiny-olmoe -o "$TMPD/a.h5" --save-eigs --threads 1 --json -q > "$TMPD/a.json"
expect_exit "spectral h5dump header" 0 "" -- h5dump -H "$TMPD/a.h5"
if h5dump -a /format "$TMPD/a.h5" | grep -q '"moeq-spectral"' && \
   h5dump -H -d /layers/L002/alpha "$TMPD/a.h5" | grep -q 'SIMPLE { ( 8, 3 ) / ( 8, 3 ) }' && \
   h5dump -H -d /layers/L000/eigs/e005_down "$TMPD/a.h5" | grep -q 'SIMPLE { ( 96 ) / ( 96 ) }'; then
  echo "PASS spectral h5 layout"; else echo "FAIL spectral h5 layout"; fi
h5dump -y -w 0 -m %.17g -d /matrices/alpha "$TMPD/a.h5" > "$TMPD/alpha.txt"
h5dump -y -w 0 -d /matrices/tensor "$TMPD/a.h5" > "$TMPD/tensor.txt"
if python3 - "$TMPD/a.json" "$TMPD/alpha.txt" "$TMPD/tensor.txt" <<'PY'
import json, re, sys
d = json.load(open(sys.argv[1]))["matrices"]
txt = open(sys.argv[2]).read(); body = txt[txt.index("DATA {") + 6:txt.rindex("}")]
vals = [float(x) for x in re.findall(r"[-+0-9.eE]+|nan", body.split("}")[0])]
names = re.findall(r'"([^"]*)"', open(sys.argv[3]).read().split("DATA {")[1])
assert len(vals) == len(d) == len(names), (len(vals), len(d), len(names))
for r, v, n in zip(d, vals, names):
    assert r["tensor"] == n, (r["tensor"], n)
    assert abs(r["alpha"] - v) <= 1e-9 * abs(v), (r["alpha"], v)   # JSON carries 10 digits
PY
then echo "PASS spectral h5 matches json"; else echo "FAIL spectral h5 matches json"; fi

# bit-identical across runs and thread counts (farms, the default mode, and gram)
"$MOEQ" spectral $FX/tiny-mixtral -o "$TMPD/t1.h5" --threads 1 -q
"$MOEQ" spectral $FX/tiny-mixtral -o "$TMPD/t2.h5" --threads 2 -q
"$MOEQ" spectral $FX/tiny-mixtral -o "$TMPD/t3.h5" --threads 2 -q
cmp -s "$TMPD/t1.h5" "$TMPD/t2.h5" && cmp -s "$TMPD/t2.h5" "$TMPD/t3.h5" \
  && echo "PASS spectral farms file bit-identical (threads 1, 2, rerun)" || echo "FAIL spectral farms file bit-identical"
"$MOEQ" spectral $FX/tiny-qwen2moe --mode gram --scope all --randomize --save-eigs -o "$TMPD/g1.h5" --threads 1 -q
"$MOEQ" spectral $FX/tiny-qwen2moe --mode gram --scope all --randomize --save-eigs -o "$TMPD/g2.h5" --threads 2 -q
cmp -s "$TMPD/g1.h5" "$TMPD/g2.h5" && echo "PASS spectral gram file bit-identical" || echo "FAIL spectral gram file bit-identical"

# scope all on qwen2moe: attention, router (8 x 128: too few eigenvalues), shared expert, its
# 1 x 128 gate (too few), the dense layer's MLP; flagged, exit 0
"$MOEQ" spectral $FX/tiny-qwen2moe --scope all --json > "$TMPD/all.json" 2> "$TMPD/all.err"; rc=$?
if [ $rc -eq 0 ] && grep -q "shared_expert_gate.weight \[1x128\]: too_few" "$TMPD/all.err" && python3 - "$TMPD/all.json" <<'PY'
import json, sys
ms = json.load(open(sys.argv[1]))["matrices"]
projs = {r["proj"] for r in ms}
assert {"q", "k", "v", "o", "router", "shared_gate", "shared_up", "shared_down", "shared_expert_gate", "dense_gate"} <= projs, projs
for r in ms:
    if r["proj"] in ("router", "shared_expert_gate"):
        assert r["alpha"] is None and "too_few" in r["flags"] and r["expert"] == -1, r
assert len(ms) == 72 + 4 * 4 + 3 * 5 + 3, len(ms)
PY
then echo "PASS spectral scope all flags 1xN and router"; else echo "FAIL spectral scope all"; head -n 5 "$TMPD/all.err" >&2; fi

# NaN and Inf weights in one expert: flagged in the summary and the JSON, alpha null, exit 0
rm -rf "$TMPD/m"; cp -r $FX/tiny-qwen2moe "$TMPD/m"
python3 - "$TMPD/m/model.safetensors" <<'PY'
import json, struct, sys
p = sys.argv[1]; b = bytearray(open(p, "rb").read())
n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n])
off = 8 + n + h["model.layers.2.mlp.experts.5.down_proj.weight"]["data_offsets"][0]
b[off + 14:off + 16] = struct.pack("<H", 0x7FC0)
b[off + 18:off + 20] = struct.pack("<H", 0x7F80)
open(p, "wb").write(bytes(b))
PY
"$MOEQ" spectral "$TMPD/m" --json > "$TMPD/nan.json" 2> "$TMPD/nan.err"; rc=$?
if [ $rc -eq 0 ] && grep -q "experts.5.down_proj.weight \[128x96\]: nonfinite (2 NaN/Inf weights)" "$TMPD/nan.err" && python3 - "$TMPD/nan.json" <<'PY'
import json, sys
ms = json.load(open(sys.argv[1]))["matrices"]
bad = [r for r in ms if r["flags"] and "nonfinite" in r["flags"]]
assert len(bad) == 1 and bad[0]["tensor"] == "model.layers.2.mlp.experts.5.down_proj.weight", bad
assert bad[0]["alpha"] is None and bad[0]["var"] is None and bad[0]["nonfinite"] == 2
assert sum(r["alpha"] is not None for r in ms) == len(ms) - 1
PY
then echo "PASS spectral NaN/Inf weights flagged"; else echo "FAIL spectral NaN/Inf weights flagged"; head -n 5 "$TMPD/nan.err" >&2; fi

# plots: three heat maps and the ESD of a named matrix, well-formed SVG with axes and labels
"$MOEQ" spectral $FX/tiny-qwen3moe --plot "$TMPD/plots" --plot-matrix 'model.layers.1.mlp.experts.down_proj[2]' -q
if python3 - "$TMPD/plots" <<'PY'
import os, sys, xml.etree.ElementTree as ET
d = sys.argv[1]; files = sorted(os.listdir(d))
assert files == ["alpha_down.svg", "alpha_gate.svg", "alpha_up.svg", "esd_model.layers.1.mlp.experts.down_proj_2_.svg"], files
ns = "{http://www.w3.org/2000/svg}"
for f in files:
    root = ET.parse(os.path.join(d, f)).getroot()
    text = " ".join("".join(t.itertext()) for t in root.iter(ns + "text"))
    if f.startswith("alpha_"):
        assert "expert" in text and "layer" in text and "α" in text, text
        assert len(root.findall(f".//{ns}rect")) >= 4 * 8 and root.find(f".//{ns}linearGradient") is not None
    else:
        assert "eigenvalue" in text and "KS fit" in text and "Hill" in text, text
        assert len(root.findall(f".//{ns}circle")) > 40
PY
then echo "PASS spectral plots"; else echo "FAIL spectral plots"; fi
expect_exit "spectral plot unknown matrix" 2 "no such matrix" -- "$MOEQ" spectral $FX/tiny-mixtral --plot "$TMPD/p2" --plot-matrix nope -q
expect_exit "spectral output dir missing" 4 "" -- "$MOEQ" spectral $FX/tiny-mixtral -o "$TMPD/no/dir/x.h5" -q
