/* Writes a big MoE checkpoint with random weights, sharded like Hugging Face
 * (model-0000k-of-0000n.safetensors + model.safetensors.index.json), for the memory and scale
 * benchmarks (bench/bench_memory.sh, docs/bench.md). Two shapes (--shape):
 *   qwen15    Qwen1.5-MoE-A2.7B: qwen2_moe, hidden 2048, 24 layers, 16 heads of 128 (kv 16), 60
 *             experts of 1408, top-4, shared expert 5632 with its sigmoid gate, qkv bias, vocab
 *             151936, untied lm_head: 14.3 G parameters, 28.6 GB.
 *   dsv2lite  DeepSeek-V2-Lite: deepseek_v2, hidden 2048, 27 layers (the first dense, 10944 wide),
 *             MLA (16 heads, q_proj 3072, kv_lora_rank 512, rope dim 64, v 128), 64 routed experts
 *             of 1408 + 2 shared, top-6, YaRN x40, vocab 102400: 15.7 G parameters, 31.4 GB.
 * --fp8 (dsv2lite) stores every 2-D linear of the layers except the router as F8_E4M3 with F32
 * weight_scale_inv per 128 x 128 block (ceil-sized grid), as DeepSeek-V3 and R1 ship them, and
 * sets quantization_config: 16.6 GB.
 *
 * Weights are N(0, 0.02) (65536 quantiles of the normal, picked by a splitmix64 stream seeded
 * by the tensor name: the output is the same on every run), norms 1, so the forward pass
 * stays finite. Also writes tokens.u32: 16384 uniform random ids < vocab.
 *
 * Usage: make_shaped OUTDIR [--shape qwen15|dsv2lite] [--fp8] [--layers N] [--experts E]
 *                    [--shard-mb M] [--seed S]
 * OUTDIR must not exist; it is built as OUTDIR.tmp and renamed when complete. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define H 2048
#define HEADS 16
#define HEAD_DIM 128
#define KV_HEADS 16
#define MOE_INTER 1408
#define SHARED_INTER 5632
#define VOCAB 151936
#define TOP_K 4
/* DeepSeek-V2-Lite */
#define DS_VOCAB 102400
#define DS_DENSE 10944
#define DS_ROPE 64
#define DS_NOPE 128
#define DS_V 128
#define DS_KV_RANK 512
#define DS_SHARED 2
#define DS_TOP_K 6

enum { BF16 = 0, F8 = 1, F32 = 2 };

typedef struct {
    char name[96];
    int ndim;
    int64_t shape[2];
    int ones;          /* 1: a norm weight (all 1.0), else N(0, 0.02) */
    int dtype;         /* BF16, F8 (e4m3 codes) or F32 (the F8 block scales) */
    int shard;
    uint64_t off;      /* byte offset inside its shard's data section */
} tdesc;

static tdesc *T;
static size_t nT, capT;

