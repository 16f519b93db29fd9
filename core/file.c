/* Whole-file reads for the small inputs that are parsed rather than mapped (indexes, token
 * files, configs). A missing file is MOEQ_ERR_NOT_FOUND (exit 2): bad input, not an I/O fault. */
#include "moeq_core.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

moeq_status moeq_read_file(const char *path, uint64_t max_bytes, const char *what, void **out,
                           size_t *len, moeq_error *err)
{
    *out = NULL;
    *len = 0;
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return moeq_fail(err, errno == ENOENT ? MOEQ_ERR_NOT_FOUND : MOEQ_ERR_IO, "%s: cannot open: %s",
                         path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(fp), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        fclose(fp);
        return moeq_fail(err, MOEQ_ERR_IO, "%s: not a regular file", path);
    }
    uint64_t size = (uint64_t)sb.st_size;
    if (size > max_bytes || size > SIZE_MAX - 1) {
        fclose(fp);
        return moeq_fail(err, MOEQ_ERR_FORMAT, "%s: %" PRIu64 " bytes is too large for %s", path, size, what);
    }
    char *buf = malloc((size_t)size + 1);   /* +1: a NUL for text parsers, and never malloc(0) */
    if (!buf) {
        fclose(fp);
        return moeq_fail(err, MOEQ_ERR_NOMEM, "%s: out of memory for %" PRIu64 " bytes", path, size);
    }
    if (size && fread(buf, 1, (size_t)size, fp) != (size_t)size) {
        free(buf);
        fclose(fp);
        return moeq_fail(err, MOEQ_ERR_IO, "%s: short read", path);
    }
    fclose(fp);
    buf[size] = '\0';
    *out = buf;
    *len = (size_t)size;
    return MOEQ_OK;
}

moeq_status moeq_map_file(const char *path, void **map, size_t *len, moeq_error *err)
{
    *map = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return moeq_fail(err, errno == ENOENT ? MOEQ_ERR_NOT_FOUND : MOEQ_ERR_IO, "%s: cannot open: %s", path,
                         strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return moeq_fail(err, MOEQ_ERR_IO, "%s: not a regular file", path);
    }
    if ((uint64_t)sb.st_size > (uint64_t)SIZE_MAX) {
        close(fd);
        return moeq_fail(err, MOEQ_ERR_IO, "%s: file too large to map", path);
    }
    size_t n = (size_t)sb.st_size;
    void *m = NULL;
    if (n > 0) {
        m = mmap(NULL, n, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            int e = errno;
            close(fd);
            return moeq_fail(err, MOEQ_ERR_IO, "%s: cannot mmap %zu bytes: %s", path, n, strerror(e));
        }
    }
    close(fd);
    *map = m;
    *len = n;
    return MOEQ_OK;
}

void moeq_remove_flat_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *de;
        char path[4600];
        while ((de = readdir(d))) {
            if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
            snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
            unlink(path);
        }
        closedir(d);
    }
    rmdir(dir);
}

int moeq_dir_is_empty(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *de;
    int empty = 1;
    while (empty && (de = readdir(d))) empty = !strcmp(de->d_name, ".") || !strcmp(de->d_name, "..");
    closedir(d);
    return empty;
}

moeq_status moeq_output_dir_check(const char *path, moeq_error *err)
{
    size_t len = strlen(path);
    char *dir = malloc(len + 2);
    if (!dir) return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory");
    memcpy(dir, path, len + 1);
    while (len > 1 && dir[len - 1] == '/') dir[--len] = '\0';   /* "out/" names out itself */
    char *slash = strrchr(dir, '/');
    if (!slash) memcpy(dir, ".", 2);
    else if (slash == dir) dir[1] = '\0';
    else *slash = '\0';
    struct stat sb;
    moeq_status st = MOEQ_OK;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        st = moeq_fail(err, MOEQ_ERR_IO, "%s: output directory %s does not exist", path, dir);
    free(dir);
    return st;
}
