// Perplexity of GGUF files in llama.cpp (node-llama-cpp's prebuilt CPU build, tag v0.4.0) on token
// ids, with moeq eval's definition: non-overlapping windows of CTX tokens, each evaluated from an
// empty context, every next-token prediction inside a window scored (ppl = exp(mean NLL)). Each
// header is also parsed by @huggingface/gguf, an independent reader, and summarized.
// Usage: node ppl.mjs TOKENS.safetensors CTX MAX_TOKENS MODEL.gguf...   -> one JSON line per model
import fs from "node:fs";
import { getLlama, LlamaLogLevel } from "node-llama-cpp";
import { gguf } from "@huggingface/gguf";

const [tokPath, ctxS, maxS, ...paths] = process.argv.slice(2);
const ctx = Number(ctxS), maxTokens = Number(maxS);

// a safetensors file holding one 1-D integer tensor (moeq's --tokens format)
function readTokens(p) {
  const b = fs.readFileSync(p);
  const n = Number(b.readBigUInt64LE(0));
  const h = JSON.parse(b.subarray(8, 8 + n).toString());
  const [name] = Object.keys(h).filter((k) => k !== "__metadata__");
  const t = h[name], [s, e] = t.data_offsets, out = [];
  const w = { I32: 4, U32: 4, I64: 8 }[t.dtype];
  for (let o = 8 + n + s; o < 8 + n + e; o += w)
    out.push(t.dtype === "I64" ? Number(b.readBigInt64LE(o)) : t.dtype === "I32" ? b.readInt32LE(o) : b.readUInt32LE(o));
  return out;
}

async function header(path) {
  const { metadata, tensorInfos, typedMetadata } = await gguf(path, { allowLocalFile: true, typedMetadata: true });
  const arch = metadata["general.architecture"];
  const ex = tensorInfos.find((t) => t.name === "blk.0.ffn_gate_exps.weight");
  return {
    architecture: arch,
    version: metadata.version,
    tensors: tensorInfos.length,
    block_count_type: typedMetadata[`${arch}.block_count`]?.type,
    eps_type: typedMetadata[`${arch}.attention.layer_norm_rms_epsilon`]?.type,
    token_type_subtype: typedMetadata["tokenizer.ggml.token_type"]?.subType,
    n_tokens: metadata["tokenizer.ggml.tokens"]?.length,
    pre: metadata["tokenizer.ggml.pre"],
    gate_exps_shape: ex ? ex.shape.map(Number) : null,
    gate_exps_dtype: ex ? ex.dtype : null,
  };
}

const ids = readTokens(tokPath).slice(0, maxTokens);
const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
for (const path of paths) {
  const model = await llama.loadModel({ modelPath: path, gpuLayers: 0 });
  const context = await model.createContext({ contextSize: ctx, batchSize: ctx, threads: 2 });
  const seq = context.getSequence();
  let nll = 0, count = 0;
  for (let w = 0; w + 1 < ids.length; w += ctx) {
    const win = ids.slice(w, w + ctx);
    if (win.length < 2) break;
    await seq.clearHistory();
    const items = win.map((t, i) => (i + 1 < win.length ? [t, { generateNext: { probabilities: true } }] : t));
    const out = await seq.controlledEvaluate(items);
    for (let i = 0; i + 1 < win.length; i++) {
      nll -= Math.log(out[i].next.probabilities.get(win[i + 1]) ?? 0);
      count++;
    }
  }
  await context.dispose();
  await model.dispose();
  console.log(JSON.stringify({ path, ppl: Math.exp(nll / count), nll_mean: nll / count, tokens: count, ctx,
                               header: await header(path) }));
}
