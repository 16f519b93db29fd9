# The tensor table of a GGUF file as JSON (tests/cli/test_gguf_plan.sh), read independently of
# moeq: {name: {"type": ggml id, "ne": [...], "offset": data offset, "span": bytes up to the next
# tensor or the end of the file}}, plus "__file__": {"bytes", "data_start"}.
# Usage: python3 tests/cli/gguf_tensors.py FILE.gguf
import json, struct, sys
b = open(sys.argv[1], "rb").read()
assert b[:4] == b"GGUF" and struct.unpack_from("<I", b, 4)[0] == 3
nt, nkv = struct.unpack_from("<QQ", b, 8)
pos, align = 24, 32
SZ = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
def skip(t, p):
    if t == 8: return p + 8 + struct.unpack_from("<Q", b, p)[0]
    if t == 9:
        et, c = struct.unpack_from("<iQ", b, p); p += 12
        for _ in range(c): p = skip(et, p)
        return p
    return p + SZ[t]
for _ in range(nkv):
    l = struct.unpack_from("<Q", b, pos)[0]; key = b[pos + 8:pos + 8 + l].decode()
    t = struct.unpack_from("<i", b, pos + 8 + l)[0]
    if key == "general.alignment": align = struct.unpack_from("<I", b, pos + 12 + l)[0]
    pos = skip(t, pos + 12 + l)
ts = {}
for _ in range(nt):
    l = struct.unpack_from("<Q", b, pos)[0]; name = b[pos + 8:pos + 8 + l].decode(); pos += 8 + l
    nd = struct.unpack_from("<I", b, pos)[0]; ne = list(struct.unpack_from("<%dQ" % nd, b, pos + 4)); pos += 4 + 8 * nd
    ty, off = struct.unpack_from("<iQ", b, pos); pos += 12
    ts[name] = {"type": ty, "ne": ne, "offset": off}
start = (pos + align - 1) // align * align
offs = sorted(t["offset"] for t in ts.values()) + [len(b) - start]
for t in ts.values(): t["span"] = offs[offs.index(t["offset"]) + 1] - t["offset"]
ts["__file__"] = {"bytes": len(b), "data_start": start}
print(json.dumps(ts))
