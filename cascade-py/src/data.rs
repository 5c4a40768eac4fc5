//! What a block argument is: host bytes (buffer protocol, or DLPack on the CPU, as torch
//! CPU tensors give) or a range of CUDA device memory (`__cuda_array_interface__`, or
//! DLPack on a CUDA device, as torch CUDA tensors give).

use std::ffi::{CStr, c_void};
use std::fmt::Display;

use pyo3::prelude::*;
use pyo3::types::{PyCapsule, PyDict, PyList, PyString, PyTuple};

use crate::buffer::{Access, HostBuffer};
use crate::errors::invalid_input;

/// Host bytes of one argument, kept valid by what is held here.
pub enum Host {
    /// Through the buffer protocol.
    Buffer(HostBuffer),
    /// Through a DLPack capsule on the CPU (or pinned host memory).
    DlPack(DlPackHost),
}

impl Host {
    /// The bytes, read-only.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Host::Buffer(b) => b.bytes(),
            Host::DlPack(d) => d.bytes(),
        }
    }

    /// The bytes, writable (only for arguments taken with [`Access::Write`]).
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        match self {
            Host::Buffer(b) => b.bytes_mut(),
            Host::DlPack(d) => d.bytes_mut(),
        }
    }

    /// First byte's address and the length, to check outputs for overlap.
    pub fn span(&self) -> (usize, usize) {
        let bytes = self.bytes();
        (bytes.as_ptr() as usize, bytes.len())
    }
}

/// A dense range of CUDA device memory.
#[derive(Clone, Copy, Debug)]
pub struct DeviceRange {
    /// Device address of the first byte.
    pub ptr: u64,
    /// Length in bytes.
    pub len: usize,
    /// CUDA stream to synchronize before the bytes are read or written: the one
    /// `__cuda_array_interface__` names (the legacy default stream when a v2 producer
    /// names none), or the legacy default stream for DLPack, which the producer orders
    /// its own work before; None when the producer says no sync is needed.
    #[cfg_attr(not(feature = "gpu"), allow(dead_code))]
    pub stream: Option<u64>,
    /// The CUDA device the memory is on, where the producer says (DLPack); None for
    /// `__cuda_array_interface__`, which names none (the driver is asked instead).
    #[cfg_attr(not(feature = "gpu"), allow(dead_code))]
    pub device: Option<usize>,
}

/// Device memory named by a Python object, kept alive while the range is in use.
pub struct Device {
    /// The range.
    pub range: DeviceRange,
    // The exporter, or its DLPack capsule.
    _owner: Py<PyAny>,
}

/// One block argument.
pub enum Data {
    /// Host memory.
    Host(Host),
    /// CUDA device memory.
    Device(Device),
}

/// Classifies `obj` (a block to store when `access` is Read, an output when Write).
pub fn take(obj: &Bound<'_, PyAny>, access: Access, what: &str) -> PyResult<Data> {
    take_ordered(obj, access, &what, Order::DlPackFirst)
}

/// Which device protocol to try first.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Order {
    /// DLPack first: `__dlpack__(stream=1)` makes the producer order its current
    /// stream's pending work before the legacy default stream, which is synchronized
    /// before the copy.
    DlPackFirst,
    /// `__cuda_array_interface__` first: for the later items of a batch, once the first
    /// item's DLPack export has ordered the producer's current stream (torch orders by
    /// the current stream, not per tensor) and at a fifth of torch's export cost.
    InterfaceFirst,
}

fn take_ordered(
    obj: &Bound<'_, PyAny>,
    access: Access,
    what: &dyn Display,
    order: Order,
) -> PyResult<Data> {
    // The buffer protocol first: numpy arrays, the common case, answer it directly.
    let buffer_error = match HostBuffer::take(obj, access, what) {
        Ok(buffer) => return Ok(Data::Host(Host::Buffer(buffer))),
        Err(e)
            if e.is_instance_of::<pyo3::exceptions::PyTypeError>(obj.py())
                || is_no_buffer(&e, obj.py()) =>
        {
            e
        }
        Err(e) => return Err(e),
    };
    // DLPack before __cuda_array_interface__: torch exports the latter as v2, with no
    // stream, while its __dlpack__(stream=...) orders the producer's pending work first.
    if order == Order::InterfaceFirst {
        if let Some(device) = cuda_array_interface(obj, access, what)? {
            return Ok(Data::Device(device));
        }
    }
    if let Some(data) = dlpack(obj, access, what)? {
        return Ok(data);
    }
    if let Some(device) = cuda_array_interface(obj, access, what)? {
        return Ok(Data::Device(device));
    }
    Err(buffer_error)
}

