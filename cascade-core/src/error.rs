//! The one error type of Cascade: a kind, a message, context, and an optional source.
//!
//! Errors are cheap to clone (the source is shared), so a batch that fails as a whole
//! hands the same error to each of its items.

use std::fmt;
use std::sync::Arc;

/// Result alias used across Cascade.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, coarse enough to act on (retry, demote, report).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The block is not stored.
    NotFound,
    /// The tier has no room left for this block (the store demotes and retries).
    TierFull,
    /// The block is larger than the tier can ever hold.
    TooLarge,
    /// Stored bytes failed their checksum, or on-disk structures are damaged.
    Corrupt,
    /// An operating-system I/O error.
    Io,
    /// A configuration value is missing or invalid.
    Config,
    /// A resource is absent on this machine (no GPU, no driver, no /dev/shm).
    Unavailable,
    /// A runtime plugin failed to load or reported an error.
    Plugin,
    /// The caller passed bad arguments (wrong id text, output buffer too small).
    InvalidInput,
    /// The file or directory was written by an incompatible format version.
    Incompatible,
    /// Another process holds the resource (e.g. a pool opened for writing).
    Busy,
    /// The operation is not supported by this tier.
    Unsupported,
}

impl ErrorKind {
    /// A stable lowercase name, used in logs, JSON and the Python exception names.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::TierFull => "tier_full",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::Corrupt => "corrupt",
            ErrorKind::Io => "io",
            ErrorKind::Config => "config",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Plugin => "plugin",
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::Incompatible => "incompatible",
            ErrorKind::Busy => "busy",
            ErrorKind::Unsupported => "unsupported",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Cascade's error: a [`ErrorKind`], a message, the store operation and the tier it
/// happened in when known, key/value context added on the way up, and the underlying
/// cause when there is one.
#[derive(Clone)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    operation: Option<&'static str>,
    context: Vec<(&'static str, String)>,
    source: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    /// A new error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            operation: None,
            context: Vec::new(),
            source: None,
        }
    }

    /// Adds a key/value pair (a path, a tier name, a size) shown after the message.
    #[must_use]
    pub fn with_context(mut self, key: &'static str, value: impl fmt::Display) -> Self {
        self.context.push((key, value.to_string()));
        self
    }

    /// Records the underlying cause.
    #[must_use]
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// Names the store operation (`"put"`, `"get"`, `"demote"`, ...) and the tier it
    /// failed in, where not named already by an inner layer.
    #[must_use]
    pub fn at(mut self, operation: &'static str, tier: &str) -> Self {
        self.operation.get_or_insert(operation);
        if self.tier().is_none() {
            self.context.push(("tier", tier.to_string()));
        }
        self
    }

    /// The store operation that failed, when known.
    pub fn operation(&self) -> Option<&'static str> {
        self.operation
    }

    /// The name of the tier the error happened in, when known.
    pub fn tier(&self) -> Option<&str> {
        self.context
            .iter()
            .find(|(key, _)| *key == "tier")
            .map(|(_, value)| value.as_str())
    }

    /// An I/O error with a message saying what was being done.
    pub fn io(message: impl Into<String>, source: std::io::Error) -> Self {
        let kind = match source.kind() {
            std::io::ErrorKind::NotFound => ErrorKind::Unavailable,
            _ => ErrorKind::Io,
        };
        Self::new(kind, message).with_source(source)
    }

    /// Shorthand for [`ErrorKind::NotFound`].
    pub fn not_found(id: crate::BlockId) -> Self {
        Self::new(ErrorKind::NotFound, "block not found").with_context("id", id)
    }

    /// Shorthand for [`ErrorKind::Config`].
    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message without context.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Key/value context pairs, innermost first.
    pub fn context(&self) -> &[(&'static str, String)] {
        &self.context
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)?;
        let operation = self.operation.map(|op| ("operation", op.to_string()));
        let pairs: Vec<&(&'static str, String)> =
            operation.iter().chain(self.context.iter()).collect();
        if !pairs.is_empty() {
            f.write_str(" (")?;
            for (i, (key, value)) in pairs.into_iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{key}: {value}")?;
            }
            f.write_str(")")?;
        }
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|s| &**s as &(dyn std::error::Error + 'static))
    }
}

impl From<std::io::Error> for Error {
    fn from(source: std::io::Error) -> Self {
        Error::io("I/O error", source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_shows_kind_message_context_and_source() {
        let err = Error::new(ErrorKind::TierFull, "no room")
            .with_context("tier", "shm0")
            .with_context("need", 4096)
            .with_source(std::io::Error::other("disk"));
        let text = err.to_string();
        assert_eq!(text, "tier_full: no room (tier: shm0, need: 4096): disk");
        assert_eq!(err.kind(), ErrorKind::TierFull);
        assert!(std::error::Error::source(&err).is_some());
    }

    #[test]
    fn clones_share_the_source_and_carry_operation_and_tier() {
        let err = Error::new(ErrorKind::Io, "write failed")
            .with_source(std::io::Error::other("disk"))
            .at("put", "file1");
        let copy = err.clone();
        assert_eq!(copy.operation(), Some("put"));
        assert_eq!(copy.tier(), Some("file1"));
        assert_eq!(
            copy.to_string(),
            "io: write failed (operation: put, tier: file1): disk"
        );
        // An inner tier name wins; the operation is set once.
        let inner = Error::new(ErrorKind::TierFull, "full")
            .with_context("tier", "shm0")
            .at("demote", "gpu0")
            .at("put", "gpu0");
        assert_eq!(inner.tier(), Some("shm0"));
        assert_eq!(inner.operation(), Some("demote"));
    }
}
