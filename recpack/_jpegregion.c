/* Partial JPEG decoding with libjpeg(-turbo): decode only the rows and iMCU columns a crop box needs.
 *
 * One function, decode_region(data, x, y, w, h, d, fast) -> (bytearray, width, height, x0, y0):
 *   data        any object with the buffer protocol (bytes, memoryview of a record), a baseline or
 *               progressive JPEG with 1 (grayscale) or 3 (YCbCr/RGB) components
 *   x, y, w, h  the box, in pixels of the image decoded at 1/d (0 <= x, x + w <= ceil(W / d), same for y);
 *               w <= 0 (h <= 0) means "to the right (bottom) edge", so (0, 0, 0, 0) decodes the whole image
 *   d           DCT-domain reduction: 1, 2, 4 or 8
 *   fast        non-zero: the fast integer inverse DCT and plain (not fancy) upsampling
 * It returns interleaved RGB rows covering the box: `width` >= w columns starting at column x0 <= x (libjpeg
 * widens the region to whole iMCU columns) and rows y0 = y .. y + h - 1 (height = h). Rows above the box are
 * skipped with jpeg_skip_scanlines (entropy-decoded only: no inverse DCT, upsampling or colour conversion),
 * columns outside the region are not inverse-transformed (jpeg_crop_scanline), and decoding stops after the
 * last row of the box. libjpeg warnings (corrupt or truncated data) are errors, as simplejpeg's strict mode.
 * A baseline JPEG with a restart marker after every MCU (add_restarts below writes them) is first cut down,
 * without decoding, to the MCUs the box touches plus one MCU of margin on each side (restart_subimage):
 * every MCU's entropy-coded bytes then start fresh, so the rows above the box and the columns beside it are
 * not even entropy-decoded. The margin keeps fancy upsampling's neighbours, so the pixels stay the same.
 *
 * add_restarts(data) -> bytes: the same JPEG, losslessly re-written (the DCT coefficients are copied, not
 * re-quantised; APPn/COM markers are kept) as a baseline JPEG with optimised Huffman tables and a restart
 * marker after every MCU. Decoding it gives the same pixels as decoding the original.
 *
 * The GIL is released while libjpeg runs. Errors: ValueError (a bad box or d), RuntimeError (libjpeg's
 * message; callers map it to DecodeError). CMYK/YCCK JPEGs raise RuntimeError: libjpeg cannot convert
 * them to RGB, callers fall back to a whole-image decoder.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>

#ifndef LIBJPEG_TURBO_VERSION
#error "recpack._jpegregion needs libjpeg-turbo >= 1.5 (jpeg_crop_scanline, jpeg_skip_scanlines)"
#endif

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
} ErrorManager;

static void on_error(j_common_ptr cinfo) {
    ErrorManager *err = (ErrorManager *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, err->message);
    longjmp(err->jump, 1);
}

static void on_message(j_common_ptr cinfo, int level) {
    if (level < 0) { /* a warning: corrupt data; never hand out an image with gray blocks */
        on_error(cinfo);
    }
}

/* libjpeg's error manager with errors and warnings both ending in a longjmp to err->jump */
static struct jpeg_error_mgr *strict_errors(ErrorManager *err) {
    struct jpeg_error_mgr *pub = jpeg_std_error(&err->pub);
    err->pub.error_exit = on_error;
    err->pub.emit_message = on_message;
    err->message[0] = '\0';
    return pub;
}


/* ---- restart-marker sub-images ---------------------------------------------------------------------------- */

#define MAX_SUB_MCUS (1u << 22) /* bigger crops take the ordinary path (bounds the offset tables) */

/* If `p` is a baseline (SOF0/SOF1, Huffman) JPEG with one interleaved scan of all its components and a restart
 * marker after every MCU (DRI = 1), and the box (in pixels at 1/d, w, h > 0) leaves whole MCU rows or columns
 * out (beyond one MCU of margin), write into *out (malloc'd, caller frees) a JPEG of just the MCUs the box
 * touches plus that margin, and set *ox, *oy to the output-pixel position of its top-left corner in the image.
 * Returns 1 then, 0 when the fast path does not apply or anything is unexpected (the caller then decodes the
 * original, which reports real errors). Pure C, no Python API: runs without the GIL. Every read is bounds-
 * checked: this sees untrusted bytes. */
