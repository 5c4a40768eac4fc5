//! The cdylib loaded from disk by the host loader runs the conformance kit.
// Helpers outside #[test] fns unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use cascade_core::plugin::PluginLibrary;
use cascade_core::{BlockId, ErrorKind, Tier};

/// The cdylib loaded from disk, one instance per opening.
fn kit_subject() -> Option<cascade_core::conformance::Subject> {
    let path = cascade_plugin_memory::built_library()
        .expect("cargo builds the cdylib before this package's tests");
    let library = PluginLibrary::load(&path).unwrap();
    assert_eq!(library.name(), cascade_plugin_memory::NAME);
    Some(cascade_core::conformance::Subject::new(move || {
        Ok(Arc::new(library.create("rs0", "capacity = \"16 MiB\"")?) as Arc<dyn Tier>)
    }))
}

cascade_core::conformance_tests!(mod cdylib_kit, kit_subject);

#[test]
fn errors_cross_from_the_cdylib_with_kind_and_text() {
    let path = cascade_plugin_memory::built_library().unwrap();
    let library = PluginLibrary::load(&path).unwrap();
    let err = library.create("rs1", "capacity = \"lots\"").err().unwrap();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(
        err.to_string()
            .contains("must be a size like 64 GiB or a number of bytes"),
        "{err}"
    );
    let library_path = std::fs::canonicalize(&path).unwrap();
    assert!(
        err.to_string()
            .contains(&format!("path: {}", library_path.display())),
        "a plugin error names the library: {err}"
    );
    let tier = library.create("rs1", "capacity = 1024").unwrap();
    let err = tier.put(BlockId::from_u128(1), &[0u8; 2048]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooLarge, "{err}");
}
