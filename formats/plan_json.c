/* plan.json (docs/plan.md): writer, reader (jansson) and the name -> codec index that
 * `moeq quantize --plan` consults for every matrix. */
#include "moeq_plan.h"
#include "moeq_gptq.h"
#include "moeq_core.h"

#include <jansson.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PLAN_MAX_BYTES ((uint64_t)1 << 30)

char *moeq_plan_json(const moeq_plan *p, const moeq_plan_opts *o, const moeq_model *m)
{
    const moeq_config *c = moeq_model_config(m);
    json_t *j = json_object();
    json_object_set_new(j, "format", json_string("moeq-plan"));
    json_object_set_new(j, "format_version", json_integer(1));
    json_object_set_new(j, "model_type", json_string(c->model_type));
    json_object_set_new(j, "budget", json_real(p->budget));
    json_object_set_new(j, "bits_per_weight", json_real(p->bits_per_weight));
    json_object_set_new(j, "bits_per_weight_total", json_real(p->bits_per_weight_total));
    json_object_set_new(j, "cost", json_string(moeq_plan_cost_name(o->cost)));
    json_object_set_new(j, "weight", json_string(o->weight == MOEQ_WEIGHT_COUNT ? "count" : "params"));
    json_object_set_new(j, "budget_total", json_boolean(o->budget_total));
    json_t *bits = json_array();
    for (int i = 0; i < o->n_bits; i++) json_array_append_new(bits, json_integer(o->bits[i]));
    json_object_set_new(j, "bits", bits);
    if (o->n_codecs > 0) {   /* codec candidates instead of bits × group × sym */
        json_t *cands = json_array();
        for (int i = 0; i < o->n_codecs; i++) {
            char cs[32];
            moeq_codec_format(&o->codecs[i], cs, sizeof cs);
            json_array_append_new(cands, json_string(cs));
        }
        json_object_set_new(j, "codecs", cands);
    }
    json_object_set_new(j, "group", json_integer(o->group));
    json_object_set_new(j, "sym", json_boolean(o->sym));
    if (o->cost == MOEQ_COST_ALPHAQ) json_object_set_new(j, "gamma", json_real(p->gamma));
    if (o->cost == MOEQ_COST_ALPHAQ && p->n_gamma > 0) {   /* --gamma auto: [{gamma, spearman}] */
        int ng;
        const double *gs = moeq_plan_gammas(&ng);
        json_t *ga = json_array();
        for (int i = 0; i < p->n_gamma && i < ng; i++) {
            json_t *r = json_object();
            json_object_set_new(r, "gamma", json_real(gs[i]));
            json_object_set_new(r, "spearman", json_real(p->gamma_rho[i]));
            json_array_append_new(ga, r);
        }
        json_object_set_new(j, "gamma_auto", ga);
    }
    if (o->cost == MOEQ_COST_HESSIAN || o->cost == MOEQ_COST_MEASURED)
        json_object_set_new(j, "hessian_quantizer", json_string(o->hessian_gptq ? "gptq" : "rtn"));
    if (o->cost == MOEQ_COST_RANDOM) json_object_set_new(j, "seed", json_integer((json_int_t)o->seed));
    if ((o->cost == MOEQ_COST_MEASURED || o->gamma_auto) && p->group_kld) {   /* [{layer, proj, kld: [per candidate]}] */
        const int k = moeq_plan_ncandidates(o);
        json_t *gk = json_array();
        for (int64_t g = 0; g * k < p->n_group_kld; g++) {
            int any = 0;
            for (size_t e = 0; e < p->n && !any; e++)
                any = !p->entries[e].pinned && p->entries[e].layer == g / 3 && (int64_t)p->entries[e].proj == g % 3;
            if (!any) continue;
            json_t *r = json_object(), *v = json_array();
            json_object_set_new(r, "layer", json_integer(g / 3));
            json_object_set_new(r, "proj", json_string(moeq_proj_name((moeq_proj)(g % 3))));
            for (int q = 0; q < k; q++) json_array_append_new(v, json_real(p->group_kld[g * k + q]));
            json_object_set_new(r, "kld", v);
            json_array_append_new(gk, r);
        }
        json_object_set_new(j, "measured", gk);
        json_object_set_new(j, "measure_tokens", json_integer(o->measure_n / o->measure_ctx * o->measure_ctx));
        json_object_set_new(j, "measure_ctx", json_integer(o->measure_ctx));
    }
    json_object_set_new(j, "scope", json_string("experts"));
    json_object_set_new(j, "weights", json_integer(p->weights));
    json_object_set_new(j, "predicted_cost", json_real(p->cost));
    json_object_set_new(j, "lower_bound", json_real(p->solve.lower_bound));
    json_object_set_new(j, "exact", json_boolean(p->solve.exact));
    json_object_set_new(j, "seconds_costs", json_real(p->seconds_costs));
    json_object_set_new(j, "seconds_solve", json_real(p->seconds_solve));
    json_t *hist = json_object();   /* by bit width, or by codec with codec candidates */
    for (int i = 0; i < moeq_plan_ncandidates(o); i++) {
        const moeq_codec cd = moeq_plan_candidate(o, i);
        int64_t cnt = 0;
        for (size_t k = 0; k < p->n; k++)
            cnt += !p->entries[k].pinned && p->entries[k].codec.type == cd.type && p->entries[k].codec.bits == cd.bits &&
                   (o->n_codecs == 0 || (p->entries[k].codec.group == cd.group && p->entries[k].codec.sym == cd.sym &&
                                         p->entries[k].codec.gtype == cd.gtype));
        char key[32];
        if (o->n_codecs > 0) moeq_codec_format(&cd, key, sizeof key);
        else snprintf(key, sizeof key, "%d", cd.bits);
        json_object_set_new(hist, key, json_integer(cnt));
    }
    json_object_set_new(j, "histogram", hist);
    json_t *arr = json_array();
    for (size_t k = 0; k < p->n; k++) {
        const moeq_plan_entry *e = &p->entries[k];
        json_t *r = json_object();
        char cs[32];
        moeq_codec_format(&e->codec, cs, sizeof cs);
        json_object_set_new(r, "tensor", json_string(e->name));
        json_object_set_new(r, "layer", json_integer(e->layer));
        json_object_set_new(r, "expert", json_integer(e->expert));
        json_object_set_new(r, "proj", json_string(moeq_proj_name(e->proj)));
        json_object_set_new(r, "rows", json_integer(e->rows));
        json_object_set_new(r, "cols", json_integer(e->cols));
        json_object_set_new(r, "codec", json_string(cs));
        if (e->codec.type == MOEQ_CODEC_GGML || e->codec.type == MOEQ_CODEC_TDICT)   /* t1d: the estimate */
            json_object_set_new(r, "bits", json_real(moeq_codec_bpw(&e->codec, e->cols)));
        else json_object_set_new(r, "bits", json_integer(e->codec.bits));
        json_object_set_new(r, "cost", e->pinned ? json_null() : json_real(e->cost));
        if (!e->pinned && e->n_costs > 0) {   /* every candidate's cost, in the candidates' order */
            json_t *cc = json_array();
            for (int q = 0; q < e->n_costs; q++) json_array_append_new(cc, json_real(e->costs[q]));
            json_object_set_new(r, "costs", cc);
        }
        if (o->cost == MOEQ_COST_ALPHAQ) json_object_set_new(r, "sensitivity", json_real(e->sens));
        json_object_set_new(r, "pinned", json_boolean(e->pinned));
        json_array_append_new(arr, r);
    }
    json_object_set_new(j, "matrices", arr);
    char *s = json_dumps(j, JSON_INDENT(1) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
    json_decref(j);
    return s;
}

moeq_status moeq_write_atomic(const char *path, const char *text, size_t len, moeq_error *err)
{
    char *c1 = strdup(path), *c2 = strdup(path);
    if (!c1 || !c2) { free(c1); free(c2); return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory"); }
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s/.%s.tmp.XXXXXX", dirname(c1), basename(c2));
    free(c1);
    free(c2);
    int fd = mkstemp(tmp);
    if (fd < 0) return moeq_fail(err, MOEQ_ERR_IO, "%s: cannot create a temporary file next to it", path);
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, text + off, len - off);
        if (w <= 0) break;
        off += (size_t)w;
    }
    int ok = off == len && fsync(fd) == 0;
    ok = close(fd) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return moeq_fail(err, MOEQ_ERR_IO, "%s: cannot write", path);
    }
    return MOEQ_OK;
}

