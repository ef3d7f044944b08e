/* The one pass over a raw file's pixels: byte-swap into the staging buffer and the
 * FITS data sum, together (docs/decisions/0035).
 *
 * lay_out(staging, offsets, segments) -> tuple of int
 *   For each segment (a C-contiguous buffer of little-endian 32-bit words), writes its
 *   words big-endian into ``staging`` at the matching byte offset, zeroes the rest of
 *   its last 2880-byte FITS block, and returns the segments' DATASUMs: the 32-bit
 *   ones'-complement sums of the words (the same values whatever their byte order).
 *   One call per file, the GIL released for all of it: no Python per segment, and each
 *   word is read once and written once.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the segments are little-endian words read natively: a little-endian host only"
#endif

#define FITS_BLOCK 2880
#define MAX_SEGMENTS 64

/* The loop the compiler vectorises (bswap as a byte shuffle, the sum as widening
 * adds); built for AVX2 too where the machine has it, chosen at load time. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx2", "default")))
#endif
static uint64_t swap_and_sum(const uint32_t *restrict src, uint32_t *restrict dst, size_t n) {
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t w = src[i];
        total += w;
        dst[i] = __builtin_bswap32(w);
    }
    return total;
}

/* The sum alone, for pixels that are not laid out here (a tile-compressed file, a
 * check of what arrived): the same vectorised loop without the stores. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx2", "default")))
#endif
static uint64_t sum_words(const uint32_t *restrict src, size_t n) {
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) total += src[i];
    return total;
}

static uint32_t fold(uint64_t total) {
    while (total >> 32) total = (total & 0xFFFFFFFFu) + (total >> 32);
    return (uint32_t)total;
}

static PyObject *lay_out(PyObject *self, PyObject *args) {
    PyObject *staging_obj, *offsets_obj, *segments_obj;
    if (!PyArg_ParseTuple(args, "OOO", &staging_obj, &offsets_obj, &segments_obj)) return NULL;
    PyObject *offsets = PySequence_Fast(offsets_obj, "offsets must be a sequence");
    if (offsets == NULL) return NULL;
    PyObject *segments = PySequence_Fast(segments_obj, "segments must be a sequence");
    if (segments == NULL) {
        Py_DECREF(offsets);
        return NULL;
    }
    Py_ssize_t count = PySequence_Fast_GET_SIZE(segments);
    Py_buffer staging = {0}, views[MAX_SEGMENTS];
    Py_ssize_t starts[MAX_SEGMENTS], held = 0;
    uint64_t sums[MAX_SEGMENTS];
    PyObject *result = NULL;
    if (count != PySequence_Fast_GET_SIZE(offsets) || count > MAX_SEGMENTS) {
        PyErr_Format(PyExc_ValueError, "need as many offsets as segments, at most %d",
                     MAX_SEGMENTS);
        goto done;
    }
    if (PyObject_GetBuffer(staging_obj, &staging, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0)
        goto done;
    for (; held < count; held++) {
        Py_ssize_t start = PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(offsets, held));
        if (start == -1 && PyErr_Occurred()) goto done;
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(segments, held), &views[held],
                               PyBUF_C_CONTIGUOUS) < 0)
            goto done;
        Py_ssize_t len = views[held].len;
        Py_ssize_t padded = (len + FITS_BLOCK - 1) / FITS_BLOCK * FITS_BLOCK;
        if (len % 4 != 0 || start < 0 || start % 4 != 0 || start > staging.len - padded) {
            held++;  /* this view is released below too */
            PyErr_SetString(PyExc_ValueError,
                            "segment not whole 32-bit words, or beyond the staging buffer");
            goto done;
        }
        starts[held] = start;
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < count; i++) {
        char *at = (char *)staging.buf + starts[i];
        size_t len = (size_t)views[i].len;
        size_t padded = (len + FITS_BLOCK - 1) / FITS_BLOCK * FITS_BLOCK;
        if (((uintptr_t)views[i].buf | (uintptr_t)at) % 4 == 0) {
            sums[i] = swap_and_sum((const uint32_t *)views[i].buf, (uint32_t *)at, len / 4);
        } else { /* unaligned (never from ZeroMQ or numpy): word by word through memcpy */
            uint64_t total = 0;
            for (size_t j = 0; j < len; j += 4) {
                uint32_t w;
                memcpy(&w, (const char *)views[i].buf + j, 4);
                total += w;
                w = __builtin_bswap32(w);
                memcpy(at + j, &w, 4);
            }
            sums[i] = total;
        }
        memset(at + len, 0, padded - len);
    }
    Py_END_ALLOW_THREADS
    result = PyTuple_New(count);
    if (result == NULL) goto done;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *value = PyLong_FromUnsignedLong(fold(sums[i]));
        if (value == NULL) {
            Py_CLEAR(result);
            goto done;
        }
        PyTuple_SET_ITEM(result, i, value);
    }
done:
    for (Py_ssize_t i = 0; i < held; i++) PyBuffer_Release(&views[i]);
    if (staging.obj != NULL) PyBuffer_Release(&staging);
    Py_DECREF(offsets);
    Py_DECREF(segments);
    return result;
}

static uint64_t sum_unaligned(const char *src, size_t len) {
    uint64_t total = 0;
    for (size_t j = 0; j < len; j += 4) {
        uint32_t w;
        memcpy(&w, src + j, 4);
        total += w;
    }
    return total;
}

static PyObject *segment_sums(PyObject *self, PyObject *segments_obj) {
    PyObject *segments = PySequence_Fast(segments_obj, "segments must be a sequence");
    if (segments == NULL) return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(segments), held = 0;
    Py_buffer views[MAX_SEGMENTS];
    uint64_t sums[MAX_SEGMENTS];
    PyObject *result = NULL;
    if (count > MAX_SEGMENTS) {
        PyErr_Format(PyExc_ValueError, "at most %d segments", MAX_SEGMENTS);
        goto done;
    }
    for (; held < count; held++) {
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(segments, held), &views[held],
                               PyBUF_C_CONTIGUOUS) < 0)
            goto done;
        if (views[held].len % 4 != 0) {
            held++;
            PyErr_SetString(PyExc_ValueError, "segment not whole 32-bit words");
            goto done;
        }
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < count; i++) {
        size_t len = (size_t)views[i].len;
        sums[i] = (uintptr_t)views[i].buf % 4 == 0
                      ? sum_words((const uint32_t *)views[i].buf, len / 4)
                      : sum_unaligned((const char *)views[i].buf, len);
    }
    Py_END_ALLOW_THREADS
    result = PyTuple_New(count);
    if (result == NULL) goto done;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *value = PyLong_FromUnsignedLong(fold(sums[i]));
        if (value == NULL) {
            Py_CLEAR(result);
            goto done;
        }
        PyTuple_SET_ITEM(result, i, value);
    }
done:
    for (Py_ssize_t i = 0; i < held; i++) PyBuffer_Release(&views[i]);
    Py_DECREF(segments);
    return result;
}

static PyMethodDef methods[] = {
    {"segment_sums", segment_sums, METH_O,
     "segment_sums(segments) -> tuple[int, ...]: the DATASUM of each segment's native "
     "32-bit words, nothing written."},
    {"lay_out", lay_out, METH_VARARGS,
     "lay_out(staging, offsets, segments) -> tuple[int, ...]: each segment's words "
     "big-endian into staging at its offset (its FITS block's rest zeroed); their DATASUMs."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fitsdata",
    "A raw file's pixels in one pass: big-endian copy and FITS data sums.", -1, methods,
};

PyMODINIT_FUNC PyInit__fitsdata(void) { return PyModule_Create(&module); }
