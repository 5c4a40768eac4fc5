//! The one error type of Cascade: a kind, a message, context, and an optional source.

use std::fmt;

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

/// Cascade's error: a [`ErrorKind`], a message, key/value context added on the way up,
/// and the underlying cause when there is one.
pub struct Error {
    kind: ErrorKind,
    message: String,
    context: Vec<(&'static str, String)>,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    /// A new error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
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
        self.source = Some(Box::new(source));
        self
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
        if !self.context.is_empty() {
            f.write_str(" (")?;
            for (i, (key, value)) in self.context.iter().enumerate() {
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
            .map(|s| s.as_ref() as &(dyn std::error::Error + 'static))
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
}
