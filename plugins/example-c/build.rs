//! Compiles example_tier.c into a shared library with the system C compiler ($CC or `cc`).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    let source = manifest.join("example_tier.c");
    let header_dir = manifest.join("..");
    let output = out_dir.join("libcascade_example_c.so");
    println!("cargo::rerun-if-changed={}", source.display());
    println!(
        "cargo::rerun-if-changed={}",
        header_dir.join("cascade-plugin.h").display()
    );
    println!("cargo::rerun-if-env-changed=CC");
    let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let status = Command::new(&compiler)
        .args([
            "-std=c11",
            "-D_GNU_SOURCE",
            "-O2",
            "-Wall",
            "-Wextra",
            "-Werror",
        ])
        .args(["-shared", "-fPIC", "-fvisibility=hidden"])
        .arg("-I")
        .arg(&header_dir)
        .arg("-o")
        .arg(&output)
        .arg(&source)
        .arg("-lpthread")
        .status();
    match status {
        Ok(status) if status.success() => {}
        Ok(status) => panic!("{compiler} failed to build the C example plugin ({status})"),
        Err(e) => panic!("cannot run the C compiler {compiler:?}: {e}"),
    }
}