static void add(const char *name, int64_t r, int64_t c, int ones)
{
    if (nT == capT) {
        capT = capT ? 2 * capT : 1024;
        T = realloc(T, capT * sizeof *T);
        if (!T) { fprintf(stderr, "out of memory\n"); exit(1); }
    }
    tdesc *t = &T[nT++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = c ? 2 : 1;
    t->shape[0] = r;
    t->shape[1] = c;
    t->ones = ones;
}

static const uint64_t elem_bytes[] = {2, 1, 4};
static const char *dtype_name[] = {"BF16", "F8_E4M3", "F32"};
static uint64_t tbytes(const tdesc *t)
{
    return elem_bytes[t->dtype] * (uint64_t)t->shape[0] * (uint64_t)(t->ndim == 2 ? t->shape[1] : 1);
}

/* the FP8 source: a 2-D linear as e4m3 codes of N(0, 1)·64 and its block scales 0.02/64 */
static void add_linear(const char *name, int64_t r, int64_t c, int fp8)
{
    add(name, r, c, 0);
    if (!fp8) return;
    T[nT - 1].dtype = F8;
    char sn[96];
    snprintf(sn, sizeof sn, "%s_scale_inv", name);
    add(sn, (r + 127) / 128, (c + 127) / 128, 0);
    T[nT - 1].dtype = F32;
}

static float e4m3_value(int b)   /* e4m3fn: bias 7, no infinities, 0x7F/0xFF NaN */
{
    int e = (b >> 3) & 15, m = b & 7;
    float v = e ? ldexpf(1.0f + m / 8.0f, e - 7) : ldexpf(m / 8.0f, -6);
    return (b & 0x80) ? -v : v;
}

static uint8_t e4m3_of(float x)   /* nearest code (ties to the even code), NaN codes excluded */
{
    int best = 0;
    float bd = INFINITY;
    for (int b = 0; b < 256; b++) {
        if ((b & 0x7F) == 0x7F) continue;
        float d = fabsf(e4m3_value(b) - x);
        if (d < bd || (d == bd && !(b & 1))) { bd = d; best = b; }
    }
    return (uint8_t)best;
}

static uint16_t bf16_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7FFF + ((u >> 16) & 1);   /* round to nearest even (no NaN here) */
    return (uint16_t)(u >> 16);
}

