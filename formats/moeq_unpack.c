/* moeq unpack: a packed .moeq file back to a Hugging Face directory (docs/unpack.md). Every
 * source tensor of the original checkpoint (FORMAT.md F-15) is rebuilt from its pieces in the
 * source's layout (per-expert names, or the v5 fused gate_up_proj / down_proj), dequantized
 * by the reference kernel (bit-identical on every CPU) and rounded to bf16; raw tensors kept
 * in their dtype are copied unchanged. The directory is built under a temporary name next to
 * DIR and renamed at the end. */
#include "moeq_core.h"
#include "moeq_model.h"
#include "moeq_pack.h"
#include "moeq_st_writer.h"
#include "formats/family.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ROW_BLOCK 64

typedef struct uctx {
    const moeq_pack *p;
    const moeq_pack_tensor ***pieces;   /* per source: its pieces sorted by source_offset */
    size_t *npieces;
    moeq_dtype *out_dtype;
    uint8_t *relayout;                  /* per source: GPTOSS_* (gpt_oss experts), else 0 */
} uctx;

/* gpt_oss's experts are packed as [out, in] pieces (F-15, docs/FAMILIES.md): expert e's gate then
 * up [I, H] at e * 2IH, its down [H, I] at e * HI. The hub tensors are gate_up_proj [E, H, 2I]
 * (gate = even columns, up = odd) and down_proj [E, I, H]: unpack transposes them back. */
enum { GPTOSS_NONE = 0, GPTOSS_GATE_UP = 1, GPTOSS_DOWN = 2 };

static int gptoss_kind(const moeq_config *c, const moeq_pack_source *src)
{
    if (c->expert_layout != MOEQ_EXPERTS_GPTOSS || src->ndim != 3) return GPTOSS_NONE;
    char name[512];
    for (int64_t l = 0; l < c->layers; l++) {
        if (!c->layer_is_moe[l]) continue;
        if (moeq_family_name(name, sizeof name, c->family->fused_gate_up[0], l, -1) == 0 && !strcmp(name, src->name))
            return GPTOSS_GATE_UP;
        if (moeq_family_name(name, sizeof name, c->family->fused_down[0], l, -1) == 0 && !strcmp(name, src->name))
            return GPTOSS_DOWN;
    }
    return GPTOSS_NONE;
}

/* dst [E, shape[1], shape[2]] holding the packed order, rewritten in the hub's; tmp holds one expert. */
static void gptoss_relayout(int kind, const int64_t *shape, size_t es, unsigned char *dst, unsigned char *tmp)
{
    const int64_t E = shape[0], K = shape[1], N = shape[2], per = K * N;
    for (int64_t e = 0; e < E; e++) {
        unsigned char *x = dst + (size_t)(e * per) * es;
        memcpy(tmp, x, (size_t)per * es);
        if (kind == GPTOSS_GATE_UP) {   /* tmp: gate [N/2, K] then up [N/2, K]; x: [K, N] */
            const int64_t I = N / 2;
            for (int64_t i = 0; i < I; i++)
                for (int64_t k = 0; k < K; k++) {
                    memcpy(x + (size_t)(k * N + 2 * i) * es, tmp + (size_t)(i * K + k) * es, es);
                    memcpy(x + (size_t)(k * N + 2 * i + 1) * es, tmp + (size_t)((I + i) * K + k) * es, es);
                }
        } else {                        /* tmp: [N, K] (out, in); x: [K, N] */
            for (int64_t o = 0; o < N; o++)
                for (int64_t k = 0; k < K; k++)
                    memcpy(x + (size_t)(k * N + o) * es, tmp + (size_t)(o * K + k) * es, es);
        }
    }
}

static uint16_t f32_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u);   /* quiet NaN */
    x += 0x7fffu + ((x >> 16) & 1u);   /* round to nearest even */
    return (uint16_t)(x >> 16);
}