static int restart_subimage(const unsigned char *p, size_t n, int x, int y, int w, int h, int d,
                            unsigned char **out, size_t *out_len, int *ox, int *oy) {
    size_t i = 2, sof = 0, sos_end = 0;
    unsigned W = 0, H = 0, nc = 0, hmax = 1, vmax = 1, dri = 0;
    if (w <= 0 || h <= 0 || n < 4 || p[0] != 0xFF || p[1] != 0xD8) {
        return 0;
    }
    while (i + 4 <= n) {
        if (p[i] != 0xFF) {
            return 0;
        }
        unsigned m = p[i + 1];
        if (m == 0xFF) { /* fill byte */
            i++;
            continue;
        }
        if (m == 0xD8 || m == 0xD9 || m == 0x01 || (m >= 0xD0 && m <= 0xD7)) {
            return 0;
        }
        size_t len = ((size_t)p[i + 2] << 8) | p[i + 3];
        if (len < 2 || i + 2 + len > n) {
            return 0;
        }
        const unsigned char *seg = p + i + 4;
        if (m == 0xC0 || m == 0xC1) {
            if (sof || len < 8 || seg[0] != 8) {
                return 0;
            }
            H = ((unsigned)seg[1] << 8) | seg[2];
            W = ((unsigned)seg[3] << 8) | seg[4];
            nc = seg[5];
            if ((nc != 1 && nc != 3) || len != 8 + 3 * (size_t)nc) {
                return 0;
            }
            for (unsigned k = 0; k < nc; k++) {
                unsigned hs = seg[7 + 3 * k] >> 4, vs = seg[7 + 3 * k] & 15;
                if (hs < 1 || hs > 4 || vs < 1 || vs > 4) {
                    return 0;
                }
                hmax = hs > hmax ? hs : hmax;
                vmax = vs > vmax ? vs : vmax;
            }
            sof = i;
        } else if (m >= 0xC2 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC) {
            return 0; /* progressive, lossless or arithmetic-coded */
        } else if (m == 0xDD) {
            if (len != 4) {
                return 0;
            }
            dri = ((unsigned)seg[0] << 8) | seg[1];
        } else if (m == 0xDA) {
            if (len < 6 || seg[0] != nc) {
                return 0;
            }
            sos_end = i + 2 + len;
            break;
        }
        i += 2 + len;
    }
    if (!sof || !sos_end || dri != 1 || W == 0 || H == 0) {
        return 0;
    }
    /* MCU geometry: one 8x8 block for a single component, else hmax x vmax blocks */
    unsigned mcu_w = nc == 1 ? 8 : 8 * hmax, mcu_h = nc == 1 ? 8 : 8 * vmax;
    unsigned mw = mcu_w / (unsigned)d, mh = mcu_h / (unsigned)d;
    unsigned ow = (W + (unsigned)d - 1) / (unsigned)d, oh = (H + (unsigned)d - 1) / (unsigned)d;
    if (mw == 0 || mh == 0 || (unsigned)x + (unsigned)w > ow || (unsigned)y + (unsigned)h > oh) {
        return 0;
    }
    size_t cols = (W + mcu_w - 1) / mcu_w, rows = (H + mcu_h - 1) / mcu_h;
    size_t c0 = (unsigned)x / mw, c1 = ((unsigned)x + (unsigned)w - 1) / mw + 1;
    size_t r0 = (unsigned)y / mh, r1 = ((unsigned)y + (unsigned)h - 1) / mh + 1;
    c0 = c0 > 0 ? c0 - 1 : 0;
    r0 = r0 > 0 ? r0 - 1 : 0;
    c1 = c1 < cols ? c1 + 1 : cols;
    r1 = r1 < rows ? r1 + 1 : rows;
    if (c0 == 0 && r0 == 0 && c1 == cols) {
        return 0; /* nothing to leave out that the ordinary path does not skip already */
    }
    size_t count = (c1 - c0) * (r1 - r0);
    if (count > MAX_SUB_MCUS) {
        return 0;
    }
    size_t *starts = malloc(2 * count * sizeof(size_t));
    if (starts == NULL) {
        return 0;
    }
    size_t *ends = starts + count;
    /* walk the entropy-coded data: MCU k runs from its start to the next RSTn (or EOI) */
    size_t k = 0, last = (r1 - 1) * cols + c1 - 1, pos = sos_end, begin = sos_end, got = 0, data = 0;
    int ok = 0;
    while (pos + 1 < n) {
        const unsigned char *ff = memchr(p + pos, 0xFF, n - 1 - pos);
        if (ff == NULL) {
            break;
        }
        size_t j = (size_t)(ff - p);
        unsigned m = p[j + 1];
        if (m == 0x00 || m == 0xFF) { /* stuffed zero, or a fill byte before a marker */
            pos = j + 1 + (m == 0x00);
            continue;
        }
        int rst = m >= 0xD0 && m <= 0xD7;
        if (!rst && m != 0xD9) {
            break;
        }
        if (rst && m != 0xD0 + (k & 7)) {
            break; /* restart markers out of sequence: not ours to fix */
        }
        size_t r = k / cols, c = k % cols;
        if (r >= r0 && r < r1 && c >= c0 && c < c1) {
            starts[got] = begin;
            ends[got] = j;
            data += j - begin;
            got++;
        }
        if (k == last) {
            ok = got == count;
            break;
        }
        if (!rst) {
            break; /* EOI before the box's last MCU */
        }
        k++;
        begin = pos = j + 2;
    }
    if (!ok) {
        free(starts);
        return 0;
    }
    size_t total = sos_end + data + 2 * count;  /* header, MCUs, count - 1 RSTn and one EOI */
    unsigned char *o = malloc(total);
    if (o == NULL) {
        free(starts);
        return 0;
    }
    memcpy(o, p, sos_end);
    unsigned sub_w = c1 == cols ? W - (unsigned)c0 * mcu_w : (unsigned)(c1 - c0) * mcu_w;
    unsigned sub_h = r1 == rows ? H - (unsigned)r0 * mcu_h : (unsigned)(r1 - r0) * mcu_h;
    o[sof + 5] = (unsigned char)(sub_h >> 8);
    o[sof + 6] = (unsigned char)(sub_h & 255);
    o[sof + 7] = (unsigned char)(sub_w >> 8);
    o[sof + 8] = (unsigned char)(sub_w & 255);
    size_t at = sos_end;
    for (size_t q = 0; q < count; q++) {
        memcpy(o + at, p + starts[q], ends[q] - starts[q]);
        at += ends[q] - starts[q];
        o[at++] = 0xFF;
        o[at++] = q + 1 < count ? (unsigned char)(0xD0 + (q & 7)) : 0xD9;
    }
    free(starts);
    *out = o;
    *out_len = at;
    *ox = (int)(c0 * mw);
    *oy = (int)(r0 * mh);
    return 1;
}