/* inverse normal CDF by bisection on 0.5·erfc(-z/√2) */
static double qnorm(double p)
{
    double lo = -10, hi = 10;
    for (int i = 0; i < 80; i++) {
        double mid = 0.5 * (lo + hi);
        if (0.5 * erfc(-mid / sqrt(2.0)) < p) lo = mid; else hi = mid;
    }
    return 0.5 * (lo + hi);
}

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t fnv(const char *s, uint64_t seed)
{
    uint64_t h = 1469598103934665603ull ^ seed;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static int write_all(FILE *f, const void *p, size_t n, const char *path)
{
    if (fwrite(p, 1, n, f) != n) {
        fprintf(stderr, "%s: write failed: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *out = NULL;
    int layers = -1, experts = -1, ds = 0, fp8 = 0;
    uint64_t shard_bytes = 1200ull << 20, seed = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--shape") && i + 1 < argc) {
            const char *v = argv[++i];
            if (!strcmp(v, "dsv2lite")) ds = 1;
            else if (strcmp(v, "qwen15")) { fprintf(stderr, "--shape wants qwen15 or dsv2lite\n"); return 1; }
        } else if (!strcmp(argv[i], "--fp8")) fp8 = 1;
        else if (!strcmp(argv[i], "--layers") && i + 1 < argc) layers = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--experts") && i + 1 < argc) experts = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--shard-mb") && i + 1 < argc) shard_bytes = strtoull(argv[++i], NULL, 10) << 20;
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc) seed = strtoull(argv[++i], NULL, 10);
        else if (argv[i][0] != '-' && !out) out = argv[i];
        else {
            fprintf(stderr, "usage: make_shaped OUTDIR [--shape qwen15|dsv2lite] [--fp8] [--layers N] [--experts E] "
                            "[--shard-mb M] [--seed S]\n");
            return 1;
        }
    }
    if (layers < 0) layers = ds ? 27 : 24;
    if (experts < 0) experts = ds ? 64 : 60;
    const int top_k = ds ? DS_TOP_K : TOP_K, vocab = ds ? DS_VOCAB : VOCAB;
    if (!out || layers < 1 || layers > 1024 || experts < top_k || shard_bytes == 0 || (fp8 && !ds)) {
        fprintf(stderr, "usage: make_shaped OUTDIR [--shape qwen15|dsv2lite] [--fp8 (dsv2lite)] [--layers N>=1] "
                        "[--experts E>=top-k] [--shard-mb M] [--seed S]\n");
        return 1;
    }
    struct stat sb;
    if (stat(out, &sb) == 0) { fprintf(stderr, "%s exists; remove it first\n", out); return 1; }

    char nm[96];
    add("model.embed_tokens.weight", vocab, H, 0);
    for (int l = 0; l < layers; l++) {
#define P(fmt, ...) (snprintf(nm, sizeof nm, "model.layers.%d." fmt, l, ##__VA_ARGS__), nm)
        add(P("input_layernorm.weight"), H, 0, 1);
        add(P("post_attention_layernorm.weight"), H, 0, 1);
        if (ds) {
            add_linear(P("self_attn.q_proj.weight"), HEADS * (DS_NOPE + DS_ROPE), H, fp8);
            add_linear(P("self_attn.kv_a_proj_with_mqa.weight"), DS_KV_RANK + DS_ROPE, H, fp8);
            add(P("self_attn.kv_a_layernorm.weight"), DS_KV_RANK, 0, 1);
            add_linear(P("self_attn.kv_b_proj.weight"), HEADS * (DS_NOPE + DS_V), DS_KV_RANK, fp8);
            add_linear(P("self_attn.o_proj.weight"), H, HEADS * DS_V, fp8);
            if (l == 0) {   /* first_k_dense_replace 1 */
                add_linear(P("mlp.gate_proj.weight"), DS_DENSE, H, fp8);
                add_linear(P("mlp.up_proj.weight"), DS_DENSE, H, fp8);
                add_linear(P("mlp.down_proj.weight"), H, DS_DENSE, fp8);
                continue;
            }
            add(P("mlp.gate.weight"), experts, H, 0);
            for (int e = 0; e < experts; e++) {
                add_linear(P("mlp.experts.%d.gate_proj.weight", e), MOE_INTER, H, fp8);
                add_linear(P("mlp.experts.%d.up_proj.weight", e), MOE_INTER, H, fp8);
                add_linear(P("mlp.experts.%d.down_proj.weight", e), H, MOE_INTER, fp8);
            }
            add_linear(P("mlp.shared_experts.gate_proj.weight"), DS_SHARED * MOE_INTER, H, fp8);
            add_linear(P("mlp.shared_experts.up_proj.weight"), DS_SHARED * MOE_INTER, H, fp8);
            add_linear(P("mlp.shared_experts.down_proj.weight"), H, DS_SHARED * MOE_INTER, fp8);
            continue;
        }
        add(P("self_attn.q_proj.weight"), HEADS * HEAD_DIM, H, 0);
        add(P("self_attn.q_proj.bias"), HEADS * HEAD_DIM, 0, 0);
        add(P("self_attn.k_proj.weight"), KV_HEADS * HEAD_DIM, H, 0);
        add(P("self_attn.k_proj.bias"), KV_HEADS * HEAD_DIM, 0, 0);
        add(P("self_attn.v_proj.weight"), KV_HEADS * HEAD_DIM, H, 0);
        add(P("self_attn.v_proj.bias"), KV_HEADS * HEAD_DIM, 0, 0);
        add(P("self_attn.o_proj.weight"), H, HEADS * HEAD_DIM, 0);
        add(P("mlp.gate.weight"), experts, H, 0);
        for (int e = 0; e < experts; e++) {
            add(P("mlp.experts.%d.gate_proj.weight", e), MOE_INTER, H, 0);
            add(P("mlp.experts.%d.up_proj.weight", e), MOE_INTER, H, 0);
            add(P("mlp.experts.%d.down_proj.weight", e), H, MOE_INTER, 0);
        }
        add(P("mlp.shared_expert.gate_proj.weight"), SHARED_INTER, H, 0);
        add(P("mlp.shared_expert.up_proj.weight"), SHARED_INTER, H, 0);
        add(P("mlp.shared_expert.down_proj.weight"), H, SHARED_INTER, 0);
        add(P("mlp.shared_expert_gate.weight"), 1, H, 0);
#undef P
    }
    add("model.norm.weight", H, 0, 1);
    add("lm_head.weight", vocab, H, 0);

    /* shards: fill in order, a new shard when the next tensor would pass shard_bytes */
    int nshards = 1;
    uint64_t cur = 0, total = 0;
    for (size_t i = 0; i < nT; i++) {
        uint64_t b = tbytes(&T[i]);
        if (cur > 0 && cur + b > shard_bytes) { nshards++; cur = 0; }
        T[i].shard = nshards - 1;
        T[i].off = cur;
        cur += b;
        total += b;
    }

    uint16_t *table = malloc(65536 * sizeof *table);
    size_t bufn = 4u << 20;                     /* elements per write */
    uint16_t *buf = malloc(bufn * sizeof *buf);
    size_t tmplen = strlen(out) + 16, plen = tmplen + 64;
    char *tmp = malloc(tmplen), *path = malloc(plen);
    if (!table || !buf || !tmp || !path) { fprintf(stderr, "out of memory\n"); return 1; }
    uint8_t *table8 = malloc(65536);
    if (!table8) { fprintf(stderr, "out of memory\n"); return 1; }
    for (int i = 0; i < 65536; i++) {
        double z = qnorm((i + 0.5) / 65536.0);
        table[i] = bf16_of((float)(0.02 * z));
        table8[i] = e4m3_of((float)(64 * z));   /* |64 z| <= 282 < 448: no clipping */
    }
    const uint32_t scale_bits = 0x39A3D70Au;   /* 0.02f / 64 = 3.125e-4 as an F32 bit pattern */
    snprintf(tmp, tmplen, "%s.tmp", out);
    if (mkdir(tmp, 0755) != 0) { fprintf(stderr, "%s: cannot create: %s\n", tmp, strerror(errno)); return 1; }

    /* index */
    snprintf(path, plen, "%s/model.safetensors.index.json", tmp);
    FILE *ix = fopen(path, "w");
    if (!ix) { fprintf(stderr, "%s: %s\n", path, strerror(errno)); return 1; }
    fprintf(ix, "{\n  \"metadata\": {\"total_size\": %" PRIu64 "},\n  \"weight_map\": {\n", total);
    for (size_t i = 0; i < nT; i++)
        fprintf(ix, "    \"%s\": \"model-%05d-of-%05d.safetensors\"%s\n", T[i].name, T[i].shard + 1, nshards,
                i + 1 < nT ? "," : "");
    fprintf(ix, "  }\n}\n");
    if (fclose(ix) != 0) { fprintf(stderr, "%s: write failed\n", path); return 1; }

    size_t first = 0;
    for (int s = 0; s < nshards; s++) {
        size_t last = first;
        while (last < nT && T[last].shard == s) last++;
        /* header */
        size_t hcap = 256 + (last - first) * 200, hl = 0;
        char *hdr = malloc(hcap + 8);
        if (!hdr) { fprintf(stderr, "out of memory\n"); return 1; }
        hl += (size_t)snprintf(hdr + hl, hcap - hl, "{\"__metadata__\":{\"format\":\"pt\"}");
        for (size_t i = first; i < last; i++) {
            const tdesc *t = &T[i];
            if (t->ndim == 2)
                hl += (size_t)snprintf(hdr + hl, hcap - hl, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%" PRId64 ",%" PRId64
                                       "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", t->name, dtype_name[t->dtype],
                                       t->shape[0], t->shape[1],
                                       t->off, t->off + tbytes(t));
            else
                hl += (size_t)snprintf(hdr + hl, hcap - hl, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%" PRId64
                                       "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", t->name, dtype_name[t->dtype],
                                       t->shape[0],
                                       t->off, t->off + tbytes(t));
        }
        hl += (size_t)snprintf(hdr + hl, hcap - hl, "}");
        while (hl % 8) hdr[hl++] = ' ';
        snprintf(path, plen, "%s/model-%05d-of-%05d.safetensors", tmp, s + 1, nshards);
        FILE *f = fopen(path, "wb");
        if (!f) { fprintf(stderr, "%s: %s\n", path, strerror(errno)); return 1; }
        unsigned char len8[8];
        for (int k = 0; k < 8; k++) len8[k] = (unsigned char)((uint64_t)hl >> (8 * k));
        if (write_all(f, len8, 8, path) || write_all(f, hdr, hl, path)) return 1;
        free(hdr);
        for (size_t i = first; i < last; i++) {
            const tdesc *t = &T[i];
            uint64_t n = tbytes(t) / elem_bytes[t->dtype], rng = fnv(t->name, seed);
            while (n > 0) {
                size_t m = n < bufn ? (size_t)n : bufn;
                if (t->dtype == F32) {   /* block scales: the constant, m <= bufn / 2 words */
                    uint32_t *w = (uint32_t *)buf;
                    m = m < bufn / 2 ? m : bufn / 2;
                    for (size_t j = 0; j < m; j++) w[j] = scale_bits;
                } else if (t->dtype == F8) {
                    uint8_t *b8 = (uint8_t *)buf;
                    for (size_t j = 0; j < m; j++) b8[j] = table8[splitmix(&rng) & 0xFFFF];
                } else if (t->ones) {
                    for (size_t j = 0; j < m; j++) buf[j] = 0x3F80;
                } else {
                    size_t j = 0;
                    for (; j + 4 <= m; j += 4) {
                        uint64_t r = splitmix(&rng);
                        buf[j] = table[r & 0xFFFF];
                        buf[j + 1] = table[(r >> 16) & 0xFFFF];
                        buf[j + 2] = table[(r >> 32) & 0xFFFF];
                        buf[j + 3] = table[r >> 48];
                    }
                    for (; j < m; j++) buf[j] = table[splitmix(&rng) & 0xFFFF];
                }
                if (write_all(f, buf, m * elem_bytes[t->dtype], path)) return 1;
                n -= m;
            }
        }
        if (fclose(f) != 0) { fprintf(stderr, "%s: write failed: %s\n", path, strerror(errno)); return 1; }
        fprintf(stderr, "\rshard %d/%d", s + 1, nshards);
        first = last;
    }
    fprintf(stderr, "\n");

    snprintf(path, plen, "%s/config.json", tmp);
    FILE *c = fopen(path, "w");
    if (!c) { fprintf(stderr, "%s: %s\n", path, strerror(errno)); return 1; }
    if (ds)
        fprintf(c,
                "{\n  \"architectures\": [\"DeepseekV2ForCausalLM\"],\n  \"model_type\": \"deepseek_v2\",\n"
                "  \"hidden_size\": %d,\n  \"intermediate_size\": %d,\n  \"moe_intermediate_size\": %d,\n"
                "  \"num_hidden_layers\": %d,\n  \"num_attention_heads\": %d,\n  \"num_key_value_heads\": %d,\n"
                "  \"n_routed_experts\": %d,\n  \"n_shared_experts\": %d,\n  \"num_experts_per_tok\": %d,\n"
                "  \"first_k_dense_replace\": 1,\n  \"moe_layer_freq\": 1,\n  \"q_lora_rank\": null,\n"
                "  \"kv_lora_rank\": %d,\n  \"qk_rope_head_dim\": %d,\n  \"qk_nope_head_dim\": %d,\n"
                "  \"qk_head_dim\": %d,\n  \"head_dim\": %d,\n  \"v_head_dim\": %d,\n  \"topk_method\": \"greedy\",\n"
                "  \"n_group\": 1,\n  \"topk_group\": 1,\n  \"norm_topk_prob\": false,\n"
                "  \"routed_scaling_factor\": 1.0,\n  \"scoring_func\": \"softmax\",\n  \"vocab_size\": %d,\n"
                "  \"max_position_embeddings\": 163840,\n  \"rms_norm_eps\": 1e-06,\n"
                "  \"rope_parameters\": {\"rope_type\": \"yarn\", \"rope_theta\": 10000.0, \"factor\": 40.0,\n"
                "    \"original_max_position_embeddings\": 4096, \"beta_fast\": 32.0, \"beta_slow\": 1.0,\n"
                "    \"mscale\": 0.707, \"mscale_all_dim\": 0.707},\n"
                "  \"attention_bias\": false,\n  \"tie_word_embeddings\": false,\n  \"hidden_act\": \"silu\",\n"
                "  \"dtype\": \"bfloat16\",\n%s  \"bos_token_id\": 100000,\n  \"eos_token_id\": 100001\n}\n",
                H, DS_DENSE, MOE_INTER, layers, HEADS, HEADS, experts, DS_SHARED, DS_TOP_K, DS_KV_RANK, DS_ROPE,
                DS_NOPE, DS_NOPE + DS_ROPE, DS_ROPE, DS_V, DS_VOCAB,
                fp8 ? "  \"quantization_config\": {\"quant_method\": \"fp8\", \"fmt\": \"e4m3\",\n"
                      "    \"activation_scheme\": \"dynamic\", \"weight_block_size\": [128, 128]},\n" : "");
    else
    fprintf(c,
            "{\n  \"architectures\": [\"Qwen2MoeForCausalLM\"],\n  \"model_type\": \"qwen2_moe\",\n"
            "  \"hidden_size\": %d,\n  \"intermediate_size\": %d,\n  \"moe_intermediate_size\": %d,\n"
            "  \"shared_expert_intermediate_size\": %d,\n  \"num_hidden_layers\": %d,\n"
            "  \"num_attention_heads\": %d,\n  \"num_key_value_heads\": %d,\n  \"num_experts\": %d,\n"
            "  \"num_experts_per_tok\": %d,\n  \"norm_topk_prob\": false,\n  \"decoder_sparse_step\": 1,\n"
            "  \"mlp_only_layers\": [],\n  \"qkv_bias\": true,\n  \"vocab_size\": %d,\n"
            "  \"max_position_embeddings\": 8192,\n  \"rms_norm_eps\": 1e-06,\n"
            "  \"rope_parameters\": {\"rope_theta\": 1000000.0, \"rope_type\": \"default\"},\n"
            "  \"tie_word_embeddings\": false,\n  \"hidden_act\": \"silu\",\n  \"dtype\": \"bfloat16\",\n"
            "  \"bos_token_id\": 151643,\n  \"eos_token_id\": 151643\n}\n",
            H, SHARED_INTER, MOE_INTER, SHARED_INTER, layers, HEADS, KV_HEADS, experts, TOP_K, VOCAB);
    if (fclose(c) != 0) { fprintf(stderr, "%s: write failed\n", path); return 1; }

    snprintf(path, plen, "%s/tokens.u32", tmp);
    FILE *tk = fopen(path, "wb");
    if (!tk) { fprintf(stderr, "%s: %s\n", path, strerror(errno)); return 1; }
    uint64_t rs = seed ^ 0x746F6B656E73ull;
    for (int i = 0; i < 16384; i++) {
        uint32_t id = (uint32_t)(splitmix(&rs) % (uint64_t)vocab);
        unsigned char b[4] = {(unsigned char)id, (unsigned char)(id >> 8), (unsigned char)(id >> 16),
                              (unsigned char)(id >> 24)};
        if (write_all(tk, b, 4, path)) return 1;
    }
    if (fclose(tk) != 0) { fprintf(stderr, "%s: write failed\n", path); return 1; }
    if (rename(tmp, out) != 0) { fprintf(stderr, "rename %s -> %s: %s\n", tmp, out, strerror(errno)); return 1; }
    fprintf(stderr, "%s: %zu tensors, %" PRIu64 " bytes in %d shards\n", out, nT, total, nshards);
    free(table); free(table8); free(buf); free(tmp); free(path); free(T);
    return 0;
}
