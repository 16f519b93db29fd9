# docs/RESULTS-gguf.md from the rows scripts/results_gguf.sh has finished (also on a partial run).
# Usage: python3 scripts/results_gguf_doc.py OUT DOC LLAMA_BIN MODEL
import json, os, re, subprocess, sys
out, doc, llama, model = sys.argv[1:5]
def kld(log):
    t = open(log).read()
    m = re.search(r"Mean\s+KLD:\s+([0-9.eE+-]+)", t)
    p = re.search(r"Mean\s+PPL\(Q\)\s*:\s*([0-9.eE+-]+)", t)
    return float(m.group(1)), float(p.group(1)) if p else float("nan")
commit = open(os.path.join(os.path.dirname(os.path.dirname(llama.rstrip("/"))), "COMMIT")).read().strip() \
    if os.path.exists(os.path.join(os.path.dirname(os.path.dirname(llama.rstrip("/"))), "COMMIT")) else "unknown"
rows = [l.split() for l in open(out + "/rows.txt")]
# ik_llama.cpp (its llama-quantize spells the rules --custom-q) or mainline llama.cpp
ik = b"--custom-q" in open(os.path.join(llama, "llama-quantize"), "rb").read()
peer = "ik_llama.cpp" if ik else "llama.cpp"
cand = os.environ.get("CAND", "")
base = json.load(open(rows[0][2] + ".eval.json"))
L = []
L.append(f"# GGUF: moeq plan + GPTQ against {peer}'s llama-quantize --imatrix (`make {'results-ik' if ik else 'results-gguf'}`)\n")
L.append(f"Model `{model}` (Qwen3-MoE, hidden 512, 4 layers, 16 experts top-2, expert width 256: rows multiples of 256). "
         f"{peer} commit `{commit}` (built outside the repo, CPU). Written by `scripts/results_gguf.sh`.\n")
L.append("- Calibration: the first lines of `/work/big/train.txt` (`cal.txt`, the same text for both): `moeq calibrate --scope all` "
         "(full Hessians) and `llama-imatrix` (its importance matrix).")
L.append("- Evaluation: the first lines of `/work/big/heldout.txt` (documents not in the training text), windows of 512 tokens. "
         "KLD against the bf16 model (`bf16.gguf`, moeq's BF16 export of the checkpoint) by `llama-perplexity --kl-divergence` "
         "(llama.cpp's runtime, 8-bit activations in its quantized matmuls; scores the second half of each window; "
         "whole-model files with `--no-repack`: its weight repacking segfaults on them on this machine's CPU) and by "
         "`moeq eval --ref` (float32 activations; every position).")
L.append((f"- {peer}: `llama-quantize --imatrix`; experts only: file type T with `--custom-q 'ffn_gate_exps=t,ffn_up_exps=t,ffn_down_exps=t,.*=bf16'` (the rest BF16); "
          if ik else "- llama.cpp: `llama-quantize --imatrix`; experts only: file type T with `--tensor-type ffn_{gate,up,down}_exps=T --tensor-type '.*=BF16'` "
         "(the rest BF16; this llama.cpp ignores `--tensor-type` under a BF16 file type); ") +
         "whole model: its mix for T (Q2_K, Q3_K_M, Q4_K_M, IQ4_XS). moeq: `moeq plan --target gguf --budget B` with B the bits "
         "per weight llama-quantize's file spends on the same tensors (so moeq's file is at most as large), "
         + (f"candidates {cand.replace(',', ', ')} (`--types`)" if cand else "default candidates Q2_K..Q6_K, Q8_0, IQ4_XS") +
         ", costs `measured` (each tensor's KLD quantized alone with each type, as the export "
         "quantizes it: GPTQ on the type's grid with the tensor's Hessian, the experts' or, for attention, the `attn_in`/`attn_o` "
         "subgroup's; embeddings and head without; the best of GPTQ's dampings 0.01, 0.1, 1 (`--damps`), on 4,096 tokens of "
         "validation text: the training text after the calibration text; docs/plan.md), then `moeq export gguf --plan "
         "--method gptq` (each tensor at the plan's damping).\n")
