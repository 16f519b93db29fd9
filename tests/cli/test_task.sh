#!/bin/sh
# moeq eval --task: per-request log-likelihoods and token ids against transformers
# (tests/fixtures/*/ref/tasks.json, made by tests/fixtures/tasks/make_task_refs.py) on the four
# fixtures and three formats; --ref figures recomputed from the dump; threads; the broken-input
# catalogue tests/broken/tasks (exit 2 naming the line).
. tests/cli/lib.sh
TK=$FX/tasks
get() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }

expect_exit "eval --task --help" 0 "" -- "$MOEQ" eval --help
expect_exit "eval --task with --tokens" 1 "does not go with" -- "$MOEQ" eval $FX/tiny-olmoe --task $TK/cloze.jsonl --tokens $FX/heldout.safetensors
expect_exit "eval --task unknown extension" 1 "give --task-format" -- "$MOEQ" eval $FX/tiny-olmoe --task $FX/heldout.txt.gz
expect_exit "eval --task-format bad" 1 "not jsonl, hellaswag or winogrande" -- "$MOEQ" eval $FX/tiny-olmoe --task $TK/cloze.jsonl --task-format csv
expect_exit "eval --limit without --task" 1 "go with --task" -- "$MOEQ" eval $FX/tiny-olmoe --tokens $FX/heldout.safetensors --limit 3
expect_exit "eval --task missing file" 2 "nope.jsonl" -- "$MOEQ" eval $FX/tiny-olmoe --task "$TMPD/nope.jsonl"