/// Host bytes only: for hashing and for calls that take host memory.
pub fn take_host(obj: &Bound<'_, PyAny>, access: Access, what: &dyn Display) -> PyResult<Host> {
    match take_ordered(obj, access, what, Order::DlPackFirst)? {
        Data::Host(host) => Ok(host),
        Data::Device(_) => Err(crate::errors::kind_error(
            cascade::ErrorKind::Unsupported,
            format!(
                "{what} is in GPU memory; this call takes host memory (pass tensor.cpu(); \
                 CascadeStore.put/get with a GPU tier and GPUBackend take CUDA tensors)"
            ),
        )),
    }
}

/// One block argument of a store call: whole, or a list (or tuple) of pieces that are
/// concatenated in order (an engine's paged KV cache keeps each layer's K and V in
/// separate tensors). The pieces of one block are all host memory or all device memory.
pub enum Block {
    /// One buffer or tensor.
    Whole(Data),
    /// Host buffers, concatenated.
    HostPieces(Vec<Host>),
    /// CUDA device ranges, concatenated.
    DevicePieces(Vec<Device>),
}

impl Block {
    /// Whether any of the block is in device memory.
    fn on_device(&self) -> bool {
        matches!(self, Block::Whole(Data::Device(_)) | Block::DevicePieces(_))
    }
}

/// Classifies `obj` as a block: a list or tuple is the block's pieces, anything else is
/// taken whole as [`take`] does.
pub fn take_block(obj: &Bound<'_, PyAny>, access: Access, what: &str) -> PyResult<Block> {
    take_block_ordered(obj, access, &what, Order::DlPackFirst)
}

fn take_block_ordered(
    obj: &Bound<'_, PyAny>,
    access: Access,
    what: &dyn Display,
    order: Order,
) -> PyResult<Block> {
    if !(obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>()) {
        return take_ordered(obj, access, what, order).map(Block::Whole);
    }
    let mut host = Vec::new();
    let mut device = Vec::new();
    let mut order = order;
    for (j, item) in obj.try_iter()?.enumerate() {
        match take_ordered(&item?, access, &format_args!("{what}[{j}]"), order)? {
            Data::Host(h) => host.push(h),
            Data::Device(d) => {
                // As in a batch: the first DLPack export ordered the producer's stream.
                order = Order::InterfaceFirst;
                device.push(d);
            }
        }
        if !host.is_empty() && !device.is_empty() {
            return Err(invalid_input(format!(
                "the pieces of {what} are partly in host and partly in device memory; \
                 the pieces of one block must all be host buffers or all CUDA tensors"
            )));
        }
    }
    Ok(if device.is_empty() {
        Block::HostPieces(host)
    } else {
        Block::DevicePieces(device)
    })
}

/// Whether `err` is the "does not export a buffer" failure, which lets the other
/// protocols be tried (and not a layout or writability complaint about a real buffer).
fn is_no_buffer(err: &PyErr, py: Python<'_>) -> bool {
    err.value(py)
        .getattr("__cause__")
        .map(|cause| cause.is_instance_of::<pyo3::exceptions::PyTypeError>())
        .unwrap_or(false)
}

