/* The per-request half of appserver.metrics.recorder.Recorder, in C.
 *
 * Why C: a request's start and end are about eight stores into the worker's shared counters.
 * Through memoryviews each store is a generic buffer operation (index conversion, format
 * dispatch, boxing), about 10,000 instructions per request in all (callgrind): 12% of a compiled
 * worker's hello-world request, against a 3% budget.  Here the same stores are plain 8-byte
 * writes, about 300 instructions.  mypyc cannot help: it compiles the calls, but a memoryview
 * store stays a generic one.
 *
 * The layout (slot numbers, histogram bounds, method names) is not repeated here: the Python
 * side passes it in (appserver/metrics/shm.py is its one declaration), and the constructor
 * checks every slot it will write against the buffer's size.  recorder.py is the reference
 * implementation and the pure-Python build's; tests/metrics run both.
 *
 * Concurrency (see shm.py): one writer process; its threads hold the GIL while in here, so a
 * read-modify-write of a slot is not interrupted.  Each slot is written with one aligned 8-byte
 * relaxed atomic store, so the master never reads a torn value, and the current request's start
 * time is cleared before, and set with release order after, the fields it guards, so that a
 * reader that sees the same start time before and after its read has read whole fields.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#define MAX_METHODS 16
#define MAX_BUCKETS 32

typedef struct {
    PyObject_HEAD
    Py_buffer view;
    int has_view;
    unsigned char *base;
    Py_ssize_t begun, duration_sum, request_bytes, response_bytes;
    Py_ssize_t current_request, current_path, path_bytes, current_start;
    Py_ssize_t requests, classes, bins;
    Py_ssize_t n_methods;          /* the last is "other" */
    PyObject *methods[MAX_METHODS];
    Py_ssize_t n_buckets;
    double buckets[MAX_BUCKETS];
    PyObject *request_method_key, *content_length_key;
} Fast;

static inline uint64_t *slot_u64(Fast *self, Py_ssize_t slot) {
    return (uint64_t *)(self->base + slot * 8);
}

static inline double *slot_f64(Fast *self, Py_ssize_t slot) {
    return (double *)(self->base + slot * 8);
}

