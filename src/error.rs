//! The crate's one error type.

use std::fmt;

/// What went wrong, in terms a caller can act on.
///
/// Every storage error is mapped into this type in one place (the storage
/// client module), so callers never see the Azure client crate's errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An argument is malformed. Nothing was sent.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The argument, as a user would name it (`instance id`, `task hub`, ...).
        field: &'static str,
        /// What is wrong with it, quoting the value where that helps.
        reason: String,
    },

    /// An argument is larger than a limit allows. Nothing was sent.
    #[error("{field} is too large: {actual} {unit}, the limit is {limit} {unit}{}", in_kib(*.limit, *.unit))]
    TooLarge {
        /// The argument, as a user would name it (`custom status`, `input`, ...).
        field: &'static str,
        /// Its actual size.
        actual: usize,
        /// The limit it exceeds.
        limit: usize,
        /// What the two numbers count.
        unit: SizeUnit,
    },

    /// The configuration (a connection string, a setting) cannot be used.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// The instance does not exist.
    #[error("instance '{instance_id}' was not found")]
    NotFound {
        /// The instance id asked for.
        instance_id: String,
    },

    /// An instance with this id exists already (and may not be overwritten).
    #[error("instance '{instance_id}' already exists{}", existing_status_suffix(.status))]
    AlreadyExists {
        /// The instance id.
        instance_id: String,
        /// The runtime status of the existing instance, when it was read.
        status: Option<crate::RuntimeStatus>,
    },

    /// The instance is terminal already; the change asked for does not apply.
    #[error("instance '{instance_id}' is already {status}")]
    Terminal {
        /// The instance id.
        instance_id: String,
        /// Its terminal status.
        status: crate::RuntimeStatus,
    },

    /// The instance is not terminal, and the operation needs it to be.
    #[error(
        "instance '{instance_id}' is {status}; only instances in a terminal state can be purged"
    )]
    NotTerminal {
        /// The instance id.
        instance_id: String,
        /// Its current status.
        status: crate::RuntimeStatus,
    },

    /// A conditional write lost: the instance changed since its ETag was read.
    #[error("instance '{instance_id}' was changed by another writer (ETag mismatch)")]
    Conflict {
        /// The instance id.
        instance_id: String,
    },

    /// A stored row could not be decoded.
    #[error("stored row for instance '{instance_id}' is malformed: {reason}")]
    Decode {
        /// The instance id of the row (unescaped partition key).
        instance_id: String,
        /// What could not be read.
        reason: String,
    },

    /// The storage service answered with an error.
    #[error("storage request failed with HTTP {status}{}: {message}", code_suffix(.code))]
    Storage {
        /// HTTP status code.
        status: u16,
        /// The service's `x-ms-error-code`, when it sent one.
        code: Option<String>,
        /// What the service or the client said.
        message: String,
    },

    /// The storage service could not be reached, or its answer was unreadable.
    #[error("storage transport error: {0}")]
    Transport(String),

    /// The local emulator could not be installed or started.
    #[error("storage emulator: {0}")]
    Emulator(String),

    /// A wait ran out of time.
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
}

fn existing_status_suffix(status: &Option<crate::RuntimeStatus>) -> String {
    match status {
        Some(status) => format!(" with runtime status {status}"),
        None => String::new(),
    }
}

/// ` (16 KiB)` for a byte limit that is a whole number of KiB.
fn in_kib(limit: usize, unit: SizeUnit) -> String {
    match unit {
        SizeUnit::Utf16Bytes | SizeUnit::EntityBytes
            if limit >= 1024 && limit.is_multiple_of(1024) =>
        {
            format!(" ({} KiB)", limit / 1024)
        }
        _ => String::new(),
    }
}

fn code_suffix(code: &Option<String>) -> String {
    match code {
        Some(code) => format!(" ({code})"),
        None => String::new(),
    }
}

impl Error {
    /// Whether retrying the same call later may succeed: throttling, timeouts,
    /// server errors and transport failures.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Storage { status, .. } => matches!(status, 408 | 429 | 500 | 502 | 503 | 504),
            Error::Transport(_) | Error::Timeout(_) => true,
            _ => false,
        }
    }

    /// Whether the caller's arguments were at fault (nothing was sent).
    pub fn is_invalid_input(&self) -> bool {
        matches!(self, Error::Invalid { .. } | Error::TooLarge { .. })
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

/// What the numbers of a [`Error::TooLarge`] count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SizeUnit {
    /// Bytes of the text encoded as UTF-16 (two per code unit).
    Utf16Bytes,
    /// UTF-16 code units (one for most characters, two outside the BMP).
    Utf16Units,
    /// Bytes of an encoded entity, as Table Storage counts them.
    EntityBytes,
    /// Properties of an entity.
    Properties,
    /// Operations of a batch.
    Operations,
}

impl fmt::Display for SizeUnit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SizeUnit::Utf16Bytes => "bytes of UTF-16",
            SizeUnit::Utf16Units => "UTF-16 code units",
            SizeUnit::EntityBytes => "bytes",
            SizeUnit::Properties => "properties",
            SizeUnit::Operations => "operations",
        })
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
