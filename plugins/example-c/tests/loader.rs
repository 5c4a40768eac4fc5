//! The C example plugin through the Rust loader: conformance, typed errors, lifetimes,
//! and the header checked against the Rust ABI definition.
// Helpers outside #[test] fns unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use cascade_core::plugin::{PluginLibrary, abi};
use cascade_core::{BlockId, ErrorKind, Tier};
use cascade_plugin_example_c::{header_dir, library_path};

fn cc() -> String {
    std::env::var("CC").unwrap_or_else(|_| "cc".to_string())
}

/// Compiles one C file into a shared library in `dir` and returns its path.
fn build_library(dir: &Path, name: &str, source: &str) -> PathBuf {
    let c_file = dir.join(format!("{name}.c"));
    std::fs::write(&c_file, source).unwrap();
    let output = dir.join(format!("lib{name}.so"));
    let status = Command::new(cc())
        .args(["-std=c11", "-shared", "-fPIC", "-Wall", "-Werror", "-I"])
        .arg(header_dir())
        .arg("-o")
        .arg(&output)
        .arg(&c_file)
        .status()
        .unwrap();
    assert!(status.success(), "cc failed on {name}.c");
    output
}

fn open(capacity: u64) -> cascade_core::Result<Arc<dyn Tier>> {
    let library = PluginLibrary::load(library_path())?;
    let tier = library.create("c0", &format!("capacity = {capacity}\nmax_blocks = 1024\n"))?;
    Ok(Arc::new(tier) as Arc<dyn Tier>)
}

fn kit_subject() -> Option<cascade_core::conformance::Subject> {
    Some(cascade_core::conformance::Subject::new(|| open(8 << 20)))
}

cascade_core::conformance_tests!(mod c_plugin_kit, kit_subject);

#[test]
fn plugin_identifies_itself_and_reports_capacity() {
    let library = PluginLibrary::load(library_path()).unwrap();
    assert_eq!(library.name(), "example-c");
    let tier = library.create("c1", "capacity = 65536").unwrap();
    assert_eq!(tier.kind(), "plugin");
    assert_eq!(tier.name(), "c1");
    assert_eq!(tier.capacity(), 65536);
    assert_eq!(tier.capability().max_block_size, 65536);
    assert!(!tier.capability().persistent);
}

#[test]
fn plugin_errors_keep_their_kind_and_message() {
    let library = PluginLibrary::load(library_path()).unwrap();
    let err = library
        .create("c2", "capacity = 10\nflavour = 3\n")
        .err()
        .unwrap();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(
        err.to_string().contains("unknown setting `flavour`"),
        "{err}"
    );

    let err = library.create("c2", "capacity = \"lots\"").err().unwrap();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("non-negative integer"), "{err}");

    let tier = library
        .create("c2", "capacity = 4096\nmax_blocks = 2")
        .unwrap();
    let err = tier.put(BlockId::from_u128(1), &[0u8; 4097]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooLarge, "{err}");
    assert!(err.to_string().contains("exceeds capacity"), "{err}");
    tier.put(BlockId::from_u128(1), &[1u8; 100]).unwrap();
    tier.put(BlockId::from_u128(2), &[2u8; 100]).unwrap();
    let err = tier.put(BlockId::from_u128(3), &[3u8; 100]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TierFull, "{err}");
    assert!(err.to_string().contains("block slots in use"), "{err}");
    assert!(tier.used() <= tier.capacity());

    let err = tier.get(BlockId::from_u128(9), &mut [0u8; 16]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let err = tier.get(BlockId::from_u128(1), &mut [0u8; 16]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
}

#[test]
fn error_messages_are_per_thread() {
    let library = PluginLibrary::load(library_path()).unwrap();
    let tier = Arc::new(library.create("c3", "capacity = 1024").unwrap());
    std::thread::scope(|scope| {
        for t in 0..4u128 {
            let tier = Arc::clone(&tier);
            scope.spawn(move || {
                for round in 0..200 {
                    if (round + t) % 2 == 0 {
                        let err = tier.put(BlockId::from_u128(t), &[0u8; 2048]).unwrap_err();
                        assert!(err.to_string().contains("exceeds capacity"), "{err}");
                    } else {
                        let err = tier
                            .get(BlockId::from_u128(100 + t), &mut [0u8; 8])
                            .unwrap_err();
                        assert!(err.to_string().contains("not found"), "{err}");
                    }
                }
            });
        }
    });
}

#[test]
fn tier_outlives_the_library_handle() {
    let library = PluginLibrary::load(library_path()).unwrap();
    let tier = library.create("c4", "capacity = 4096").unwrap();
    drop(library);
    tier.put(BlockId::from_u128(7), b"still mapped").unwrap();
    let mut out = [0u8; 32];
    let n = tier.get(BlockId::from_u128(7), &mut out).unwrap();
    assert_eq!(&out[..n], b"still mapped");
    assert_eq!(Arc::strong_count(tier.library()), 1);
}

#[test]
fn missing_file_symbol_and_version_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let err = PluginLibrary::load(dir.path().join("libabsent.so")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");

    let not_a_library = dir.path().join("libtext.so");
    std::fs::write(&not_a_library, "not an ELF file").unwrap();
    let err = PluginLibrary::load(&not_a_library).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Plugin, "{err}");

    let no_entry = build_library(
        dir.path(),
        "noentry",
        "int cascade_something_else(void) { return 1; }\n",
    );
    let err = PluginLibrary::load(&no_entry).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Plugin, "{err}");
    assert!(err.to_string().contains("cascade_plugin_entry"), "{err}");

    let future = build_library(
        dir.path(),
        "future",
        "#include \"cascade-plugin.h\"\n\
         static const cascade_plugin_vtable V = { .abi_version = 99, .struct_size = sizeof V, .name = \"future\" };\n\
         const cascade_plugin_vtable *cascade_plugin_entry(void) { return &V; }\n",
    );
    let err = PluginLibrary::load(&future).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Plugin, "{err}");
    assert!(err.to_string().contains("ABI version mismatch"), "{err}");
    assert!(err.to_string().contains("plugin_abi_version: 99"), "{err}");

    let hollow = build_library(
        dir.path(),
        "hollow",
        "#include \"cascade-plugin.h\"\n\
         static const cascade_plugin_vtable V = { .abi_version = CASCADE_PLUGIN_ABI_VERSION, .struct_size = sizeof V, .name = \"hollow\" };\n\
         const cascade_plugin_vtable *cascade_plugin_entry(void) { return &V; }\n",
    );
    let err = PluginLibrary::load(&hollow).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Plugin, "{err}");
    assert!(err.to_string().contains("NULL function"), "{err}");
}

