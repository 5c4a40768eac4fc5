//! The one way include/cascade.h is produced: cbindgen over this crate with
//! cascade-c/cbindgen.toml. Shared by the generator example and the up-to-date test.

use std::path::Path;

/// The header text cbindgen makes for the crate at `crate_dir`.
pub fn generate(crate_dir: &Path) -> Result<String, String> {
    let config =
        cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).map_err(|e| e.to_string())?;
    let bindings = cbindgen::Builder::new()
        .with_crate(crate_dir)
        .with_config(config)
        .generate()
        .map_err(|e| e.to_string())?;
    let mut text = Vec::new();
    bindings.write(&mut text);
    String::from_utf8(text).map_err(|e| e.to_string())
}
