//! Zero-copy views of Python objects that export the buffer protocol (numpy arrays,
//! `bytes`, `bytearray`, `memoryview`, `mmap`, ...).
//!
//! PyO3 offers `PyBuffer` only for the limited API of Python 3.11 and later, and this
//! module is built for the stable ABI of 3.9 (one wheel for every CPython since). The
//! buffer functions and the `Py_buffer` layout used here have been exported, unchanged,
//! by every CPython since 3.3 and joined the stable ABI in 3.11, so they are declared
//! here directly.

use std::ffi::{c_char, c_int, c_void};
use std::fmt::Display;
use std::pin::Pin;

use pyo3::ffi;
use pyo3::prelude::*;

use crate::errors::invalid_input;

/// `Py_buffer` from CPython's `object.h` (layout fixed since 3.3, stable ABI since 3.11).
#[repr(C)]
struct RawBuffer {
    buf: *mut c_void,
    obj: *mut ffi::PyObject,
    len: ffi::Py_ssize_t,
    itemsize: ffi::Py_ssize_t,
    readonly: c_int,
    ndim: c_int,
    format: *mut c_char,
    shape: *mut ffi::Py_ssize_t,
    strides: *mut ffi::Py_ssize_t,
    suboffsets: *mut ffi::Py_ssize_t,
    internal: *mut c_void,
}

impl RawBuffer {
    const fn empty() -> Self {
        Self {
            buf: std::ptr::null_mut(),
            obj: std::ptr::null_mut(),
            len: 0,
            itemsize: 0,
            readonly: 0,
            ndim: 0,
            format: std::ptr::null_mut(),
            shape: std::ptr::null_mut(),
            strides: std::ptr::null_mut(),
            suboffsets: std::ptr::null_mut(),
            internal: std::ptr::null_mut(),
        }
    }
}

/// `PyBUF_ND | PyBUF_STRIDES`: shape and strides, so that the contiguity check below sees
/// the real layout instead of the exporter refusing with its own message. Writability is
/// not requested either: a read-only output gets Cascade's own, clearer error.
const PYBUF_STRIDES: c_int = 0x0010 | 0x0008;

unsafe extern "C" {
    fn PyObject_GetBuffer(obj: *mut ffi::PyObject, view: *mut RawBuffer, flags: c_int) -> c_int;
    fn PyBuffer_Release(view: *mut RawBuffer);
    fn PyBuffer_IsContiguous(view: *const RawBuffer, order: c_char) -> c_int;
}

/// A buffer held on a Python object: the object cannot be resized or freed while this
/// lives, so its bytes may be read (or written) with the GIL released.
pub struct HostBuffer {
    // Pinned: exporters may keep pointers into the view they filled (e.g. shape arrays
    // of a memoryview refer to its own storage), so it must not move until released.
    raw: Pin<Box<RawBuffer>>,
}

// SAFETY: the view only refers to memory kept alive by the exporter until release, and
// release happens under the GIL (see Drop); the bytes themselves are plain memory.
unsafe impl Send for HostBuffer {}
// SAFETY: shared access only hands out `&[u8]`, as above.
unsafe impl Sync for HostBuffer {}

/// Which way the bytes will flow.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The bytes are only read (a block going into the store).
    Read,
    /// The bytes are overwritten (an output buffer).
    Write,
}

impl HostBuffer {
    /// Takes a buffer on `obj`; `what` names the argument in errors. Fails with a clear
    /// error for objects without the buffer protocol, non-C-contiguous layouts, and
    /// (for [`Access::Write`]) read-only buffers.
    pub fn take(obj: &Bound<'_, PyAny>, access: Access, what: &dyn Display) -> PyResult<Self> {
        let mut raw = Box::pin(RawBuffer::empty());
        // SAFETY: `obj` is a live object (we hold the GIL through `obj`'s token) and
        // `raw` points to writable memory of the right layout that stays put until
        // PyBuffer_Release in Drop.
        let status = unsafe {
            PyObject_GetBuffer(obj.as_ptr(), &mut *raw.as_mut().get_mut(), PYBUF_STRIDES)
        };
        if status != 0 {
            let cause = PyErr::take(obj.py());
            let type_name = obj
                .get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_else(|_| "?".to_string());
            let err = invalid_input(format!(
                "{what} must be a C-contiguous buffer (numpy array, bytes, bytearray, memoryview); \
                 got {type_name}"
            ));
            if let Some(cause) = cause {
                err.set_cause(obj.py(), Some(cause));
            }
            return Err(err);
        }
        let buffer = Self { raw };
        // SAFETY: the view was filled by a successful PyObject_GetBuffer.
        let c_contiguous = unsafe { PyBuffer_IsContiguous(&*buffer.raw, b'C' as c_char) } == 1;
        if !c_contiguous {
            return Err(invalid_input(format!(
                "{what} is not C-contiguous: its bytes are not one dense row-major range \
                 (pass numpy.ascontiguousarray(x) or a copy)"
            )));
        }
        if access == Access::Write && buffer.raw.readonly != 0 {
            return Err(invalid_input(format!(
                "{what} is read-only and cannot receive a block (bytes objects and \
                 non-writeable arrays cannot be written; pass a bytearray or a writable array)"
            )));
        }
        if buffer.raw.len < 0 || (buffer.raw.buf.is_null() && buffer.raw.len > 0) {
            return Err(invalid_input(format!("{what} exports an invalid buffer")));
        }
        Ok(buffer)
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.raw.len as usize
    }

    /// The bytes, read-only.
    ///
    /// Other Python threads may still write through their own references to the same
    /// object while the GIL is released; as with any C extension, a block written while
    /// it is being stored or read back is the caller's race, never a memory error here.
    pub fn bytes(&self) -> &[u8] {
        if self.raw.len == 0 {
            return &[];
        }
        // SAFETY: `take` checked that `buf` is non-null and that `len` bytes form one
        // C-contiguous range, which the exporter keeps alive and unmoved until release.
        unsafe { std::slice::from_raw_parts(self.raw.buf as *const u8, self.len()) }
    }

    /// The bytes, writable. Only for buffers taken with [`Access::Write`].
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        if self.raw.len == 0 {
            return &mut [];
        }
        // SAFETY: as in `bytes`, and `take` checked that the exporter allows writes;
        // `&mut self` keeps this the only Rust view of these bytes.
        unsafe { std::slice::from_raw_parts_mut(self.raw.buf as *mut u8, self.len()) }
    }
}

impl Drop for HostBuffer {
    fn drop(&mut self) {
        Python::attach(|_| {
            // SAFETY: the view was filled by a successful PyObject_GetBuffer (a failed one
            // never builds a HostBuffer) and is released exactly once, with the GIL held.
            unsafe { PyBuffer_Release(&mut *self.raw.as_mut().get_mut()) };
        });
    }
}
