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
 * The GIL is released while libjpeg runs. Errors: ValueError (a bad box or d), RuntimeError (libjpeg's
 * message; callers map it to DecodeError). CMYK/YCCK JPEGs raise RuntimeError: libjpeg cannot convert
 * them to RGB, callers fall back to a whole-image decoder.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <setjmp.h>
#include <stdio.h>
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

    memset(&cinfo, 0, sizeof(cinfo));
    cinfo.err = jpeg_std_error(&err.pub);
    err.pub.error_exit = on_error;
    err.pub.emit_message = on_message;
    err.message[0] = '\0';

    if (setjmp(err.jump)) {
        if (state != NULL) {
            PyEval_RestoreThread(state);
        }
        jpeg_destroy_decompress(&cinfo);
        PyBuffer_Release(&view);
        Py_XDECREF(out);
        PyErr_Format(PyExc_RuntimeError, "libjpeg: %s", err.message);
        return NULL;
    }
    jpeg_create_decompress(&cinfo);
    state = PyEval_SaveThread();
    jpeg_mem_src(&cinfo, (const unsigned char *)view.buf, (unsigned long)view.len);
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
        PyErr_Format(PyExc_ValueError, "region (x=%d, y=%d, w=%d, h=%d) does not fit the %ux%u image at 1/%d",
                     x, y, w, h, out_w, out_h, d);
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
    PyObject *result = Py_BuildValue("(OIiII)", out, width, h, x0, (unsigned int)y);
    Py_DECREF(out);
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
    {"library_version", library_version, METH_NOARGS, "The libjpeg the module was built against."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_jpegregion", "Partial (region) JPEG decoding with libjpeg-turbo.", -1, methods,
};

PyMODINIT_FUNC PyInit__jpegregion(void) { return PyModule_Create(&module); }
