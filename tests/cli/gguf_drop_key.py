# Copies a GGUF without one metadata key (tests/cli/test_gguf.sh): the tensor data is unchanged,
# only the header shrinks and the data section moves to the next 32-byte boundary.
# Usage: python3 tests/cli/gguf_drop_key.py SRC.gguf DST.gguf KEY
import struct, sys
src, dst, drop = sys.argv[1], sys.argv[2], sys.argv[3]
b = open(src, "rb").read()
nt, nkv = struct.unpack_from("<QQ", b, 8)
pos = 24
SZ = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
def skip(t, p):
    if t == 8: return p + 8 + struct.unpack_from("<Q", b, p)[0]
    if t == 9:
        et, c = struct.unpack_from("<iQ", b, p); p += 12
        for _ in range(c): p = skip(et, p)
        return p
    return p + SZ[t]
kept = []
for _ in range(nkv):
    s = pos; l = struct.unpack_from("<Q", b, pos)[0]; key = b[pos + 8:pos + 8 + l].decode()
    t = struct.unpack_from("<i", b, pos + 8 + l)[0]; pos = skip(t, pos + 12 + l)
    if key != drop: kept.append(b[s:pos])
ti0 = pos
for _ in range(nt):
    l = struct.unpack_from("<Q", b, pos)[0]; nd = struct.unpack_from("<I", b, pos + 8 + l)[0]; pos += 8 + l + 4 + 8 * nd + 12
data = b[(pos + 31) // 32 * 32:]
out = b[:8] + struct.pack("<QQ", nt, len(kept)) + b"".join(kept) + b[ti0:pos]
out += b"\0" * ((-len(out)) % 32)
open(dst, "wb").write(out + data)