static float raw_to_f32(moeq_dtype dt, const void *base, int64_t i)
{
    const unsigned char *b = base;
    if (dt == MOEQ_DT_F32) {
        float f;
        memcpy(&f, b + 4 * i, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, b + 2 * i, 2);
    if (dt == MOEQ_DT_F16) return moeq_f16_to_f32(h);
    uint32_t x = (uint32_t)h << 16;
    float f;
    memcpy(&f, &x, 4);
    return f;
}

/* Source i's bytes in out_dtype[i]: each piece lands at its element offset. */
static moeq_status fill(void *user, size_t si, void *dst, moeq_error *err)
{
    uctx *u = user;
    moeq_dtype od = u->out_dtype[si];
    size_t es = moeq_dtype_size(od);
    for (size_t k = 0; k < u->npieces[si]; k++) {
        const moeq_pack_tensor *t = u->pieces[si][k];
        unsigned char *out = (unsigned char *)dst + (size_t)t->source_offset * es;
        if (t->codec.type == MOEQ_CODEC_RAW && t->codec.dtype == od) {
            memcpy(out, t->data, (size_t)t->numel * es);
            continue;
        }
        if (t->codec.type == MOEQ_CODEC_RAW) {   /* a raw piece in another dtype: widen, round to bf16 */
            uint16_t *o16 = (uint16_t *)(void *)out;
            for (int64_t j = 0; j < t->numel; j++) o16[j] = f32_to_bf16(raw_to_f32(t->codec.dtype, t->data, j));
            continue;
        }
        /* int or ggml codec: the reference dequantization, rows in blocks over the threads */
        const int64_t rows = t->shape[0], cols = t->shape[1];
        int64_t nb = (rows + ROW_BLOCK - 1) / ROW_BLOCK;
        int failed = 0;
#pragma omp parallel
        {
            float *scr = malloc((size_t)(ROW_BLOCK * cols) * sizeof *scr);
            if (!scr) {
#pragma omp atomic write
                failed = 1;
            }
#pragma omp for schedule(static)
            for (int64_t b = 0; b < nb; b++) {
                if (!scr) continue;
                int64_t r0 = b * ROW_BLOCK, r1 = r0 + ROW_BLOCK < rows ? r0 + ROW_BLOCK : rows;
                moeq_codec_dequant(&t->codec, t->data, rows, cols, r0, r1, scr);
                uint16_t *o16 = (uint16_t *)(void *)out + r0 * cols;
                for (int64_t j = 0; j < (r1 - r0) * cols; j++) o16[j] = f32_to_bf16(scr[j]);
            }
            free(scr);
        }
        if (failed) return moeq_fail(err, MOEQ_ERR_NOMEM, "%s: tensor '%s': out of memory", moeq_pack_path(u->p), t->name);
    }
    if (u->relayout[si]) {
        const moeq_pack_source *src = moeq_pack_source_at(u->p, si);
        unsigned char *tmp = malloc((size_t)(src->shape[1] * src->shape[2]) * es);
        if (!tmp) return moeq_fail(err, MOEQ_ERR_NOMEM, "%s: tensor '%s': out of memory", moeq_pack_path(u->p), src->name);
        gptoss_relayout(u->relayout[si], src->shape, es, dst, tmp);
        free(tmp);
    }
    /* converted: the pieces' mapped pages are done with (docs/unpack.md, "Memory") */
    for (size_t k = 0; k < u->npieces[si]; k++)
        moeq_pages_release(u->pieces[si][k]->data, (size_t)u->pieces[si][k]->blob.raw_size);
    return MOEQ_OK;
}


static int cmp_piece_off(const void *a, const void *b)
{
    const moeq_pack_tensor *x = *(const moeq_pack_tensor *const *)a, *y = *(const moeq_pack_tensor *const *)b;
    return x->source_offset < y->source_offset ? -1 : x->source_offset > y->source_offset;
}

moeq_status moeq_pack_unpack(const moeq_pack *p, const char *dir, uint64_t max_shard_bytes,
                             moeq_unpack_result *res, moeq_error *err)
{
    memset(res, 0, sizeof *res);
    struct stat sb;
    if (stat(dir, &sb) == 0 && (!S_ISDIR(sb.st_mode) || !moeq_dir_is_empty(dir)))
        return moeq_fail(err, MOEQ_ERR_MISUSE, "%s: exists and is not an empty directory (unpack never "
                         "overwrites)", dir);
    size_t plen = strlen(dir);
    while (plen > 1 && dir[plen - 1] == '/') plen--;
    if (plen > 4000) return moeq_fail(err, MOEQ_ERR_MISUSE, "%s: path too long", dir);
    char tmp[4200], clean[4100];
    memcpy(clean, dir, plen);
    clean[plen] = '\0';
    const char *slash = strrchr(clean, '/');
    if (slash) snprintf(tmp, sizeof tmp, "%.*s/.%s.tmp.XXXXXX", (int)(slash - clean), clean, slash + 1);
    else snprintf(tmp, sizeof tmp, ".%s.tmp.XXXXXX", clean);
    if (!mkdtemp(tmp))
        return moeq_fail(err, MOEQ_ERR_IO, "%s: cannot create a temporary directory next to it: %s", dir,
                         strerror(errno));
    chmod(tmp, 0755);   /* mkdtemp makes 0700; the result is an ordinary directory */

    size_t ns = moeq_pack_nsources(p), nt = moeq_pack_ntensors(p);
    uctx u = { .p = p };
    u.pieces = calloc(ns ? ns : 1, sizeof *u.pieces);
    u.npieces = calloc(ns ? ns : 1, sizeof *u.npieces);
    u.out_dtype = calloc(ns ? ns : 1, sizeof *u.out_dtype);
    u.relayout = calloc(ns ? ns : 1, 1);
    const moeq_pack_tensor **all = calloc(nt ? nt : 1, sizeof *all);
    moeq_st_out *outs = calloc(ns ? ns : 1, sizeof *outs);
    moeq_status st = MOEQ_OK;
    if (!u.pieces || !u.npieces || !u.out_dtype || !u.relayout || !all || !outs) {
        st = moeq_fail(err, MOEQ_ERR_NOMEM, "%s: out of memory", dir);
        goto done;
    }
    {   /* the family decides whether experts need their hub layout back (gpt_oss) */
        const moeq_pack_file_entry *cf = moeq_pack_find_file(p, "config.json");
        moeq_config *cfg = malloc(sizeof *cfg);
        if (!cfg) { st = moeq_fail(err, MOEQ_ERR_NOMEM, "%s: out of memory", dir); goto done; }
        if (cf && moeq_config_parse(cf->data, (size_t)cf->blob.size, "config.json", cfg, NULL) == MOEQ_OK)
            for (size_t s = 0; s < ns; s++) u.relayout[s] = (uint8_t)gptoss_kind(cfg, moeq_pack_source_at(p, s));
        free(cfg);
    }
    /* pieces grouped by source (counting pass, then slices of one array) */
    for (size_t i = 0; i < nt; i++) u.npieces[moeq_pack_tensor_at(p, i)->source_index]++;
    size_t at = 0;
    for (size_t s = 0; s < ns; s++) {
        u.pieces[s] = all + at;
        at += u.npieces[s];
        u.npieces[s] = 0;
    }
    for (size_t i = 0; i < nt; i++) {
        const moeq_pack_tensor *t = moeq_pack_tensor_at(p, i);
        u.pieces[t->source_index][u.npieces[t->source_index]++] = t;
    }
    for (size_t s = 0; s < ns; s++) {
        const moeq_pack_source *src = moeq_pack_source_at(p, s);
        qsort(u.pieces[s], u.npieces[s], sizeof *u.pieces[s], cmp_piece_off);
        int same = 1;
        for (size_t k = 0; k < u.npieces[s]; k++)
            same &= u.pieces[s][k]->codec.type == MOEQ_CODEC_RAW && u.pieces[s][k]->codec.dtype == src->dtype;
        u.out_dtype[s] = same ? src->dtype : MOEQ_DT_BF16;
        outs[s].name = src->name;
        outs[s].dtype = u.out_dtype[s];
        outs[s].ndim = src->ndim;
        memcpy(outs[s].shape, src->shape, sizeof outs[s].shape);
        /* one raw piece in the source dtype: straight from the mapping */
        outs[s].data = same && u.npieces[s] == 1 && !u.relayout[s] ? u.pieces[s][0]->data : NULL;
        res->bytes += (uint64_t)src->numel * moeq_dtype_size(u.out_dtype[s]);
        res->dequantized += !same;
    }
    /* the embedded files: config.json, tokenizer files (F-10) */
    for (size_t i = 0; i < moeq_pack_nfiles(p) && st == MOEQ_OK; i++) {
        const moeq_pack_file_entry *f = moeq_pack_file(p, i);
        char path[4600];
        snprintf(path, sizeof path, "%s/%s", tmp, f->name);
        FILE *fp = fopen(path, "wbx");
        int bad = !fp || (f->blob.size && fwrite(f->data, 1, (size_t)f->blob.size, fp) != f->blob.size);
        if (fp && fclose(fp) != 0) bad = 1;
        if (bad) st = moeq_fail(err, MOEQ_ERR_IO, "%s: write failed: %s", path, strerror(errno));
        res->files++;
    }
    if (st == MOEQ_OK) st = moeq_st_write_dir(tmp, outs, ns, max_shard_bytes, fill, &u, &res->shards, err);
    if (st == MOEQ_OK) {
        if (rename(tmp, clean) != 0)
            st = moeq_fail(err, MOEQ_ERR_IO, "%s: cannot rename %s to it: %s", dir, tmp, strerror(errno));
    }
    res->tensors = ns;
done:
    if (st != MOEQ_OK) moeq_remove_flat_dir(tmp);
    free(outs);
    free(all);
    free(u.out_dtype);
    free(u.relayout);
    free(u.npieces);
    free(u.pieces);
    return st;
}