# Against transformers: every fixture, every format, the first tasks of each file (the ASan run
# takes two fixtures and fewer tasks).
fixtures="tiny-mixtral tiny-olmoe tiny-qwen2moe tiny-qwen3moe"; lims="48 24 60"
[ -n "${MOEQ_TEST_QUICK:-}" ] && fixtures="tiny-olmoe tiny-qwen3moe" && lims="12 8 16"
set -- $lims
for m in $fixtures; do
  for f in jsonl:cloze.jsonl hellaswag:cloze.hellaswag.txt winogrande:cloze.winogrande.csv; do
    fmt=${f%%:*}
    case $fmt in jsonl) lim=$1 ;; hellaswag) lim=$2 ;; *) lim=$3 ;; esac
    # float32 activations (MOEQ_KERNEL=float) to 1e-4, then the kernels cpuid picks: with bf16 or
    # int8 activations (bf16 on the Zen 5) the log-likelihoods within 5% of max(1, |ll|) (2.7%
    # measured, routing flips included) and the same picks
    for k in float default; do
    if [ $k = float ]; then kenv=float; else kenv=${MOEQ_KERNEL:-}; fi
    MOEQ_KERNEL=$kenv "$MOEQ" eval $FX/$m --task $TK/${f#*:} --limit $lim --threads 1 --task-dump "$TMPD/d.json" --json -q > "$TMPD/r.json" 2> "$TMPD/err" \
      || { echo "FAIL eval --task $m $fmt ($k kernels)"; cat "$TMPD/err" >&2; continue; }
    python3 - $FX/$m/ref/tasks.json $fmt "$TMPD/d.json" "$TMPD/r.json" $lim $k <<'PY' && echo "PASS eval --task $m $fmt = transformers ($k kernels: $(get "$TMPD/r.json" kernels))" || echo "FAIL eval --task $m $fmt = transformers ($k kernels)"
import json, math, sys
ref = json.load(open(sys.argv[1]))[sys.argv[2]]
dump, res = json.load(open(sys.argv[3])), json.load(open(sys.argv[4]))
strict = sys.argv[6] == "float"
ref["tasks"] = ref["tasks"][:int(sys.argv[5])]   # --limit: the first tasks
assert len(ref["tasks"]) == len(dump["tasks"]) == res["tasks"]
acc = accn = 0
worst = 0
for rt, gt in zip(ref["tasks"], dump["tasks"]):
    assert str(rt["id"]) == gt["id"] and rt["gold"] == gt["gold"], rt["id"]
    assert len(rt["requests"]) == len(gt["requests"])
    for rr, gr in zip(rt["requests"], gt["requests"]):
        assert rr["context_tokens"] == gr["context_tokens"], rt["id"]
        assert rr["continuation_tokens"] == gr["continuation_tokens"], rt["id"]
        assert rr["nbytes"] == gr["nbytes"] and rr["greedy"] == gr["greedy"], rt["id"]
        worst = max(worst, abs(rr["ll"] - gr["ll"]) / (abs(rr["ll"]) if strict else max(1, abs(rr["ll"]))))
    lls = [r["ll"] for r in rt["requests"]]
    norm = [r["ll"] / r["nbytes"] for r in rt["requests"]]
    assert gt["pick"] == lls.index(max(lls)) and gt["pick_norm"] == norm.index(max(norm)), rt["id"]
    acc += gt["pick"] == rt["gold"]
    accn += gt["pick_norm"] == rt["gold"]
assert worst < (1e-4 if strict else 5e-2), worst
n = res["tasks"]
assert abs(res["acc"] - acc / n) < 1e-9 and abs(res["acc_norm"] - accn / n) < 1e-9, (res["acc"], acc / n)
if n == len(json.load(open(sys.argv[1]))[sys.argv[2]]["tasks"]):
    assert abs(res["acc"] - ref["acc"]) < 1e-9 and abs(res["acc_norm"] - ref["acc_norm"]) < 1e-9
p = res["acc"]
assert abs(res["acc_stderr"] - math.sqrt(p * (1 - p) / (n - 1))) < 1e-9
assert res["scored_tokens"] == sum(len(r["continuation_tokens"]) for t in ref["tasks"] for r in t["requests"])
PY
    done
  done
done

# --ref: against itself agreement 1 and no difference; a 3-bit RTN copy against its original,
# the figures recomputed from the dump's picks.
"$MOEQ" eval $FX/tiny-qwen3moe --task $TK/cloze.jsonl --limit 40 --threads 1 --ref $FX/tiny-qwen3moe --json -q > "$TMPD/self.json" 2> "$TMPD/err"
python3 - "$TMPD/self.json" <<'PY' && echo "PASS eval --task --ref against itself" || { echo "FAIL eval --task --ref against itself"; cat "$TMPD/err" >&2; }
import json, sys
a = json.load(open(sys.argv[1]))
assert a["tasks"] == 40 and a["agreement"] == 1 and a["agreement_norm"] == 1, a
assert a["acc_diff"] == 0 and a["acc_diff_stderr"] == 0 and a["acc_ref"] == a["acc"], a
PY
"$MOEQ" quantize $FX/tiny-qwen3moe --bits 3 --method rtn --group 64 -q -o "$TMPD/q3.moeq" 2> "$TMPD/err" || cat "$TMPD/err" >&2
"$MOEQ" eval "$TMPD/q3.moeq" --task $TK/cloze.jsonl --limit 60 --threads 1 --ref $FX/tiny-qwen3moe --task-dump "$TMPD/q.json" --json -q > "$TMPD/q3.json" 2> "$TMPD/err"
python3 - "$TMPD/q3.json" "$TMPD/q.json" <<'PY' && echo "PASS eval --task of a 3-bit .moeq against its original" || { echo "FAIL eval --task of a 3-bit .moeq against its original"; cat "$TMPD/err" >&2; }
import json, math, statistics, sys
a, d = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
T = d["tasks"]; n = len(T)
x = [t["pick"] == t["gold"] for t in T]; y = [t["pick_ref"] == t["gold"] for t in T]
diff = [int(p) - int(q) for p, q in zip(x, y)]
assert a["tasks"] == n == 60
assert abs(a["acc"] - sum(x) / n) < 1e-9 and abs(a["acc_ref"] - sum(y) / n) < 1e-9
assert abs(a["acc_diff"] - (a["acc"] - a["acc_ref"])) < 1e-9
assert abs(a["acc_diff_stderr"] - statistics.stdev(diff) / math.sqrt(n)) < 1e-9
assert abs(a["agreement"] - sum(t["pick"] == t["pick_ref"] for t in T) / n) < 1e-9
assert 0.6 < a["agreement"] < 1, a["agreement"]          # 3-bit RTN changes some picks, not most
assert a["acc_diff_stderr"] <= math.sqrt((1 - a["agreement"]) / (n - 1)) + 1e-9
# the quantized model's log-likelihoods move, but stay close
rel = [abs(r["ll"] - r["ll_ref"]) / abs(r["ll_ref"]) for t in T for r in t["requests"]]
assert 0 < max(rel) < 0.5 and sum(rel) / len(rel) < 0.1, (max(rel), sum(rel) / len(rel))
PY

# Thread count and packing do not change the picks; threads do not change a bit.
for th in 1 2; do
  "$MOEQ" eval $FX/tiny-mixtral --task $TK/cloze.winogrande.csv --limit 30 --threads $th --task-dump "$TMPD/t$th.json" -q 2> "$TMPD/err" || cat "$TMPD/err" >&2
done
"$MOEQ" eval $FX/tiny-mixtral --task $TK/cloze.winogrande.csv --limit 30 --threads 1 --task-pack 1 --task-dump "$TMPD/t0.json" -q 2> "$TMPD/err" || cat "$TMPD/err" >&2
python3 - "$TMPD/t1.json" "$TMPD/t2.json" "$TMPD/t0.json" <<'PY' && echo "PASS eval --task threads and packing" || echo "FAIL eval --task threads and packing"
import json, sys
a, b, c = (json.load(open(p)) for p in sys.argv[1:4])
assert a == b
for x, y in zip(a["tasks"], c["tasks"]):
    assert x["pick"] == y["pick"] and x["pick_norm"] == y["pick_norm"]
    for r, s in zip(x["requests"], y["requests"]):
        assert abs(r["ll"] - s["ll"]) <= 1e-5 * abs(s["ll"])
PY

# The broken-input catalogue: exit 2 and every fragment (the file:line) in the message.
B=tests/broken/tasks
while IFS="$(printf '\t')" read -r f fmt status code frags; do
  case $f in \#*) continue ;; esac
  "$MOEQ" eval $FX/tiny-olmoe --task $B/$f --task-format $fmt --threads 1 -q > /dev/null 2> "$TMPD/err"; rc=$?
  ok=1; [ $rc -eq "$code" ] || ok=0
  rest=$frags
  while [ -n "$rest" ]; do
    frag=${rest%%|*}; [ "$frag" = "$rest" ] && rest= || rest=${rest#*|}
    grep -qF -- "$frag" "$TMPD/err" || ok=0
  done
  grep -qF -- "$B/$f" "$TMPD/err" || ok=0
  if [ $ok -eq 1 ]; then echo "PASS broken task $f"; else echo "FAIL broken task $f: exit $rc, $(head -c 300 "$TMPD/err")"; fi
done < $B/expected.tsv
