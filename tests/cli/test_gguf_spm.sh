#!/bin/sh
# SentencePiece ('llama') vocabularies of GGUF files without tokenizer.huggingface.json (llama.cpp's
# own files): the tokenizer --text rebuilds from tokenizer.ggml.* (formats/gguf_tokenizer.c) gives
# (a) the ids of the tokenizer.json the GGUF was exported from, and (b) llama.cpp's own ids
# (node-llama-cpp 3.21.1, tests/node/tokenize.mjs: llama_tokenize with parse_special, plus the
# BOS/EOS it adds) on the torture and held-out texts, also for copies of the GGUF whose scores tie
# everywhere (0), in coarse steps, or at random, and without add_space_prefix / with EOS, BOS off.
# Then what the rebuild refuses rather than tokenize differently, each with exit 2 and its message.
# Model: tiny-mixtral's weights with tok_legacy.json (Llama-2-style: Prepend/Replace U+2581,
# byte_fallback) cut to its vocabulary of 1024 (tests/cli/spm_model.py).
. tests/cli/lib.sh
if ! sh scripts/node_deps.sh build/node 2> "$TMPD/npm.err"; then
  echo "FAIL llama.cpp tokenizer: node-llama-cpp could not be installed with npm: $(tr '\n' ' ' < "$TMPD/npm.err" | head -c 400)"
  exit 0
fi
TX="$FX/tokenizers/torture.txt $FX/heldout.txt"
python3 tests/cli/spm_model.py $FX/tiny-mixtral $FX/tokenizers/tok_legacy.json "$TMPD/spm"
"$MOEQ" export gguf "$TMPD/spm" -o "$TMPD/hf.gguf" --type F32 -q || echo "FAIL export gguf of an SPM-tokenizer model"
python3 tests/cli/gguf_drop_key.py "$TMPD/hf.gguf" "$TMPD/g.gguf" tokenizer.huggingface.json
V=tests/cli/gguf_spm_variant.py
python3 $V "$TMPD/g.gguf" "$TMPD/zero.gguf" zero
python3 $V "$TMPD/g.gguf" "$TMPD/coarse.gguf" coarse
python3 $V "$TMPD/g.gguf" "$TMPD/random.gguf" random
python3 $V "$TMPD/g.gguf" "$TMPD/noprefix.gguf" keep tokenizer.ggml.add_space_prefix=false
python3 $V "$TMPD/g.gguf" "$TMPD/mixed.gguf" random tokenizer.ggml.add_space_prefix=false tokenizer.ggml.add_bos_token=false tokenizer.ggml.add_eos_token=true
"$MOEQ" verify "$TMPD/g.gguf" -q && echo "PASS verify of a llama-vocabulary GGUF (the tokenizer rebuilt)" || echo "FAIL verify of a llama-vocabulary GGUF"
# (a) the exported tokenizer.json's ids
for t in $TX; do
  "$MOEQ" tokenize "$TMPD/spm" --text $t -o "$TMPD/a.st" -q
  "$MOEQ" tokenize "$TMPD/g.gguf" --text $t -o "$TMPD/b.st" -q && cmp -s "$TMPD/a.st" "$TMPD/b.st" \
    && echo "PASS SPM tokenizer rebuilt from tokenizer.ggml.*: the exported tokenizer.json's ids on $(basename $t)" \
    || echo "FAIL SPM tokenizer rebuilt from tokenizer.ggml.* differs from the tokenizer.json on $(basename $t)"
done
"$MOEQ" eval "$TMPD/g.gguf" --text $FX/heldout.txt --ctx 128 --max-tokens 256 --json -q > "$TMPD/e1" \
  && "$MOEQ" eval "$TMPD/spm" --text $FX/heldout.txt --ctx 128 --max-tokens 256 --json -q > "$TMPD/e2" \
  && python3 -c "import json,sys; a, b = (json.load(open(f)) for f in sys.argv[1:]); sys.exit(a['ppl'] != b['ppl'])" "$TMPD/e1" "$TMPD/e2" \
  && echo "PASS eval --text of a llama-vocabulary GGUF: the checkpoint's ppl" || echo "FAIL eval --text of a llama-vocabulary GGUF"
