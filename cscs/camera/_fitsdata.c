/* The one pass over a raw file's pixels: byte-swap into the staging buffer, the FITS
 * data sum and (asked) the Adler-32 of what was written, together (docs/decisions/0035,
 * 0041).
 *
 * lay_out(staging, offsets, segments, adler=False) -> (sums, adlers)
 *   For each segment (a C-contiguous buffer of little-endian 32-bit words), writes its
 *   words big-endian into ``staging`` at the matching byte offset, zeroes the rest of
 *   its last 2880-byte FITS block, and returns the segments' DATASUMs: the 32-bit
 *   ones'-complement sums of the words (the same values whatever their byte order);
 *   with ``adler``, also each segment's Adler-32 of its laid-out bytes and padding
 *   (else ``adlers`` is empty). A segment is done in blocks small enough to stay in
 *   the first caches: swapped and summed into staging, then Adler-32 of that block
 *   while it is hot, so memory is read once and written once. One call per file, the
 *   GIL released for all of it: no Python per segment.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_X86_DISPATCH 1
#endif

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


/* ---- Adler-32 --------------------------------------------------------------------- */

#define ADLER_BASE 65521u
#define ADLER_NMAX 5552 /* most bytes summed before s2 could overflow 32 bits */
#define FUSED_BLOCK (32 * 1024) /* bytes swapped then summed while in L1/L2 */

static uint32_t adler_scalar(uint32_t adler, const uint8_t *p, size_t n) {
    uint32_t s1 = adler & 0xFFFF, s2 = adler >> 16;
    while (n > 0) {
        size_t k = n < ADLER_NMAX ? n : ADLER_NMAX;
        n -= k;
        while (k--) {
            s1 += *p++;
            s2 += s1;
        }
        s1 %= ADLER_BASE;
        s2 %= ADLER_BASE;
    }
    return s1 | (s2 << 16);
}

#ifdef HAVE_X86_DISPATCH
/* 32 bytes a step: s1 by byte sums (vpsadbw), s2 by bytes weighted 32..1 (vpmaddubsw,
 * vpmaddwd) plus 32 times the s1 before the step (vps, kept per lane and added once per
 * chunk). Chunks short enough that no 32-bit lane overflows before the modulo. */
__attribute__((target("avx2"))) static uint32_t adler_avx2(uint32_t adler, const uint8_t *p,
                                                           size_t n) {
    uint64_t s1 = adler & 0xFFFF, s2 = adler >> 16;
    const __m256i weights = _mm256_setr_epi8(32, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21,
                                             20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9,
                                             8, 7, 6, 5, 4, 3, 2, 1);
    const __m256i ones = _mm256_set1_epi16(1), zero = _mm256_setzero_si256();
    while (n >= 32) {
        size_t k = n < (ADLER_NMAX / 32) * 32 ? n / 32 * 32 : (ADLER_NMAX / 32) * 32;
        n -= k;
        __m256i vs1 = zero, vs2 = zero, vps = zero;
        s2 += s1 * k;
        for (size_t i = 0; i < k; i += 32) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(p + i));
            vps = _mm256_add_epi32(vps, vs1);
            vs1 = _mm256_add_epi32(vs1, _mm256_sad_epu8(v, zero));
            vs2 = _mm256_add_epi32(
                vs2, _mm256_madd_epi16(_mm256_maddubs_epi16(v, weights), ones));
        }
        p += k;
        uint32_t a[8], b[8], c[8];
        _mm256_storeu_si256((__m256i *)a, vs1);
        _mm256_storeu_si256((__m256i *)b, vs2);
        _mm256_storeu_si256((__m256i *)c, vps);
        uint64_t t1 = 0, t2 = 0, tp = 0;
        for (int j = 0; j < 8; j++) {
            t1 += a[j];
            t2 += b[j];
            tp += c[j];
        }
        s2 = (s2 + 32 * tp + t2) % ADLER_BASE;
        s1 = (s1 + t1) % ADLER_BASE;
    }
    return adler_scalar((uint32_t)s1 | ((uint32_t)s2 << 16), p, n);
}

static int have_avx2(void) {
    static int known = -1;
    if (known < 0) {
        __builtin_cpu_init();
        known = __builtin_cpu_supports("avx2") ? 1 : 0;
    }
    return known;
}
#endif

