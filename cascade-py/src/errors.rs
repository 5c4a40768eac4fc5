//! Python exceptions: `CascadeError` and one subclass per [`ErrorKind`].
//!
//! The classes are made at import time with `type(name, bases, namespace)` so that a kind
//! can also derive from the built-in exception Python code already catches for it
//! (`InvalidInputError` is a `ValueError`, `IoError` an `OSError`, ...). Each raised
//! exception carries `kind` (the stable lowercase name) and `context` (a dict).

use pyo3::exceptions::{
    PyException, PyNotImplementedError, PyOSError, PyRuntimeError, PyRuntimeWarning, PyValueError,
};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};

use cascade::{Error, ErrorKind};

/// Every kind, its class name, the built-in it also derives from, and its docstring.
const KINDS: &[(ErrorKind, &str, Builtin, &str)] = &[
    (
        ErrorKind::NotFound,
        "NotFoundError",
        Builtin::None,
        "The block is not stored.",
    ),
    (
        ErrorKind::TierFull,
        "TierFullError",
        Builtin::None,
        "No tier has room for the block.",
    ),
    (
        ErrorKind::TooLarge,
        "TooLargeError",
        Builtin::Value,
        "The block is larger than any tier can hold.",
    ),
    (
        ErrorKind::Corrupt,
        "CorruptError",
        Builtin::None,
        "Stored bytes failed their checksum; the block was dropped, never served.",
    ),
    (
        ErrorKind::Io,
        "IoError",
        Builtin::Os,
        "An operating-system I/O error.",
    ),
    (
        ErrorKind::Config,
        "ConfigError",
        Builtin::Value,
        "A configuration value is missing or invalid.",
    ),
    (
        ErrorKind::Unavailable,
        "UnavailableError",
        Builtin::Runtime,
        "A resource is absent on this machine (no GPU, no driver, no /dev/shm).",
    ),
    (
        ErrorKind::Plugin,
        "PluginError",
        Builtin::None,
        "A tier plugin failed to load or reported an error.",
    ),
    (
        ErrorKind::InvalidInput,
        "InvalidInputError",
        Builtin::Value,
        "Bad arguments: a wrong id string, a non-contiguous or read-only buffer, an output too small.",
    ),
    (
        ErrorKind::Incompatible,
        "IncompatibleError",
        Builtin::None,
        "Data written by an incompatible format version.",
    ),
    (
        ErrorKind::Busy,
        "BusyError",
        Builtin::None,
        "Another process holds the resource.",
    ),
    (
        ErrorKind::Unsupported,
        "UnsupportedError",
        Builtin::NotImplemented,
        "The operation is not supported by this tier or build.",
    ),
];

#[derive(Clone, Copy)]
enum Builtin {
    None,
    Value,
    Os,
    Runtime,
    NotImplemented,
}

struct Classes {
    base: Py<PyType>,
    warning: Py<PyType>,
    by_kind: Vec<(ErrorKind, Py<PyType>)>,
}

static CLASSES: PyOnceLock<Classes> = PyOnceLock::new();

fn make_class<'py>(
    py: Python<'py>,
    name: &str,
    bases: Bound<'py, PyTuple>,
    doc: &str,
) -> PyResult<Py<PyType>> {
    let namespace = PyDict::new(py);
    namespace.set_item("__doc__", doc)?;
    namespace.set_item("__module__", "cascade")?;
    let class = py.get_type::<PyType>().call1((name, bases, namespace))?;
    Ok(class.cast_into::<PyType>()?.unbind())
}

