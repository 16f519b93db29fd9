#!/usr/bin/env python3
"""Writes the catalogue of broken GGUF files under tests/broken/gguf/: valid.gguf (a tiny qwen3moe
model, F32, that `moeq verify` accepts), one file per broken rule of docs/FORMAT-gguf.md (G-1..G-12)
and per model-level error, README.md and expected.tsv (read by tests/cli/test_gguf.sh, which runs
`moeq verify` on each: exit code and message fragments). Stdlib only; deterministic.
Usage: python3 tests/broken/make_broken_gguf.py   (from the repository root)"""
import os
import struct

ROOT = os.environ.get("MOEQ_BROKEN_OUT", os.path.join("tests", "broken", "gguf"))
U32, I32, F32, BOOL, STR, ARR = 4, 5, 6, 7, 8, 9


def s(x):
    b = x.encode() if isinstance(x, str) else x
    return struct.pack("<Q", len(b)) + b


def kv_bytes(key, t, v):
    out = s(key) + struct.pack("<i", t)
    if isinstance(v, bytes):
        out += v   # raw encoded value
    elif t == U32:
        out += struct.pack("<I", v)
    elif t == I32:
        out += struct.pack("<i", v)
    elif t == F32:
        out += struct.pack("<f", v)
    elif t == BOOL:
        out += bytes([v])
    elif t == STR:
        out += s(v)
    elif t == ARR:
        et, items = v
        out += struct.pack("<iQ", et, len(items))
        for it in items:
            out += s(it) if et == STR else struct.pack("<f" if et == F32 else "<i", it)
    return out


class Rng:   # xorshift64*: the same weights every run, no numpy
    def __init__(self, seed):
        self.x = seed

    def f(self):
        self.x ^= (self.x >> 12)
        self.x ^= (self.x << 25) & (2**64 - 1)
        self.x ^= (self.x >> 27)
        v = (self.x * 0x2545F4914F6CDD1D) & (2**64 - 1)
        return ((v >> 40) / float(1 << 24) - 0.5) * 0.2


H, HEADS, KV, HD, E, K, I, V, L = 32, 2, 1, 16, 2, 1, 32, 8, 1


def model(tok=None):
    """tok: (tokenizer kvs, vocab size) in place of the 8-token byte-level vocabulary"""
    nv = tok[1] if tok else V
    kvs = [("general.architecture", STR, "qwen3moe"),
           ("qwen3moe.block_count", U32, L), ("qwen3moe.context_length", U32, 64),
           ("qwen3moe.embedding_length", U32, H), ("qwen3moe.feed_forward_length", U32, I),
           ("qwen3moe.attention.head_count", U32, HEADS), ("qwen3moe.attention.head_count_kv", U32, KV),
           ("qwen3moe.attention.key_length", U32, HD), ("qwen3moe.attention.value_length", U32, HD),
           ("qwen3moe.rope.freq_base", F32, 10000.0), ("qwen3moe.attention.layer_norm_rms_epsilon", F32, 1e-6),
           ("qwen3moe.expert_count", U32, E), ("qwen3moe.expert_used_count", U32, K),
           ("qwen3moe.expert_feed_forward_length", U32, I),
           ("tokenizer.ggml.model", STR, "gpt2"),
           ("tokenizer.ggml.tokens", ARR, (STR, ["a", "b", "c", "d", "e", "f", "g", "h"])),
           ("tokenizer.ggml.token_type", ARR, (I32, [1] * V))]
    if tok:
        kvs = [kv for kv in kvs if not kv[0].startswith("tokenizer.")] + tok[0]
    ts = [("token_embd.weight", [H, nv]), ("output_norm.weight", [H]), ("output.weight", [H, nv]),
          ("blk.0.attn_norm.weight", [H]), ("blk.0.ffn_norm.weight", [H]),
          ("blk.0.attn_q.weight", [H, HEADS * HD]), ("blk.0.attn_k.weight", [H, KV * HD]),
          ("blk.0.attn_v.weight", [H, KV * HD]), ("blk.0.attn_output.weight", [HEADS * HD, H]),
          ("blk.0.attn_q_norm.weight", [HD]), ("blk.0.attn_k_norm.weight", [HD]),
          ("blk.0.ffn_gate_inp.weight", [H, E]), ("blk.0.ffn_gate_exps.weight", [H, I, E]),
          ("blk.0.ffn_up_exps.weight", [H, I, E]), ("blk.0.ffn_down_exps.weight", [I, H, E])]
    rng = Rng(12345)
    tensors = []
    for name, ne in ts:
        n = 1
        for d in ne:
            n *= d
        vals = [1.0 + rng.f() if name.endswith("norm.weight") else rng.f() for _ in range(n)]
        tensors.append([name, ne, 0, struct.pack("<%df" % n, *vals)])
    return kvs, tensors