moeq_status moeq_plan_read(const char *path, const moeq_model *m, moeq_plan *out, moeq_error *err)
{
    memset(out, 0, sizeof *out);
    void *buf = NULL;
    size_t len = 0;
    moeq_status st = moeq_read_file(path, PLAN_MAX_BYTES, "plan", &buf, &len, err);
    if (st) return st;
    json_error_t je;
    json_t *j = json_loadb(buf, len, 0, &je);
    free(buf);
    if (!j) return moeq_fail(err, MOEQ_ERR_FORMAT, "%s: line %d: %s", path, je.line, je.text);
    moeq_expert_mat *mats = NULL;
    moeq_expert_index *ix = NULL;
    size_t nm = 0;
    json_t *arr = json_object_get(j, "matrices"), *fmt = json_object_get(j, "format");
    if (!json_is_object(j) || !json_is_string(fmt) || strcmp(json_string_value(fmt), "moeq-plan") || !json_is_array(arr)) {
        st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: not a plan (wants \"format\": \"moeq-plan\" and a \"matrices\" array)", path);
        goto done;
    }
    json_t *mt = json_object_get(j, "model_type");
    if (json_is_string(mt) && strcmp(json_string_value(mt), moeq_model_config(m)->model_type)) {
        st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: \"model_type\" is '%s', the model is '%s': a plan of another model",
                       path, json_string_value(mt), moeq_model_config(m)->model_type);
        goto done;
    }
    if ((st = moeq_expert_mats(m, &mats, &nm, err)) || (st = moeq_expert_index_build(mats, nm, &ix, err))) goto done;
    size_t n = json_array_size(arr);
    out->entries = calloc(n ? n : 1, sizeof *out->entries);
    if (!out->entries) { st = moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory"); goto done; }
    json_t *b = json_object_get(j, "budget");
    out->budget = json_is_number(b) ? json_number_value(b) : 0;
    for (size_t i = 0; i < n; i++) {
        json_t *r = json_array_get(arr, i);
        json_t *t = json_object_get(r, "tensor"), *c = json_object_get(r, "codec");
        if (!json_is_string(t) || !json_is_string(c)) {
            st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: matrices[%zu]: wants string \"tensor\" and \"codec\"", path, i);
            goto done;
        }
        moeq_plan_entry *e = &out->entries[i];
        snprintf(e->name, sizeof e->name, "%s", json_string_value(t));
        int64_t k = moeq_expert_index_find(ix, e->name);
        if (k < 0) {
            st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: matrices[%zu]: tensor '%s' is not a routed-expert matrix of %s",
                           path, i, e->name, moeq_model_path(m));
            goto done;
        }
        moeq_error e2;
        if (moeq_codec_parse(json_string_value(c), &e->codec, &e2) || e->codec.type == MOEQ_CODEC_RAW) {
            st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: matrices[%zu] ('%s'): codec '%s' is not an int, ggml or t1d codec", path,
                           i, e->name, json_string_value(c));
            goto done;
        }
        e->layer = mats[k].layer;
        e->expert = mats[k].expert;
        e->proj = mats[k].proj;
        e->rows = mats[k].mat.rows;
        e->cols = mats[k].mat.cols;
        if (moeq_codec_check(&e->codec, e->rows, e->cols, &e2)) {
            st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: matrices[%zu] ('%s'): %s", path, i, e->name, e2.detail);
            goto done;
        }
        out->n++;
    }