# (b) llama.cpp's ids
gs="$TMPD/g.gguf $TMPD/zero.gguf $TMPD/coarse.gguf $TMPD/random.gguf $TMPD/noprefix.gguf $TMPD/mixed.gguf"
[ -n "${MOEQ_TEST_QUICK:-}" ] && gs="$TMPD/g.gguf $TMPD/zero.gguf $TMPD/mixed.gguf"   # the ASan run
# shellcheck disable=SC2086
if ! (cd build/node && node tokenize.mjs "$(echo $TX | sed "s|[^ ]*|$OLDPWD/&|g; s/ /,/g")" $gs) > "$TMPD/llama.jsonl" 2> "$TMPD/llama.err"; then
  echo "FAIL llama.cpp tokenize run: $(grep -v '^ *at ' "$TMPD/llama.err" | head -c 600)"
  exit 0
fi
for g in $gs; do
  for t in $TX; do
    "$MOEQ" tokenize "$g" --text $t -o "$g.$(basename $t).st" -q || echo "FAIL moeq tokenize $(basename $g) $(basename $t)"
  done
done
# shellcheck disable=SC2086
python3 - "$TMPD/llama.jsonl" $(( $(echo $gs | wc -w) * $(echo $TX | wc -w) )) <<'PY'
import json, struct, sys
seen = 0
for j in map(json.loads, open(sys.argv[1])):
    name = "%s %s" % (j["path"].rsplit("/", 1)[1], j["text"].rsplit("/", 1)[1])
    try: b = open("%s.%s.st" % (j["path"], j["text"].rsplit("/", 1)[1]), "rb").read()
    except OSError: continue
    seen += 1
    n = struct.unpack_from("<Q", b)[0]; e = json.loads(b[8:8 + n])["tokens"]["data_offsets"]
    m = list(struct.unpack_from("<%di" % ((e[1] - e[0]) // 4), b, 8 + n + e[0]))
    ll = ([j["bos"]] if j["bos"] is not None else []) + j["ids"] + ([j["eos"]] if j["eos"] is not None else [])
    if m == ll: print("PASS llama.cpp's ids = the rebuilt tokenizer's on %s: %d tokens" % (name, len(m)))
    else:
        i = next((k for k, (x, y) in enumerate(zip(m, ll)) if x != y), min(len(m), len(ll)))
        print("FAIL llama.cpp's ids differ from the rebuilt tokenizer's on %s: %d vs %d tokens, first at %d: %s vs %s"
              % (name, len(ll), len(m), i, ll[i:i + 4], m[i:i + 4]))
if seen != int(sys.argv[2]): print("FAIL llama.cpp tokenized %d of the %s GGUF x text pairs" % (seen, sys.argv[2]))
PY
# refused, never tokenized differently (messages: formats/gguf_tokenizer.c)
T1=$FX/tokenizers/torture.txt
refuse() {   # refuse NAME PATTERN VARIANT-ARGS...
  name=$1; pat=$2; shift 2
  python3 $V "$TMPD/g.gguf" "$TMPD/r.gguf" "$@"
  expect_exit "SPM rebuild refuses $name" 2 "$pat" -- "$MOEQ" tokenize "$TMPD/r.gguf" --text $T1 -q
}
refuse "a vocabulary without scores" "without tokenizer.ggml.scores: a SentencePiece vocabulary merges by score" drop
refuse "a token built from a character that is no token" "token 1022 '▁☃' is built by SentencePiece from '☃', a character that is no token" keep "tok:1022=▁☃"
refuse "a token built from a byte token" "token 1022 '<0x41>a' is built from the byte token <0x41>" keep "tok:1022=<0x41>a"
refuse "a missing byte token" "without the byte token <0x41>" keep "tok:68=<0x41"
refuse "overlapping special tokens" "special tokens .*'\[MARK\]' and 1022 'K\]x' overlap \('K\]'\)" keep "tok:1022=K]x" "type:1022=4"
refuse "a Phi-3 name" "names a Phi-3 model" keep general.name=Phi-3.5-MoE-instruct
refuse "duplicate tokens" "token 1022 'a' repeats token" keep "tok:1022=a"
python3 $V "$TMPD/g.gguf" "$TMPD/r.gguf" drop
expect_exit "verify of a llama GGUF without scores" 2 "without tokenizer.ggml.scores" -- "$MOEQ" verify "$TMPD/r.gguf" -q
