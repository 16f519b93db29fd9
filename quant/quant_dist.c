/* The quantize driver over MPI ranks and with resume checkpoints (docs/quantize.md, "MPI" and
 * "Resume"). Every rank enumerates the same pieces (moeq_quant_pieces); the int-codec pieces are
 * work items (a routed expert's gate, up and down are one item, so gate and up share one
 * factorization) dealt by moeq_dist_owner. A rank other than 0 quantizes its items in file order
 * and sends each piece's record (codes, fallbacks, counts) to rank 0; rank 0 runs the writer, which
 * takes every piece in file order: its own it quantizes, the others it receives from their owner,
 * those of finished layers it reads from the checkpoint. With --resume, rank 0 keeps the records of
 * each unfinished layer and writes the layer's blob when its last piece has passed.
 *
 * A piece record (the MPI message and the checkpoint blob's entries alike), little-endian:
 *   u64 piece index, u32 bits, u32 group, u32 sym, u32 gptq (1: counted in gptq_matrices),
 *   f64 GPTQ seconds, the piece's report note (u32 valid, u32 kind, u64 layer, f64 damping,
 *   f64 calibration and f64 validation Hessian error), u32 fallbacks, per fallback 3 strings
 *   (tensor, kind, reason: u32 length, bytes), u64 raw size, raw bytes (moeq_qmat_bytes of the
 *   codec). */
#include "moeq_tdict.h"
#include "moeq_gptq.h"
#include "moeq_core.h"
#include "moeq_dist.h"
#include "moeq_resume.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

typedef struct drv {
    const moeq_model *m;
    const moeq_quant_opts *o;     /* the caller's options */
    moeq_quant_run *qr;
    const moeq_quant_piece *pcs;
    size_t np;
    int64_t n_units;
    int64_t *unit_last;           /* last int piece of each unit, -1 when none */
    uint8_t *done;                /* units finished before this run */
    moeq_resume *rs;              /* rank 0 with --resume */
    moeq_buf *ubuf;               /* rank 0 with --resume: records of the units in progress */
    int64_t loaded;               /* the checkpoint unit in lblob, -1 for none */
    uint8_t *lblob;
    size_t lsize, lpos;
    size_t cur;                   /* the piece the writer is at */
    int64_t stop_after;           /* MOEQ_TEST_STOP_AFTER_LAYER */
} drv;

/* ---- records ------------------------------------------------------------------------------- */

static void record_put(moeq_buf *b, size_t k, const moeq_codec *cd, int gptq, double secs, const moeq_gptq_run *g,
                       const moeq_gptq_fallback_rec *fb, size_t nfb, const uint8_t *raw, size_t rsz)
{
    moeq_buf_u64(b, (uint64_t)k);
    moeq_buf_u32(b, (uint32_t)cd->bits);
    moeq_buf_u32(b, (uint32_t)cd->group);
    moeq_buf_u32(b, (uint32_t)cd->sym);
    moeq_buf_u32(b, (uint32_t)gptq);
    moeq_buf_f64(b, secs);
    int nv = g && g->note.valid;
    moeq_buf_u32(b, (uint32_t)nv);
    moeq_buf_u32(b, nv ? (uint32_t)g->note.kind : 0);
    moeq_buf_u64(b, nv ? (uint64_t)g->note.layer : 0);
    moeq_buf_f64(b, nv ? g->note.damp : 0);
    moeq_buf_f64(b, nv ? g->note.err_cal : 0);
    moeq_buf_f64(b, nv ? g->note.err_val : 0);
    moeq_buf_u32(b, (uint32_t)nfb);
    for (size_t i = 0; i < nfb; i++) {
        moeq_buf_str(b, fb[i].tensor);
        moeq_buf_str(b, fb[i].kind);
        moeq_buf_str(b, fb[i].reason);
    }
    moeq_buf_u64(b, (uint64_t)rsz);
    moeq_buf_put(b, raw, rsz);
}

/* Parses one record at r for piece k (codec cd, rsz raw bytes): copies the codes to raw and adds
 * its fallbacks and counts to the GPTQ run. */
