//! Which absent hardware or server may make a test skip, and which must fail it instead.
//!
//! Tests that need a GPU, a redis-server, an MPI launcher or io_uring print why and pass
//! on machines without them. A machine that is meant to have them says so with
//! `CASCADE_REQUIRE` (names separated by commas, `all` for every one), and there the
//! same skip is a failure: a broken setup can no longer pass as a skip. CI sets
//! `CASCADE_REQUIRE=redis,mpi` (.ci/run); a GPU machine adds `gpu`.
//!
//! ```no_run
//! use cascade_core::require::{Requirement, skip};
//! let have_server = false;
//! if !have_server {
//!     skip(Requirement::Redis, "redis-server is not installed");
//!     return;
//! }
//! ```

use std::fmt::Display;

use crate::{Error, Result};

/// The environment variable naming what must be present.
pub const VAR: &str = "CASCADE_REQUIRE";

/// Something a test may find absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Requirement {
    /// A CUDA driver and a usable device (`gpu`).
    Gpu,
    /// A `redis-server` binary the tests can start (`redis`).
    Redis,
    /// An MPI launcher (`mpi`).
    Mpi,
    /// io_uring allowed by the kernel and the seccomp profile (`io_uring`).
    IoUring,
}

impl Requirement {
    /// Every requirement, in the order `all` expands to.
    pub const ALL: [Self; 4] = [Self::Gpu, Self::Redis, Self::Mpi, Self::IoUring];

    /// The name used in `CASCADE_REQUIRE`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Gpu => "gpu",
            Self::Redis => "redis",
            Self::Mpi => "mpi",
            Self::IoUring => "io_uring",
        }
    }

    /// The requirement called `name` (ASCII case ignored).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|r| r.name().eq_ignore_ascii_case(name))
    }
}

/// The requirements a value of `CASCADE_REQUIRE` names, sorted, without repeats.
///
/// Blank entries are ignored, so an empty value requires nothing. Errors:
/// [`crate::ErrorKind::Config`] for a name that is not a [`Requirement`], listing the known
/// ones: a typo must not quietly turn the check off.
pub fn parse(value: &str) -> Result<Vec<Requirement>> {
    let mut found = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        if entry.eq_ignore_ascii_case("all") {
            found.extend(Requirement::ALL);
            continue;
        }
        let requirement = Requirement::from_name(entry).ok_or_else(|| {
            let known: Vec<&str> = Requirement::ALL.iter().map(|r| r.name()).collect();
            Error::config(format!(
                "{VAR}: unknown requirement {entry:?}; known: {}, all",
                known.join(", ")
            ))
        })?;
        found.push(requirement);
    }
    found.sort();
    found.dedup();
    Ok(found)
}

/// Whether the environment's `CASCADE_REQUIRE` names `requirement` (unset: no).
///
/// Errors as [`parse`], and for a value that is not UTF-8.
pub fn is_required(requirement: Requirement) -> Result<bool> {
    match std::env::var(VAR) {
        Ok(value) => required_by(Some(&value), requirement),
        Err(std::env::VarError::NotPresent) => required_by(None, requirement),
        Err(e) => Err(Error::config(format!("{VAR}: {e}"))),
    }
}

/// Whether a `CASCADE_REQUIRE` value (`None`: unset) names `requirement`.
pub fn required_by(value: Option<&str>, requirement: Requirement) -> Result<bool> {
    match value {
        Some(value) => Ok(parse(value)?.contains(&requirement)),
        None => Ok(false),
    }
}

/// Reports a skipped test: prints `skipped: <reason>` to stderr, unless
/// `CASCADE_REQUIRE` names `requirement`, where the skip is a failure.
///
/// # Panics
/// When `requirement` is required, or `CASCADE_REQUIRE` cannot be read; this is meant
/// for tests, where the panic is the failure.
pub fn skip(requirement: Requirement, reason: impl Display) {
    match is_required(requirement) {
        Ok(false) => eprintln!("skipped: {reason}"),
        Ok(true) => panic!(
            "{VAR} names {}, so this test may not skip: {reason}",
            requirement.name()
        ),
        Err(e) => panic!("{e} (while deciding whether to skip: {reason})"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::ErrorKind;

    #[test]
    fn names_commas_case_and_all() {
        assert_eq!(parse("").unwrap(), vec![]);
        assert_eq!(parse(" , ").unwrap(), vec![]);
        assert_eq!(
            parse("redis, GPU,redis").unwrap(),
            vec![Requirement::Gpu, Requirement::Redis]
        );
        assert_eq!(parse("mpi,all").unwrap(), Requirement::ALL.to_vec());
        for r in Requirement::ALL {
            assert_eq!(Requirement::from_name(r.name()), Some(r));
        }
    }

    #[test]
    fn a_typo_is_an_error_naming_the_known_requirements() {
        let err = parse("redis,reddis").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        let text = err.to_string();
        assert!(text.contains("\"reddis\""), "{text}");
        assert!(text.contains("gpu, redis, mpi, io_uring"), "{text}");
    }

    #[test]
    fn only_the_named_requirement_is_required() {
        assert!(!required_by(None, Requirement::Gpu).unwrap());
        assert!(!required_by(Some("redis"), Requirement::Gpu).unwrap());
        assert!(required_by(Some("redis,gpu"), Requirement::Gpu).unwrap());
        assert!(required_by(Some("all"), Requirement::IoUring).unwrap());
        assert!(required_by(Some("gpu,bogus"), Requirement::Gpu).is_err());
    }
}
