/* SVG figures written by moeq itself (no plotting dependency): the layer x expert alpha heat map
 * and the log-log ESD with its fitted tails. Plain SVG 1.1 text, sans-serif, sized for a paper
 * column; every file is written to a temporary name and renamed. */
#include "moeq_spectral.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* viridis, 9 stops (matplotlib's table sampled evenly) */
static const unsigned char VIRIDIS[9][3] = {
    {68, 1, 84}, {71, 44, 122}, {59, 81, 139}, {44, 113, 142}, {33, 144, 141},
    {39, 173, 129}, {92, 200, 99}, {170, 220, 50}, {253, 231, 37}};

static void viridis(double t, char *buf, size_t cap)
{
    if (!(t >= 0)) t = 0;
    if (t > 1) t = 1;
    double x = t * 8;
    int i = (int)x;
    if (i > 7) i = 7;
    double f = x - i;
    int c[3];
    for (int k = 0; k < 3; k++) c[k] = (int)lround(VIRIDIS[i][k] + f * (VIRIDIS[i + 1][k] - VIRIDIS[i][k]));
    snprintf(buf, cap, "#%02x%02x%02x", c[0], c[1], c[2]);
}

/* An open temporary file next to path. */
static FILE *svg_open(const char *path, char *tmp, size_t cap, moeq_error *err)
{
    snprintf(tmp, cap, "%s.tmp%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) moeq_fail(err, MOEQ_ERR_IO, "%s: cannot create", tmp);
    return f;
}

static moeq_status svg_close(FILE *f, const char *tmp, const char *path, moeq_error *err)
{
    int bad = ferror(f);
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path) != 0) {
        unlink(tmp);
        return moeq_fail(err, MOEQ_ERR_IO, "%s: cannot write", path);
    }
    return MOEQ_OK;
}

static void xml_text(FILE *f, const char *s)
{
    for (; *s; s++) {
        if (*s == '<') fputs("&lt;", f);
        else if (*s == '>') fputs("&gt;", f);
        else if (*s == '&') fputs("&amp;", f);
        else if (*s == '"') fputs("&quot;", f);
        else fputc(*s, f);
    }
}

/* A tick step of 1, 2, 5 x 10^k giving about `want` ticks over span. */
static double nice_step(double span, int want)
{
    if (!(span > 0)) return 1;
    double raw = span / want, p = pow(10, floor(log10(raw))), r = raw / p;
    return (r < 1.5 ? 1 : r < 3.5 ? 2 : r < 7.5 ? 5 : 10) * p;
}

static void header(FILE *f, int w, int h)
{
    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
               "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
               "font-family=\"Helvetica, Arial, sans-serif\" font-size=\"12\">\n"
               "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n", w, h, w, h);
}