static moeq_status record_apply(drv *d, moeq_rd *r, size_t k, const moeq_codec *cd, uint8_t *raw, size_t rsz,
                                const char *from, moeq_error *err)
{
    const moeq_quant_piece *pc = &d->pcs[k];
    uint64_t idx = moeq_rd_u64(r);
    uint32_t bits = moeq_rd_u32(r), group = moeq_rd_u32(r), sym = moeq_rd_u32(r), gptq = moeq_rd_u32(r);
    double secs = moeq_rd_f64(r);
    uint32_t nv = moeq_rd_u32(r), nkind = moeq_rd_u32(r);
    uint64_t nlayer = moeq_rd_u64(r);
    double ndamp = moeq_rd_f64(r), ncal = moeq_rd_f64(r), nval = moeq_rd_f64(r);
    uint32_t nfb = moeq_rd_u32(r);
    if (r->bad || idx != k || bits != (uint32_t)cd->bits || group != (uint32_t)cd->group || sym != (uint32_t)cd->sym)
        return moeq_fail(err, MOEQ_ERR_FORMAT, "%s: the record of '%s' (piece %zu) does not match it (piece %llu, "
                         "%u bits, group %u)", from, pc->name, k, (unsigned long long)idx, bits, group);
    moeq_gptq_run *g = d->qr->gptq;
    if (nv && g && g->report && !r->bad) {
        moeq_status st = moeq_gptq_note_piece(g, (int64_t)nlayer, (int)nkind, ndamp, ncal, nval, err);
        if (st) return st;
    }
    for (uint32_t i = 0; i < nfb && !r->bad; i++) {
        moeq_gptq_fallback_rec f;
        moeq_rd_str(r, f.tensor, sizeof f.tensor);
        moeq_rd_str(r, f.kind, sizeof f.kind);
        moeq_rd_str(r, f.reason, sizeof f.reason);
        if (!r->bad && g) {
            moeq_status st = moeq_gptq_add_fallback(g, f.tensor, f.kind, f.reason, err);
            if (st) return st;
        }
    }
    uint64_t n = moeq_rd_u64(r);
    /* t1d: its coded size, what its header says (at most the bound rsz) */
    const int td = cd->type == MOEQ_CODEC_TDICT;
    const void *codes = (td ? n >= MOEQ_TDICT_HDR && n <= rsz : n == rsz) ? moeq_rd_bytes(r, (size_t)n) : NULL;
    if (td && codes && moeq_tdict_size_of(codes) != n) codes = NULL;
    if (r->bad || !codes)
        return moeq_fail(err, MOEQ_ERR_FORMAT, "%s: the record of '%s' is truncated or of another size (%llu bytes, "
                         "want %zu)", from, pc->name, (unsigned long long)n, rsz);
    memcpy(raw, codes, (size_t)n);
    if (g) {
        g->gptq_matrices += gptq != 0;
        g->seconds_gptq += secs;
    }
    return MOEQ_OK;
}

/* ---- rank 0: the writer's hooks ---------------------------------------------------------- */

static int d_codec_for(void *u, const char *name, moeq_codec *codec)
{
    drv *d = u;
    return d->o->codec_for ? d->o->codec_for(d->o->cb_user, name, codec) : 0;
}

static moeq_status d_opened(void *u, moeq_status st, moeq_error *err)
{
    (void)u;
    return moeq_dist_agree(st, err);
}

/* After piece k's record is kept: a unit whose last piece this is gets its checkpoint. */
static moeq_status piece_kept(drv *d, size_t k, moeq_error *err)
{
    const moeq_quant_piece *pc = &d->pcs[k];
    int64_t u = pc->unit;
    if (!d->rs || d->unit_last[u] != (int64_t)k) return MOEQ_OK;
    moeq_buf *b = &d->ubuf[u];
    if (b->oom) return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory for the checkpoint of layer %lld", (long long)u);
    moeq_status st = moeq_resume_write(d->rs, u, b->p, b->n, err);
    moeq_buf_free(b);
    if (st) return st;
    d->qr->units_written++;
    if (d->stop_after > 0 && d->qr->units_written >= d->stop_after)
        return moeq_fail(err, MOEQ_ERR_IO, "stopped after %lld layer checkpoint(s) in %s (MOEQ_TEST_STOP_AFTER_LAYER, "
                         "a test hook)", (long long)d->qr->units_written, moeq_resume_dir(d->rs));
    return MOEQ_OK;
}

