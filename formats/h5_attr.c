/* Attribute readers shared by the HDF5 statistics readers. */
#include "formats/h5_attr.h"

#include <string.h>

int moeq_h5_attr_i64(hid_t obj, const char *name, int64_t *v)
{
    if (H5Aexists(obj, name) <= 0) return -1;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0) return -1;
    hid_t t = H5Aget_type(a), sp = H5Aget_space(a);
    int ok = t >= 0 && sp >= 0 && H5Tget_class(t) == H5T_INTEGER && H5Sget_simple_extent_npoints(sp) == 1;
    if (ok) ok = H5Aread(a, H5T_NATIVE_INT64, v) >= 0;
    if (t >= 0) H5Tclose(t);
    if (sp >= 0) H5Sclose(sp);
    H5Aclose(a);
    return ok ? 0 : -1;
}

int moeq_h5_attr_str(hid_t obj, const char *name, char *buf, size_t cap)
{
    if (H5Aexists(obj, name) <= 0) return -1;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0) return -1;
    hid_t t = H5Aget_type(a);
    int ok = t >= 0 && H5Tget_class(t) == H5T_STRING && !H5Tis_variable_str(t);
    size_t n = ok ? H5Tget_size(t) : 0;
    ok = ok && n > 0 && n < cap;
    if (ok) {
        memset(buf, 0, cap);
        ok = H5Aread(a, t, buf) >= 0;
    }
    if (t >= 0) H5Tclose(t);
    H5Aclose(a);
    return ok ? 0 : -1;
}
