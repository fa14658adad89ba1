//! The crate's one error type.

use std::fmt;

use crate::model::RuntimeStatus;
use crate::store::PurgeProgress;

/// The cause of a transport error: boxed, so that the client crate's types
/// stay private. It never holds a URL's query string (where a SAS would be).
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong, in terms a caller can act on.
///
/// Every storage error is mapped into this type in one place (the table
/// module), so callers never see the Azure client crate's errors. One kind of
/// problem is one variant; causes are kept ([`std::error::Error::source`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An argument is malformed or out of its range. Nothing was sent.
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

    /// The task hub's table does not exist (a store opened without creating
    /// it, or a table deleted since).
    #[error("table '{table}' does not exist (connect to the task hub to create it)")]
    TableNotFound {
        /// The table's name.
        table: String,
    },

    /// An instance with this id exists already (and may not be overwritten).
    #[error("instance '{instance_id}' already exists{}", existing_status_suffix(.status))]
    AlreadyExists {
        /// The instance id.
        instance_id: String,
        /// The runtime status of the existing instance, when it was read.
        status: Option<RuntimeStatus>,
    },

    /// The instance is terminal already; the change asked for does not apply.
    /// Nothing was written.
    #[error("instance '{instance_id}' is already {status}")]
    Terminal {
        /// The instance id.
        instance_id: String,
        /// Its terminal status.
        status: RuntimeStatus,
    },

    /// The instance is not terminal, and the operation needs it to be.
    #[error(
        "instance '{instance_id}' is {status}; only instances in a terminal state can be purged"
    )]
    NotTerminal {
        /// The instance id.
        instance_id: String,
        /// Its current status.
        status: RuntimeStatus,
    },

    /// A conditional write lost: the instance changed since its ETag was
    /// read. Nothing was written.
    #[error("instance '{instance_id}' was changed by another writer (ETag mismatch)")]
    Conflict {
        /// The instance id.
        instance_id: String,
    },

    /// A write was sent, its answer was lost, and the store cannot tell
    /// whether it was applied: another writer changed the row meanwhile, or
    /// every retry failed. Read the instance before deciding to write again;
    /// retrying blindly could apply the change twice.
    #[error("the outcome of the write to instance '{instance_id}' is unknown: its answer was lost, and it may or may not have been applied")]
    OutcomeUnknown {
        /// The instance id.
        instance_id: String,
        /// What happened to the last attempt.
        #[source]
        source: Box<Error>,
    },

    /// A stored row could not be decoded.
    #[error("stored row for instance '{instance_id}' is malformed: {reason}")]
    Decode {
        /// The instance id of the row (unescaped partition key).
        instance_id: String,
        /// What could not be read.
        reason: String,
    },

    /// A payload kept in a blob (too large for its column) could not be
    /// read: the blob is missing, or not the gzip JSON text it should be.
    #[error("instance '{instance_id}': its {column} is kept in blob '{blob}', which {reason}")]
    LargePayload {
        /// The instance whose payload it is.
        instance_id: String,
        /// The column that refers to the blob (`Input`, `Output`).
        column: &'static str,
        /// The blob's name in the task hub's large-message container.
        blob: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The settings name more than one managed identity (a client id and a
    /// resource id, say); only one may be named.
    #[error("more than one managed identity is named ({}): set only one of them", .settings.join(", "))]
    AmbiguousIdentity {
        /// The settings that name one.
        settings: Vec<String>,
    },

    /// No identity could sign in with Microsoft Entra ID: nothing the
    /// sign-in looks for is configured (or the Azure CLI, last in the
    /// developer chain, gave no token). Nothing was sent to storage.
    #[error("no identity to sign in to storage with; tried {}", .tried.join("; "))]
    NoIdentity {
        /// What was looked for, and why each could not sign in.
        tried: Vec<String>,
    },

    /// A token was asked for and not given: the identity endpoint or
    /// Entra ID refused, or could not be reached. Nothing was sent to
    /// storage.
    #[error("sign-in failed: {credential} gave no token{}: {message}", status_suffix(.status))]
    SignIn {
        /// Who was asked (an endpoint, a service principal), never a secret.
        credential: String,
        /// The HTTP status of its answer, when one came.
        status: Option<u16>,
        /// What it said.
        message: String,
        /// Whether asking again later may succeed (throttling, server
        /// errors, no answer in time).
        transient: bool,
    },

    /// The storage service answered with an error.
    #[error("storage request failed with HTTP {status}{}: {message}", code_suffix(.code))]
    Storage {
        /// HTTP status code.
        status: u16,
        /// The service's `x-ms-error-code`, when it sent one.
        code: Option<String>,
        /// What the service said.
        message: String,
    },

    /// The storage service could not be reached, or its answer was lost or
    /// unreadable.
    #[error("storage transport error: {message}")]
    Transport {
        /// What failed, naming the endpoint.
        message: String,
        /// What kind of failure it was.
        kind: TransportKind,
        /// The underlying error, when there is one.
        #[source]
        source: Option<Cause>,
    },

    /// The local emulator could not be installed or started.
    #[error("storage emulator: {0}")]
    Emulator(String),

    /// A wait ran out of time. Not transient: the instance simply did not
    /// get there in time.
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),

    /// A purge by filter stopped before the end. Running it again finishes
    /// the job.
    #[error("purge stopped after deleting {} instances ({} skipped); running it again finishes the job", .progress.deleted, .progress.skipped)]
    PurgeInterrupted {
        /// What was done before it stopped.
        progress: PurgeProgress,
        /// What stopped it.
        #[source]
        source: Box<Error>,
    },
}