moeq_status moeq_spec_svg_heatmap(const char *path, const char *title, const char *value_label,
                                  const double *values, int64_t layers, int64_t experts,
                                  const uint8_t *row_valid, moeq_error *err)
{
    if (!path || !values || layers <= 0 || experts <= 0)
        return moeq_fail(err, MOEQ_ERR_MISUSE, "moeq_spec_svg_heatmap: bad argument");
    double lo = INFINITY, hi = -INFINITY;
    for (int64_t i = 0; i < layers * experts; i++)
        if (isfinite(values[i]) && (!row_valid || row_valid[i / experts])) { lo = fmin(lo, values[i]); hi = fmax(hi, values[i]); }
    if (!isfinite(lo)) { lo = 0; hi = 1; }
    if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }
    const double cw = fmax(3.0, fmin(28.0, 760.0 / (double)experts)), ch = fmax(3.0, fmin(24.0, 520.0 / (double)layers));
    const int ml = 64, mt = 48, mb = 52, cbw = 16, mr = 90;
    const double pw = cw * (double)experts, ph = ch * (double)layers;
    const int W = (int)(ml + pw + 24 + cbw + mr), H = (int)(mt + ph + mb);
    char tmp[4096];
    FILE *f = svg_open(path, tmp, sizeof tmp, err);
    if (!f) return MOEQ_ERR_IO;
    header(f, W, H);
    fputs("<text x=\"", f);
    fprintf(f, "%.1f\" y=\"24\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">", ml + pw / 2);
    xml_text(f, title ? title : "");
    fputs("</text>\n", f);
    /* cells: layer 0 at the top, like a table */
    for (int64_t l = 0; l < layers; l++) {
        for (int64_t e = 0; e < experts; e++) {
            double v = values[l * experts + e];
            char col[16] = "#d9d9d9";
            int ok = isfinite(v) && (!row_valid || row_valid[l]);
            if (ok) viridis((v - lo) / (hi - lo), col, sizeof col);
            fprintf(f, "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"%s\"><title>layer %lld, expert %lld: ",
                    ml + cw * (double)e, mt + ch * (double)l, cw + 0.02, ch + 0.02, col, (long long)l, (long long)e);
            if (ok) fprintf(f, "%.4f", v);
            else fputs(row_valid && !row_valid[l] ? "dense layer" : "no fit", f);
            fputs("</title></rect>\n", f);
        }
        if (row_valid && !row_valid[l])
            fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" dominant-baseline=\"central\" font-size=\"%.0f\" fill=\"#555\">dense layer</text>\n",
                    ml + pw / 2, mt + ch * ((double)l + 0.5), fmin(11.0, ch * 0.8));
    }
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%.2f\" height=\"%.2f\" fill=\"none\" stroke=\"#333\" stroke-width=\"0.8\"/>\n", ml, mt, pw, ph);
    /* axes: ticks at cell centres, about 10 labels per axis */
    int64_t xs = (int64_t)fmax(1, nice_step((double)experts, 10)), ys = (int64_t)fmax(1, nice_step((double)layers, 12));
    for (int64_t e = 0; e < experts; e += xs) {
        double x = ml + cw * ((double)e + 0.5);
        fprintf(f, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"#333\"/>", x, mt + ph, x, mt + ph + 4);
        fprintf(f, "<text x=\"%.2f\" y=\"%.2f\" text-anchor=\"middle\">%lld</text>\n", x, mt + ph + 16, (long long)e);
    }
    for (int64_t l = 0; l < layers; l += ys) {
        double y = mt + ch * ((double)l + 0.5);
        fprintf(f, "<line x1=\"%d\" y1=\"%.2f\" x2=\"%d\" y2=\"%.2f\" stroke=\"#333\"/>", ml - 4, y, ml, y);
        fprintf(f, "<text x=\"%d\" y=\"%.2f\" text-anchor=\"end\" dominant-baseline=\"central\">%lld</text>\n", ml - 7, y, (long long)l);
    }
    fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\" font-size=\"13\">expert</text>\n", ml + pw / 2, H - 14);
    fprintf(f, "<text transform=\"translate(18,%.1f) rotate(-90)\" text-anchor=\"middle\" font-size=\"13\">layer</text>\n", mt + ph / 2);
    /* colour bar */
    const double cx = ml + pw + 24;
    fputs("<defs><linearGradient id=\"cb\" x1=\"0\" y1=\"1\" x2=\"0\" y2=\"0\">", f);
    for (int k = 0; k <= 16; k++) {
        char col[16];
        viridis(k / 16.0, col, sizeof col);
        fprintf(f, "<stop offset=\"%.4f\" stop-color=\"%s\"/>", k / 16.0, col);
    }
    fputs("</linearGradient></defs>\n", f);
    fprintf(f, "<rect x=\"%.1f\" y=\"%d\" width=\"%d\" height=\"%.2f\" fill=\"url(#cb)\" stroke=\"#333\" stroke-width=\"0.8\"/>\n", cx, mt, cbw, ph);
    double st = nice_step(hi - lo, 5);
    for (double t = ceil(lo / st) * st; t <= hi + 1e-9 * st; t += st) {
        double y = mt + ph * (1 - (t - lo) / (hi - lo));
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.2f\" x2=\"%.1f\" y2=\"%.2f\" stroke=\"#333\"/>", cx + cbw, y, cx + cbw + 4, y);
        fprintf(f, "<text x=\"%.1f\" y=\"%.2f\" dominant-baseline=\"central\">%g</text>\n", cx + cbw + 7, y, fabs(t) < 1e-12 ? 0.0 : t);
    }
    fprintf(f, "<text transform=\"translate(%.1f,%.1f) rotate(-90)\" text-anchor=\"middle\" font-size=\"13\">", cx + cbw + 62, mt + ph / 2);
    xml_text(f, value_label ? value_label : "");
    fputs("</text>\n", f);
    fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"10\" height=\"10\" fill=\"#d9d9d9\" stroke=\"#333\" stroke-width=\"0.5\"/>"
               "<text x=\"%.1f\" y=\"%.1f\" font-size=\"10\">no fit</text>\n", cx, mt + ph + 10, cx + 13, mt + ph + 19);
    fputs("</svg>\n", f);
    return svg_close(f, tmp, path, err);
}

