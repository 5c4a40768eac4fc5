//! Shared-memory tier of Cascade: a pre-faulted mmap pool on /dev/shm that survives restarts.
//!
//! Filled by its own issue; this crate compiles so the workspace and facade features build.
