//! Writes include/cascade.h from this crate's extern functions and types (cbindgen,
//! settings in cascade-c/cbindgen.toml). Run after changing the C API:
//!
//! ```text
//! cargo run -p cascade-c --example generate_header
//! ```
//!
//! The test `header_is_current` fails while the checked-in header differs from this
//! output, so CI catches a header left out of date.

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = crate_dir.join("../include/cascade.h");
    match cascade_c_header::generate(crate_dir) {
        Ok(text) => match std::fs::write(&out, text) {
            Ok(()) => {
                println!("wrote {}", out.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("cannot write {}: {e}", out.display());
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("cbindgen failed: {e}");
            ExitCode::FAILURE
        }
    }
}

#[path = "../tests/support/header.rs"]
mod cascade_c_header;