static uint32_t adler_update(uint32_t adler, const uint8_t *p, size_t n) {
    /* Any start value, as zlib takes it: each half reduced first (a half of 65521 or
     * more is no Adler-32 state, and would be returned unreduced for no bytes). */
    adler = (adler & 0xFFFF) % ADLER_BASE | ((adler >> 16) % ADLER_BASE) << 16;
#ifdef HAVE_X86_DISPATCH
    if (have_avx2()) return adler_avx2(adler, p, n);
#endif
    return adler_scalar(adler, p, n);
}

static PyObject *adler32(PyObject *self, PyObject *args) {
    Py_buffer data;
    unsigned long value = 1;
    if (!PyArg_ParseTuple(args, "y*|k", &data, &value)) return NULL;
    uint32_t result;
    Py_BEGIN_ALLOW_THREADS
    result = adler_update((uint32_t)value, (const uint8_t *)data.buf, (size_t)data.len);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&data);
    return PyLong_FromUnsignedLong(result);
}

static PyObject *lay_out(PyObject *self, PyObject *args) {
    PyObject *staging_obj, *offsets_obj, *segments_obj;
    int with_adler = 0;
    if (!PyArg_ParseTuple(args, "OOO|p", &staging_obj, &offsets_obj, &segments_obj,
                          &with_adler))
        return NULL;
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
    uint32_t adlers[MAX_SEGMENTS];
    PyObject *result = NULL, *sum_tuple = NULL, *adler_tuple = NULL;
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
        const char *src = (const char *)views[i].buf;
        int aligned = ((uintptr_t)src | (uintptr_t)at) % 4 == 0;
        uint64_t total = 0;
        uint32_t adler = 1;
        /* Without the Adler-32, one block: the whole segment. */
        size_t step = with_adler ? FUSED_BLOCK : (len ? len : 1);
        for (size_t done = 0; done < len; done += step) {
            size_t k = len - done < step ? len - done : step;
            if (aligned) {
                total += swap_and_sum((const uint32_t *)(src + done), (uint32_t *)(at + done),
                                      k / 4);
            } else { /* unaligned (never from ZeroMQ or numpy): through memcpy */
                for (size_t j = done; j < done + k; j += 4) {
                    uint32_t w;
                    memcpy(&w, src + j, 4);
                    total += w;
                    w = __builtin_bswap32(w);
                    memcpy(at + j, &w, 4);
                }
            }
            if (with_adler) adler = adler_update(adler, (const uint8_t *)at + done, k);
        }
        sums[i] = total;
        memset(at + len, 0, padded - len);
        if (with_adler) adlers[i] = adler_update(adler, (const uint8_t *)at + len, padded - len);
    }
    Py_END_ALLOW_THREADS
    sum_tuple = PyTuple_New(count);
    adler_tuple = PyTuple_New(with_adler ? count : 0);
    if (sum_tuple == NULL || adler_tuple == NULL) goto done;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *value = PyLong_FromUnsignedLong(fold(sums[i]));
        if (value == NULL) goto done;
        PyTuple_SET_ITEM(sum_tuple, i, value);
        if (with_adler) {
            value = PyLong_FromUnsignedLong(adlers[i]);
            if (value == NULL) goto done;
            PyTuple_SET_ITEM(adler_tuple, i, value);
        }
    }
    result = PyTuple_Pack(2, sum_tuple, adler_tuple);
done:
    Py_XDECREF(sum_tuple);
    Py_XDECREF(adler_tuple);
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
     "lay_out(staging, offsets, segments, adler=False) -> (sums, adlers): each segment's "
     "words big-endian into staging at its offset (its FITS block's rest zeroed); their "
     "DATASUMs and (adler) the Adler-32 of each segment's laid-out bytes."},
    {"adler32", adler32, METH_VARARGS,
     "adler32(data, value=1) -> int: the kernel's Adler-32 (vectorised where it can)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fitsdata",
    "A raw file's pixels in one pass: big-endian copy and FITS data sums.", -1, methods,
};

PyMODINIT_FUNC PyInit__fitsdata(void) { return PyModule_Create(&module); }
