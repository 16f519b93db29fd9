// llama.cpp's own tokenization of text files (node-llama-cpp's prebuilt CPU build): for each
// GGUF (vocabulary only), model.tokenize(text, true) of each file, i.e. llama_tokenize with
// add_special false and parse_special true (special tokens in the text matched, as Hugging
// Face's encode does), and the BOS/EOS the model adds (add_bos/add_eos) around it.
// Usage: node tokenize.mjs TEXT[,TEXT...] MODEL.gguf... -> one JSON line per model and text:
//   {path, text, bos, eos, ids}
import fs from "node:fs";
import { getLlama, LlamaLogLevel } from "node-llama-cpp";

const [textList, ...paths] = process.argv.slice(2);
const texts = textList.split(",");
const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
for (const path of paths) {
  const model = await llama.loadModel({ modelPath: path, gpuLayers: 0, vocabOnly: true });
  for (const t of texts) {
    const ids = Array.from(model.tokenize(fs.readFileSync(t, "utf8"), true));
    const bos = model.tokens.shouldPrependBosToken ? model.tokens.bos : null;
    const eos = model.tokens.shouldAppendEosToken ? model.tokens.eos : null;
    console.log(JSON.stringify({ path, text: t, bos, eos, ids }));
  }
  await model.dispose();
}
