//! Status codes and the error type every fallible call returns.
//!
//! The numeric values are part of the C ABI: they are never renumbered, only appended.

use std::fmt;
use std::io;

/// Outcome of a call, as seen through the C ABI (`WB_*` constants).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    Ok = 0,
    InvalidArgument = 1,
    NotFound = 2,
    Conflict = 3,
    CorruptArchive = 4,
    UnsafeEntry = 5,
    Quota = 6,
    Remote = 7,
    Cancelled = 8,
    Io = 9,
    Internal = 10,
}

impl Status {
    pub const ALL: [Status; 11] = [
        Status::Ok,
        Status::InvalidArgument,
        Status::NotFound,
        Status::Conflict,
        Status::CorruptArchive,
        Status::UnsafeEntry,
        Status::Quota,
        Status::Remote,
        Status::Cancelled,
        Status::Io,
        Status::Internal,
    ];

    pub fn from_code(code: i32) -> Option<Status> {
        Status::ALL.iter().copied().find(|s| *s as i32 == code)
    }

    /// The C constant's name, e.g. `WB_NOT_FOUND`.
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "WB_OK",
            Status::InvalidArgument => "WB_INVALID_ARGUMENT",
            Status::NotFound => "WB_NOT_FOUND",
            Status::Conflict => "WB_CONFLICT",
            Status::CorruptArchive => "WB_CORRUPT_ARCHIVE",
            Status::UnsafeEntry => "WB_UNSAFE_ENTRY",
            Status::Quota => "WB_QUOTA",
            Status::Remote => "WB_REMOTE",
            Status::Cancelled => "WB_CANCELLED",
            Status::Io => "WB_IO",
            Status::Internal => "WB_INTERNAL",
        }
    }

    /// The HTTP status a host answers with (CONTRACT section 7), so that every
    /// host maps errors the same way.
    pub fn http_status(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::InvalidArgument => 400,
            Status::NotFound => 404,
            Status::Conflict => 409,
            Status::CorruptArchive | Status::UnsafeEntry => 422,
            Status::Quota => 507,
            Status::Remote => 502,
            Status::Cancelled => 503,
            Status::Io | Status::Internal => 500,
        }
    }
}

/// An error with its status and a message meant for people. Messages name
/// entries relative to the server root and never carry host paths.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub status: Status,
    pub message: String,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(status: Status, message: impl Into<String>) -> Error {
        Error {
            status,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Error {
        Error::new(Status::InvalidArgument, message)
    }

    pub fn not_found(message: impl Into<String>) -> Error {
        Error::new(Status::NotFound, message)
    }

    pub fn conflict(message: impl Into<String>) -> Error {
        Error::new(Status::Conflict, message)
    }

    pub fn corrupt(message: impl Into<String>) -> Error {
        Error::new(Status::CorruptArchive, message)
    }

    pub fn unsafe_entry(name: &[u8], why: &str) -> Error {
        Error::new(
            Status::UnsafeEntry,
            format!("unsafe entry {}: {why}", quote(name)),
        )
    }

    pub fn remote(message: impl Into<String>) -> Error {
        Error::new(Status::Remote, message)
    }

    pub fn cancelled() -> Error {
        Error::new(Status::Cancelled, "the operation was cancelled")
    }

    pub fn internal(message: impl Into<String>) -> Error {
        Error::new(Status::Internal, message)
    }

    /// An I/O failure while doing `what`. Running out of space is a quota
    /// error, so that hosts answer 507 rather than 500.
    pub fn io(what: impl fmt::Display, err: io::Error) -> Error {
        let status = match err.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => Status::Quota,
            _ => Status::Io,
        };
        if status == Status::Quota {
            return Error::new(status, format!("{what}: insufficient disk space ({err})"));
        }
        Error::new(status, format!("{what}: {err}"))
    }

    /// Same as [`Error::io`] for rustix's error type.
    pub fn os(what: impl fmt::Display, err: rustix::io::Errno) -> Error {
        Error::io(what, io::Error::from(err))
    }

    /// Prefixes the message with more context, keeping the status.
    pub fn context(mut self, what: impl fmt::Display) -> Error {
        self.message = format!("{what}: {}", self.message);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.status.name())
    }
}

impl std::error::Error for Error {}

/// Quotes a possibly non-UTF-8 name for a message, escaping control bytes.
pub fn quote(name: &[u8]) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for chunk in name.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if c.is_control() => out.push_str(&c.escape_default().to_string()),
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out.push('"');
    out
}

impl From<rustix::io::Errno> for Error {
    /// A filesystem error without more context (reopening a directory of a
    /// deep walk, say); callers with context use `Error::os`.
    fn from(e: rustix::io::Errno) -> Error {
        Error::os("reopening a directory", e)
    }
}
