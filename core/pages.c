/* Mapped weight pages: the registry of read-only file mappings and their release.
 *
 * Weights are read through read-only MAP_PRIVATE mappings that are never written, so every
 * page of them is a clean copy of the file. madvise(MADV_DONTNEED) drops such pages from this
 * process (its RSS); the next touch maps them again from the page cache, or re-reads them from
 * the file, with the same bytes. That makes a release always correct, only a cost when the
 * range is used again. Only registered ranges are touched: a view into heap memory (a parsed
 * in-memory image, a decompressed zstd frame, an override) is left alone. */
#include "moeq_core.h"

#include <pthread.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

typedef struct { uintptr_t base, end; } map_range;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static map_range *g_maps;
static size_t g_n, g_cap;
static uint64_t g_released;   /* bytes of ranges released (page-rounded), for tests */

static uintptr_t page_size(void)
{
    long p = sysconf(_SC_PAGESIZE);
    return p > 0 ? (uintptr_t)p : 4096;
}

void moeq_map_register(const void *base, size_t len)
{
    if (!base || len == 0) return;
    pthread_mutex_lock(&g_lock);
    if (g_n == g_cap) {
        size_t cap = g_cap ? 2 * g_cap : 16;
        map_range *m = realloc(g_maps, cap * sizeof *m);
        if (!m) {   /* not registered: its pages are simply never released */
            pthread_mutex_unlock(&g_lock);
            return;
        }
        g_maps = m;
        g_cap = cap;
    }
    uintptr_t ps = page_size(), b = (uintptr_t)base;
    g_maps[g_n].base = b;
    g_maps[g_n].end = (b + len + ps - 1) / ps * ps;   /* the mapping's last page is whole */
    g_n++;
    pthread_mutex_unlock(&g_lock);
}

void moeq_map_unregister(const void *base)
{
    pthread_mutex_lock(&g_lock);
    for (size_t i = 0; i < g_n; i++)
        if (g_maps[i].base == (uintptr_t)base) {
            g_maps[i] = g_maps[--g_n];
            break;
        }
    if (g_n == 0) {
        free(g_maps);
        g_maps = NULL;
        g_cap = 0;
    }
    pthread_mutex_unlock(&g_lock);
}

/* The whole pages of [p, p + n) inside a registered mapping: 1 and the range, or 0. A view
 * lies inside one mapping, so the first hit is the answer. */
static int mapped_pages(const void *p, size_t n, uintptr_t *lo, uintptr_t *hi)
{
    if (!p || n == 0) return 0;
    uintptr_t a = (uintptr_t)p, b = a + n, ps = page_size();
    int hit = 0;
    pthread_mutex_lock(&g_lock);
    for (size_t i = 0; i < g_n && !hit; i++) {
        const map_range *m = &g_maps[i];
        if (b <= m->base || a >= m->end) continue;
        uintptr_t s = a > m->base ? a : m->base, e = b < m->end ? b : m->end;
        *lo = s / ps * ps;                  /* pages shared with a neighbour go too */
        *hi = (e + ps - 1) / ps * ps;
        if (*hi > m->end) *hi = m->end;
        hit = *hi > *lo;
    }
    pthread_mutex_unlock(&g_lock);
    return hit;
}

void moeq_pages_release(const void *p, size_t n)
{
    uintptr_t lo, hi;
    if (!mapped_pages(p, n, &lo, &hi)) return;
    if (madvise((void *)lo, hi - lo, MADV_DONTNEED) == 0) {
        pthread_mutex_lock(&g_lock);
        g_released += hi - lo;
        pthread_mutex_unlock(&g_lock);
    }
}

void moeq_pages_prefetch(const void *p, size_t n)
{
    uintptr_t lo, hi;
    if (mapped_pages(p, n, &lo, &hi)) (void)madvise((void *)lo, hi - lo, MADV_WILLNEED);
}

uint64_t moeq_pages_released(void)
{
    pthread_mutex_lock(&g_lock);
    uint64_t v = g_released;
    pthread_mutex_unlock(&g_lock);
    return v;
}

uint64_t moeq_phys_mem(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), ps = sysconf(_SC_PAGESIZE);
    return pages > 0 && ps > 0 ? (uint64_t)pages * (uint64_t)ps : 0;
}
