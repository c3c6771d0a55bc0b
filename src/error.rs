//! Status codes and the error type every fallible call returns.
//!
//! The numeric values are part of the C ABI: they are never renumbered, only appended.

use std::ffi::CStr;
use std::fmt;
use std::io;
use std::sync::Arc;

/// Declares [`Status`] from one table: each row gives the variant, its
/// `WB_*` value, its C name and the HTTP status a host answers with, under
/// the doc comment the C header shows. `build.rs` reads the same rows to
/// write the header's `#define`s, so the values, names and codes are written
/// once (the Go and Python bindings test their tables against the header).
macro_rules! status_table {
    ($($(#[doc = $doc:literal])* $variant:ident = $code:literal, $name:ident, $http:literal;)*) => {
        /// Outcome of a call, as seen through the C ABI (`WB_*` constants).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Status {
            $($(#[doc = $doc])* $variant = $code,)*
        }

        impl Status {
            pub const ALL: [Status; [$($code),*].len()] = [$(Status::$variant),*];

            /// The C constant's name, e.g. `WB_NOT_FOUND`.
            pub fn name(self) -> &'static str {
                match self {
                    $(Status::$variant => stringify!($name),)*
                }
            }

            /// [`Status::name`] as a C string (what `wb_status_name` returns).
            pub fn c_name(self) -> &'static CStr {
                match self {
                    $(Status::$variant => match CStr::from_bytes_with_nul(concat!(stringify!($name), "\0").as_bytes()) {
                        Ok(name) => name,
                        Err(_) => c"WB_UNKNOWN",
                    },)*
                }
            }

            /// The HTTP status a host answers with (docs/api.md section 2), so
            /// that every host maps errors the same way.
            pub fn http_status(self) -> u16 {
                match self {
                    $(Status::$variant => $http,)*
                }
            }

            /// The doc comment of the status (the C header's).
            pub fn doc(self) -> &'static str {
                match self {
                    $(Status::$variant => concat!($($doc, "\n"),*),)*
                }
            }
        }

        /// The `WB_*` constants, one per status (the C header's `#define`s
        /// are written from the same table by `build.rs`).
        pub mod codes {
            $($(#[doc = $doc])* pub const $name: i32 = $code;)*
        }
    };
}

// The table build.rs reads: one row per status, `Variant = value, WB_NAME,
// http;`, each under its doc comment. Values are never renumbered, only appended.
status_table! {
    /// Success.
    Ok = 0, WB_OK, 200;
    /// Bad JSON, a missing or ill-typed field, a bad UUID, an unknown adapter
    /// or a bad URL (HTTP 400).
    InvalidArgument = 1, WB_INVALID_ARGUMENT, 400;
    /// The server directory or the backup archive does not exist (HTTP 404).
    NotFound = 2, WB_NOT_FOUND, 404;
    /// The backup uuid exists or is running, or the server is busy (HTTP 409).
    Conflict = 3, WB_CONFLICT, 409;
    /// The archive is not gzip, not tar, damaged or truncated (HTTP 422).
    CorruptArchive = 4, WB_CORRUPT_ARCHIVE, 422;
    /// An archive entry would escape the server directory (HTTP 422).
    UnsafeEntry = 5, WB_UNSAFE_ENTRY, 422;
    /// The disk limit was exceeded, or the disk is full (HTTP 507).
    Quota = 6, WB_QUOTA, 507;
    /// S3, the Panel or a download failed (HTTP 502).
    Remote = 7, WB_REMOTE, 502;
    /// The call was cancelled by its cancel token or progress callback (HTTP 503).
    Cancelled = 8, WB_CANCELLED, 503;
    /// Any other I/O failure (HTTP 500).
    Io = 9, WB_IO, 500;
    /// A bug, including a caught panic (HTTP 500).
    Internal = 10, WB_INTERNAL, 500;
}

impl Status {
    pub fn from_code(code: i32) -> Option<Status> {
        Status::ALL.iter().copied().find(|s| *s as i32 == code)
    }
}

/// An error with its status and a message meant for people. Messages name
/// entries relative to the server root and never carry host paths. The
/// underlying error, when there is one (an `io::Error` with its errno, a JSON
/// syntax error), is kept as the [`source`](std::error::Error::source).
#[derive(Clone, Debug)]
pub struct Error {
    pub status: Status,
    pub message: String,
    source: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
}

/// Two errors are equal when their status and message are: the source only
/// explains the message.
impl PartialEq for Error {
    fn eq(&self, other: &Error) -> bool {
        self.status == other.status && self.message == other.message
    }
}

impl Eq for Error {}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(status: Status, message: impl Into<String>) -> Error {
        Error {
            status,
            message: message.into(),
            source: None,
        }
    }

    /// Keeps `source` as the cause of this error (the message is unchanged).
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Error {
        self.source = Some(Arc::new(source));
        self
    }

    /// The underlying I/O error, if this error came from one.
    pub fn io_error(&self) -> Option<&io::Error> {
        self.source.as_deref()?.downcast_ref::<io::Error>()
    }

    /// The errno of the underlying I/O error, if there is one.
    pub fn raw_os_error(&self) -> Option<i32> {
        self.io_error()?.raw_os_error()
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
        let message = if status == Status::Quota {
            format!("{what}: insufficient disk space ({err})")
        } else {
            format!("{what}: {err}")
        };
        Error::new(status, message).with_source(err)
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

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Quotes a possibly non-UTF-8 name for a message, with the escapes JSON
/// uses: `\"`, `\\`, `\n`, `\r`, `\t`, and `\uXXXX` for every other
/// control character and for the characters that are invisible or reorder
/// text (U+2028, U+2029, bidirectional controls, zero-width ones, U+FEFF);
/// a byte that is not UTF-8 is `\xNN`. So `world<NUL>` reads `"world\u0000"`.
pub fn quote(name: &[u8]) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for chunk in name.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if needs_escape(c) => out.push_str(&format!("\\u{:04x}", c as u32)),
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

/// [`quote`] for text.
pub fn quote_str(text: &str) -> String {
    quote(text.as_bytes())
}

/// Characters a message shows escaped: controls (C0, DEL, C1), line and
/// paragraph separators, and format characters that are invisible or
/// reorder what follows them (all in the BMP, so `\uXXXX` names each).
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{00ad}' | '\u{061c}' | '\u{180e}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

impl From<rustix::io::Errno> for Error {
    /// A filesystem error without more context (reopening a directory of a
    /// deep walk, say); callers with context use `Error::os`.
    fn from(e: rustix::io::Errno) -> Error {
        Error::os("reopening a directory", e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_is_in_the_table_once() {
        for (i, s) in Status::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i, "values are dense and in order");
            assert_eq!(Status::from_code(i as i32), Some(*s));
            assert_eq!(s.c_name().to_str().unwrap(), s.name());
            assert!(s.name().starts_with("WB_"));
            if *s != Status::Ok {
                let http = format!("(HTTP {})", s.http_status());
                assert!(s.doc().contains(&http), "{}: {}", s.name(), s.doc());
            }
        }
        assert_eq!(Status::from_code(Status::ALL.len() as i32), None);
    }

    #[test]
    fn quote_writes_json_style_escapes() {
        assert_eq!(quote(b"world\0"), r#""world\u0000""#);
        assert_eq!(quote_str("a\u{2028}b\u{202e}c"), r#""a\u2028b\u202ec""#);
        assert_eq!(
            quote(b"q\"b\\s\n\r\t\x7f\x1b"),
            r#""q\"b\\s\n\r\t\u007f\u001b""#
        );
        assert_eq!(quote(b"caf\xc3\xa9 \xff"), "\"caf\u{e9} \\xff\"");
        assert_eq!(quote_str("\u{85}"), r#""\u0085""#);
    }

    #[test]
    fn io_errors_keep_their_errno_and_source() {
        let e = Error::io("writing x", io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(e.status, Status::Quota);
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
        assert!(e
            .message
            .starts_with("writing x: insufficient disk space ("));
        let source = std::error::Error::source(&e).expect("a source");
        assert!(source.downcast_ref::<io::Error>().is_some());
        let e = e.context("restoring");
        assert_eq!(
            e.raw_os_error(),
            Some(libc::ENOSPC),
            "context keeps the source"
        );
        let e = Error::os("opening", rustix::io::Errno::ACCESS);
        assert_eq!(
            (e.status, e.raw_os_error()),
            (Status::Io, Some(libc::EACCES))
        );
        assert_eq!(Error::invalid("x").raw_os_error(), None);
        assert!(std::error::Error::source(&Error::invalid("x")).is_none());
    }
}
