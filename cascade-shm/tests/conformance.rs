//! The conformance kit every tier must pass, run against a pool on /dev/shm: one test
//! per behaviour, for the default settings and for background commits with verified
//! reads and no prefault.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns too

mod common;

use std::sync::Arc;

use cascade_core::Tier;
use cascade_core::conformance::Subject;
use cascade_shm::{ShmTier, ShmTierConfig};

fn subject_with(adjust: fn(&mut ShmTierConfig)) -> Option<Subject> {
    let dir = common::pool_dir();
    let mut config = common::config(dir.path(), 8);
    adjust(&mut config);
    Some(
        Subject::new(move || Ok(Arc::new(ShmTier::open("shm0", &config)?) as Arc<dyn Tier>))
            .keeping(dir),
    )
}

fn default_subject() -> Option<Subject> {
    subject_with(|_| {})
}

fn background_verified_subject() -> Option<Subject> {
    subject_with(|config| {
        config.prefault = false;
        config.verify_on_read = true;
        config.background_commit = true;
    })
}

cascade_core::conformance_tests!(mod shm_kit, default_subject);
cascade_core::conformance_tests!(mod shm_background_verified_kit, background_verified_subject);
