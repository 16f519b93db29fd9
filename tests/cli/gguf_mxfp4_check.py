# The MXFP4 expert tensors of a GGUF export of a gpt-oss checkpoint against llama.cpp's converter,
# re-done here on bytes (stdlib only; no torch): conversion/gpt_oss.py's repack_mxfp4 of the hub's
# *_blocks/*_scales (gate = even rows of gate_up, up = odd rows, transform_nibble_layout, scales
# prepended to each 16-byte block), compared byte for byte with the GGUF's tensor data; and the
# values themselves: transformers' e2m1 x 2^(s - 127) decode of the hub blocks against ggml's
# kvalues x 2^(e - 128) decode of the GGUF blocks. Prints one JSON line; exit 1 on any difference.
# Usage: python3 tests/cli/gguf_mxfp4_check.py HF_DIR FILE.gguf
import json, math, os, re, struct, subprocess, sys

hf, gg = sys.argv[1], sys.argv[2]
b = open(os.path.join(hf, "model.safetensors"), "rb").read()
n = struct.unpack_from("<Q", b, 0)[0]
hdr = json.loads(b[8:8 + n])
def st(name):
    t = hdr[name]
    o0, o1 = t["data_offsets"]
    return t["shape"], b[8 + n + o0:8 + n + o1]
tab = json.loads(subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "gguf_tensors.py"), gg],
                                check=True, capture_output=True).stdout)
g = open(gg, "rb").read()
start = tab["__file__"]["data_start"]
swap = lambda v: ((v & 0x0F) << 4) | (v >> 4)  # noqa: E731

def transform_nibble_layout(blk):   # one 16-byte block, the converter's torch ops on uint8
    t = [swap(v) for v in blk]
    a, c = t[:8], t[8:]
    A = [x for v in a for x in (v & 0xF0, (v << 4) & 0xFF)]
    B = [x for v in c for x in (v >> 4, v & 0x0F)]
    return bytes(swap(p | q) for p, q in zip(A, B))

E2M1 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]
KV = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12]
tensors = bytes_diff = value_diff = 0
for name in sorted(hdr):
    m = re.match(r"model\.layers\.(\d+)\.mlp\.experts\.(gate_up|down)_proj_blocks$", name)
    if not m:
        continue
    l, which = m.group(1), m.group(2)
    (E, R, NB, _), blocks = st(name)
    _, scales = st(name.replace("_blocks", "_scales"))
    outs = [("ffn_gate_exps", 0, 2), ("ffn_up_exps", 1, 2)] if which == "gate_up" else [("ffn_down_exps", 0, 1)]
    for gname, r0, step in outs:
        t = tab["blk.%s.%s.weight" % (l, gname)]
        rows = R // step
        assert t["type"] == 39 and t["ne"] == [NB * 32, rows, E], (gname, t)
        data = g[start + t["offset"]:start + t["offset"] + E * rows * NB * 17]
        tensors += 1
        for e in range(E):
            for r in range(rows):
                hr = e * R + r0 + r * step
                for k in range(NB):
                    hb = blocks[(hr * NB + k) * 16:(hr * NB + k + 1) * 16]
                    s = scales[hr * NB + k]
                    want = bytes([s]) + transform_nibble_layout(hb)
                    got = data[((e * rows + r) * NB + k) * 17:((e * rows + r) * NB + k + 1) * 17]
                    bytes_diff += want != got
                    hv = [E2M1[(hb[i // 2] >> (4 * (i & 1))) & 15] * math.ldexp(1, s - 127) for i in range(32)]
                    gv = [KV[(got[1 + (i % 16)] >> (4 * (i // 16))) & 15] * math.ldexp(1, got[0] - 128) for i in range(32)]
                    value_diff += sum(x != y for x, y in zip(hv, gv))   # -0.0 == 0.0: code 8 decodes +0 in ggml
print(json.dumps({"tensors": tensors, "blocks_differing": bytes_diff, "values_differing": value_diff}))
sys.exit(0 if tensors and not bytes_diff and not value_diff else 1)