static moeq_status from_checkpoint(drv *d, size_t k, const moeq_codec *cd, uint8_t *raw, size_t rsz, moeq_error *err)
{
    int64_t u = d->pcs[k].unit;
    moeq_status st;
    if (d->loaded != u) {
        free(d->lblob);
        d->lblob = NULL;
        d->loaded = -1;
        void *b;
        size_t n;
        if ((st = moeq_resume_read(d->rs, u, &b, &n, err))) return st;
        d->lblob = b;
        d->lsize = n;
        d->lpos = 0;
        d->loaded = u;
    }
    char from[4200];
    snprintf(from, sizeof from, "%s/unit-%08lld.bin", moeq_resume_dir(d->rs), (long long)u);
    /* records are in piece order: the next one is usually k; otherwise look from the start */
    for (int pass = 0; pass < 2; pass++) {
        moeq_rd r = { d->lblob, d->lsize, pass ? 0 : d->lpos, 0 };
        while (r.off < r.n) {
            size_t at = r.off;
            moeq_rd peek = r;
            uint64_t idx = moeq_rd_u64(&peek);
            if (peek.bad) break;
            if (idx == k) {
                st = record_apply(d, &r, k, cd, raw, rsz, from, err);
                if (st == MOEQ_OK) d->lpos = r.off;
                return st;
            }
            /* skip the record */
            peek.off = at + 8 + 16 + 8;
            uint32_t nfb = moeq_rd_u32(&peek);
            for (uint32_t i = 0; i < 3 * nfb && !peek.bad; i++) moeq_rd_bytes(&peek, moeq_rd_u32(&peek));
            moeq_rd_bytes(&peek, moeq_rd_u64(&peek));
            if (peek.bad) break;
            r.off = peek.off;
        }
        if (pass == 0 && d->lpos == 0) break;
    }
    return moeq_fail(err, MOEQ_ERR_FORMAT, "%s: no record of '%s' (remove the file to recompute the layer)", from,
                     d->pcs[k].name);
}

static moeq_status d_provide(void *u, size_t k, const moeq_quant_piece *pc, uint8_t *raw, size_t rsz, int *given,
                             moeq_error *err)
{
    drv *d = u;
    d->cur = k;
    *given = 0;
    if (d->done && d->done[pc->unit]) {
        *given = 1;
        return from_checkpoint(d, k, &pc->codec, raw, rsz, err);
    }
    int owner = moeq_dist_owner(pc->item);
    if (owner == 0) return MOEQ_OK;   /* the writer quantizes it here (d_quantize) */
    void *msg;
    size_t n;
    moeq_status st = moeq_dist_recv_blob(&msg, &n, owner, MOEQ_TAG_GPTQ, err);
    if (st) return st;
    char from[64];
    snprintf(from, sizeof from, "message from rank %d", owner);
    moeq_rd r = { msg, n, 0, 0 };
    st = record_apply(d, &r, k, &pc->codec, raw, rsz, from, err);
    if (st == MOEQ_OK && d->rs) {
        moeq_buf_put(&d->ubuf[pc->unit], msg, n);
        st = piece_kept(d, k, err);
    }
    free(msg);
    *given = st == MOEQ_OK;
    return st;
}

static moeq_status quantize_here(drv *d, const char *name, const float *w, int64_t rows, int64_t cols,
                                 const moeq_codec *cd, uint8_t *raw, size_t *n0, int64_t *g0, double *t0,
                                 moeq_error *err)
{
    moeq_gptq_run *g = d->qr->gptq;
    *n0 = g ? g->n_fallbacks : 0;
    *g0 = g ? g->gptq_matrices : 0;
    *t0 = g ? g->seconds_gptq : 0;
    if (g) g->note.valid = 0;
    return d->o->quantize ? d->o->quantize(d->o->cb_user, name, w, rows, cols, cd, raw, err)
                          : moeq_codec_quantize_rtn(cd, w, rows, cols, raw, err);
}

