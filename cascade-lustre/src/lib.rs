//! Parallel-file-system tier of Cascade: aggregated segment files, O_DIRECT, Lustre striping, crash recovery.
//!
//! Filled by its own issue; this crate compiles so the workspace and facade features build.