static PyObject *decode_region(PyObject *self, PyObject *args) {
    Py_buffer view;
    int x, y, w, h, d, fast;
    if (!PyArg_ParseTuple(args, "y*iiiiii", &view, &x, &y, &w, &h, &d, &fast)) {
        return NULL;
    }
    if (!(d == 1 || d == 2 || d == 4 || d == 8) || x < 0 || y < 0) {
        PyBuffer_Release(&view);
        PyErr_Format(PyExc_ValueError, "bad region (x=%d, y=%d, w=%d, h=%d) or reduction 1/%d", x, y, w, h, d);
        return NULL;
    }

    struct jpeg_decompress_struct cinfo;
    ErrorManager err;
    PyObject *volatile out = NULL;
    JDIMENSION x0 = 0, width = 0, out_w = 0, out_h = 0;
    PyThreadState *volatile state = NULL;
    unsigned char *volatile sub = NULL;
    size_t sub_len = 0;
    int ox = 0, oy = 0;

    memset(&cinfo, 0, sizeof(cinfo));
    cinfo.err = strict_errors(&err);

    if (setjmp(err.jump)) {
        if (state != NULL) {
            PyEval_RestoreThread(state);
        }
        jpeg_destroy_decompress(&cinfo);
        PyBuffer_Release(&view);
        free(sub);
        Py_XDECREF(out);
        PyErr_Format(PyExc_RuntimeError, "libjpeg: %s", err.message);
        return NULL;
    }
    jpeg_create_decompress(&cinfo);
    state = PyEval_SaveThread();
    {
        unsigned char *cut = NULL;
        if (restart_subimage((const unsigned char *)view.buf, (size_t)view.len, x, y, w, h, d, &cut, &sub_len,
                             &ox, &oy)) {
            sub = cut;
            x -= ox;
            y -= oy;
        }
    }
    if (sub != NULL) {
        jpeg_mem_src(&cinfo, sub, (unsigned long)sub_len);
    } else {
        jpeg_mem_src(&cinfo, (const unsigned char *)view.buf, (unsigned long)view.len);
    }
    jpeg_read_header(&cinfo, TRUE);
    if (cinfo.num_components != 1 && cinfo.num_components != 3) {
        strcpy(err.message, "only 1- or 3-component JPEGs (not CMYK/YCCK) are decoded by region");
        longjmp(err.jump, 1);
    }
    cinfo.out_color_space = JCS_RGB;
    cinfo.scale_num = 1;
    cinfo.scale_denom = (unsigned int)d;
    cinfo.dct_method = fast ? JDCT_IFAST : JDCT_ISLOW;
    cinfo.do_fancy_upsampling = fast ? FALSE : TRUE;
    jpeg_calc_output_dimensions(&cinfo);
    out_w = cinfo.output_width;
    out_h = cinfo.output_height;
    if (w <= 0 && (JDIMENSION)x < out_w) {
        w = (int)(out_w - (JDIMENSION)x);
    }
    if (h <= 0 && (JDIMENSION)y < out_h) {
        h = (int)(out_h - (JDIMENSION)y);
    }
    if (w <= 0 || h <= 0 || (JDIMENSION)x + (JDIMENSION)w > out_w || (JDIMENSION)y + (JDIMENSION)h > out_h) {
        PyEval_RestoreThread(state);
        state = NULL;
        jpeg_destroy_decompress(&cinfo);
        PyBuffer_Release(&view);
        free(sub);
        PyErr_Format(PyExc_ValueError, "region (x=%d, y=%d, w=%d, h=%d) does not fit the %ux%u image at 1/%d",
                     x + ox, y + oy, w, h, out_w, out_h, d);
        return NULL;
    }
    jpeg_start_decompress(&cinfo);
    /* One extra column each side: fancy upsampling treats a region's edge columns like the image's edge, so
     * the box's own edge pixels must lie inside the region to come out as in a whole-image decode. */
    x0 = x > 0 ? (JDIMENSION)x - 1 : 0;
    width = ((JDIMENSION)(x + w) < out_w ? (JDIMENSION)(x + w) + 1 : out_w) - x0;
    if (width < out_w) {
        jpeg_crop_scanline(&cinfo, &x0, &width);
    }

    PyEval_RestoreThread(state); /* allocate the result with the GIL held */
    state = NULL;
    size_t row_bytes = (size_t)width * 3;
    out = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)(row_bytes * (size_t)h));
    if (out == NULL) {
        jpeg_destroy_decompress(&cinfo);
        PyBuffer_Release(&view);
        free(sub);
        return NULL;
    }
    unsigned char *dst = (unsigned char *)PyByteArray_AS_STRING(out);
    state = PyEval_SaveThread();

    if (y > 0) {
        JDIMENSION skipped = jpeg_skip_scanlines(&cinfo, (JDIMENSION)y);
        if (skipped != (JDIMENSION)y) {
            strcpy(err.message, "could not skip to the first row of the region");
            longjmp(err.jump, 1);
        }
    }
    JDIMENSION end = (JDIMENSION)(y + h);
    while (cinfo.output_scanline < end) {
        JSAMPROW row = dst + (size_t)(cinfo.output_scanline - (JDIMENSION)y) * row_bytes;
        if (jpeg_read_scanlines(&cinfo, &row, 1) != 1) {
            strcpy(err.message, "premature end of data");
            longjmp(err.jump, 1);
        }
    }
    /* Stop here: the rows below the box are never decoded. jpeg_abort resets the object; destroy frees it. */
    jpeg_destroy_decompress(&cinfo);
    PyEval_RestoreThread(state);
    state = NULL;
    PyBuffer_Release(&view);
    free(sub);
    PyObject *result = Py_BuildValue("(OIiII)", out, width, h, x0 + (JDIMENSION)ox, (unsigned int)(y + oy));
    Py_DECREF(out);
    return result;
}


