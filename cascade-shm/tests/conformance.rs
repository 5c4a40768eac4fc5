//! The conformance kit every tier must pass, run against a pool on /dev/shm.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns too

mod common;

use std::sync::Arc;

use cascade_core::Tier;
use cascade_shm::ShmTier;

#[test]
fn shm_tier_passes_the_kit() {
    let dir = common::pool_dir();
    let config = common::config(dir.path(), 8);
    cascade_core::conformance::run_all(&|| {
        Ok(Arc::new(ShmTier::open("shm0", &config)?) as Arc<dyn Tier>)
    });
}

#[test]
fn shm_tier_passes_the_kit_with_background_commits_verified_reads_and_no_prefault() {
    let dir = common::pool_dir();
    let mut config = common::config(dir.path(), 8);
    config.prefault = false;
    config.verify_on_read = true;
    config.background_commit = true;
    cascade_core::conformance::run_all(&|| {
        Ok(Arc::new(ShmTier::open("shm0", &config)?) as Arc<dyn Tier>)
    });
}
