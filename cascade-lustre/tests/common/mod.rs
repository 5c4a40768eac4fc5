//! Running a test once per I/O engine.

/// Whether io_uring tests can run here; prints why not (and fails on CI, where
/// io_uring must be available so that the engine is really tested).
pub fn io_uring_or_skip() -> bool {
    match cascade_lustre::io_uring_available() {
        Ok(()) => true,
        Err(why) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "io_uring unavailable on CI, where the io_uring engine must be tested: {why}"
            );
            eprintln!("skipped: io_uring is not available here ({why})");
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
