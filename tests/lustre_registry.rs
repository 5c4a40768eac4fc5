//! The facade builds the file tier from TOML under both of its kind names.
#![cfg(feature = "lustre")]

use cascade::{Cascade, ErrorKind};

#[test]
fn file_and_lustre_kinds_open_the_file_tier() {
    for kind in ["file", "lustre"] {
        let dir = tempfile::tempdir().unwrap();
        let toml = format!(
            "[[tiers]]\nkind = \"{kind}\"\npath = {:?}\ncapacity = \"64 MiB\"\nsegment_size = \"4 MiB\"\n",
            dir.path().display().to_string()
        );
        let block = vec![3u8; 128 * 1024];
        let id = cascade::compute_block_id(&block);
        {
            let store = Cascade::open_toml_str(&toml).unwrap();
            store.put(id, &block).unwrap();
            store.flush().unwrap();
        }
        let store = Cascade::open_toml_str(&toml).unwrap();
        let mut out = vec![0u8; block.len()];
        assert_eq!(
            store.get(id, &mut out).unwrap(),
            Some(block.len()),
            "{kind}: reopened"
        );
        assert_eq!(out, block);
    }
}

#[test]
fn a_file_tier_without_path_is_a_config_error_naming_it() {
    let err = Cascade::open_toml_str("[[tiers]]\nkind = \"file\"\ncapacity = \"1 GiB\"\n").err();
    let err = err.expect("a file tier needs a path");
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("path"), "{err}");
}
