#!/bin/sh
# Broken checkpoints built from copies of the fixtures: each must give exit 2 and a message
# naming the file and the tensor or field, from both inspect and eval. (Raw safetensors
# breakage is catalogued in tests/broken/safetensors and checked by test_safetensors.)
. tests/cli/lib.sh
T=$FX/heldout.safetensors

mk() { rm -rf "$TMPD/m"; cp -r "$FX/$1" "$TMPD/m"; }

# rewrite_header FILE PYTHON-EXPR: edits the JSON header h of FILE in place, keeping its length
rewrite_header() {
  python3 - "$1" "$2" <<'PY'
import json, struct, sys
path, expr = sys.argv[1], sys.argv[2]
b = bytearray(open(path, "rb").read())
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
exec(expr)
new = json.dumps(h, separators=(",", ":")).encode()
assert len(new) <= n, "edited header longer than the original"
b[8:8 + n] = new + b" " * (n - len(new))
open(path, "wb").write(bytes(b))
PY
}

both() {   # both NAME PATTERN: inspect and eval of $TMPD/m must fail with exit 2 and PATTERN
  expect_exit "inspect: $1" 2 "$2" -- "$MOEQ" inspect "$TMPD/m"
  expect_exit "eval: $1" 2 "$2" -- "$MOEQ" eval "$TMPD/m" --tokens $T --ctx 64 --max-tokens 64
}

mk tiny-olmoe
python3 -c "import os,sys; p=sys.argv[1]; os.truncate(p, os.path.getsize(p) - 100)" "$TMPD/m/model-00002-of-00002.safetensors"
both "truncated shard" "model-00002-of-00002.safetensors"

mk tiny-olmoe
rm "$TMPD/m/model-00001-of-00002.safetensors"
both "missing shard" "model-00001-of-00002.safetensors"

mk tiny-olmoe
python3 - "$TMPD/m/model.safetensors.index.json" <<'PY'
import json, sys
p = sys.argv[1]; j = json.load(open(p))
k = "model.layers.0.mlp.gate.weight"
j["weight_map"][k] = "model-00002-of-00002.safetensors" if j["weight_map"][k].startswith("model-00001") else "model-00001-of-00002.safetensors"
json.dump(j, open(p, "w"))
PY
both "index points a tensor at the wrong shard" "model.layers.0.mlp.gate.weight"

mk tiny-qwen2moe
printf 'garbage' | dd of="$TMPD/m/model.safetensors" bs=1 seek=20 conv=notrunc 2>/dev/null
both "corrupted header bytes" "model.safetensors"

mk tiny-qwen2moe
rewrite_header "$TMPD/m/model.safetensors" 'h["model.layers.0.mlp.experts.3.gate_proj.weight"]["shape"] = [128, 96]'
both "expert matrix with transposed shape" "model.layers.0.mlp.experts.3.gate_proj.weight.*128, 96"

mk tiny-qwen2moe
rewrite_header "$TMPD/m/model.safetensors" 'h["model.layers.2.self_attn.q_proj.weight"]["dtype"] = "I16"'
both "weight with dtype I16" "model.layers.2.self_attn.q_proj.weight.*I16"

mk tiny-qwen3moe
rewrite_header "$TMPD/m/model.safetensors" 'h["model.layers.1.mlp.experts.gate_up_proj"]["shape"] = [8, 128, 192]'
both "fused gate_up_proj with the wrong shape" "model.layers.1.mlp.experts.gate_up_proj"

mk tiny-mixtral
sed -i 's/"model_type": "mixtral"/"model_type": "gpt_neox"/' "$TMPD/m/config.json"
both "unknown model_type" "model_type.*gpt_neox"

mk tiny-mixtral
sed -i 's/"num_hidden_layers": 4/"num_hidden_layers": 5/' "$TMPD/m/config.json"
both "config with more layers than the checkpoint" "model.layers.4"

mk tiny-mixtral
rm "$TMPD/m/config.json"
both "missing config.json" "config.json"

mk tiny-mixtral
printf '{"model_type": "mixtral", ' > "$TMPD/m/config.json"
both "truncated config.json" "config.json"

expect_exit "inspect: nonexistent directory" 2 "no-such-dir" -- "$MOEQ" inspect "$TMPD/no-such-dir"