moeq_status moeq_spec_svg_esd(const char *path, const char *title, const double *eigs,
                              int64_t n, const moeq_spec_result *res, moeq_error *err)
{
    if (!path || !res || (n > 0 && !eigs)) return moeq_fail(err, MOEQ_ERR_MISUSE, "moeq_spec_svg_esd: bad argument");
    const int W = 640, H = 460, ml = 78, mr = 24, mt = 48, mb = 56;
    const double pw = W - ml - mr, ph = H - mt - mb;
    double x0 = -1, x1 = 1, y0 = -1;
    if (n > 0) {
        x0 = floor(log10(eigs[0]));
        x1 = ceil(log10(eigs[n - 1]));
        if (x1 <= x0) x1 = x0 + 1;
        y0 = floor(log10(1.0 / (double)n));
        if (y0 >= 0) y0 = -1;
    }
#define PX(lx) (ml + pw * ((lx) - x0) / (x1 - x0))
#define PY(ly) (mt + ph * (0 - (ly)) / (0 - y0))
    char tmp[4096];
    FILE *f = svg_open(path, tmp, sizeof tmp, err);
    if (!f) return MOEQ_ERR_IO;
    header(f, W, H);
    fprintf(f, "<text x=\"%.1f\" y=\"22\" text-anchor=\"middle\" font-size=\"14\" font-weight=\"bold\">", ml + pw / 2);
    xml_text(f, title ? title : "");
    fputs("</text>\n", f);
    fprintf(f, "<defs><clipPath id=\"plot\"><rect x=\"%d\" y=\"%d\" width=\"%.1f\" height=\"%.1f\"/></clipPath></defs>\n", ml, mt, pw, ph);
    /* grid and decade ticks */
    for (double d = x0; d <= x1 + 1e-9; d += 1) {
        fprintf(f, "<line x1=\"%.2f\" y1=\"%d\" x2=\"%.2f\" y2=\"%.1f\" stroke=\"#e5e5e5\"/>", PX(d), mt, PX(d), mt + ph);
        fprintf(f, "<text x=\"%.2f\" y=\"%.1f\" text-anchor=\"middle\">10<tspan dy=\"-6\" font-size=\"9\">%g</tspan></text>\n",
                PX(d), mt + ph + 18, d);
    }
    for (double d = y0; d <= 1e-9; d += 1) {
        fprintf(f, "<line x1=\"%d\" y1=\"%.2f\" x2=\"%.1f\" y2=\"%.2f\" stroke=\"#e5e5e5\"/>", ml, PY(d), ml + pw, PY(d));
        fprintf(f, "<text x=\"%d\" y=\"%.2f\" text-anchor=\"end\" dominant-baseline=\"central\">10<tspan dy=\"-6\" font-size=\"9\">%g</tspan></text>\n",
                ml - 6, PY(d), d);
    }
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#333\"/>\n", ml, mt, pw, ph);
    fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\" font-size=\"13\">eigenvalue \xce\xbb = \xcf\x83\xc2\xb2</text>\n", ml + pw / 2, H - 12);
    fprintf(f, "<text transform=\"translate(20,%.1f) rotate(-90)\" text-anchor=\"middle\" font-size=\"13\">P(\xce\x9b \xe2\x89\xa5 \xce\xbb)  (complementary CDF)</text>\n", mt + ph / 2);
    /* empirical CCDF: at most ~1500 bulk points, every point of the top 300 */
    fputs("<g clip-path=\"url(#plot)\">\n<g fill=\"#4c72b0\" fill-opacity=\"0.55\">\n", f);
    int64_t step = n > 1500 ? n / 1500 : 1;
    for (int64_t i = 0; i < n; i += (i >= n - 300 ? 1 : step))
        fprintf(f, "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"1.8\"/>", PX(log10(eigs[i])), PY(log10((double)(n - i) / (double)n)));
    fputs("\n</g>\n", f);
    /* fitted tails: P(Λ >= x) = P(Λ >= x0) (x / x0)^(1 - alpha) */
    if (n > 0 && isfinite(res->alpha_ks) && res->ks_xmin > 0) {
        double a = log10(res->ks_xmin), b = log10(eigs[n - 1]), p0 = log10((double)res->ks_n_tail / (double)n);
        fprintf(f, "<line x1=\"%.2f\" y1=\"%d\" x2=\"%.2f\" y2=\"%.1f\" stroke=\"#c44e52\" stroke-dasharray=\"4 3\"/>\n", PX(a), mt, PX(a), mt + ph);
        fprintf(f, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"#c44e52\" stroke-width=\"2.2\"/>\n", PX(a), PY(p0), PX(b),
                PY(p0 + (1 - res->alpha_ks) * (b - a)));
    }
    if (n > 0 && isfinite(res->alpha_hill) && res->hill_k > 0 && res->hill_k < n) {
        double r = eigs[n - res->hill_k - 1];
        double a = log10(r), b = log10(eigs[n - 1]), p0 = log10((double)(res->hill_k + 1) / (double)n);
        fprintf(f, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"#55a868\" stroke-width=\"2.2\" stroke-dasharray=\"8 4\"/>\n", PX(a),
                PY(p0), PX(b), PY(p0 + (1 - res->alpha_hill) * (b - a)));
    }
    fputs("</g>\n", f);
    /* legend */
    double lx = ml + 12, ly = mt + ph - 78;
    fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"232\" height=\"70\" fill=\"white\" fill-opacity=\"0.9\" stroke=\"#bbb\"/>\n", lx - 6, ly - 4);
    fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"#4c72b0\"/><text x=\"%.1f\" y=\"%.1f\">ESD, %lld eigenvalues</text>\n", lx + 8, ly + 10,
            lx + 26, ly + 14, (long long)n);
    fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#c44e52\" stroke-width=\"2.2\"/><text x=\"%.1f\" y=\"%.1f\">KS fit \xce\xb1 = %.3f, D = %.3f</text>\n",
            lx, ly + 30, lx + 18, ly + 30, lx + 26, ly + 34, res->alpha_ks, res->ks_d);
    fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#55a868\" stroke-width=\"2.2\" stroke-dasharray=\"8 4\"/><text x=\"%.1f\" y=\"%.1f\">Hill \xce\xb1 = %.3f (k = %lld)</text>\n",
            lx, ly + 50, lx + 18, ly + 50, lx + 26, ly + 54, res->alpha_hill, (long long)res->hill_k);
    fputs("</svg>\n", f);
#undef PX
#undef PY
    return svg_close(f, tmp, path, err);
}