fn build(py: Python<'_>) -> PyResult<Classes> {
    let base = make_class(
        py,
        "CascadeError",
        PyTuple::new(py, [py.get_type::<PyException>()])?,
        "Base class of every error raised by Cascade. `kind` is the error kind's \
         stable name (\"not_found\", \"tier_full\", ...); `context` a dict of details.",
    )?;
    let mut by_kind = Vec::with_capacity(KINDS.len());
    for &(kind, name, builtin, doc) in KINDS {
        let cascade_base = base.bind(py).clone();
        let bases = match builtin {
            Builtin::None => PyTuple::new(py, [cascade_base])?,
            Builtin::Value => PyTuple::new(py, [cascade_base, py.get_type::<PyValueError>()])?,
            Builtin::Os => PyTuple::new(py, [cascade_base, py.get_type::<PyOSError>()])?,
            Builtin::Runtime => PyTuple::new(py, [cascade_base, py.get_type::<PyRuntimeError>()])?,
            Builtin::NotImplemented => {
                PyTuple::new(py, [cascade_base, py.get_type::<PyNotImplementedError>()])?
            }
        };
        by_kind.push((kind, make_class(py, name, bases, doc)?));
    }
    let warning = make_class(
        py,
        "TierUnavailableWarning",
        PyTuple::new(py, [py.get_type::<PyRuntimeWarning>()])?,
        "A configured tier could not be opened on this machine (no GPU, no driver) and the \
         store opened without it.",
    )?;
    Ok(Classes {
        base,
        warning,
        by_kind,
    })
}

fn classes(py: Python<'_>) -> PyResult<&Classes> {
    CLASSES.get_or_try_init(py, || build(py))
}

/// Adds `CascadeError` and every subclass to the module.
pub fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = module.py();
    let classes = classes(py)?;
    module.add("CascadeError", classes.base.clone_ref(py))?;
    module.add("TierUnavailableWarning", classes.warning.clone_ref(py))?;
    for ((_, name, _, _), (_, class)) in KINDS.iter().zip(&classes.by_kind) {
        module.add(*name, class.clone_ref(py))?;
    }
    Ok(())
}

fn raise(
    py: Python<'_>,
    kind: Option<ErrorKind>,
    message: String,
    context: &[(&str, String)],
) -> PyErr {
    let Ok(classes) = classes(py) else {
        return PyRuntimeError::new_err(message);
    };
    let class = kind
        .and_then(|k| classes.by_kind.iter().find(|(c, _)| *c == k))
        .map_or(&classes.base, |(_, class)| class);
    let build = || -> PyResult<PyErr> {
        let value = class.bind(py).call1((message.as_str(),))?;
        value.setattr("kind", kind.map_or("unknown", ErrorKind::as_str))?;
        let details = PyDict::new(py);
        for (key, text) in context {
            details.set_item(*key, text)?;
        }
        value.setattr("context", details)?;
        Ok(PyErr::from_value(value))
    };
    build().unwrap_or_else(|e| e)
}

/// The Python exception for a Cascade error (the class of its kind).
pub fn to_py(error: Error) -> PyErr {
    Python::attach(|py| {
        let context: Vec<(&str, String)> = error
            .context()
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        // The class already names the kind: drop the "kind: " prefix of the Display text.
        let text = error.to_string();
        let prefix = format!("{}: ", error.kind());
        let message = text.strip_prefix(&prefix).unwrap_or(&text).to_string();
        raise(py, Some(error.kind()), message, &context)
    })
}

/// An [`ErrorKind::InvalidInput`] exception raised by the bindings themselves.
pub fn invalid_input(message: impl Into<String>) -> PyErr {
    kind_error(ErrorKind::InvalidInput, message)
}

/// An exception of `kind` raised by the bindings themselves.
pub fn kind_error(kind: ErrorKind, message: impl Into<String>) -> PyErr {
    Python::attach(|py| raise(py, Some(kind), message.into(), &[]))
}

/// Extension for `cascade::Result` → `PyResult`.
pub trait IntoPy<T> {
    /// Maps the error to its Python exception.
    fn py_err(self) -> PyResult<T>;
}

impl<T> IntoPy<T> for cascade::Result<T> {
    fn py_err(self) -> PyResult<T> {
        self.map_err(to_py)
    }
}

/// Emits a `TierUnavailableWarning` pointing at the caller's line.
pub fn warn_tier_unavailable(py: Python<'_>, message: &str) -> PyResult<()> {
    let classes = classes(py)?;
    let text = std::ffi::CString::new(message.replace('\0', " "))
        .map_err(|_| invalid_input("warning text contains NUL"))?;
    PyErr::warn(py, classes.warning.bind(py).as_any(), &text, 1)
}
