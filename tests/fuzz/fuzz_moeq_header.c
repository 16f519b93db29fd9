/* libFuzzer target: the .moeq prefix / index parser (moeq_pack_parse, rules F-1..F-15) on
 * arbitrary bytes, and the deep check (F-9 checksums and padding, F-16) when it accepts them.
 * On success every tensor's and file's bytes are read, so ASan proves each view lies inside the
 * input (or inside its decompressed zstd buffer), and every lookup finds what it indexes.
 * Each input runs twice: as given, and with file_size and the index checksum recomputed, so
 * that mutations of the index JSON reach the rules after F-5 and F-7. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "moeq_pack.h"

static volatile uint64_t g_sink; /* keeps the reads from being optimized away */

static void one(const uint8_t *data, size_t size)
{
    moeq_pack *p = NULL;
    moeq_error err;
    memset(&err, 0, sizeof err);
    if (moeq_pack_parse(data, size, "fuzz", &p, &err) == MOEQ_OK) {
        uint64_t sum = 0;
        for (size_t i = 0; i < moeq_pack_nfiles(p); i++) {
            const moeq_pack_file_entry *f = moeq_pack_file(p, i);
            if (moeq_pack_find_file(p, f->name) != f) __builtin_trap();
            if (f->blob.offset + f->blob.size > size) __builtin_trap();
            for (uint64_t k = 0; k < f->blob.size; k++) sum += ((const uint8_t *)f->data)[k];
        }
        for (size_t i = 0; i < moeq_pack_ntensors(p); i++) {
            const moeq_pack_tensor *t = moeq_pack_tensor_at(p, i);
            if (moeq_pack_find(p, t->name) != t) __builtin_trap();
            if (moeq_pack_find_piece(p, t->source, t->source_offset) != t) __builtin_trap();
            if (!moeq_pack_find_source(p, t->source)) __builtin_trap();
            for (uint64_t k = 0; k < t->blob.raw_size; k++) sum += ((const uint8_t *)t->data)[k];
        }
        moeq_error e2;
        (void)moeq_pack_verify(p, &e2);
        g_sink = sum;
        moeq_pack_close(p);
    } else if (err.code == MOEQ_OK || err.detail[0] == '\0') {
        __builtin_trap(); /* every failure carries a detail */
    }
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    one(data, size);
    if (size < 64) return 0;
    uint64_t ioff = 0;
    for (int i = 7; i >= 0; i--) ioff = ioff << 8 | data[16 + i];
    if (ioff < 64 || ioff >= size) return 0;
    uint8_t *fix = malloc(size);
    if (!fix) return 0;
    memcpy(fix, data, size);
    put64(fix + 24, size - ioff);
    put64(fix + 32, XXH64(fix + ioff, size - ioff, 0));
    put64(fix + 40, size);
    one(fix, size);
    free(fix);
    return 0;
}
