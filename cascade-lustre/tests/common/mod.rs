//! Running a test once per I/O engine.

/// Whether io_uring tests can run here; prints why not (and fails where
/// `CASCADE_REQUIRE` names `io_uring`, as CI's does, so that the engine is really tested).
pub fn io_uring_or_skip() -> bool {
    match cascade_lustre::io_uring_available() {
        Ok(()) => true,
        Err(why) => {
            cascade_core::require::skip(
                cascade_core::require::Requirement::IoUring,
                format!("io_uring is not available here ({why})"),
            );
            false
        }
    }
}

/// `per_engine!(name)` runs `fn name(engine: IoEngine)` as the tests `name::psync` and
/// `name::io_uring`.
#[macro_export]
macro_rules! per_engine {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn psync() {
                super::$name(cascade_lustre::IoEngine::Psync);
            }

            #[test]
            fn io_uring() {
                if $crate::common::io_uring_or_skip() {
                    super::$name(cascade_lustre::IoEngine::IoUring);
                }
            }
        }
    )*};
}