/// The header and the Rust definition agree: every size, offset and constant from
/// `abi::layout()` is checked by a static assert in C.
#[test]
fn header_matches_the_rust_abi() {
    let dir = tempfile::tempdir().unwrap();
    let mut source = String::from("#include <stddef.h>\n#include \"cascade-plugin.h\"\n");
    let expr = |name: &str| -> String {
        if let Some(field) = name.strip_prefix("OFFSETOF_CAPABILITY_") {
            format!(
                "offsetof(cascade_plugin_capability, {})",
                field.to_lowercase()
            )
        } else if let Some(field) = name.strip_prefix("OFFSETOF_") {
            format!("offsetof(cascade_plugin_vtable, {})", field.to_lowercase())
        } else if name == "SIZEOF_BLOCK_ID" {
            "sizeof(cascade_block_id)".into()
        } else if name == "SIZEOF_CAPABILITY" {
            "sizeof(cascade_plugin_capability)".into()
        } else if name == "SIZEOF_VTABLE" {
            "sizeof(cascade_plugin_vtable)".into()
        } else if name == "ABI_VERSION" {
            "CASCADE_PLUGIN_ABI_VERSION".into()
        } else {
            format!("CASCADE_{}", name.strip_prefix("STATUS_").unwrap_or(name))
        }
    };
    let layout = abi::layout();
    assert!(layout.len() > 30);
    for (name, _) in &layout {
        source.push_str(&format!(
            "_Static_assert((unsigned long long)({}) == (unsigned long long)(RUST_{name}), \"{name} differs from the Rust ABI\");\n",
            expr(name)
        ));
    }
    let c_file = dir.path().join("layout.c");
    std::fs::write(&c_file, source).unwrap();
    let mut command = Command::new(cc());
    command
        .args(["-std=c11", "-fsyntax-only", "-I"])
        .arg(header_dir());
    for (name, value) in &layout {
        command.arg(format!("-DRUST_{name}={value}"));
    }
    let output = command.arg(&c_file).output().unwrap();
    assert!(
        output.status.success(),
        "the header disagrees with the Rust ABI:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // The check itself can fail: a wrong value is caught.
    let mut wrong = Command::new(cc());
    wrong
        .args(["-std=c11", "-fsyntax-only", "-I"])
        .arg(header_dir());
    for (name, value) in &layout {
        let value = if *name == "OFFSETOF_PUT" {
            value + 8
        } else {
            *value
        };
        wrong.arg(format!("-DRUST_{name}={value}"));
    }
    assert!(!wrong.arg(&c_file).output().unwrap().status.success());
}
