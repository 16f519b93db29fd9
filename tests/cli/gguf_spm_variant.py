# Copies a `llama` (SentencePiece) GGUF with its tokenizer metadata changed, to drive llama.cpp's
# SPM tokenizer and moeq's rebuilt one through cases a converted checkpoint rarely has
# (tests/cli/test_gguf_spm.sh). Tensor data unchanged; the data section moves to the next
# 32-byte boundary as in gguf_drop_key.py.
# Usage: python3 tests/cli/gguf_spm_variant.py SRC.gguf DST.gguf MODE [KEY=VALUE...]
#   MODE: keep | zero (every score 0: leftmost merges) | coarse (score // 64: many ties) |
#         random (seeded scores in [-64, 0), ties included) | drop (no tokenizer.ggml.scores)
#   KEY=VALUE: a key set or added: true/false as a bool (tokenizer.ggml.add_space_prefix=false),
#         anything else as a string (general.name=Phi-3.5-MoE); KEY=- drops KEY
#   tok:ID=TEXT, type:ID=N: token ID's text, token ID's type
import math, struct, sys
src, dst, mode = sys.argv[1:4]
sets = dict(a.split("=", 1) for a in sys.argv[4:] if not a.startswith(("tok:", "type:")))
toks = {int(a[4:].split("=", 1)[0]): a.split("=", 1)[1] for a in sys.argv[4:] if a.startswith("tok:")}
types = {int(a[5:].split("=", 1)[0]): int(a.split("=", 1)[1]) for a in sys.argv[4:] if a.startswith("type:")}
b = open(src, "rb").read()
nt, nkv = struct.unpack_from("<QQ", b, 8)
SZ = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
def skip(t, p):
    if t == 8: return p + 8 + struct.unpack_from("<Q", b, p)[0]
    if t == 9:
        et, c = struct.unpack_from("<iQ", b, p); p += 12
        for _ in range(c): p = skip(et, p)
        return p
    return p + SZ[t]
def key_bytes(k): return struct.pack("<Q", len(k)) + k.encode()
x = 88172645463325252
def rnd():   # xorshift64: the same scores every run
    global x
    x ^= (x << 13) & (2**64 - 1); x ^= x >> 7; x ^= (x << 17) & (2**64 - 1)
    return x
pos, kept = 24, []
for _ in range(nkv):
    s = pos; l = struct.unpack_from("<Q", b, pos)[0]; key = b[pos + 8:pos + 8 + l].decode()
    t = struct.unpack_from("<i", b, pos + 8 + l)[0]; pos = skip(t, pos + 12 + l)
    if key in sets: continue
    if key == "tokenizer.ggml.scores" and mode != "keep":
        if mode == "drop": continue
        et, c = struct.unpack_from("<iQ", b, s + 12 + l)
        v = struct.unpack_from("<%df" % c, b, s + 24 + l)
        if mode == "zero": v = [0.0] * c
        elif mode == "coarse": v = [float(math.floor(f / 64)) for f in v]
        else: v = [-float(rnd() % 64) for _ in v]
        kept.append(key_bytes(key) + struct.pack("<iiQ", 9, et, c) + struct.pack("<%df" % c, *v))
        continue
    if key == "tokenizer.ggml.tokens" and toks:
        et, c = struct.unpack_from("<iQ", b, s + 12 + l); p = s + 24 + l; items = []
        for i in range(c):
            n = struct.unpack_from("<Q", b, p)[0]; items.append(toks[i].encode() if i in toks else b[p + 8:p + 8 + n]); p += 8 + n
        kept.append(key_bytes(key) + struct.pack("<iiQ", 9, 8, c) + b"".join(struct.pack("<Q", len(x)) + x for x in items))
        continue
    if key == "tokenizer.ggml.token_type" and types:
        et, c = struct.unpack_from("<iQ", b, s + 12 + l)
        v = list(struct.unpack_from("<%di" % c, b, s + 24 + l))
        for i, t2 in types.items(): v[i] = t2
        kept.append(key_bytes(key) + struct.pack("<iiQ", 9, 5, c) + struct.pack("<%di" % c, *v))
        continue
    kept.append(b[s:pos])
for k, v in sets.items():
    if v in ("true", "false"): kept.append(key_bytes(k) + struct.pack("<iB", 7, v == "true"))
    elif v != "-": kept.append(key_bytes(k) + struct.pack("<i", 8) + struct.pack("<Q", len(v.encode())) + v.encode())
ti0 = pos
for _ in range(nt):
    l = struct.unpack_from("<Q", b, pos)[0]; nd = struct.unpack_from("<I", b, pos + 8 + l)[0]; pos += 8 + l + 4 + 8 * nd + 12
data = b[(pos + 31) // 32 * 32:]
out = b[:8] + struct.pack("<QQ", nt, len(kept)) + b"".join(kept) + b[ti0:pos]
out += b"\0" * ((-len(out)) % 32)
open(dst, "wb").write(out + data)
