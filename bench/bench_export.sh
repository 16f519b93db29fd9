#!/bin/sh
# Issue 12's export benchmark: `moeq export gguf --method gptq` of a Qwen1.5-MoE-A2.7B-shaped
# checkpoint, time and peak RSS on this machine (docs/bench.md, "GGUF export with GPTQ").
#   bench/bench_export.sh [MODEL_DIR] [WORK_DIR] [MOEQ]          (make bench-export)
# MODEL_DIR (default /work/big/q15-l4): the qwen15 shape of bench/make_shaped.c with 4 of its 24
# layers (every layer's shapes, vocabulary, embeddings and head as the real model; random
# N(0, 0.02) weights), generated when absent, and the same with 1 layer (MODEL_DIR with -l1 for
# -l4). Full Hessians of 24 layers are 70 GB (more than this disk), and calibration and GPTQ work
# layer by layer, so the 24-layer times are extrapolated from the two: per layer = (t4 - t1) / 3,
# t24 = t1 + 23 x per layer (t1 holds the embeddings and head once). A synthetic byte-level BPE
# tokenizer.json of the model's 151,936 ids is written beside the weights (the GGUF needs
# tokenizer metadata). Prints one line per command, then the 24-layer estimates.
set -u
M=${1:-/work/big/q15-l4}
W=${2:-$M.work}
MOEQ=${3:-bin/moeq}
M1=${M%-l4}-l1
GEN=build/rel/bench/make_shaped
[ -x "$GEN" ] || make -s "$GEN" || exit 1
tok() {   # tok DIR: a byte-level BPE vocabulary of 151,936 ids (256 bytes, 2- and 3-symbol merges)
  python3 - "$1/tokenizer.json" <<'PY'
import json, sys
b2u = {}
n = 0
for b in range(256):   # GPT-2's byte-to-unicode table
    if 33 <= b <= 126 or 161 <= b <= 172 or 174 <= b <= 255: b2u[b] = chr(b)
    else: b2u[b] = chr(256 + n); n += 1
sym = [b2u[b] for b in range(256)]
vocab = {s: i for i, s in enumerate(sym)}
merges = []
A = sym[33:97]   # 64 symbols
for a in A:
    for c in A:
        vocab[a + c] = len(vocab); merges.append(a + " " + c)
two = [a + c for a in A for c in A]
V = 151936 - 1
for p in two:
    for c in A:
        if len(vocab) >= V: break
        vocab[p + c] = len(vocab); merges.append(p + " " + c)
t = {"version": "1.0", "truncation": None, "padding": None,
     "added_tokens": [{"id": V, "content": "<|endoftext|>", "single_word": False, "lstrip": False, "rstrip": False,
                       "normalized": False, "special": True}],
     "normalizer": None, "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
     "post_processor": None, "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
     "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None, "end_of_word_suffix": None,
               "fuse_unk": False, "byte_fallback": False, "ignore_merges": False, "vocab": vocab, "merges": merges}}
json.dump(t, open(sys.argv[1], "w"))
PY
}
for d in "$M:4" "$M1:1"; do
  dir=${d%:*}; nl=${d#*:}
  [ -f "$dir/config.json" ] || "$GEN" "$dir" --layers "$nl" || exit 1
  [ -f "$dir/tokenizer.json" ] || tok "$dir" || exit 1
done
mkdir -p "$W" || exit 1
T=$M/tokens.u32
printf '%-34s %10s %9s %s\n' command peak_MiB seconds status
run() {   # run NAME ARGS...
  name=$1; shift
  /usr/bin/time -f '%M %e' -o "$W/time.txt" "$MOEQ" "$@" -q > "$W/$name.out" 2> "$W/$name.err"
  rc=$?
  set -- $(tail -n 1 "$W/time.txt")
  echo "$name $1 $2" >> "$W/times.txt"
  awk -v n="$name" -v kb="$1" -v s="$2" -v rc="$rc" \
      'BEGIN { printf "%-34s %10.0f %9.1f %s\n", n, kb / 1024, s, rc == 0 ? "ok" : "exit " rc }'
}
: > "$W/times.txt"
for d in "$M:l4" "$M1:l1"; do
  dir=${d%:*}; n=${d#*:}
  run $n-calibrate-all calibrate "$dir" --tokens "$T" --max-tokens 2048 --ctx 512 --scope all -o "$W/$n-calib.h5"
  run $n-export-q4k-gptq export gguf "$dir" --type Q4_K --scope all --method gptq --calib "$W/$n-calib.h5" --json -o "$W/$n-q4k.gguf"
  rm -f "$W/$n-q4k.gguf"
done
rm -f "$W"/l*-calib.h5
awk '{ t[$1] = $3; r[$1] = $2 }
END { for (s = 0; s < 2; s++) {
        k = s ? "export-q4k-gptq" : "calibrate-all"; a = t["l1-" k]; b = t["l4-" k]; per = (b - a) / 3
        printf "24 layers, %-17s %.0f s (%.1f min) = %.0f s + 23 x %.0f s per layer; peak RSS (4 layers) %.0f MiB\n",
               k ":", a + 23 * per, (a + 23 * per) / 60, a, per, r["l4-" k] / 1024 } }' "$W/times.txt"
