#!/usr/bin/env python3
"""Writes the catalogue of broken .moeq files under tests/broken/moeq/: valid.moeq (a small
well-formed file: an int-codec matrix, a raw vector, a zstd-compressed matrix), one file per
broken rule of docs/FORMAT.md (the t1d layout's too: its dictionary is rebuilt here), README.md and expected.tsv (read by tests/cli/test_pack.sh,
which runs `moeq verify` on each). Stdlib only (XXH64 and a raw-block zstd frame are written
here from their specifications); deterministic.
Usage: python3 tests/broken/make_broken_moeq.py   (from the repository root)"""
import json
import os
import struct

ROOT = os.environ.get("MOEQ_BROKEN_OUT", os.path.join("tests", "broken", "moeq"))
M64 = (1 << 64) - 1
P1, P2, P3, P4, P5 = (0x9E3779B185EBCA87, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9,
                      0x85EBCA77C2B2AE63, 0x27D4EB2F165667C5)


def rotl(x, r):
    return ((x << r) | (x >> (64 - r))) & M64


def xxh64(data, seed=0):
    """XXH64 (xxhash spec, 64-bit variant)."""
    def rnd(acc, lane):
        return (rotl((acc + lane * P2) & M64, 31) * P1) & M64

    def merge(acc, v):
        return ((acc ^ rnd(0, v)) * P1 + P4) & M64
    n, i = len(data), 0
    if n >= 32:
        v = [(seed + P1 + P2) & M64, (seed + P2) & M64, seed, (seed - P1) & M64]
        while i + 32 <= n:
            for k in range(4):
                v[k] = rnd(v[k], struct.unpack_from("<Q", data, i + 8 * k)[0])
            i += 32
        h = (rotl(v[0], 1) + rotl(v[1], 7) + rotl(v[2], 12) + rotl(v[3], 18)) & M64
        for k in range(4):
            h = merge(h, v[k])
    else:
        h = (seed + P5) & M64
    h = (h + n) & M64
    while i + 8 <= n:
        h = (rotl(h ^ rnd(0, struct.unpack_from("<Q", data, i)[0]), 27) * P1 + P4) & M64
        i += 8
    if i + 4 <= n:
        h = (rotl(h ^ (struct.unpack_from("<I", data, i)[0] * P1) & M64, 23) * P2 + P3) & M64
        i += 4
    while i < n:
        h = (rotl(h ^ (data[i] * P5) & M64, 11) * P1) & M64
        i += 1
    h ^= h >> 33
    h = (h * P2) & M64
    h ^= h >> 29
    h = (h * P3) & M64
    return h ^ (h >> 32)


assert xxh64(b"") == 0xEF46DB3751D8E999   # the spec's test vector
assert xxh64(b"a") == 0xD24EC4F1A98C6E5B


def zstd_raw_frame(content):
    """One zstd frame holding content in a raw block: single segment, 4-byte content size,
    content checksum on (RFC 8878 §3.1.1)."""
    assert len(content) < 128 * 1024
    hdr = struct.pack("<IB", 0xFD2FB528, 0xA4) + struct.pack("<I", len(content))
    blk = struct.pack("<I", 1 | (len(content) << 3))[:3]   # last block, raw
    return hdr + blk + content + struct.pack("<I", xxh64(content) & 0xFFFFFFFF)


def up64(x):
    return (x + 63) // 64 * 64


def f16(x):
    return struct.pack("<e", x)


# valid content: a one-layer Mixtral (hidden 32, 2 experts of width 32, vocab 32) so that the
# model check after the format rules passes too. Expert 0's w1 is q4g32a (WN), its w2 q4g32s in a
# zstd frame (VN), model.norm.weight raw BF16 (NN); the rest raw BF16.
H, I, V, E = 32, 32, 32, 2
L0 = "model.layers.0."
WN, VN, NN = L0 + "block_sparse_moe.experts.0.w1.weight", L0 + "block_sparse_moe.experts.0.w2.weight", "model.norm.weight"
CONFIG = json.dumps({"architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "hidden_size": H,
                     "intermediate_size": I, "num_attention_heads": 2, "num_key_value_heads": 1,
                     "num_hidden_layers": 1, "num_local_experts": E, "num_experts_per_tok": 1,
                     "vocab_size": V, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
                     "max_position_embeddings": 64, "tie_word_embeddings": False, "hidden_act": "silu"},
                    indent=1).encode()


