/* The test-vector files of tests/fixtures/ggml (vectors.bin, vectors_tq.bin, vectors_ik.bin,
 * vectors_ik_ks.bin; layout in make_vectors.py's header), read once for every ggml test: a
 * "MQGV" magic, u32 version, u32 count, then records of a 16-byte name, seven u32 (kind, type,
 * set, rows, cols, has_deq, experts) and their data, every length checked against the file. */
#ifndef MOEQ_TEST_GGML_VECTORS_H
#define MOEQ_TEST_GGML_VECTORS_H

#include "moeq_ggml.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct gv_rec {
    char name[17];
    uint32_t kind, type, set, rows, cols, has_deq, experts;
    const uint8_t *data;   /* kind 0: rows × cols f32; 1: experts × cols f32 (imatrix); else codes, then f32 */
} gv_rec;

/* Reads path into *buf (the caller frees it) and at most cap records into recs. Returns the
 * number of records, -1 when the file cannot be read, -2 when it is malformed (bad magic, a
 * record past the end, a block type moeq does not know). */
static int gv_load(const char *path, uint8_t **buf, gv_rec *recs, int cap)
{
    *buf = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    long sz = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    uint8_t *b = sz > 0 && fseek(f, 0, SEEK_SET) == 0 ? malloc((size_t)sz) : NULL;
    int ok = b && fread(b, 1, (size_t)sz, f) == (size_t)sz;
    fclose(f);
    if (!ok) { free(b); return -1; }
    *buf = b;
    if (sz < 12 || memcmp(b, "MQGV", 4)) return -2;
    uint32_t n;
    memcpy(&n, b + 8, 4);
    size_t p = 12;
    int k = 0;
    for (uint32_t i = 0; i < n && k < cap; i++, k++) {
        gv_rec *r = &recs[k];
        if (p + 44 > (size_t)sz) return -2;
        memcpy(r->name, b + p, 16);
        r->name[16] = 0;
        memcpy(&r->kind, b + p + 16, 28);
        r->data = b + p + 44;
        const size_t rb = r->kind > 1 ? moeq_ggml_row_bytes((moeq_ggml_type)r->type, r->cols) : 0;
        if (r->kind > 1 && !rb) return -2;
        const size_t len = r->kind <= 1 ? (size_t)(r->kind ? r->experts : r->rows) * r->cols * 4
                                        : (size_t)r->rows * rb + (r->has_deq ? (size_t)r->rows * r->cols * 4 : 0);
        if (len > (size_t)sz - p - 44) return -2;
        p += 44 + len;
    }
    return k;
}

#endif
