//! One result per item: the helpers every batch path of the tier shares.

use cascade_core::{Error, ErrorKind, Result};

/// The one result of a one-item batch.
pub(crate) fn first<T>(results: Vec<Result<T>>) -> Result<T> {
    results
        .into_iter()
        .next()
        .unwrap_or_else(|| Err(Error::new(ErrorKind::InvalidInput, "empty batch")))
}

/// Fills the items a failed call never reached with its error.
pub(crate) fn finish<T>(results: Vec<Option<Result<T>>>, outcome: Result<()>) -> Vec<Result<T>> {
    let failure = outcome.err();
    results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(match &failure {
                    Some(e) => e.clone(),
                    None => Error::new(ErrorKind::Io, "copy was not completed"),
                })
            })
        })
        .collect()
}
