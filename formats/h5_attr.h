/* Attribute readers shared by the HDF5 statistics readers (calibration and spectral files). */
#ifndef MOEQ_H5_ATTR_H
#define MOEQ_H5_ATTR_H

#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>

/* A scalar integer attribute into *v; 0 on success, -1 when absent or of another kind. */
int moeq_h5_attr_i64(hid_t obj, const char *name, int64_t *v);
/* A fixed-length string attribute into buf (NUL-terminated, shorter than cap); 0 on success. */
int moeq_h5_attr_str(hid_t obj, const char *name, char *buf, size_t cap);

#endif
