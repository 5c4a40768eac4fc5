//! The pool file is its owner's only, whatever the umask; an existing pool that others
//! may read still opens (with a warning naming it) and is left as it is.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;

use cascade_core::{BlockId, Tier};
use cascade_shm::ShmTier;
use common::{config, pool_dir};

fn mode_of(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_new_pool_is_0600_under_any_umask_and_an_open_one_is_left_alone() {
    // SAFETY: umask only changes this process's file-creation mask; the most permissive
    // one shows any mode left to it.
    unsafe { libc::umask(0) };
    let dir = pool_dir();
    let config = config(dir.path(), 4);
    let path = config.path.clone().unwrap();
    {
        let tier = ShmTier::open("shm0", &config).unwrap();
        tier.put(BlockId::from_u128(7), b"kv").unwrap();
    }
    assert_eq!(mode_of(&path), 0o600);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let tier = ShmTier::open("shm0", &config).unwrap();
    assert!(tier.contains(BlockId::from_u128(7)));
    assert_eq!(mode_of(&path), 0o644, "the owner's choice is not changed");
}