def build(kvs, tensors, version=3, fix_offsets=True, offsets=None, n_kv=None, n_t=None, align=32):
    head = b"GGUF" + struct.pack("<I", version)
    head += struct.pack("<QQ", len(tensors) if n_t is None else n_t, len(kvs) if n_kv is None else n_kv)
    body = b"".join(kv_bytes(*kv) for kv in kvs)
    infos, off, blob = b"", 0, b""
    for i, (name, ne, t, data) in enumerate(tensors):
        o = off if offsets is None or offsets[i] is None else offsets[i]
        infos += s(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<q", d) for d in ne)
        infos += struct.pack("<iQ", t, o)
        blob += data + b"\0" * ((-len(data)) % align)
        off += len(data) + ((-len(data)) % align)
    out = head + body + infos
    out += b"\0" * ((-len(out)) % align)
    return out + blob


CASES = []   # (file, status, exit, fragments)


def case(name, data, status, code, frags):
    with open(os.path.join(ROOT, name), "wb") as f:
        f.write(data)
    CASES.append((name, status, code, frags))


def main():
    os.makedirs(ROOT, exist_ok=True)
    for f in os.listdir(ROOT):
        os.remove(os.path.join(ROOT, f))
    kvs, ts = model()
    good = build(kvs, ts)
    case("valid.gguf", good, "MOEQ_OK", 0, "")
    case("bad_magic.gguf", b"GGUX" + good[4:], "MOEQ_ERR_FORMAT", 2, "G-1|no GGUF magic")
    case("truncated_header.gguf", good[:20], "MOEQ_ERR_FORMAT", 2, "G-1|shorter than the 24-byte header")
    case("version_2.gguf", build(kvs, ts, version=2), "MOEQ_ERR_UNSUPPORTED", 2, "G-2|version 2")
    case("big_endian.gguf", good[:4] + struct.pack(">I", 3) + good[8:], "MOEQ_ERR_UNSUPPORTED", 2, "G-2|big-endian")
    case("n_kv_too_large.gguf", build(kvs, ts, n_kv=1 << 40), "MOEQ_ERR_FORMAT", 2, "G-3|n_kv 1099511627776")
    case("truncated_in_kv.gguf", good[:700], "MOEQ_ERR_FORMAT", 2, "G-3|truncated file")
    case("value_type_13.gguf", build(kvs + [("x.bad", 13, b"\0")], ts), "MOEQ_ERR_FORMAT", 2, "G-5|key 'x.bad'|value type 13")
    case("nested_array.gguf", build(kvs + [("x.nested", ARR, struct.pack("<iQ", ARR, 1))], ts), "MOEQ_ERR_FORMAT", 2,
         "G-5|array element type 9")
    case("bool_value_2.gguf", build(kvs + [("x.flag", BOOL, 2)], ts), "MOEQ_ERR_FORMAT", 2, "G-5|BOOL value 2")
    case("duplicate_key.gguf", build(kvs + [("qwen3moe.block_count", U32, 1)], ts), "MOEQ_ERR_FORMAT", 2,
         "G-6|duplicate key 'qwen3moe.block_count'")
    case("alignment_not_u32.gguf", build(kvs + [("general.alignment", I32, 32)], ts), "MOEQ_ERR_FORMAT", 2,
         "G-7|'general.alignment'|INT32")
    case("alignment_not_pow2.gguf", build(kvs + [("general.alignment", U32, 48)], ts, align=48), "MOEQ_ERR_FORMAT", 2,
         "G-7|48, not a power of two")
    long = [list(t) for t in ts]
    long[1][0] = "output_norm." + "x" * 60
    case("tensor_name_64.gguf", build(kvs, long), "MOEQ_ERR_FORMAT", 2, "G-8|64 bytes or longer")
    bad = [list(t) for t in ts]
    bad[0][1] = [H, V, 1, 1, 1]
    case("n_dims_5.gguf", build(kvs, bad), "MOEQ_ERR_FORMAT", 2, "G-8|'token_embd.weight'|n_dims 5")
    bad = [list(t) for t in ts]
    bad[2][1] = [H, 0]
    bad[2][3] = b""
    case("ne_zero.gguf", build(kvs, bad), "MOEQ_ERR_FORMAT", 2, "G-8|'output.weight'|ne[1] = 0 is not positive")
    bad = [list(t) for t in ts]
    bad[1][2] = 99
    case("type_99.gguf", build(kvs, bad), "MOEQ_ERR_FORMAT", 2, "G-8|'output_norm.weight'|type 99 is not a ggml type")
    bad = [list(t) for t in ts]
    bad[9][2] = 8   # Q8_0 with 16 values per row
    bad[9][3] = bytes(34)
    case("row_not_block_multiple.gguf", build(kvs, bad), "MOEQ_ERR_FORMAT", 2,
         "G-8|'blk.0.attn_q_norm.weight'|16 elements per row is not a multiple of Q8_0's block of 32")
    bad = [list(t) for t in ts]
    bad[9][2] = 39   # MXFP4 with 16 values per row
    bad[9][3] = bytes(17)
    case("mxfp4_row_not_block_multiple.gguf", build(kvs, bad), "MOEQ_ERR_FORMAT", 2,
         "G-8|'blk.0.attn_q_norm.weight'|16 elements per row is not a multiple of MXFP4's block of 32")
    offs = [None] * len(ts)
    offs[3] = 64
    case("wrong_offset.gguf", build(kvs, ts, offsets=offs), "MOEQ_ERR_FORMAT", 2,
         "G-9|'blk.0.attn_norm.weight' has data offset 64")
    case("truncated_data.gguf", good[:-100], "MOEQ_ERR_FORMAT", 2, "G-11|'blk.0.ffn_down_exps.weight'|past the end")
    dup = [list(t) for t in ts]
    dup[4][0] = "blk.0.attn_norm.weight"
    case("duplicate_tensor.gguf", build(kvs, dup), "MOEQ_ERR_FORMAT", 2, "G-12|duplicate tensor name 'blk.0.attn_norm.weight'")
    # model-level errors (formats/gguf_model.c)
    case("no_architecture.gguf", build(kvs[1:], ts), "MOEQ_ERR_FORMAT", 2, "'general.architecture'|missing")
    other = [("general.architecture", STR, "gptneox")] + kvs[1:]
    case("unsupported_arch.gguf", build(other, ts), "MOEQ_ERR_UNSUPPORTED", 2, "'gptneox' is not supported")
    wrongt = [kv if kv[0] != "qwen3moe.block_count" else (kv[0], I32, 1) for kv in kvs]
    case("key_wrong_type.gguf", build(wrongt, ts), "MOEQ_ERR_FORMAT", 2, "'qwen3moe.block_count'|INT32, expected UINT32")
    miss = [t for t in ts if t[0] != "blk.0.ffn_gate_exps.weight"]
    case("missing_expert_tensor.gguf", build(kvs, miss), "MOEQ_ERR_FORMAT", 2, "'blk.0.ffn_gate_exps.weight' not found")
    shp = [list(t) for t in ts]
    shp[5][1] = [HD, 2 * HEADS * HD]   # attn_q with its elements in another shape
    case("wrong_ne.gguf", build(kvs, shp), "MOEQ_ERR_FORMAT", 2, "'blk.0.attn_q.weight'|ne {16, 64} does not match {32, 32}")
    q81 = [list(t) for t in ts]
    q81[12][2] = 9   # Q8_1: a valid type moeq does not compute with
    q81[12][3] = bytes(36 * (H // 32) * I * E)
    case("unsupported_type.gguf", build(kvs, q81), "MOEQ_ERR_UNSUPPORTED", 2, "'blk.0.ffn_gate_exps.weight'|type Q8_1 is not supported")
    nan = [list(t) for t in ts]
    nan[13][3] = nan[13][3][:40] + struct.pack("<f", float("nan")) + nan[13][3][44:]
    case("nan_weight.gguf", build(kvs, nan), "MOEQ_ERR_NUMERIC", 3, "'blk.0.ffn_up_exps.weight'|value 10 of row 0 is NaN")
    # SentencePiece ('llama') tokenizer metadata, as the tokenizer --text rebuilds reads it
    # (formats/gguf_tokenizer.c): specials, the 256 byte tokens, a merge
    toks = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % b for b in range(256)] + ["\u2581", "a", "\u2581a"]
    nv = len(toks)
    types = [2, 3, 3] + [6] * 256 + [1, 1, 1]
    scores = [0.0] * (nv - 1) + [-1.0]
    def spm(drop=None, **over):
        kv = {"tokenizer.ggml.model": (STR, "llama"), "tokenizer.ggml.tokens": (ARR, (STR, toks)),
              "tokenizer.ggml.token_type": (ARR, (I32, types)), "tokenizer.ggml.scores": (ARR, (F32, scores))}
        kv.update(over)
        return model(([(k, t, v) for k, (t, v) in kv.items() if k != drop], nv))
    case("spm_valid.gguf", build(*spm()), "MOEQ_OK", 0, "")
    case("spm_no_scores.gguf", build(*spm("tokenizer.ggml.scores")), "MOEQ_ERR_FORMAT", 2,
         "tokenizer.ggml.model 'llama' without tokenizer.ggml.scores")
    case("spm_scores_short.gguf", build(*spm(**{"tokenizer.ggml.scores": (ARR, (F32, scores[:-1]))})), "MOEQ_ERR_FORMAT", 2,
         "tokenizer.ggml.scores must be %d FLOAT32 (or INT32) values" % nv)
    case("spm_nan_score.gguf", build(*spm(**{"tokenizer.ggml.scores": (ARR, (F32, [float("nan")] + scores[1:]))})),
         "MOEQ_ERR_FORMAT", 2, "tokenizer.ggml.scores[0] (token '<unk>') is NaN")
    case("spm_duplicate_token.gguf", build(*spm(**{"tokenizer.ggml.tokens": (ARR, (STR, toks[:-1] + ["a"]))})),
         "MOEQ_ERR_FORMAT", 2, "token %d 'a' repeats token %d" % (nv - 1, nv - 2))
    mx = [list(t) for t in ts]   # MXFP4 experts (valid), then one block with the E8M0 NaN exponent 255
    blk = bytes([120]) + bytes(range(16))
    mx[12][2] = 39
    mx[12][3] = blk * (I * E)
    case("mxfp4_valid.gguf", build(kvs, mx), "MOEQ_OK", 0, "")
    mx[12][3] = blk * 5 + bytes([255]) + blk[1:] + blk * (I * E - 6)
    case("mxfp4_nan_exponent.gguf", build(kvs, mx), "MOEQ_ERR_NUMERIC", 3,
         "'blk.0.ffn_gate_exps.weight'|MXFP4 block 0 of row 5 has the E8M0 exponent 255")
    with open(os.path.join(ROOT, "expected.tsv"), "w") as f:
        f.write("# path (relative to this directory)\tstatus\texit\tfragments (|-separated)\n")
        for c in CASES:
            f.write("%s\t%s\t%d\t%s\n" % c)
    with open(os.path.join(ROOT, "README.md"), "w") as f:
        f.write("# Broken GGUF files\n\nWritten by `python3 tests/broken/make_broken_gguf.py`; each must give the exit code and\n"
                "message fragments of `expected.tsv` from `moeq verify` (tests/cli/test_gguf.sh). Rules G-n:\n"
                "docs/FORMAT-gguf.md. `valid.gguf` is a 1-layer qwen3moe model (hidden 32, 2 experts) in F32;\n"
                "`spm_*.gguf` the same model with a SentencePiece (`llama`) vocabulary of 262 tokens.\n")


main()