fn cuda_array_interface(
    obj: &Bound<'_, PyAny>,
    access: Access,
    what: &dyn Display,
) -> PyResult<Option<Device>> {
    let Ok(iface) = obj.getattr("__cuda_array_interface__") else {
        return Ok(None);
    };
    let iface = iface
        .cast::<PyDict>()
        .map_err(|_| invalid_input(format!("{what}.__cuda_array_interface__ is not a dict")))?;
    let field = |key: &str| -> PyResult<Bound<'_, PyAny>> {
        iface
            .get_item(key)?
            .ok_or_else(|| invalid_input(format!("{what}.__cuda_array_interface__ lacks {key:?}")))
    };
    let shape: Vec<i64> = field("shape")?.extract()?;
    let typestr: String = field("typestr")?.extract()?;
    let (ptr, readonly): (u64, bool) = field("data")?.extract()?;
    let itemsize = typestr
        .get(2..)
        .and_then(|digits| digits.parse::<i64>().ok())
        .filter(|&n| n > 0)
        .ok_or_else(|| invalid_input(format!("{what} has an unknown typestr {typestr:?}")))?;
    let strides: Option<Vec<i64>> = match iface.get_item("strides")? {
        Some(s) if !s.is_none() => Some(s.extract()?),
        _ => None,
    };
    let len = dense_len(&shape, strides.as_deref(), itemsize, 1, what)?;
    if access == Access::Write && readonly {
        return Err(invalid_input(format!("{what} is read-only device memory")));
    }
    // v3 names the producer's stream (None: no sync needed); v2 producers name none, so
    // the legacy default stream, which most of them use, is synchronized.
    let stream = match iface.get_item("stream")? {
        Some(s) if s.is_none() => None,
        Some(s) => Some(s.extract::<u64>()?),
        None => Some(LEGACY_DEFAULT_STREAM),
    };
    Ok(Some(Device {
        range: DeviceRange {
            ptr,
            len,
            stream,
            device: None,
        },
        _owner: obj.clone().unbind(),
    }))
}

/// Length in bytes of an array of `shape`, after checking that it is dense in C order.
/// `stride_unit` is the size in bytes of one stride step (1 for byte strides, as in
/// `__cuda_array_interface__`; the item size for DLPack's element strides).
fn dense_len(
    shape: &[i64],
    strides: Option<&[i64]>,
    itemsize: i64,
    stride_unit: i64,
    what: &dyn Display,
) -> PyResult<usize> {
    if shape.iter().any(|&d| d < 0) {
        return Err(invalid_input(format!("{what} has a negative dimension")));
    }
    let count = shape
        .iter()
        .try_fold(1i64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| invalid_input(format!("{what} is too large")))?;
    if let Some(strides) = strides {
        if strides.len() != shape.len() {
            return Err(invalid_input(format!(
                "{what} has {} strides for {} dimensions",
                strides.len(),
                shape.len()
            )));
        }
        let mut expected = itemsize;
        for (&dim, &stride) in shape.iter().zip(strides).rev() {
            if dim > 1 && stride * stride_unit != expected {
                return Err(invalid_input(format!(
                    "{what} is not C-contiguous: its bytes are not one dense row-major range \
                     (call .contiguous() first)"
                )));
            }
            expected *= dim.max(1);
        }
    }
    count
        .checked_mul(itemsize)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| invalid_input(format!("{what} is too large")))
}

// DLPack's C structs (dlpack.h, the unversioned `DLManagedTensor` that `__dlpack__()`
// returns when no `max_version` is asked for).
#[repr(C)]
struct DlDevice {
    device_type: i32,
    device_id: i32,
}

#[repr(C)]
struct DlDataType {
    code: u8,
    bits: u8,
    lanes: u16,
}

#[repr(C)]
struct DlTensor {
    data: *mut c_void,
    device: DlDevice,
    ndim: i32,
    dtype: DlDataType,
    shape: *const i64,
    strides: *const i64,
    byte_offset: u64,
}

#[repr(C)]
struct DlManagedTensor {
    dl_tensor: DlTensor,
    manager_ctx: *mut c_void,
    deleter: Option<unsafe extern "C" fn(*mut DlManagedTensor)>,
}

const DL_CPU: i32 = 1;
const DL_CUDA: i32 = 2;
const DL_CUDA_HOST: i32 = 3;
const DLTENSOR: &CStr = c"dltensor";
/// `__dlpack__(stream=1)`: the producer orders its work before the legacy default
/// stream, which is then synchronized before the copy.
const LEGACY_DEFAULT_STREAM: u64 = 1;

/// Host bytes lent through a DLPack capsule; the capsule is not consumed, so the
/// producer frees the tensor when the capsule is collected.
pub struct DlPackHost {
    ptr: *mut u8,
    len: usize,
    _capsule: Py<PyAny>,
}

