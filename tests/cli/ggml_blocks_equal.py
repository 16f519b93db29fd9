# Checks that every routed-expert matrix of a .moeq file with ggml codecs is stored byte for
# byte in the GGUF exported from it (tests/cli/test_codec_ggml.sh): expert e of
# blk.L.ffn_{gate,up,down}_exps.weight against the piece of the .moeq (FORMAT.md F-15).
# Usage: python3 tests/cli/ggml_blocks_equal.py X.moeq X.gguf   (prints the matrices compared)
import json, re, struct, sys
m = open(sys.argv[1], "rb").read()
ioff, ilen = struct.unpack_from("<QQ", m, 16)
ix = json.loads(m[ioff:ioff + ilen])
g = open(sys.argv[2], "rb").read()
nt, nkv = struct.unpack_from("<QQ", g, 8)
pos, align = 24, 32
SZ = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
def skip(t, p):
    if t == 8: return p + 8 + struct.unpack_from("<Q", g, p)[0]
    if t == 9:
        et, c = struct.unpack_from("<iQ", g, p); p += 12
        for _ in range(c): p = skip(et, p)
        return p
    return p + SZ[t]
for _ in range(nkv):
    l = struct.unpack_from("<Q", g, pos)[0]; key = g[pos + 8:pos + 8 + l].decode()
    t = struct.unpack_from("<i", g, pos + 8 + l)[0]
    if key == "general.alignment": align = struct.unpack_from("<I", g, pos + 12 + l)[0]
    pos = skip(t, pos + 12 + l)
infos = {}
for _ in range(nt):
    l = struct.unpack_from("<Q", g, pos)[0]; name = g[pos + 8:pos + 8 + l].decode(); pos += 8 + l
    nd = struct.unpack_from("<I", g, pos)[0]; ne = struct.unpack_from("<%dQ" % nd, g, pos + 4); pos += 4 + 8 * nd
    ty, off = struct.unpack_from("<IQ", g, pos); pos += 12
    infos[name] = (ty, off, ne)
data0 = (pos + align - 1) // align * align
GN = {"gate_proj": "ffn_gate_exps", "up_proj": "ffn_up_exps", "down_proj": "ffn_down_exps"}
n = 0
for t in ix["tensors"]:
    mm = re.match(r"model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight$", t["name"])
    if not mm or t["codec"]["type"] != "ggml" or t.get("zstd"):
        continue
    ty, off, ne = infos["blk.%s.%s.weight" % (mm.group(1), GN[mm.group(3)])]
    per = t["size"]
    a = g[data0 + off + int(mm.group(2)) * per:data0 + off + (int(mm.group(2)) + 1) * per]
    b = m[t["offset"]:t["offset"] + per]
    if a != b:
        sys.exit("%s: GGUF bytes differ" % t["name"])
    n += 1
print(n)