static inline void add_u64(Fast *self, Py_ssize_t slot, uint64_t n) {
    uint64_t *p = slot_u64(self, slot);
    __atomic_store_n(p, __atomic_load_n(p, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}

static inline void add_f64(Fast *self, Py_ssize_t slot, double x) {
    uint64_t *p = slot_u64(self, slot);
    uint64_t bits = __atomic_load_n(p, __ATOMIC_RELAXED);
    double value;
    memcpy(&value, &bits, 8);
    value += x;
    memcpy(&bits, &value, 8);
    __atomic_store_n(p, bits, __ATOMIC_RELAXED);
}

static inline void store_f64(Fast *self, Py_ssize_t slot, double x, int order) {
    uint64_t bits;
    memcpy(&bits, &x, 8);
    __atomic_store_n(slot_u64(self, slot), bits, order);
}

/* The method's index in METHODS (identity first: the parser hands out interned names). */
static Py_ssize_t method_index(Fast *self, PyObject *method) {
    Py_ssize_t other = self->n_methods - 1;
    if (method == NULL || !PyUnicode_Check(method))
        return other;
    for (Py_ssize_t i = 0; i < other; i++)
        if (self->methods[i] == method)
            return i;
    for (Py_ssize_t i = 0; i < other; i++) {
        int equal = PyUnicode_Compare(self->methods[i], method);
        if (equal == 0)
            return i;
        if (equal == -1 && PyErr_Occurred())
            PyErr_Clear();
    }
    return other;
}

/* 0-4 for a status "1xx".."5xx", 5 ("none": no response) for None, "" or anything else. */
static Py_ssize_t status_class(PyObject *status) {
    if (status == NULL || !PyUnicode_Check(status) || PyUnicode_GET_LENGTH(status) == 0)
        return 5;
    Py_UCS4 first = PyUnicode_READ_CHAR(status, 0);
    return (first >= '1' && first <= '5') ? (Py_ssize_t)(first - '1') : 5;
}

static Py_ssize_t duration_bin(Fast *self, double duration) {
    /* bisect_left: the first bound >= duration; n_buckets (+Inf) when none is. */
    Py_ssize_t lo = 0, hi = self->n_buckets;
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (self->buckets[mid] < duration)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static double monotonic_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);  /* time.monotonic()'s clock on Linux */
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void record_end(Fast *self, PyObject *method, PyObject *status, uint64_t request_bytes,
                       uint64_t response_bytes, double duration) {
    Py_ssize_t slot = self->requests
        + (method_index(self, method) * self->classes + status_class(status)) * self->bins
        + duration_bin(self, duration);
    add_u64(self, slot, 1);
    add_f64(self, self->duration_sum, duration);
    add_u64(self, self->response_bytes, response_bytes);
    if (request_bytes)
        add_u64(self, self->request_bytes, request_bytes);
}

/* ---- methods ------------------------------------------------------------------------------ */

static PyObject *Fast_begin(Fast *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "begin(method, target)");
        return NULL;
    }
    add_u64(self, self->begun, 1);
    PyObject *target = args[1];
    if (target == Py_None)
        Py_RETURN_NONE;
    if (!PyBytes_Check(target)) {
        PyErr_SetString(PyExc_TypeError, "begin: target must be bytes or None");
        return NULL;
    }
    store_f64(self, self->current_start, 0.0, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);  /* cleared before the fields change */
    __atomic_store_n(slot_u64(self, self->current_request),
                     (uint64_t)method_index(self, args[0]), __ATOMIC_RELAXED);
    Py_ssize_t length = PyBytes_GET_SIZE(target);
    if (length > self->path_bytes)
        length = self->path_bytes;
    unsigned char *path = self->base + self->current_path * 8;
    memcpy(path, PyBytes_AS_STRING(target), (size_t)length);
    memset(path + length, 0, (size_t)(self->path_bytes - length));
    store_f64(self, self->current_start, monotonic_now(), __ATOMIC_RELEASE);
    Py_RETURN_NONE;
}

static int as_u64(PyObject *value, uint64_t *out) {
    unsigned long long n = PyLong_AsUnsignedLongLong(value);
    if (n == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    *out = (uint64_t)n;
    return 0;
}

static PyObject *Fast_done(Fast *self, PyObject *const *args, Py_ssize_t nargs) {
    /* done(method, status, request_bytes, response_bytes, duration) */
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError,
                        "done(method, status, request_bytes, response_bytes, duration)");
        return NULL;
    }
    uint64_t request_bytes, response_bytes;
    if (as_u64(args[2], &request_bytes) < 0 || as_u64(args[3], &response_bytes) < 0)
        return NULL;
    double duration = PyFloat_AsDouble(args[4]);
    if (duration == -1.0 && PyErr_Occurred())
        return NULL;
    record_end(self, args[0], args[1], request_bytes, response_bytes, duration);
    Py_RETURN_NONE;
}

/* The environ's CONTENT_LENGTH as a count: "" or absent is 0, as in recorder.py. */
static int content_length(PyObject *value, uint64_t *out) {
    *out = 0;
    if (value == NULL || !PyUnicode_Check(value) || PyUnicode_GET_LENGTH(value) == 0)
        return 0;
    PyObject *number = PyLong_FromUnicodeObject(value, 10);
    if (number == NULL)
        return -1;
    int result = as_u64(number, out);
    Py_DECREF(number);
    return result;
}

