//! The C ABI (`include/wings_backup.h`): thin, mechanical wrappers over the
//! safe core. Every `unsafe` block of the crate is in this module.
//!
//! Conventions: every fallible call returns a `WB_*` status and takes a
//! nullable `wb_error **err` last; pointers are NULL-checked; no panic
//! crosses the boundary (it becomes `WB_INTERNAL`); everything the library
//! allocates has its own `*_free`, and `*_free(NULL)` does nothing.

#![allow(non_camel_case_types)]
#![allow(clippy::missing_safety_doc)]

mod archive;
mod backup;
mod cancel;
mod engine;
mod error;
pub mod host;
mod support;

pub use archive::*;
pub use backup::*;
pub use cancel::*;
pub use engine::*;
pub use error::*;

/// Success.
pub const WB_OK: i32 = 0;
/// Bad JSON, a missing or ill-typed field, a bad UUID, an unknown adapter
/// or a bad URL (HTTP 400).
pub const WB_INVALID_ARGUMENT: i32 = 1;
/// The server directory or the backup archive does not exist (HTTP 404).
pub const WB_NOT_FOUND: i32 = 2;
/// The backup uuid exists or is running, or the server is busy (HTTP 409).
pub const WB_CONFLICT: i32 = 3;
/// The archive is not gzip, not tar, damaged or truncated (HTTP 422).
pub const WB_CORRUPT_ARCHIVE: i32 = 4;
/// An archive entry would escape the server directory (HTTP 422).
pub const WB_UNSAFE_ENTRY: i32 = 5;
/// The disk limit was exceeded, or the disk is full (HTTP 507).
pub const WB_QUOTA: i32 = 6;
/// S3, the Panel or a download failed (HTTP 502).
pub const WB_REMOTE: i32 = 7;
/// The call was cancelled by its cancel token or progress callback (HTTP 503).
pub const WB_CANCELLED: i32 = 8;
/// Any other I/O failure (HTTP 500).
pub const WB_IO: i32 = 9;
/// A bug, including a caught panic (HTTP 500).
pub const WB_INTERNAL: i32 = 10;

/// Version of this library, also returned by `wb_version()`.
pub const WB_VERSION_MAJOR: u32 = 0;
pub const WB_VERSION_MINOR: u32 = 1;
pub const WB_VERSION_PATCH: u32 = 0;

/// Version of the ABI described by this header; `wb_abi_version()` returns
/// the library's. Bindings refuse to load a library whose value differs.
pub const WB_ABI_VERSION: u32 = 1;

/// `wb_progress.phase`: the request was accepted (validated, and the server
/// is held by this call). Always the first report of a successful start.
pub const WB_PHASE_STARTED: u32 = 0;
/// Reading the server's files into the archive; bytes are source bytes.
pub const WB_PHASE_ARCHIVE: u32 = 1;
/// Uploading the archive to S3; bytes are archive bytes.
pub const WB_PHASE_UPLOAD: u32 = 2;
/// Reading (or downloading) and unpacking the archive; bytes are archive bytes.
pub const WB_PHASE_EXTRACT: u32 = 3;
/// Putting restored files in place.
pub const WB_PHASE_COMMIT: u32 = 4;
/// Telling the Panel the result.
pub const WB_PHASE_REPORT: u32 = 5;
/// Finished successfully; the last report.
pub const WB_PHASE_DONE: u32 = 6;

/// Progress of a long call. `bytes_total` 0 means unknown. Within one phase,
/// `bytes_done` and `entries_done` never decrease.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct wb_progress {
    /// `sizeof(wb_progress)` as built into the library; fields may be
    /// appended in later versions, never reordered.
    pub struct_size: u32,
    /// One of `WB_PHASE_*`.
    pub phase: u32,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub entries_done: u64,
}

/// Progress callback. It runs only on the thread that made the call, at
/// least once a second while work is being done. Returning non-zero stops
/// the call, which then fails with `WB_CANCELLED`. `progress` is valid only
/// during the callback.
pub type wb_progress_fn = Option<
    unsafe extern "C" fn(userdata: *mut core::ffi::c_void, progress: *const wb_progress) -> i32,
>;