def bf16(i, n):
    """n deterministic small finite bf16 values"""
    return b"".join(struct.pack("<H", 0x3C00 | ((i * 131 + k * 17) & 0x7F) | (0x8000 if (k * 7 + i) % 3 == 0 else 0))
                    for k in range(n))


def int_raw(rows, cols, sym, seed):
    """q4g32 raw bytes (codes, scales, zeros at 64-byte aligned sections, FORMAT.md)"""
    codes = bytes((k * 37 + seed) & 0xFF for k in range(rows * cols // 2))
    ng = rows * (cols // 32)
    scales = b"".join(f16(0.01 * (1 + (k % 5))) for k in range(ng))
    out = codes + bytes(up64(len(codes)) - len(codes)) + scales
    if not sym:
        out += bytes(up64(len(out)) - len(out)) + b"".join(f16(7 + (k % 3)) for k in range(ng))
    return out


W_RAW, V_RAW, N_RAW = int_raw(I, H, False, 11), int_raw(H, I, True, 5), bf16(0, H)
SCALES_OFF = up64(I * H // 2)
RAW_TENSORS = [("lm_head.weight", [V, H]), ("model.embed_tokens.weight", [V, H]),
               (L0 + "input_layernorm.weight", [H]), (L0 + "post_attention_layernorm.weight", [H]),
               (L0 + "self_attn.q_proj.weight", [H, H]), (L0 + "self_attn.k_proj.weight", [H // 2, H]),
               (L0 + "self_attn.v_proj.weight", [H // 2, H]), (L0 + "self_attn.o_proj.weight", [H, H]),
               (L0 + "block_sparse_moe.gate.weight", [E, H]), (L0 + "block_sparse_moe.experts.0.w3.weight", [I, H]),
               (L0 + "block_sparse_moe.experts.1.w1.weight", [I, H]), (L0 + "block_sparse_moe.experts.1.w2.weight", [H, I]),
               (L0 + "block_sparse_moe.experts.1.w3.weight", [I, H])]


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def build(mut=None):
    """A .moeq image; mut(state) edits the blobs / index / prefix before the checksums."""
    s = {
        "files": [["config.json", CONFIG]],
        "tensors": [
            {"name": WN, "shape": [I, H], "codec": {"type": "int", "bits": 4, "group": 32, "sym": False},
             "source": WN, "source_offset": 0, "data": W_RAW},
            {"name": NN, "shape": [H], "codec": {"type": "raw", "dtype": "BF16"},
             "source": NN, "source_offset": 0, "data": N_RAW},
            {"name": VN, "shape": [H, I], "codec": {"type": "int", "bits": 4, "group": 32, "sym": True},
             "source": VN, "source_offset": 0, "data": zstd_raw_frame(V_RAW), "zstd": True,
             "raw_size": len(V_RAW)},
        ] + [{"name": n, "shape": sh, "codec": {"type": "raw", "dtype": "BF16"}, "source": n, "source_offset": 0,
              "data": bf16(k + 1, numel(sh))} for k, (n, sh) in enumerate(RAW_TENSORS)],
        "sources": [{"name": WN, "dtype": "BF16", "shape": [I, H]}, {"name": NN, "dtype": "BF16", "shape": [H]},
                    {"name": VN, "dtype": "BF16", "shape": [H, I]}] +
                   [{"name": n, "dtype": "BF16", "shape": sh} for n, sh in RAW_TENSORS],
        "version": 1, "magic": b"MOEQPACK", "flags": 0,
    }
    if mut:
        mut(s, "blobs")
    body = bytearray(64)
    files, tensors = [], []
    for name, data in s["files"]:
        off = len(body)
        body += data + bytes(up64(len(data)) - len(data))
        files.append({"name": name, "offset": off, "size": len(data), "xxh64": "%016x" % xxh64(data)})
    for t in s["tensors"]:
        off = len(body)
        d = t["data"]
        body += d + bytes(up64(len(d)) - len(d))
        e = {k: t[k] for k in ("name", "shape", "codec", "source", "source_offset")}
        e.update(offset=off, size=len(d), xxh64="%016x" % xxh64(d))
        if t.get("zstd"):
            e.update(zstd=True, raw_size=t["raw_size"])
        tensors.append(e)
    s["index"] = {"format": "moeq", "version": 1, "files": files, "tensors": tensors, "sources": s["sources"],
                  "metadata": {"method": "catalogue"}}
    s["body"] = body
    if mut:
        mut(s, "index")
    ix = s["index"] if isinstance(s["index"], bytes) else json.dumps(s["index"], separators=(",", ":")).encode()
    ioff = len(s["body"])
    img = bytearray(s["body"]) + ix
    prefix = {"ioff": ioff, "ilen": len(ix), "ihash": xxh64(ix), "fsize": len(img)}
    s["prefix"] = prefix
    if mut:
        mut(s, "prefix")
    img[0:64] = (s["magic"] + struct.pack("<II", s["version"], s["flags"]) +
                 struct.pack("<QQQQ", prefix["ioff"], prefix["ilen"], prefix["ihash"], prefix["fsize"]) + bytes(16))
    s["image"] = img
    if mut:
        mut(s, "image")
    return bytes(s["image"])


def at(stage, f):
    return lambda s, st: f(s) if st == stage else None


def tensor(s, name):
    return next(t for t in (s["index"]["tensors"] if isinstance(s["index"], dict) else []) if t["name"] == name)


def set_(d, k, v):
    d[k] = v


def overlap(s):
    tensor(s, NN)["offset"] = tensor(s, WN)["offset"]


def nan_scale(s):
    d = bytearray(W_RAW)
    d[SCALES_OFF:SCALES_OFF + 2] = b"\x00\x7e"   # binary16 NaN: the scale of row 0 group 0
    s["tensors"][0]["data"] = bytes(d)


def zstd_corrupt(s):
    d = bytearray(s["tensors"][2]["data"])
    d[12] ^= 0x01            # first content byte: the frame checksum no longer matches
    s["tensors"][2]["data"] = bytes(d)


def bad_tensor_checksum(s):
    b = s["body"]
    b[tensor(s, WN)["offset"] + 3] ^= 0x40   # data changed after the index was written


def gap(s):
    s["sources"][0]["shape"] = [I + 1, H]   # the pieces cover I*H of (I+1)*H elements


def padding(s):
    f = s["index"]["files"][0]
    end = f["offset"] + f["size"]
    assert end % 64 != 0
    s["body"][end] = 1   # the padding after config.json


def iq4nl_raw(rows, cols):
    """IQ4_NL blocks of 32 (ggml's block_iq4_nl: f16 d, 16 bytes of 4-bit indices), row after row"""
    return b"".join(f16(0.01 * (1 + (r + b) % 3)) + bytes(((r * 7 + b * 3 + k) * 37) & 0xFF for k in range(16))
                    for r in range(rows) for b in range(cols // 32))


G_IDX = 3 + 9   # s["tensors"] index of expert 0's w3 [I, H], raw in valid.moeq
GN = L0 + "block_sparse_moe.experts.0.w3.weight"


def ggml(gtype, data=None, shape=None, idx=G_IDX):
    """expert 0's w3 (or tensor idx) as a ggml codec"""
    def f(s):
        t = s["tensors"][idx]
        t["codec"] = {"type": "ggml", "ggml_type": gtype}
        t["data"] = data if data is not None else iq4nl_raw(I, H)
        if shape:
            t["shape"] = shape
    return at("blobs", f)


def ggml_inf(s):
    d = bytearray(iq4nl_raw(I, H))
    d[3 * 18:3 * 18 + 2] = b"\x00\x7c"   # binary16 +Inf: d of row 3, block 0
    ggml("IQ4_NL", bytes(d))(s, "blobs")


def t1d_dictionary(k):
    """The t1d dictionary of p0 byte k (kernels/ref/tdict.c, FORMAT.md "T1d codec layout"):
    the Tunstall tree over trit pairs (symbol 3a + b), the most probable leaf expanded first
    (ties: the leaf created first) until 65529 leaves, never past 14 pairs; codewords number
    the leaves depth first, symbol 0 first. Returns (children, codeword of a leaf) by node."""
    import heapq
    t = [k / 256.0, (256 - k) / 512.0, (256 - k) / 512.0]
    pp = [t[s // 3] * t[s % 3] for s in range(9)]
    prob, depth, child = [1.0], [0], [-1]
    heap, leaves, x = [], 1, 0
    while True:
        child[x] = len(prob)
        for s in range(9):
            prob.append(prob[x] * pp[s])
            depth.append(depth[x] + 1)
            child.append(-1)
            heapq.heappush(heap, (-prob[-1], len(prob) - 1))
        leaves += 8
        if leaves + 8 > 65536:
            break
        while True:
            x = heapq.heappop(heap)[1]
            if depth[x] < 14:
                break
    ident, stack, nxt = {}, [0], 0
    while stack:
        v = stack.pop()
        if child[v] < 0:
            ident[v] = nxt
            nxt += 1
        else:
            stack.extend(child[v] + s for s in range(8, -1, -1))
    return child, ident


T1D_K = 200


def t1d_raw(rows, cols, trits, levels):
    """t1d raw bytes: header, f16 lo/hi per row, u32 row offsets, u16 codewords (greedy match,
    the tail padded with zero pairs)"""
    child, ident = t1d_dictionary(T1D_K)
    cws, offs = [], [0]
    for r in range(rows):
        v = 0
        pairs = [3 * trits(r, c) + (trits(r, c + 1) if c + 1 < cols else 0) for c in range(0, cols, 2)]
        for sym in pairs:
            v = child[v] + sym
            if child[v] < 0:
                cws.append(ident[v])
                v = 0
        while v:
            v = child[v]
            if child[v] < 0:
                cws.append(ident[v])
                v = 0
        offs.append(len(cws))
    hdr = bytes([T1D_K]) + bytes(7) + struct.pack("<QQQ", rows, cols, len(cws))
    lv = b"".join(f16(levels(r)[0]) + f16(levels(r)[1]) for r in range(rows))
    return hdr + lv + struct.pack("<%dI" % (rows + 1), *offs) + struct.pack("<%dH" % len(cws), *cws)


def t1d_trit(r, c):
    return 1 if (r * 5 + c * 3) % 11 == 0 else 2 if (r + c * 7) % 13 == 0 else 0


T1D = t1d_raw(I, H, t1d_trit, lambda r: (-0.01 * (1 + r % 3), 0.02))
T1D_CW0 = 32 + 8 * I + 4   # codeword 0 in the tensor's data


def t1d(mut=None):
    """expert 0's w3 as t1d, its raw bytes changed by mut (a bytearray function)"""
    def f(s):
        t = s["tensors"][G_IDX]
        t["codec"] = {"type": "t1d"}
        d = bytearray(T1D)
        if mut:
            d = mut(d) or d
        t["data"] = bytes(d)
    return at("blobs", f)


def t1d_short_row(d):
    """row 0 one codeword short: later offsets and the count follow (sizes consistent)"""
    n = struct.unpack_from("<Q", d, 24)[0]
    offs = list(struct.unpack_from("<%dI" % (I + 1), d, 32 + 4 * I))
    cws = list(struct.unpack_from("<%dH" % n, d, T1D_CW0))
    del cws[offs[1] - 1]
    offs = [offs[0]] + [o - 1 for o in offs[1:]]
    return bytearray(d[:24] + struct.pack("<Q", n - 1) + d[32:32 + 4 * I] + struct.pack("<%dI" % (I + 1), *offs)
                     + struct.pack("<%dH" % (n - 1), *cws))


# name, mutation, status, exit code, fragments of the message (besides the file name)
CASES = [
    ("valid.moeq", None, "MOEQ_OK", 0, []),
    ("bad_magic.moeq", at("image", lambda s: s["image"].__setitem__(slice(0, 8), b"MOEQPACX")),
     "MOEQ_ERR_FORMAT", 2, ["F-1", "magic"]),
    ("truncated_prefix.moeq", at("image", lambda s: s.__setitem__("image", s["image"][:40])),
     "MOEQ_ERR_FORMAT", 2, ["F-1", "shorter than the 64-byte prefix"]),
    ("future_version.moeq", at("blobs", lambda s: set_(s, "version", 2)), "MOEQ_ERR_UNSUPPORTED", 2,
     ["F-2", "version 2"]),
    ("reserved_nonzero.moeq", at("blobs", lambda s: set_(s, "flags", 1)), "MOEQ_ERR_FORMAT", 2, ["F-3"]),
    ("truncated_file.moeq", at("image", lambda s: s.__setitem__("image", s["image"][:-10])),
     "MOEQ_ERR_FORMAT", 2, ["F-5", "truncated or extended"]),
    ("index_past_eof.moeq", at("prefix", lambda s: s["prefix"].__setitem__("ilen", s["prefix"]["ilen"] + 64)),
     "MOEQ_ERR_FORMAT", 2, ["F-6"]),
    ("index_misaligned.moeq", at("prefix", lambda s: s["prefix"].__setitem__("ioff", s["prefix"]["ioff"] - 8)),
     "MOEQ_ERR_FORMAT", 2, ["F-6"]),
    ("bad_header_checksum.moeq", at("prefix", lambda s: s["prefix"].__setitem__("ihash", s["prefix"]["ihash"] ^ 1)),
     "MOEQ_ERR_FORMAT", 2, ["F-7", "index checksum mismatch"]),
    ("index_not_json.moeq", at("index", lambda s: set_(s, "index", b'{"format": "moeq", ' + b" " * 40)),
     "MOEQ_ERR_FORMAT", 2, ["F-8", "not a JSON object"]),
    ("index_wrong_format.moeq", at("index", lambda s: s["index"].__setitem__("format", "gguf")),
     "MOEQ_ERR_FORMAT", 2, ["F-8"]),
    ("misaligned_offset.moeq", at("index", lambda s: tensor(s, NN).__setitem__("offset", tensor(s, NN)["offset"] + 4)),
     "MOEQ_ERR_FORMAT", 2, ["F-9", "tensor '%s'" % NN, "64-aligned"]),
    ("tensor_past_index.moeq", at("index", lambda s: tensor(s, NN).__setitem__("size", 1 << 20)),
     "MOEQ_ERR_FORMAT", 2, ["F-9", "tensor '%s'" % NN]),
    ("overlapping_tensors.moeq", at("index", overlap), "MOEQ_ERR_FORMAT", 2, ["F-9", "overlap"]),
    ("bad_xxh64_string.moeq", at("index", lambda s: tensor(s, WN).__setitem__("xxh64", "XYZ")),
     "MOEQ_ERR_FORMAT", 2, ["F-9", "tensor '%s'" % WN, "hex"]),
    ("bad_tensor_checksum.moeq", at("index", bad_tensor_checksum), "MOEQ_ERR_FORMAT", 2,
     ["F-9", "tensor '%s'" % WN, "checksum mismatch"]),
    ("padding_nonzero.moeq", at("index", padding), "MOEQ_ERR_FORMAT", 2, ["F-9", "padding byte"]),
    ("no_config.moeq", at("blobs", lambda s: s["files"].__setitem__(0, ["conf.json", CONFIG])),
     "MOEQ_ERR_FORMAT", 2, ["F-10", "config.json"]),
    ("file_name_slash.moeq", at("blobs", lambda s: s["files"].append(["../x.json", b"{}"])),
     "MOEQ_ERR_FORMAT", 2, ["F-10", "plain file name"]),
    ("duplicate_tensor.moeq", at("index", lambda s: s["index"]["tensors"].append(dict(tensor(s, NN)))),
     "MOEQ_ERR_FORMAT", 2, ["listed twice"]),
    ("unknown_codec.moeq", at("blobs", lambda s: s["tensors"][0].__setitem__("codec", {"type": "fp4"})),
     "MOEQ_ERR_UNSUPPORTED", 2, ["F-12", "tensor '%s'" % WN, "fp4"]),
    ("codec_bits_5.moeq", at("blobs", lambda s: s["tensors"][0]["codec"].__setitem__("bits", 5)),
     "MOEQ_ERR_UNSUPPORTED", 2, ["F-12", "tensor '%s'" % WN, "bits 5"]),
    ("cols_not_multiple_of_32.moeq",
     at("blobs", lambda s: (s["tensors"][1].update(shape=[2, 2], codec={"type": "int", "bits": 4, "group": 32, "sym": True}),
                            s["sources"][1].update(shape=[2, 2]))),
     "MOEQ_ERR_UNSUPPORTED", 2, ["F-12", "tensor '%s'" % NN, "not a multiple of 32"]),
    ("shape_codec_size_mismatch.moeq", at("blobs", lambda s: (s["tensors"][0].update(shape=[I + 1, H]),
                                                               s["sources"][0].update(shape=[I + 1, H]))),
     "MOEQ_ERR_FORMAT", 2, ["F-13", "tensor '%s'" % WN, "imply"]),
    ("zstd_frame_corrupt.moeq", at("blobs", zstd_corrupt), "MOEQ_ERR_FORMAT", 2, ["F-14", "tensor '%s'" % VN, "zstd"]),
    ("zstd_raw_size_wrong.moeq", at("blobs", lambda s: s["tensors"][2].__setitem__("raw_size", len(V_RAW) - 64)),
     "MOEQ_ERR_FORMAT", 2, ["F-13", "tensor '%s'" % VN]),
    ("source_missing.moeq", at("blobs", lambda s: s["tensors"][1].__setitem__("source", "nope")),
     "MOEQ_ERR_FORMAT", 2, ["F-15", "tensor '%s'" % NN, "nope"]),
    ("source_gap.moeq", at("blobs", gap), "MOEQ_ERR_FORMAT", 2, ["F-15", "source '%s'" % WN, "cover"]),
    ("nan_scale.moeq", at("blobs", nan_scale), "MOEQ_ERR_NUMERIC", 3, ["F-16", "tensor '%s'" % WN, "NaN"]),
    ("ggml_valid.moeq", ggml("IQ4_NL"), "MOEQ_OK", 0, []),
    ("ggml_unknown_type.moeq", ggml("Q4_K_M"), "MOEQ_ERR_UNSUPPORTED", 2, ["F-12", "tensor '%s'" % GN, "Q4_K_M"]),
    ("ggml_type_lowercase.moeq", ggml("iq4_nl"), "MOEQ_ERR_UNSUPPORTED", 2, ["F-12", "tensor '%s'" % GN, "iq4_nl"]),
    ("ggml_cols_not_block.moeq", ggml("Q4_K", bytes(I * 144)), "MOEQ_ERR_UNSUPPORTED", 2,
     ["F-12", "tensor '%s'" % GN, "block of 256", "nearest codec that fits is iq4_nl"]),
    ("ggml_1d.moeq", ggml("IQ4_NL", iq4nl_raw(1, H), idx=1), "MOEQ_ERR_FORMAT", 2,
     ["F-12", "tensor '%s'" % NN, "2-D shape"]),
    ("ggml_size_mismatch.moeq", ggml("IQ4_NL", iq4nl_raw(I, H)[:-18]), "MOEQ_ERR_FORMAT", 2,
     ["F-13", "tensor '%s'" % GN, "imply"]),
    ("ggml_inf_scale.moeq", at("blobs", ggml_inf), "MOEQ_ERR_NUMERIC", 3,
     ["F-16", "tensor '%s'" % GN, "block 0 of row 3", "Inf"]),
    ("t1d_valid.moeq", t1d(), "MOEQ_OK", 0, []),
    ("t1d_p0_zero.moeq", t1d(lambda d: d.__setitem__(0, 0)), "MOEQ_ERR_FORMAT", 2,
     ["F-13", "tensor '%s'" % GN, "p0 byte 0 at offset 0"]),
    ("t1d_rows_mismatch.moeq", t1d(lambda d: d.__setitem__(8, I + 1)), "MOEQ_ERR_FORMAT", 2,
     ["F-13", "tensor '%s'" % GN, "header rows 33 cols 32 (offsets 8, 16)"]),
    ("t1d_count_mismatch.moeq", t1d(lambda d: d.__setitem__(24, d[24] + 1)), "MOEQ_ERR_FORMAT", 2,
     ["F-13", "tensor '%s'" % GN, "(offset 24) implies"]),
    ("t1d_level_positive_lo.moeq", t1d(lambda d: d.__setitem__(slice(32 + 4 * 5, 32 + 4 * 5 + 2), f16(0.5))),
     "MOEQ_ERR_FORMAT", 2, ["F-13", "tensor '%s'" % GN, "row 5 levels lo 0.5", "at offset 52"]),
    ("t1d_offsets_decreasing.moeq", t1d(lambda d: d.__setitem__(slice(32 + 4 * I + 8, 32 + 4 * I + 12), bytes(4))),
     "MOEQ_ERR_FORMAT", 2, ["F-13", "tensor '%s'" % GN, "not monotone at offset 168"]),
    ("t1d_codeword_unused.moeq", t1d(lambda d: d.__setitem__(slice(T1D_CW0, T1D_CW0 + 2), b"\xff\xff")),
     "MOEQ_ERR_FORMAT", 2, ["F-13", "tensor '%s'" % GN, "row 0 codeword 65535 at offset %d" % T1D_CW0,
                            "not in the dictionary"]),
    ("t1d_row_short.moeq", t1d(t1d_short_row), "MOEQ_ERR_FORMAT", 2,
     ["F-13", "tensor '%s'" % GN, "row 0's", "decode to fewer than 32 weights"]),
    ("t1d_truncated.moeq", t1d(lambda d: d[:-2]), "MOEQ_ERR_FORMAT", 2, ["F-13", "tensor '%s'" % GN, "implies"]),
    ("inf_raw_value.moeq", at("blobs", lambda s: s["tensors"][1].__setitem__("data", struct.pack("<2H", 0x3F80, 0x7F80) + N_RAW[4:])),
     "MOEQ_ERR_NUMERIC", 3, ["'%s'" % NN]),
]


def main():
    os.makedirs(ROOT, exist_ok=True)
    for f in os.listdir(ROOT):
        if f.endswith(".moeq"):
            os.remove(os.path.join(ROOT, f))
    rows = ["# path (relative to this directory)\tstatus\texit\tfragments (|-separated)"]
    readme = ["# Broken .moeq files", "",
              "Written by `tests/broken/make_broken_moeq.py` (do not edit by hand). Each file breaks one rule",
              "of docs/FORMAT.md; `tests/cli/test_pack.sh` runs `moeq verify` on each and checks the exit",
              "code and that the message contains every fragment of `expected.tsv`.", "",
              "| file | status | exit | message contains |", "|---|---|---|---|"]
    for name, mut, status, code, frags in CASES:
        with open(os.path.join(ROOT, name), "wb") as f:
            f.write(build(mut))
        rows.append("\t".join([name, status, str(code), "|".join(frags)]))
        readme.append("| %s | %s | %d | %s |" % (name, status, code, ", ".join("`%s`" % x for x in frags)))
    with open(os.path.join(ROOT, "expected.tsv"), "w") as f:
        f.write("\n".join(rows) + "\n")
    with open(os.path.join(ROOT, "README.md"), "w") as f:
        f.write("\n".join(readme) + "\n")


if __name__ == "__main__":
    main()
