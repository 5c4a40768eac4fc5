//! GPU HBM tier of Cascade: device slab, pinned and registered host memory, batched copies (cudarc, loaded at run time).
//!
//! Filled by its own issue; this crate compiles so the workspace and facade features build.
