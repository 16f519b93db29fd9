#!/usr/bin/env python3
"""Writes a synthetic Mixtral-style checkpoint with random bf16 weights (python3 stdlib only),
larger than the fixtures, so `make bench` measures the forward pass at realistic matrix sizes.
Usage: make_synthetic.py OUTDIR [--hidden 1024] [--inter 2048] [--layers 2] [--experts 8]
       [--family mixtral|qwen3_moe] [--head-dim D] [--vocab V]
--family qwen3_moe writes Qwen3-MoE names and config (q/k norms, head_dim, moe_intermediate_size):
issue 15's shape is --family qwen3_moe --hidden 512 --inter 256 --experts 16 --layers 4."""
import argparse, json, os, random, struct


def bf16_table(scale_exp):
    # Maps a random byte to the high byte of a bf16 whose magnitude is about 2^scale_exp:
    # sign from bit 7, exponent from a small range around 127 + scale_exp.
    table = bytearray(256)
    for b in range(256):
        e = 127 + scale_exp - (b & 3)
        table[b] = ((b >> 7) << 7) | (e >> 1)
    return bytes(table), e


def random_bf16(n, scale_exp):
    hi_table, _ = bf16_table(scale_exp)
    raw = bytearray(os.urandom(2 * n))
    hi = raw[1::2].translate(hi_table)
    # exponent's low bit is 1 for the 127 + scale_exp - (b & 3) values that are odd; keep it
    # simple: leave the low byte random (mantissa + exponent LSB)
    raw[1::2] = hi
    return bytes(raw)


def ones_bf16(n):
    return struct.pack("<H", 0x3F80) * n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--inter", type=int, default=2048)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--family", choices=["mixtral", "qwen3_moe"], default="mixtral")
    ap.add_argument("--head-dim", type=int, default=0)
    a = ap.parse_args()
    H, I, L, E = a.hidden, a.inter, a.layers, a.experts
    hd = a.head_dim or H // a.heads
    q3 = a.family == "qwen3_moe"
    tensors = [("model.embed_tokens.weight", [a.vocab, H], -4), ("lm_head.weight", [a.vocab, H], -6),
               ("model.norm.weight", [H], None)]
    for l in range(L):
        p = f"model.layers.{l}."
        tensors += [(p + "input_layernorm.weight", [H], None), (p + "post_attention_layernorm.weight", [H], None),
                    (p + "self_attn.q_proj.weight", [a.heads * hd, H], -6),
                    (p + "self_attn.k_proj.weight", [a.kv_heads * hd, H], -6),
                    (p + "self_attn.v_proj.weight", [a.kv_heads * hd, H], -6),
                    (p + "self_attn.o_proj.weight", [H, a.heads * hd], -6),
                    (p + ("mlp" if q3 else "block_sparse_moe") + ".gate.weight", [E, H], -4)]
        if q3:
            tensors += [(p + "self_attn.q_norm.weight", [hd], None), (p + "self_attn.k_norm.weight", [hd], None)]
        for e in range(E):
            if q3:
                q = p + f"mlp.experts.{e}."
                tensors += [(q + "gate_proj.weight", [I, H], -6), (q + "up_proj.weight", [I, H], -6),
                            (q + "down_proj.weight", [H, I], -6)]
            else:
                q = p + f"block_sparse_moe.experts.{e}."
                tensors += [(q + "w1.weight", [I, H], -6), (q + "w3.weight", [I, H], -6), (q + "w2.weight", [H, I], -6)]
    header, off = {"__metadata__": {"format": "pt"}}, 0
    for name, shape, _ in tensors:
        n = 1
        for s in shape:
            n *= s
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [off, off + 2 * n]}
        off += 2 * n
    hj = json.dumps(header, separators=(",", ":")).encode()
    hj += b" " * ((8 - len(hj) % 8) % 8)
    os.makedirs(a.out, exist_ok=True)
    tmp = os.path.join(a.out, "model.safetensors.tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hj)) + hj)
        for name, shape, sc in tensors:
            n = 1
            for s in shape:
                n *= s
            f.write(ones_bf16(n) if sc is None else random_bf16(n, sc))
    os.replace(tmp, os.path.join(a.out, "model.safetensors"))
    cfg = {"architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "hidden_size": H,
           "intermediate_size": I, "num_hidden_layers": L, "num_attention_heads": a.heads,
           "num_key_value_heads": a.kv_heads, "num_local_experts": E, "num_experts_per_tok": a.top_k,
           "vocab_size": a.vocab, "rms_norm_eps": 1e-5, "rope_parameters": {"rope_type": "default", "rope_theta": 1e6},
           "max_position_embeddings": 4096, "tie_word_embeddings": False, "dtype": "bfloat16"}
    if q3:
        cfg.update({"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "head_dim": hd,
                    "moe_intermediate_size": I, "num_experts": E, "decoder_sparse_step": 1, "mlp_only_layers": [],
                    "norm_topk_prob": True, "attention_bias": False, "rms_norm_eps": 1e-6})
        del cfg["num_local_experts"]
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    random.seed(0)
    toks = struct.pack("<%dI" % 8192, *[random.randrange(a.vocab) for _ in range(8192)])
    with open(os.path.join(a.out, "tokens.u32"), "wb") as f:
        f.write(toks)


if __name__ == "__main__":
    main()