done:
    if (st) moeq_plan_free(out);
    moeq_expert_index_free(ix);
    free(mats);
    json_decref(j);
    return st;
}

struct moeq_plan_index {
    const moeq_plan *p;
    size_t *order;
};

static const moeq_plan *g_plan;
static int cmp_entry(const void *a, const void *b)
{
    return strcmp(g_plan->entries[*(const size_t *)a].name, g_plan->entries[*(const size_t *)b].name);
}

moeq_status moeq_plan_index_build(const moeq_plan *p, moeq_plan_index **out, moeq_error *err)
{
    moeq_plan_index *ix = calloc(1, sizeof *ix);
    if (!ix || !(ix->order = malloc((p->n ? p->n : 1) * sizeof *ix->order))) {
        free(ix);
        return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory");
    }
    ix->p = p;
    for (size_t i = 0; i < p->n; i++) ix->order[i] = i;
    g_plan = p;
    qsort(ix->order, p->n, sizeof *ix->order, cmp_entry);
    for (size_t i = 1; i < p->n; i++)
        if (!strcmp(p->entries[ix->order[i]].name, p->entries[ix->order[i - 1]].name)) {
            moeq_status st = moeq_fail(err, MOEQ_ERR_FORMAT, "plan: tensor '%s' is listed twice",
                                       p->entries[ix->order[i]].name);
            moeq_plan_index_free(ix);
            return st;
        }
    *out = ix;
    return MOEQ_OK;
}

int moeq_plan_codec_for(void *u, const char *name, moeq_codec *codec)
{
    const moeq_plan_index *ix = u;
    size_t lo = 0, hi = ix->p->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(ix->p->entries[ix->order[mid]].name, name);
        if (c == 0) { *codec = ix->p->entries[ix->order[mid]].codec; return 1; }
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return 0;
}

void moeq_plan_index_free(moeq_plan_index *ix)
{
    if (!ix) return;
    free(ix->order);
    free(ix);
}