/* ---- lossless re-writing with a restart marker after every MCU ------------------------------------------- */

static PyObject *add_restarts(PyObject *self, PyObject *args) {
    Py_buffer view;
    if (!PyArg_ParseTuple(args, "y*", &view)) {
        return NULL;
    }
    struct jpeg_decompress_struct din;
    struct jpeg_compress_struct cout;
    ErrorManager err;
    unsigned char *volatile outbuf = NULL;
    unsigned long outsize = 0;
    volatile int have_out = 0;
    PyThreadState *volatile state = NULL;

    memset(&din, 0, sizeof(din));
    memset(&cout, 0, sizeof(cout));
    din.err = cout.err = strict_errors(&err);
    if (setjmp(err.jump)) {
        if (state != NULL) {
            PyEval_RestoreThread(state);
        }
        if (have_out) {
            jpeg_destroy_compress(&cout);
        }
        jpeg_destroy_decompress(&din);
        free(outbuf);
        PyBuffer_Release(&view);
        PyErr_Format(PyExc_RuntimeError, "libjpeg: %s", err.message);
        return NULL;
    }
    jpeg_create_decompress(&din);
    state = PyEval_SaveThread();
    jpeg_mem_src(&din, (const unsigned char *)view.buf, (unsigned long)view.len);
    for (int m = 0; m < 16; m++) {
        jpeg_save_markers(&din, JPEG_APP0 + m, 0xFFFF);
    }
    jpeg_save_markers(&din, JPEG_COM, 0xFFFF);
    jpeg_read_header(&din, TRUE);
    jvirt_barray_ptr *coefs = jpeg_read_coefficients(&din);
    jpeg_create_compress(&cout);
    have_out = 1;
    jpeg_mem_dest(&cout, (unsigned char **)&outbuf, &outsize);
    jpeg_copy_critical_parameters(&din, &cout);
    cout.restart_interval = 1;
    cout.optimize_coding = TRUE;
    jpeg_write_coefficients(&cout, coefs);
    for (jpeg_saved_marker_ptr m = din.marker_list; m != NULL; m = m->next) {
        /* the writer emits its own JFIF / Adobe markers: do not duplicate them (as jpegtran -copy all) */
        if (cout.write_JFIF_header && m->marker == JPEG_APP0 && m->data_length >= 5 &&
            memcmp(m->data, "JFIF", 5) == 0) {
            continue;
        }
        if (cout.write_Adobe_marker && m->marker == JPEG_APP0 + 14 && m->data_length >= 5 &&
            memcmp(m->data, "Adobe", 5) == 0) {
            continue;
        }
        jpeg_write_marker(&cout, m->marker, m->data, m->data_length);
    }
    jpeg_finish_compress(&cout);
    jpeg_finish_decompress(&din);
    jpeg_destroy_compress(&cout);
    jpeg_destroy_decompress(&din);
    PyEval_RestoreThread(state);
    state = NULL;
    PyBuffer_Release(&view);
    PyObject *result = PyBytes_FromStringAndSize((const char *)outbuf, (Py_ssize_t)outsize);
    free(outbuf);
    return result;
}

static PyObject *library_version(PyObject *self, PyObject *noargs) {
#define RECPACK_STR2(v) #v
#define RECPACK_STR(v) RECPACK_STR2(v)
    return PyUnicode_FromFormat("libjpeg-turbo %s (API %d)", RECPACK_STR(LIBJPEG_TURBO_VERSION), JPEG_LIB_VERSION);
}

static PyMethodDef methods[] = {
    {"decode_region", decode_region, METH_VARARGS,
     "decode_region(data, x, y, w, h, d, fast) -> (bytearray, width, height, x0, y0)"},
    {"add_restarts", add_restarts, METH_VARARGS,
     "add_restarts(data) -> bytes: the same JPEG, losslessly re-written with a restart marker after every MCU"},
    {"library_version", library_version, METH_NOARGS, "The libjpeg the module was built against."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_jpegregion", "Partial (region) JPEG decoding with libjpeg-turbo.", -1, methods,
};

PyMODINIT_FUNC PyInit__jpegregion(void) { return PyModule_Create(&module); }
