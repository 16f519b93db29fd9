/* AMX tile configuration shared by the amx set's kernels (wmat_amx.c, syrk_amx.c), included only
 * by files built with -mamx-tile. */
#ifndef MOEQ_AMX_INL_H
#define MOEQ_AMX_INL_H

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

typedef struct __attribute__((aligned(64))) {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} moeq_amx_tilecfg;

/* all eight tiles 16 rows x 64 bytes (palette 1); released by _tile_release() at the kernel's end */
static inline void moeq_amx_tiles_on(void)
{
    moeq_amx_tilecfg c;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    for (int t = 0; t < 8; t++) {
        c.rows[t] = 16;
        c.colsb[t] = 64;
    }
    _tile_loadconfig(&c);
}

#endif