// SAFETY: the pointer is host memory kept alive by the capsule, which is only dropped
// with the GIL held (pyo3 defers decrefs otherwise); the bytes are plain memory.
unsafe impl Send for DlPackHost {}
// SAFETY: shared access only hands out `&[u8]`.
unsafe impl Sync for DlPackHost {}

impl DlPackHost {
    fn bytes(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `dlpack` checked that `len` bytes from `ptr` are the tensor's dense
        // host storage, alive while the capsule is held.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        if self.len == 0 {
            return &mut [];
        }
        // SAFETY: as in `bytes`; DLPack tensors are writable by contract unless a
        // versioned capsule says otherwise, and `&mut self` keeps this view unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

fn dlpack(obj: &Bound<'_, PyAny>, access: Access, what: &dyn Display) -> PyResult<Option<Data>> {
    let Ok(device_fn) = obj.getattr("__dlpack_device__") else {
        return Ok(None);
    };
    let (device_type, device_id): (i32, i32) = device_fn.call0()?.extract()?;
    let py = obj.py();
    let (capsule, stream) = match device_type {
        DL_CPU | DL_CUDA_HOST => (obj.call_method0("__dlpack__")?, None),
        DL_CUDA => {
            let kwargs = PyDict::new(py);
            kwargs.set_item("stream", LEGACY_DEFAULT_STREAM)?;
            let capsule = obj
                .call_method("__dlpack__", PyTuple::empty(py), Some(&kwargs))
                .or_else(|_| obj.call_method0("__dlpack__"))?;
            (capsule, Some(LEGACY_DEFAULT_STREAM))
        }
        other => {
            return Err(invalid_input(format!(
                "{what} lives on DLPack device type {other}; only CPU and CUDA memory are supported"
            )));
        }
    };
    let capsule = capsule
        .cast::<PyCapsule>()
        .map_err(|_| invalid_input(format!("{what}.__dlpack__() did not return a capsule")))?;
    let pointer = capsule.pointer_checked(Some(DLTENSOR)).map_err(|_| {
        invalid_input(format!(
            "{what}.__dlpack__() returned a capsule that is not a \"dltensor\""
        ))
    })?;
    // SAFETY: a "dltensor" capsule holds a DLManagedTensor that stays valid until its
    // deleter runs, which happens only when the capsule (held below) is collected.
    let tensor = unsafe { &(*(pointer.as_ptr() as *const DlManagedTensor)).dl_tensor };
    if tensor.ndim < 0 || (tensor.ndim > 0 && tensor.shape.is_null()) {
        return Err(invalid_input(format!(
            "{what} exports a malformed DLPack tensor"
        )));
    }
    let ndim = tensor.ndim as usize;
    // SAFETY: shape (and strides, when not null) point to `ndim` int64 values owned by
    // the managed tensor.
    let shape = unsafe { slice_or_empty(tensor.shape, ndim) };
    let strides = (!tensor.strides.is_null()).then(|| {
        // SAFETY: as above.
        unsafe { slice_or_empty(tensor.strides, ndim) }
    });
    let bits = i64::from(tensor.dtype.bits) * i64::from(tensor.dtype.lanes);
    if bits == 0 || bits % 8 != 0 {
        return Err(invalid_input(format!(
            "{what} has elements of {bits} bits; whole bytes are needed"
        )));
    }
    let itemsize = bits / 8;
    let len = dense_len(shape, strides, itemsize, itemsize, what)?;
    let address = (tensor.data as u64)
        .checked_add(tensor.byte_offset)
        .ok_or_else(|| invalid_input(format!("{what} has an invalid DLPack address")))?;
    let _ = access;
    let owner = capsule.clone().into_any().unbind();
    Ok(Some(match device_type {
        DL_CUDA => {
            Data::Device(Device {
                range: DeviceRange {
                    ptr: address,
                    len,
                    stream,
                    device: Some(usize::try_from(device_id).map_err(|_| {
                        invalid_input(format!("{what} names CUDA device {device_id}"))
                    })?),
                },
                _owner: owner,
            })
        }
        _ => {
            if address == 0 && len > 0 {
                return Err(invalid_input(format!(
                    "{what} exports a null DLPack pointer"
                )));
            }
            Data::Host(Host::DlPack(DlPackHost {
                ptr: address as *mut u8,
                len,
                _capsule: owner,
            }))
        }
    }))
}

/// # Safety
/// When `len > 0`, `ptr` must point to `len` readable values that outlive the result.
unsafe fn slice_or_empty<'a>(ptr: *const i64, len: usize) -> &'a [i64] {
    if len == 0 {
        &[]
    } else {
        // SAFETY: guaranteed by the caller.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }
}

/// The blocks of a batch call: a list (or tuple) of block arguments, or one array or
/// tensor whose rows are the blocks (an engine's KV pool), which crosses the protocol
/// once instead of once per block.
pub enum Batch {
    /// One argument per block (whole or in pieces).
    Each(Vec<Block>),
    /// One argument split into `count` rows of equal size.
    Rows(Data, usize),
}

/// One block of a batch: host bytes (`&[u8]` to be read, `&mut [u8]` to be written) or
/// device memory, whole or in pieces.
pub enum Part<H> {
    /// Host bytes.
    Host(H),
    /// Device memory.
    Device(DeviceRange),
    /// Host pieces, concatenated.
    HostPieces(Vec<H>),
    /// Device pieces, concatenated.
    DevicePieces(Vec<DeviceRange>),
}

impl<H: AsRef<[u8]>> Part<H> {
    /// Address and length of each piece, to check outputs for overlap.
    pub fn spans(&self) -> Vec<(usize, usize)> {
        let host = |b: &H| {
            let b = b.as_ref();
            (b.as_ptr() as usize, b.len())
        };
        let device = |d: &DeviceRange| (d.ptr as usize, d.len);
        match self {
            Part::Host(b) => vec![host(b)],
            Part::Device(d) => vec![device(d)],
            Part::HostPieces(pieces) => pieces.iter().map(host).collect(),
            Part::DevicePieces(pieces) => pieces.iter().map(device).collect(),
        }
    }
}

/// The items of a list or tuple argument.
pub fn sequence<'py>(obj: &Bound<'py, PyAny>, what: &str) -> PyResult<Vec<Bound<'py, PyAny>>> {
    if obj.is_instance_of::<PyString>() {
        return Err(invalid_input(format!("{what} must be a list, not a str")));
    }
    let len = obj
        .len()
        .map_err(|_| invalid_input(format!("{what} must be a list or tuple")))?;
    let mut items = Vec::with_capacity(len);
    for item in obj.try_iter()? {
        items.push(item?);
    }
    Ok(items)
}

