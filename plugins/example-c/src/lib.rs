//! The C example plugin, as built for this workspace.
//!
//! The build script compiles `example_tier.c` with the system C compiler
//! (`cc -shared -fPIC`, or `$CC`); this crate only tells where the result and the ABI
//! header are, so tests elsewhere in the workspace can load the plugin without building
//! it themselves.

use std::path::{Path, PathBuf};

/// The compiled plugin, `libcascade_example_c.so`.
pub fn library_path() -> PathBuf {
    Path::new(env!("OUT_DIR")).join("libcascade_example_c.so")
}

/// The folder holding `cascade-plugin.h`.
pub fn header_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The plugin's C source.
pub fn source_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("example_tier.c")
}