L.append("| type | scope | bits/weight llama / moeq | file bytes llama / moeq | KLD llama-perplexity: llama / moeq (change) | KLD moeq eval: llama / moeq (change) | ppl llama.cpp: llama / moeq |")
L.append("|---|---|---|---|---|---|---|")
for ty, scope, lf, mf, mb, lb in rows:
    kl, pl = kld(lf + ".kld.log"); km, pm = kld(mf + ".kld.log")
    el = json.load(open(lf + ".eval.json")); em = json.load(open(mf + ".eval.json"))
    sl, sm = os.path.getsize(lf), os.path.getsize(mf)
    L.append(f"| {ty} | {scope} | {float(lb):.3f} / {float(mb):.3f} | {sl} / {sm} | {kl:.5f} / {km:.5f} ({100*(km/kl-1):+.1f}%) | "
             f"{el['kld_mean']:.5f} / {em['kld_mean']:.5f} ({100*(em['kld_mean']/el['kld_mean']-1):+.1f}%) | {pl:.3f} / {pm:.3f} |")
L.append("")
L.append("moeq's plans (gate/up/down type of each layer's experts):\n")
for ty, scope, lf, mf, mb, lb in rows:
    pf = os.path.join(out, f"plan.{ty}.{scope}.json")
    if not os.path.exists(pf):
        continue
    by = {}
    for m in json.load(open(pf))["matrices"]:
        if m["tensor"].endswith("_exps.weight"):
            by.setdefault(m["layer"], {})[m["proj"]] = m["type"]
    L.append(f"- {ty} {scope}: " + "; ".join(f"layer {l} " + "/".join(by[l].get(k, "-") for k in ("gate", "up", "down"))
                                          for l in sorted(by)))
met = [f"{ty} {scope}" for ty, scope, lf, mf, mb, lb in rows
       if kld(mf + ".kld.log")[0] <= 0.85 * kld(lf + ".kld.log")[0]
       and json.load(open(mf + ".eval.json"))["kld_mean"] <= 0.85 * json.load(open(lf + ".eval.json"))["kld_mean"]]
uni = [(ty, lf, os.path.join(out, f"uniform.{ty}.experts.gguf")) for ty, scope, lf, mf, mb, lb in rows
       if scope == "experts" and os.path.exists(os.path.join(out, f"uniform.{ty}.experts.gguf.eval.json"))]
if uni:
    L.append("")
    L.append("Experts only, every expert matrix at the type itself with GPTQ (`moeq export gguf --type T --method gptq`, "
             "no plan, `--damp auto`): what GPTQ on the type's grid gives alone, against the same llama-quantize file.\n")
    L.append("| type | file bytes llama / moeq uniform | KLD llama-perplexity: llama / moeq uniform (change) | KLD moeq eval: llama / moeq uniform (change) |")
    L.append("|---|---|---|---|")
    for ty, lf, uf in uni:
        kl, _ = kld(lf + ".kld.log"); ku, _ = kld(uf + ".kld.log")
        el = json.load(open(lf + ".eval.json")); eu = json.load(open(uf + ".eval.json"))
        L.append(f"| {ty} | {os.path.getsize(lf)} / {os.path.getsize(uf)} | {kl:.5f} / {ku:.5f} ({100*(ku/kl-1):+.1f}%) | "
                 f"{el['kld_mean']:.5f} / {eu['kld_mean']:.5f} ({100*(eu['kld_mean']/el['kld_mean']-1):+.1f}%) |")
L.append("")
L.append("The target of issue 12 is at least 15% lower KLD for moeq's file at equal size, by both measures: met at "
         + (", ".join(met) if met else "none") + f" of the {len(rows)} rows above.")
open(doc, "w").write("\n".join(L) + "\n")
print("\n".join(L))