static void record_of_here(drv *d, moeq_buf *b, size_t k, const moeq_codec *cd, const uint8_t *raw, size_t rsz,
                           size_t n0, int64_t g0, double t0)
{
    moeq_gptq_run *g = d->qr->gptq;
    record_put(b, k, cd, g ? (int)(g->gptq_matrices - g0) : 0, g ? g->seconds_gptq - t0 : 0, g,
               g ? g->fallbacks + n0 : NULL, g ? g->n_fallbacks - n0 : 0, raw, rsz);
}

static moeq_status d_quantize(void *u, const char *name, const float *w, int64_t rows, int64_t cols,
                              const moeq_codec *cd, uint8_t *raw, moeq_error *err)
{
    drv *d = u;
    size_t n0;
    int64_t g0;
    double t0;
    moeq_status st = quantize_here(d, name, w, rows, cols, cd, raw, &n0, &g0, &t0, err);
    if (st || !d->rs) return st;
    const moeq_quant_piece *pc = &d->pcs[d->cur];
    size_t rsz = cd->type == MOEQ_CODEC_TDICT ? (size_t)moeq_tdict_size_of(raw) : (size_t)moeq_codec_raw_bytes(cd, rows, cols);
    record_of_here(d, &d->ubuf[pc->unit], d->cur, cd, raw, rsz, n0, g0, t0);
    return piece_kept(d, d->cur, err);
}

/* ---- ranks other than 0 -------------------------------------------------------------------- */