fn existing_status_suffix(status: &Option<RuntimeStatus>) -> String {
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

fn status_suffix(status: &Option<u16>) -> String {
    match status {
        Some(status) => format!(" (HTTP {status})"),
        None => String::new(),
    }
}

fn code_suffix(code: &Option<String>) -> String {
    match code {
        Some(code) => format!(" ({code})"),
        None => String::new(),
    }
}

impl Error {
    /// Whether retrying the same call later may succeed: throttling, server
    /// errors and transport failures. Not a wait that timed out, and not an
    /// unknown outcome (a blind retry could apply a change twice).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Storage { status, .. } => matches!(status, 408 | 429 | 500 | 502 | 503 | 504),
            Error::Transport { .. } => true,
            Error::SignIn { transient, .. } => *transient,
            Error::PurgeInterrupted { source, .. } => source.is_transient(),
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

    pub(crate) fn not_found(instance_id: &str) -> Self {
        Error::NotFound {
            instance_id: instance_id.to_owned(),
        }
    }

    pub(crate) fn conflict(instance_id: &str) -> Self {
        Error::Conflict {
            instance_id: instance_id.to_owned(),
        }
    }

    /// The HTTP status of a storage error.
    pub(crate) fn http_status(&self) -> Option<u16> {
        match self {
            Error::Storage { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub(crate) fn transport(message: impl Into<String>) -> Self {
        Error::Transport {
            message: message.into(),
            kind: TransportKind::Other,
            source: None,
        }
    }
}

/// An error and its causes on one line, `: ` between them.
pub(crate) fn chain_text(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// What kind of transport failure an [`Error::Transport`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportKind {
    /// No connection could be made: nothing was sent.
    Connect,
    /// No answer came in time: the request may have been applied.
    Timeout,
    /// The connection broke before the answer came: the request may have
    /// been applied.
    Interrupted,
    /// The answer could not be read, or the request not built.
    Other,
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn a_wait_deadline_and_an_unknown_outcome_are_not_transient() {
        assert!(!Error::Timeout(std::time::Duration::from_secs(1)).is_transient());
        let busy = Error::Storage {
            status: 503,
            code: Some("ServerBusy".into()),
            message: "busy".into(),
        };
        assert!(busy.is_transient());
        let unknown = Error::OutcomeUnknown {
            instance_id: "a".into(),
            source: Box::new(busy),
        };
        assert!(!unknown.is_transient());
        assert!(unknown.source().is_some(), "the cause is kept");
    }

    #[test]
    fn transport_errors_keep_their_cause() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let error = Error::Transport {
            message: "cannot connect to http://127.0.0.1:1".into(),
            kind: TransportKind::Connect,
            source: Some(Box::new(io)),
        };
        assert!(error.is_transient());
        let cause = error.source().expect("a source");
        assert_eq!(
            cause.downcast_ref::<std::io::Error>().map(|e| e.kind()),
            Some(std::io::ErrorKind::ConnectionRefused)
        );
    }
}
