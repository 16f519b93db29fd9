#!/usr/bin/env python3
"""Writes the broken safetensors / checkpoint / token inputs under tests/broken/safetensors/,
its README.md table and expected.tsv (read by tests/unit/test_safetensors.c and CLI tests).
Each input breaks exactly one rule of docs/FORMAT-safetensors.md. Stdlib only; deterministic.
Usage: python3 tests/broken/make_broken.py   (from the repository root)"""
import json
import os
import shutil
import struct

ROOT = os.path.join("tests", "broken", "safetensors")

# The valid base image: a F32 [2, 3] at [0, 24) and b BF16 [4] at [24, 32).
A = '"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}'
B = '"b":{"dtype":"BF16","shape":[4],"data_offsets":[24,32]}'
META = '"__metadata__":{"format":"pt"}'


def hdr(*entries):
    return "{" + ",".join(entries) + "}"


def image(header, data_len, n_override=None):
    h = header.encode("utf-8") if isinstance(header, str) else header
    n = len(h) if n_override is None else n_override
    return struct.pack("<Q", n) + h + bytes((i * 7 + 1) & 0xFF for i in range(data_len))


VALID = image(hdr(META, A, B), 32)

# name, bytes, status, exit code, fragments the detail must contain (besides the path)
FILES = [
    ("empty.safetensors", b"", "MOEQ_ERR_FORMAT", 2, ["ST-1"]),
    ("seven_bytes.safetensors", VALID[:7], "MOEQ_ERR_FORMAT", 2, ["ST-1"]),
    ("header_too_large.safetensors", image("{}", 0, 200000000), "MOEQ_ERR_FORMAT", 2,
     ["ST-2", "200000000"]),
    ("header_past_eof.safetensors", image("{}", 0, 1000), "MOEQ_ERR_FORMAT", 2, ["ST-3", "1000"]),
    ("header_not_json.safetensors", image("{not json}", 0), "MOEQ_ERR_FORMAT", 2, ["ST-4"]),
    ("header_bad_utf8.safetensors", image(b'{"\xff":1}', 0), "MOEQ_ERR_FORMAT", 2, ["ST-4"]),
    ("header_not_object.safetensors", image("[1, 2]", 0), "MOEQ_ERR_FORMAT", 2, ["ST-5"]),
    ("duplicate_key.safetensors", image(hdr(A, A.replace('"a"', '"a"')), 24), "MOEQ_ERR_FORMAT",
     2, ["ST-6", '"a"']),
    ("metadata_not_string.safetensors", image(hdr('"__metadata__":{"format":1}', A, B), 32),
     "MOEQ_ERR_FORMAT", 2, ["ST-7", "'format'"]),
    ("entry_not_object.safetensors", image(hdr(A, '"b":[1]'), 24), "MOEQ_ERR_FORMAT", 2,
     ["ST-8", "tensor 'b'"]),
    ("bad_dtype.safetensors", image(hdr(A, B.replace("BF16", "F33")), 32), "MOEQ_ERR_FORMAT", 2,
     ["ST-8", "tensor 'b'", "F33"]),
    ("shape_negative.safetensors", image(hdr(A.replace("[2,3]", "[-2,3]"), B), 32),
     "MOEQ_ERR_FORMAT", 2, ["ST-9", "tensor 'a'"]),
    ("shape_not_array.safetensors", image(hdr(A.replace("[2,3]", "6"), B), 32),
     "MOEQ_ERR_FORMAT", 2, ["ST-9", "tensor 'a'"]),
    ("shape_too_many_dims.safetensors",
     image(hdr(A.replace("[2,3]", "[1,1,1,1,1,1,1,2,3]"), B), 32), "MOEQ_ERR_FORMAT", 2,
     ["ST-9", "tensor 'a'", "9 dims"]),
    ("offsets_missing.safetensors", image(hdr(A, '"b":{"dtype":"BF16","shape":[4]}'), 24),
     "MOEQ_ERR_FORMAT", 2, ["ST-10", "tensor 'b'"]),
    ("offsets_reversed.safetensors", image(hdr(A, B.replace("[24,32]", "[32,24]")), 32),
     "MOEQ_ERR_FORMAT", 2, ["ST-10", "tensor 'b'", "[32, 24]"]),
    ("shape_overflow.safetensors",
     image(hdr(A.replace("[2,3]", "[4294967296,4294967296]"), B), 32), "MOEQ_ERR_FORMAT", 2,
     ["ST-11", "tensor 'a'"]),
    ("subbyte_misaligned.safetensors",
     image(hdr('"a":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}'), 2), "MOEQ_ERR_FORMAT", 2,
     ["ST-12", "tensor 'a'", "12 bits"]),
    ("size_mismatch.safetensors", image(hdr(A.replace("[0,24]", "[0,20]"),
                                            B.replace("[24,32]", "[20,28]")), 28),
     "MOEQ_ERR_FORMAT", 2, ["ST-13", "tensor 'a'", "give 20 bytes", "needs 24"]),
    ("gap.safetensors", image(hdr(A, B.replace("[24,32]", "[28,36]")), 36), "MOEQ_ERR_FORMAT", 2,
     ["ST-14", "tensor 'b'", "gap"]),
    ("overlap.safetensors", image(hdr(A, B.replace("[24,32]", "[20,28]")), 28),
     "MOEQ_ERR_FORMAT", 2, ["ST-14", "tensor 'b'", "overlap"]),
    ("not_from_zero.safetensors", image(hdr(B.replace("[24,32]", "[8,16]")), 16),
     "MOEQ_ERR_FORMAT", 2, ["ST-14", "tensor 'b'", "gap"]),
    ("trailing_bytes.safetensors", image(hdr(META, A, B), 37), "MOEQ_ERR_FORMAT", 2,
     ["ST-15", "5 trailing bytes"]),
    ("truncated_data.safetensors", image(hdr(META, A, B), 22), "MOEQ_ERR_FORMAT", 2,
     ["ST-15", "tensor 'b'", "truncated"]),
]