static PyObject *Fast_done_environ(Fast *self, PyObject *const *args, Py_ssize_t nargs) {
    /* done_environ(environ, status, length, duration) */
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "done_environ(environ, status, length, duration)");
        return NULL;
    }
    PyObject *environ = args[0], *method, *length_text;
    uint64_t response_bytes, request_bytes;
    if (as_u64(args[2], &response_bytes) < 0)
        return NULL;
    double duration = PyFloat_AsDouble(args[3]);
    if (duration == -1.0 && PyErr_Occurred())
        return NULL;
    if (PyDict_Check(environ)) {
        method = PyDict_GetItemWithError(environ, self->request_method_key);  /* borrowed */
        if (method == NULL && PyErr_Occurred())
            return NULL;
        length_text = PyDict_GetItemWithError(environ, self->content_length_key);
        if (length_text == NULL && PyErr_Occurred())
            return NULL;
        if (content_length(length_text, &request_bytes) < 0)
            return NULL;
        record_end(self, method, args[1], request_bytes, response_bytes, duration);
        Py_RETURN_NONE;
    }
    /* Another mapping (a framework's environ view): its get(), as recorder.py does. */
    method = PyObject_CallMethod(environ, "get", "O", self->request_method_key);
    if (method == NULL)
        return NULL;
    length_text = PyObject_CallMethod(environ, "get", "O", self->content_length_key);
    if (length_text == NULL) {
        Py_DECREF(method);
        return NULL;
    }
    int failed = content_length(length_text, &request_bytes);
    Py_DECREF(length_text);
    if (failed < 0) {
        Py_DECREF(method);
        return NULL;
    }
    record_end(self, method, args[1], request_bytes, response_bytes, duration);
    Py_DECREF(method);
    Py_RETURN_NONE;
}

/* ---- construction ------------------------------------------------------------------------- */

static int Fast_init(Fast *self, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"buffer", "slots", "methods", "buckets", NULL};
    PyObject *buffer, *slots, *methods, *buckets;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO!O!O!", keywords, &buffer,
                                     &PyDict_Type, &slots, &PyTuple_Type, &methods,
                                     &PyTuple_Type, &buckets))
        return -1;
    if (self->has_view) {
        PyErr_SetString(PyExc_RuntimeError, "already initialised");
        return -1;
    }
    struct { const char *name; Py_ssize_t *field; } names[] = {
        {"BEGUN", &self->begun}, {"DURATION_SUM", &self->duration_sum},
        {"REQUEST_BYTES", &self->request_bytes}, {"RESPONSE_BYTES", &self->response_bytes},
        {"CURRENT_REQUEST", &self->current_request}, {"CURRENT_PATH", &self->current_path},
        {"PATH_BYTES", &self->path_bytes}, {"CURRENT_START", &self->current_start},
        {"REQUESTS", &self->requests}, {"CLASSES", &self->classes}, {"BINS", &self->bins},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        PyObject *value = PyDict_GetItemString(slots, names[i].name);  /* borrowed */
        if (value == NULL) {
            PyErr_Format(PyExc_KeyError, "slots: %s is missing", names[i].name);
            return -1;
        }
        *names[i].field = PyLong_AsSsize_t(value);
        if (*names[i].field < 0) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_ValueError, "slots: %s is negative", names[i].name);
            return -1;
        }
    }
    self->n_methods = PyTuple_GET_SIZE(methods);
    self->n_buckets = PyTuple_GET_SIZE(buckets);
    if (self->n_methods < 1 || self->n_methods > MAX_METHODS
            || self->n_buckets > MAX_BUCKETS || self->bins != self->n_buckets + 1
            || self->classes != 6 || self->path_bytes % 8) {
        PyErr_SetString(PyExc_ValueError, "layout does not match this module's assumptions");
        return -1;
    }
    for (Py_ssize_t i = 0; i < self->n_buckets; i++) {
        self->buckets[i] = PyFloat_AsDouble(PyTuple_GET_ITEM(buckets, i));
        if (self->buckets[i] == -1.0 && PyErr_Occurred())
            return -1;
    }
    for (Py_ssize_t i = 0; i < self->n_methods; i++) {
        PyObject *name = PyTuple_GET_ITEM(methods, i);
        if (!PyUnicode_Check(name)) {
            PyErr_SetString(PyExc_TypeError, "methods must be str");
            return -1;
        }
        Py_INCREF(name);
        PyUnicode_InternInPlace(&name);
        self->methods[i] = name;
    }
    self->request_method_key = PyUnicode_InternFromString("REQUEST_METHOD");
    self->content_length_key = PyUnicode_InternFromString("CONTENT_LENGTH");
    if (self->request_method_key == NULL || self->content_length_key == NULL)
        return -1;
    if (PyObject_GetBuffer(buffer, &self->view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0)
        return -1;
    self->has_view = 1;
    self->base = (unsigned char *)self->view.buf;
    Py_ssize_t last = self->requests + self->n_methods * self->classes * self->bins;
    Py_ssize_t highest[] = {self->begun, self->duration_sum, self->request_bytes,
                            self->response_bytes, self->current_request, self->current_start,
                            self->current_path + self->path_bytes / 8 - 1, last - 1};
    for (size_t i = 0; i < sizeof highest / sizeof highest[0]; i++) {
        if ((highest[i] + 1) * 8 > self->view.len) {
            PyErr_SetString(PyExc_ValueError, "a slot lies beyond the buffer");
            return -1;
        }
    }
    if (((uintptr_t)self->base) % 8) {
        PyErr_SetString(PyExc_ValueError, "the buffer is not 8-byte aligned");
        return -1;
    }
    return 0;
}