# FP8 block-scaled sources (issue 14, CF-11): a missing or mis-shaped scale tensor, a scale of
# the wrong dtype, F8 weights without quantization_config, an unknown quant_method
S=model.layers.1.self_attn.kv_b_proj.weight_scale_inv
mk tiny-deepseekv3-fp8
rewrite_header "$TMPD/m/model.safetensors" "h['${S%_inv}_xxx'] = h.pop('$S')"
both "fp8: scale tensor missing" "$S' not found"
mk tiny-deepseekv3-fp8
rewrite_header "$TMPD/m/model.safetensors" "h['$S']['shape'] = [1, 2]"
both "fp8: scale grid mis-shaped" "$S.*\\[1, 2\\].*\\[2, 1\\]"
mk tiny-deepseekv3-fp8
rewrite_header "$TMPD/m/model.safetensors" "h['$S']['dtype'] = 'I32'"
both "fp8: scale of dtype I32" "$S.*I32"
mk tiny-deepseekv3-fp8
python3 -c "import json,sys; p=sys.argv[1]; c=json.load(open(p)); del c['quantization_config']; json.dump(c, open(p,'w'))" "$TMPD/m/config.json"
both "fp8: F8_E4M3 weights without quantization_config" "F8_E4M3 without quantization_config"
mk tiny-deepseekv3-fp8
python3 -c "import json,sys; p=sys.argv[1]; c=json.load(open(p)); c['quantization_config']['quant_method']='awq'; json.dump(c, open(p,'w'))" "$TMPD/m/config.json"
both "fp8: unknown quant_method" "quantization_config.quant_method.*awq"

# MXFP4 experts (gpt_oss, CF-11): a block grid that does not match the shape (same bytes), a
# missing scale tensor, an unknown quant_method, blocks without quantization_config, bf16
# experts under quantization_config mxfp4
B=model.layers.2.mlp.experts.down_proj
mk tiny-gptoss-mxfp4
rewrite_header "$TMPD/m/model.safetensors" "h['${B}_blocks']['shape'] = [8, 128, 8, 8]"
both "mxfp4: block grid mismatching the shape" "${B}_blocks.*\\[8, 128, 8, 8\\].*\\[8, 128, 4, 16\\]"
mk tiny-gptoss-mxfp4
rewrite_header "$TMPD/m/model.safetensors" "h['${B}_scalez'] = h.pop('${B}_scales')"
both "mxfp4: scales missing" "${B}_scales' not found"
mk tiny-gptoss-mxfp4
python3 -c "import json,sys; p=sys.argv[1]; c=json.load(open(p)); c['quantization_config']['quant_method']='bitsandbytes'; json.dump(c, open(p,'w'))" "$TMPD/m/config.json"
both "mxfp4: unknown quant_method" "quantization_config.quant_method.*bitsandbytes"
mk tiny-gptoss-mxfp4
python3 -c "import json,sys; p=sys.argv[1]; c=json.load(open(p)); del c['quantization_config']; json.dump(c, open(p,'w'))" "$TMPD/m/config.json"
both "mxfp4: blocks without quantization_config" "gate_up_proj_blocks.*without quantization_config"
mk tiny-gptoss
python3 -c "import json,sys; p=sys.argv[1]; c=json.load(open(p)); c['quantization_config']={'quant_method': 'mxfp4'}; json.dump(c, open(p,'w'))" "$TMPD/m/config.json"
both "mxfp4: config says mxfp4, experts are bf16" "gate_up_proj_blocks' not found"

# Reading what transformers reads (issue 14): an index whose metadata.total_size disagrees with
# the shards opens everywhere with the same warning; -o into a missing directory names it
mk tiny-olmoe
python3 -c "import json,sys; p=sys.argv[1]; j=json.load(open(p)); j['metadata']['total_size'] += 1000; json.dump(j, open(p,'w'))" \
  "$TMPD/m/model.safetensors.index.json"
for cmd in "inspect" "verify" "eval --tokens $T --ctx 64 --max-tokens 64" "spectral -o $TMPD/s.h5" \
           "quantize --bits 4 -o $TMPD/q.moeq" "calibrate --tokens $T --ctx 64 --max-tokens 128 -o $TMPD/c.h5"; do
  set -- $cmd
  expect_exit "total_size off: $1 warns and runs" 0 "warning: .*index.json: metadata.total_size is .*CK-9" -- \
    "$MOEQ" $1 "$TMPD/m" $(echo "$cmd" | cut -s -d' ' -f2-) -q
done
for cmd in "spectral $FX/tiny-olmoe" "quantize $FX/tiny-olmoe --bits 4" "calibrate $FX/tiny-olmoe --tokens $T" \
           "plan $FX/tiny-olmoe --budget 4" "tokenize $FX/tiny-olmoe --text $FX/heldout.txt"; do
  set -- $cmd
  expect_exit "$1 -o into a missing directory" 4 "$TMPD/no-such-dir does not exist" -- \
    "$MOEQ" $cmd -o "$TMPD/no-such-dir/out" -q
done
expect_exit "unpack -o into a missing directory" 4 "$TMPD/no-such-dir does not exist" -- \
  "$MOEQ" unpack "$TMPD/q.moeq" -o "$TMPD/no-such-dir/u" -q