/// Takes the blocks of a batch call; `count` is the number of ids.
pub fn take_batch(
    obj: &Bound<'_, PyAny>,
    count: usize,
    access: Access,
    what: &str,
) -> PyResult<Batch> {
    if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
        let items = sequence(obj, what)?;
        if items.len() != count {
            return Err(invalid_input(format!(
                "block_ids has {count} entries but {what} has {}",
                items.len()
            )));
        }
        let mut taken = Vec::with_capacity(items.len());
        let mut ordered = false;
        for (i, item) in items.iter().enumerate() {
            let order = if ordered {
                Order::InterfaceFirst
            } else {
                Order::DlPackFirst
            };
            // The item's name is only formatted when an error needs it, not once per block.
            let block = take_block_ordered(item, access, &format_args!("{what}[{i}]"), order)?;
            ordered |= block.on_device();
            taken.push(block);
        }
        return Ok(Batch::Each(taken));
    }
    let whole = take(obj, access, what).map_err(|e| {
        if is_no_buffer(&e, obj.py()) {
            invalid_input(format!(
                "{what} must be a list of blocks, or one array or tensor whose rows are the blocks"
            ))
        } else {
            e
        }
    })?;
    let len = match &whole {
        Data::Host(h) => h.span().1,
        Data::Device(d) => d.range.len,
    };
    match leading_rows(obj) {
        // An array of two or more dimensions: each row is one block, so a row count that
        // differs from the ids would silently cut the blocks across rows.
        Some(rows) if rows != count => {
            return Err(invalid_input(format!(
                "{what} has {rows} rows but block_ids has {count} entries; each row is one block"
            )));
        }
        Some(_) => {}
        // A flat buffer (bytes, a 1-D array) has no rows: it splits into equal blocks.
        None if count == 0 && len > 0 => {
            return Err(invalid_input(format!(
                "{what} holds {len} bytes but block_ids has 0 entries"
            )));
        }
        None if count > 0 && len % count != 0 => {
            return Err(invalid_input(format!(
                "{what} holds {len} bytes, which do not split into {count} equal blocks"
            )));
        }
        None => {}
    }
    Ok(Batch::Rows(whole, count))
}