static PyObject *Fast_release(Fast *self, PyObject *Py_UNUSED(ignored)) {
    if (self->has_view) {
        PyBuffer_Release(&self->view);
        self->has_view = 0;
        self->base = NULL;
    }
    Py_RETURN_NONE;
}

static void Fast_dealloc(Fast *self) {
    Fast_release(self, NULL);
    for (Py_ssize_t i = 0; i < self->n_methods; i++)
        Py_XDECREF(self->methods[i]);
    Py_XDECREF(self->request_method_key);
    Py_XDECREF(self->content_length_key);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *guarded(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                         PyObject *(*method)(Fast *, PyObject *const *, Py_ssize_t)) {
    if (!((Fast *)self)->has_view) {
        PyErr_SetString(PyExc_ValueError, "the counters were released");
        return NULL;
    }
    return method((Fast *)self, args, nargs);
}

static PyObject *begin(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    return guarded(self, args, nargs, Fast_begin);
}
static PyObject *done(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    return guarded(self, args, nargs, Fast_done);
}
static PyObject *done_environ(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    return guarded(self, args, nargs, Fast_done_environ);
}

static PyMethodDef Fast_methods[] = {
    {"begin", (PyCFunction)(void (*)(void))begin, METH_FASTCALL,
     "begin(method, target): a request begins (target None: before its head was read)"},
    {"done", (PyCFunction)(void (*)(void))done, METH_FASTCALL,
     "done(method, status, request_bytes, response_bytes, duration): a request ends"},
    {"done_environ", (PyCFunction)(void (*)(void))done_environ, METH_FASTCALL,
     "done_environ(environ, status, length, duration): a request described by its environ ends"},
    {"release", (PyCFunction)Fast_release, METH_NOARGS, "let go of the buffer"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject FastType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "appserver.metrics._fastrecord.FastRecorder",
    .tp_basicsize = sizeof(Fast),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "FastRecorder(buffer, slots, methods, buckets): Recorder's per-request calls",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Fast_init,
    .tp_dealloc = (destructor)Fast_dealloc,
    .tp_methods = Fast_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fastrecord",
    "The per-request stores of appserver.metrics.recorder, in C (see the source's notes).",
    -1, NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastrecord(void) {
    if (PyType_Ready(&FastType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&FastType);
    if (PyModule_AddObject(m, "FastRecorder", (PyObject *)&FastType) < 0) {
        Py_DECREF(&FastType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