# Sharded checkpoints: directories. name, {file: bytes}, status, exit, fragments.
S1 = image(hdr(A), 24)
S2 = image(hdr(B.replace("[24,32]", "[0,8]")), 8)
N1, N2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"


def index(wm, total=None):
    d = {"metadata": {"total_size": total} if total is not None else {}, "weight_map": wm}
    return json.dumps(d, indent=1).encode()


GOOD_WM = {"a": N1, "b": N2}
DIRS = [
    ("ck_missing_shard", {"model.safetensors.index.json": index(GOOD_WM), N1: S1},
     "MOEQ_ERR_FORMAT", 2, ["CK-5", N2]),
    ("ck_tensor_not_in_shard",
     {"model.safetensors.index.json": index({"a": N1, "b": N2, "c": N2}), N1: S1, N2: S2},
     "MOEQ_ERR_FORMAT", 2, ["CK-6", "tensor 'c'", N2]),
    ("ck_tensor_not_in_index",
     {"model.safetensors.index.json": index({"a": N1, "b": N2}), N1: S1,
      N2: image(hdr(B.replace("[24,32]", "[0,8]"), '"c":{"dtype":"U8","shape":[2],"data_offsets":[8,10]}'), 10)},
     "MOEQ_ERR_FORMAT", 2, ["CK-7", "tensor 'c'", N2]),
    ("ck_tensor_in_two_shards",
     {"model.safetensors.index.json": index({"a": N1, "b": N2}), N1: image(hdr(A, B), 32),
      N2: S2}, "MOEQ_ERR_FORMAT", 2, ["CK-8", "tensor 'b'", N1, N2]),
    ("ck_bad_json", {"model.safetensors.index.json": b'{"weight_map": {"a": ', N1: S1},
     "MOEQ_ERR_FORMAT", 2, ["CK-1", "model.safetensors.index.json"]),
    ("ck_weight_map_not_strings",
     {"model.safetensors.index.json": index({"a": 1}), N1: S1}, "MOEQ_ERR_FORMAT", 2,
     ["CK-2", "tensor 'a'"]),
    ("ck_shard_dotdot",
     {"model.safetensors.index.json": index({"a": "../" + N1}), N1: S1}, "MOEQ_ERR_FORMAT", 2,
     ["CK-4", "tensor 'a'", "../" + N1]),
    # opens (transformers ignores total_size) with a warning naming both sizes
    ("ck_total_size_wrong",
     {"model.safetensors.index.json": index(GOOD_WM, 33), N1: S1, N2: S2}, "WARNING",
     0, ["CK-9", "33", "32"]),
    ("ck_truncated_shard",
     {"model.safetensors.index.json": index(GOOD_WM), N1: S1, N2: S2[:-3]}, "MOEQ_ERR_FORMAT",
     2, ["CK-5", "ST-15", N2]),
    ("ck_no_model_files", {"config.json": b"{}\n"}, "MOEQ_ERR_NOT_FOUND", 2,
     ["CK-10", "model.safetensors.index.json", "model.safetensors"]),
]