/// The first dimension of an array or tensor of two or more dimensions (its `shape`, or
/// that of its `__cuda_array_interface__`); None for flat buffers and objects without a
/// shape.
fn leading_rows(obj: &Bound<'_, PyAny>) -> Option<usize> {
    let shape = match obj.getattr("shape") {
        Ok(shape) => shape.extract::<Vec<i64>>().ok(),
        Err(_) => None,
    };
    let shape = match shape {
        Some(shape) => Some(shape),
        None => match obj.getattr("__cuda_array_interface__") {
            Ok(iface) => iface
                .get_item("shape")
                .ok()
                .and_then(|s| s.extract::<Vec<i64>>().ok()),
            Err(_) => None,
        },
    };
    shape
        .filter(|s| s.len() >= 2)
        .and_then(|s| usize::try_from(s[0]).ok())
}

impl Batch {
    /// The blocks, to be read.
    pub fn parts(&self) -> Vec<Part<&[u8]>> {
        match self {
            Batch::Each(items) => items
                .iter()
                .map(|item| match item {
                    Block::Whole(Data::Host(h)) => Part::Host(h.bytes()),
                    Block::Whole(Data::Device(d)) => Part::Device(d.range),
                    Block::HostPieces(p) => Part::HostPieces(p.iter().map(Host::bytes).collect()),
                    Block::DevicePieces(p) => {
                        Part::DevicePieces(p.iter().map(|d| d.range).collect())
                    }
                })
                .collect(),
            Batch::Rows(_, 0) => Vec::new(),
            Batch::Rows(Data::Host(h), count) => {
                let bytes = h.bytes();
                let row = bytes.len() / count;
                if row == 0 {
                    return (0..*count).map(|_| Part::Host(&[][..])).collect();
                }
                bytes.chunks_exact(row).map(Part::Host).collect()
            }
            Batch::Rows(Data::Device(d), count) => {
                rows(d.range, *count).map(Part::Device).collect()
            }
        }
    }

    /// The blocks, to be written.
    pub fn parts_mut(&mut self) -> Vec<Part<&mut [u8]>> {
        match self {
            Batch::Each(items) => items
                .iter_mut()
                .map(|item| match item {
                    Block::Whole(Data::Host(h)) => Part::Host(h.bytes_mut()),
                    Block::Whole(Data::Device(d)) => Part::Device(d.range),
                    Block::HostPieces(p) => {
                        Part::HostPieces(p.iter_mut().map(Host::bytes_mut).collect())
                    }
                    Block::DevicePieces(p) => {
                        Part::DevicePieces(p.iter().map(|d| d.range).collect())
                    }
                })
                .collect(),
            Batch::Rows(_, 0) => Vec::new(),
            Batch::Rows(Data::Host(h), count) => {
                let count = *count;
                let bytes = h.bytes_mut();
                let row = bytes.len() / count;
                if row == 0 {
                    return (0..count).map(|_| Part::Host(&mut [][..])).collect();
                }
                bytes.chunks_exact_mut(row).map(Part::Host).collect()
            }
            Batch::Rows(Data::Device(d), count) => {
                rows(d.range, *count).map(Part::Device).collect()
            }
        }
    }
}

fn rows(range: DeviceRange, count: usize) -> impl Iterator<Item = DeviceRange> {
    let row = range.len / count.max(1);
    (0..count).map(move |i| DeviceRange {
        ptr: range.ptr + (i * row) as u64,
        len: row,
        stream: range.stream,
        device: range.device,
    })
}
