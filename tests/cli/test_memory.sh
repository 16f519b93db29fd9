#!/bin/sh
# Bounded memory (docs/eval.md, "Memory"): on a synthetic 220 MB checkpoint (8 layers of 8
# experts, 26 MB a layer), each command's peak RSS above the process's own (moeq inspect) stays
# under its doc page's formula + the mapped pages it may hold (eval: a layer and its successor
# plus the head; stages: the matrices in flight) + 16 MiB, and under half the model; eval without
# release (MOEQ_RELEASE=0) holds the whole model, so the test fails if releasing is removed.
# Results do not depend on releasing. Under ASan (MOEQ_TEST_QUICK) only the equality is checked:
# shadow memory and the allocator's quarantine make RSS meaningless there.
. tests/cli/lib.sh
S=$TMPD/synth
python3 bench/make_synthetic.py "$S" --hidden 512 --inter 1024 --layers 8 --experts 8 --vocab 4096 > /dev/null \
  || { echo "FAIL memory: synthetic checkpoint"; exit 0; }
python3 - "$MOEQ" "$S" "$TMPD" "${MOEQ_TEST_QUICK:-}" <<'PY'
import json, os, subprocess, sys
moeq, S, D, quick = sys.argv[1:5]
cfg = json.load(open(S + "/config.json"))
H, I, L, E, K = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"], cfg["num_local_experts"], cfg["num_experts_per_tok"]
heads, kvh, V = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["vocab_size"]
hd = H // heads; q, kv = heads * hd, kvh * hd
T, n = 2, 256                                   # threads, ctx
mapped = os.path.getsize(S + "/model.safetensors")
layer = 2 * (E * 3 * I * H + 2 * q * H + 2 * kv * H + E * H + 2 * H)
head = 2 * 2 * V * H
MiB = 1 << 20
results = []

def peak(args, env=None):
    """runs moeq ARGS; returns (exit code, stdout, peak RSS in bytes of that process)"""
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.Popen([moeq] + args + ["--threads", str(T), "-q"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=e)
    out = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    return os.waitstatus_to_exitcode(status), out, ru.ru_maxrss * 1024

def check(name, ok, detail=""):
    print(("PASS " if ok else "FAIL ") + name + (": " + detail if detail else ""))

rc, _, base = peak(["inspect", S])
tok = S + "/tokens.u32"
ev = ["eval", S, "--tokens", tok, "--ctx", str(n), "--max-tokens", str(2 * n), "--json"]
rc0, out0, p0 = peak(ev, {"MOEQ_RELEASE": "0"})
rc1, out1, p1 = peak(ev, {"MOEQ_RELEASE": "1"})
j0, j1 = (json.loads(o) if r == 0 else {} for r, o in ((rc0, out0), (rc1, out1)))
check("memory: eval with and without release, same ppl", rc0 == 0 and rc1 == 0 and j0.get("ppl") == j1.get("ppl")
      and j0.get("nll_mean") == j1.get("nll_mean"), "%s vs %s" % (j0.get("ppl"), j1.get("ppl")))
if quick:
    sys.exit(0)

# docs/eval.md workspace, float32 elements (F = 0: no dense or shared MLP in this model)
ws = 4 * (n * (3 * H + 2 * q + 4 * kv + 1 + E + K + K * H + hd) + H + 3 * H + 2 * q + 3 * kv
          + T * (n * (2 * H + 2 * I + 1) + 64 * n + 512 * H)) + 4 * (n * K + 2 * E * n) + 8 * E
logits = 4 * n * V
bound = ws + logits + 2 * layer + head + 16 * MiB
print("  model %.1f MiB, layer %.1f MiB; eval peak above the process: release %.1f MiB (bound %.1f), none %.1f MiB"
      % (mapped / MiB, layer / MiB, (p1 - base) / MiB, bound / MiB, (p0 - base) / MiB))
check("memory: eval holds the model's pages without release", p0 - base >= 0.8 * mapped)
check("memory: eval with release within workspace + logits + 2 layers + head + 16 MiB",
      p1 - base <= bound and p1 - base < mapped / 2, "%.1f MiB" % ((p1 - base) / MiB))

m_n = I * H                                      # one expert matrix, elements
def stage(name, args, extra):
    rc, _, p = peak(args)
    b = extra + 16 * MiB
    print("  %s: peak above the process %.1f MiB (bound %.1f MiB)" % (name, (p - base) / MiB, b / MiB))
    check("memory: %s within its formula + 16 MiB, under half the model" % name,
          rc == 0 and p - base <= b and p - base < mapped / 2, "exit %d, %.1f MiB" % (rc, (p - base) / MiB))
    return rc

# docs/spectral.md: per thread the widened matrix, FARMS tiles' float64 copy and gram, ESD; the
# matrices in flight (one per thread) are the only mapped pages held
stage("spectral farms", ["spectral", S, "--mode", "farms", "-o", D + "/spec.h5"],
      T * (4 * m_n + 8 * m_n + 8 * min(I, H) ** 2 + 2 * m_n))
# docs/quantize.md: one widened matrix + its packed bytes + its mapped pages
stage("quantize rtn", ["quantize", S, "--bits", "4", "-o", D + "/q4.moeq"], 4 * m_n + m_n + 2 * m_n)
stage("verify", ["verify", S], 2 * m_n)
stage("verify q4", ["verify", D + "/q4.moeq"], 2 * m_n)
# docs/unpack.md: one tensor's bf16 output buffer + the dequantize scratch + its packed pages
stage("unpack", ["unpack", D + "/q4.moeq", "-o", D + "/unp"], 2 * m_n + 4 * T * 64 * H + m_n)
# docs/prune.md: magnitude scores need one expert's three matrices at a time (float + double)
stage("prune magnitude", ["prune", S, "--ratio", "0.25", "--score", "magnitude", "-o", D + "/pruned"],
      3 * 12 * m_n + 2 * m_n)
# the packed file in the forward pass: 4-bit g64 asymmetric codes are 4.5/16 of bf16
packed = os.path.getsize(D + "/q4.moeq")
rc2, _, p2 = peak(["eval", D + "/q4.moeq", "--tokens", tok, "--ctx", str(n), "--max-tokens", str(2 * n)], {"MOEQ_RELEASE": "1"})
bound_q = ws + logits + 2 * layer * 4.5 / 16 + head + 16 * MiB
print("  eval of the packed file (%.1f MiB): peak above the process %.1f MiB (bound %.1f MiB)"
      % (packed / MiB, (p2 - base) / MiB, bound_q / MiB))
check("memory: eval of the packed file with release within workspace + logits + 2 packed layers + head + 16 MiB",
      rc2 == 0 and p2 - base <= bound_q and p2 - base < packed, "%.1f MiB" % ((p2 - base) / MiB))
PY