# Token files (--tokens), vocab 1024 where it matters.
TOK = [
    ("tokens/empty.bin", b"", "MOEQ_ERR_FORMAT", 2, ["TK-5", "contains no tokens"]),
    ("tokens/seven_bytes.bin", bytes(7), "MOEQ_ERR_FORMAT", 2, ["TK-4", "7 bytes"]),
    ("tokens/f32.safetensors", image('{"tokens":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}', 16),
     "MOEQ_ERR_UNSUPPORTED", 2, ["TK-2", "tensor 'tokens'", "F32"]),
    ("tokens/two_dims.safetensors",
     image('{"tokens":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]}}', 0) + bytes(16),
     "MOEQ_ERR_FORMAT", 2, ["TK-3", "tensor 'tokens'", "[2, 2]"]),
    ("tokens/two_tensors.safetensors",
     image('{"t1":{"dtype":"I32","shape":[1],"data_offsets":[0,4]},'
           '"t2":{"dtype":"I32","shape":[1],"data_offsets":[4,8]}}', 0) + bytes(8),
     "MOEQ_ERR_FORMAT", 2, ["TK-1", "'t1'", "'t2'"]),
    ("tokens/no_tokens.safetensors",
     image('{"tokens":{"dtype":"I32","shape":[0],"data_offsets":[0,0]}}', 0),
     "MOEQ_ERR_FORMAT", 2, ["TK-5", "contains no tokens"]),
    ("tokens/id_too_large.bin", struct.pack("<4I", 1, 2, 5000, 3), "MOEQ_ERR_RANGE", 2,
     ["TK-6", "token 2", "id 5000", "1024"]),
]


def main():
    if os.path.isdir(ROOT):
        shutil.rmtree(ROOT)
    os.makedirs(os.path.join(ROOT, "tokens"))
    rows = []
    for name, data, st, ex, frags in FILES + TOK:
        with open(os.path.join(ROOT, name), "wb") as f:
            f.write(data)
        rows.append((name, st, ex, frags))
    for name, files, st, ex, frags in DIRS:
        os.makedirs(os.path.join(ROOT, name))
        for fn, data in files.items():
            with open(os.path.join(ROOT, name, fn), "wb") as f:
                f.write(data)
        rows.append((name, st, ex, frags))
    with open(os.path.join(ROOT, "expected.tsv"), "w") as f:
        f.write("# path (relative to this directory)\tstatus\texit\tfragments (|-separated)\n")
        for name, st, ex, frags in rows:
            f.write("%s\t%s\t%d\t%s\n" % (name, st, ex, "|".join(frags)))
    with open(os.path.join(ROOT, "README.md"), "w") as f:
        f.write("# Broken safetensors inputs\n\n"
                "Generated by `python3 tests/broken/make_broken.py`; do not edit by hand. Each input\n"
                "breaks one rule of docs/FORMAT-safetensors.md. `moeq inspect PATH` (directories:\n"
                "the directory; `tokens/*`: pass as `--tokens` with a vocabulary of 1024) must fail\n"
                "with the exit code below and a message that contains the path and every fragment.\n"
                "The same table is in `expected.tsv` for scripts.\n\n"
                "| input | status | exit | message contains |\n|---|---|---|---|\n")
        for name, st, ex, frags in rows:
            f.write("| `%s` | %s | %d | %s |\n" % (name, st, ex,
                                                   ", ".join("`%s`" % x.replace("|", "\\|") for x in frags)))


if __name__ == "__main__":
    main()