static moeq_status worker(drv *d, moeq_error *err)
{
    const moeq_checkpoint *ck = moeq_model_checkpoint(d->m);
    int me = moeq_dist_rank();
    float *wf = NULL;
    uint8_t *raw = NULL;
    size_t wf_cap = 0, raw_cap = 0;
    moeq_buf b = {0};
    moeq_status st = MOEQ_OK;
    for (size_t k = 0; k < d->np && st == MOEQ_OK; k++) {
        const moeq_quant_piece *pc = &d->pcs[k];
        if (pc->codec.type == MOEQ_CODEC_RAW || moeq_dist_owner(pc->item) != me) continue;
        if (d->done && d->done[pc->unit]) continue;
        const moeq_codec *cd = &pc->codec;
        const moeq_tensor *t = moeq_ckpt_tensor(ck, pc->tensor);
        size_t nel = (size_t)(pc->rows * pc->cols), es = moeq_dtype_size(t->dtype);
        size_t rsz = (size_t)moeq_codec_raw_bytes(cd, pc->rows, pc->cols);
        if (nel > wf_cap) { free(wf); wf = malloc(nel * sizeof *wf); wf_cap = wf ? nel : 0; }
        if (rsz > raw_cap) { free(raw); raw = malloc(rsz); raw_cap = raw ? rsz : 0; }
        if (!wf || !raw) { st = moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory for '%s'", pc->name); break; }
        moeq_mat v = { .tensor = t->name, .index = -1, .dtype = t->dtype, .rows = pc->rows, .cols = pc->cols,
                       .data = (const unsigned char *)t->data + (size_t)pc->off * es };
        moeq_mat_to_f32(&v, 0, pc->rows, wf);
        size_t n0;
        int64_t g0;
        double t0;
        if ((st = quantize_here(d, pc->name, wf, pc->rows, pc->cols, cd, raw, &n0, &g0, &t0, err))) break;
        b.n = 0;
        if (cd->type == MOEQ_CODEC_TDICT) rsz = (size_t)moeq_tdict_size_of(raw);   /* the coded bytes only */
        record_of_here(d, &b, k, cd, raw, rsz, n0, g0, t0);
        if (d->qr->gptq) d->qr->gptq->n_fallbacks = n0;   /* rank 0 keeps them */
        if (b.oom) { st = moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory for the record of '%s'", pc->name); break; }
        st = moeq_dist_send_blob(b.p, b.n, 0, MOEQ_TAG_GPTQ, err);
    }
    moeq_buf_free(&b);
    free(wf);
    free(raw);
    return st;
}

/* ---- the model's identity for the manifest ------------------------------------------------- */

static moeq_status model_field(const moeq_model *m, moeq_resume_field *f, moeq_error *err)
{
    const moeq_checkpoint *ck = moeq_model_checkpoint(m);
    char p[4600];
    snprintf(p, sizeof p, "%s/config.json", moeq_ckpt_dir(ck));
    void *cfg;
    size_t cl;
    moeq_status st = moeq_read_file(p, (uint64_t)64 << 20, "a config", &cfg, &cl, err);
    if (st) return st;
    XXH64_state_t *h = XXH64_createState();
    if (!h) { free(cfg); return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory"); }
    XXH64_reset(h, 0);
    XXH64_update(h, cfg, cl);
    free(cfg);
    /* every tensor's name, dtype, shape and its first and last 256 bytes */
    for (size_t i = 0; i < moeq_ckpt_count(ck); i++) {
        const moeq_tensor *t = moeq_ckpt_tensor(ck, i);
        int64_t meta[2 + MOEQ_MAX_DIMS] = { t->dtype, t->ndim };
        for (int k = 0; k < t->ndim && k < MOEQ_MAX_DIMS; k++) meta[2 + k] = t->shape[k];
        XXH64_update(h, t->name, strlen(t->name) + 1);
        XXH64_update(h, meta, sizeof meta);
        size_t n = t->nbytes < 256 ? (size_t)t->nbytes : 256;
        XXH64_update(h, t->data, n);
        XXH64_update(h, (const char *)t->data + t->nbytes - n, n);
    }
    snprintf(f->name, sizeof f->name, "model");
    snprintf(f->value, sizeof f->value, "tensors:%zu xxh64:%016llx", moeq_ckpt_count(ck),
             (unsigned long long)XXH64_digest(h));
    XXH64_freeState(h);
    return MOEQ_OK;
}

/* Rank 0: the checkpoint directory with the run's identity. */
static moeq_status open_resume(drv *d, moeq_error *err)
{
    const moeq_quant_run *qr = d->qr;
    size_t nf = qr->n_fields + qr->n_files + 2;
    moeq_resume_field *f = calloc(nf, sizeof *f);
    if (!f) return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory");
    size_t k = 0;
    moeq_status st = model_field(d->m, &f[k++], err);
    for (size_t i = 0; i < qr->n_fields; i++) f[k++] = qr->fields[i];
    for (size_t i = 0; i < qr->n_files && st == MOEQ_OK; i++)
        st = moeq_resume_field_file(&f[k++], qr->files[i].name, qr->files[i].path, err);
    if (st == MOEQ_OK) {
        /* the pieces and their codecs: what scope, rules and plan made of the options */
        XXH64_state_t *h = XXH64_createState();
        if (!h) st = moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory");
        else {
            XXH64_reset(h, 0);
            for (size_t i = 0; i < d->np; i++) {
                const moeq_quant_piece *pc = &d->pcs[i];
                int64_t v[6] = { pc->codec.type, pc->codec.dtype, pc->codec.bits, pc->codec.group, pc->codec.sym,
                                 pc->rows };
                XXH64_update(h, pc->name, strlen(pc->name) + 1);
                XXH64_update(h, v, sizeof v);
                if (pc->codec.type == MOEQ_CODEC_GGML) {   /* only then: older checkpoints keep their identity */
                    int64_t gt = pc->codec.gtype;
                    XXH64_update(h, &gt, sizeof gt);
                }
            }
            snprintf(f[k].name, sizeof f[k].name, "pieces");
            snprintf(f[k].value, sizeof f[k].value, "%zu xxh64:%016llx", d->np, (unsigned long long)XXH64_digest(h));
            k++;
            XXH64_freeState(h);
        }
    }
    if (st == MOEQ_OK) st = moeq_resume_open(qr->resume_dir, "quantize", f, k, d->n_units, &d->rs, err);
    free(f);
    return st;
}

moeq_status moeq_quantize_run(const moeq_model *m, const moeq_quant_opts *o, moeq_quant_run *qr, const char *out_path,
                              moeq_quant_result *res, moeq_error *err)
{
    memset(res, 0, sizeof *res);
    qr->units = qr->units_resumed = qr->units_written = 0;
    const int rank = moeq_dist_rank(), size = moeq_dist_size();
    drv d = { .m = m, .o = o, .qr = qr, .loaded = -1 };
    moeq_quant_piece *pcs = NULL;
    size_t np = 0;
    moeq_status st = moeq_quant_pieces(m, o, &pcs, &np, NULL, err);
    st = moeq_dist_agree(st, err);
    if (st) return st;
    if (size == 1 && !qr->resume_dir) {   /* one process, no checkpoint: the plain writer */
        st = moeq_quantize_pieces_write(m, o, pcs, np, out_path, res, err);
        free(pcs);
        return st;
    }
    d.pcs = pcs;
    d.np = np;
    d.n_units = moeq_model_config(m)->layers + 1;
    qr->units = d.n_units;
    const char *hook = getenv("MOEQ_TEST_STOP_AFTER_LAYER");   /* test only (docs/quantize.md) */
    d.stop_after = hook ? atoll(hook) : 0;
    d.unit_last = malloc((size_t)d.n_units * sizeof *d.unit_last);
    if (qr->resume_dir) d.done = calloc((size_t)d.n_units, 1);
    if (!d.unit_last || (qr->resume_dir && !d.done)) st = moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory");
    if (st == MOEQ_OK) {
        for (int64_t u = 0; u < d.n_units; u++) d.unit_last[u] = -1;
        for (size_t k = 0; k < np; k++)
            if (pcs[k].codec.type != MOEQ_CODEC_RAW) d.unit_last[pcs[k].unit] = (int64_t)k;
    }
    if (qr->resume_dir) {
        /* rank 0 owns the directory; the others learn which layers are done */
        if (st == MOEQ_OK && rank == 0) {
            st = open_resume(&d, err);
            if (st == MOEQ_OK && !(d.ubuf = calloc((size_t)d.n_units, sizeof *d.ubuf)))
                st = moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory");
        }
        st = moeq_dist_agree(st, err);
        if (st == MOEQ_OK && rank == 0)
            for (int64_t u = 0; u < d.n_units; u++) d.done[u] = (uint8_t)moeq_resume_done(d.rs, u);
        if (st == MOEQ_OK) st = moeq_dist_bcast(d.done, (size_t)d.n_units, 0, err);
        for (int64_t u = 0; st == MOEQ_OK && u < d.n_units; u++) qr->units_resumed += d.done[u] && d.unit_last[u] >= 0;
    } else st = moeq_dist_agree(st, err);
    if (st == MOEQ_OK) {
        if (rank == 0) {
            moeq_quant_opts o2 = *o;
            o2.codec_for = o->codec_for ? d_codec_for : NULL;
            o2.quantize = d_quantize;
            o2.provide = d_provide;
            o2.opened = d_opened;
            o2.cb_user = &d;
            st = moeq_quantize_pieces_write(m, &o2, pcs, np, out_path, res, err);
        } else {
            st = moeq_dist_agree(MOEQ_OK, err);   /* rank 0 opened the output */
            if (st == MOEQ_OK) st = worker(&d, err);
        }
    }
    qr->bytes_sent = moeq_dist_bytes_sent();
    if (d.ubuf)
        for (int64_t u = 0; u < d.n_units; u++) moeq_buf_free(&d.ubuf[u]);
    free(d.ubuf);
    free(d.lblob);
    moeq_resume_close(d.rs);
    free(d.done);
    free(d.unit_last);
    free(pcs);
    return st;
}
