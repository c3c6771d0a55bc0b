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
mod http;
mod log;
mod support;
pub mod wire;

pub use archive::*;
pub use backup::*;
pub use cancel::*;
pub use engine::*;
pub use error::*;
pub use http::*;
pub use log::*;

// The status codes `WB_OK` .. `WB_INTERNAL` come from the status table in
// src/error.rs (build.rs writes their `#define`s into the header).
pub use crate::error::codes::*;

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
/// Telling the Panel the result of a backup (a restore reports in the
/// background, after its call has returned, and has no such phase).
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
    /// Archive bytes so far: compressed bytes written by a create (phase
    /// `WB_PHASE_ARCHIVE`), compressed bytes read by a restore. Appended
    /// after the first release of this ABI: read it only when `struct_size`
    /// is at least `offsetof(wb_progress, archive_bytes) + 8`.
    pub archive_bytes: u64,
}

/// Progress callback. It runs only on the thread that made the call, at
/// least once a second while work is being done. Returning non-zero stops
/// the call, which then fails with `WB_CANCELLED`, except from the reports
/// that come once the work can no longer be undone (`WB_PHASE_DONE`, and
/// `WB_PHASE_REPORT` of a backup whose archive is written): their answer is
/// ignored, and a call at `WB_PHASE_DONE` has already succeeded and returns
/// `WB_OK`. `progress` is valid only during the callback. The callback must
/// not wait for its own call to end (`wb_backup_wait` of its backup, say):
/// that call goes on only once the callback returns. `wb_backup_delete` (or
/// `wb_backups_delete_all`) of the backup the callback reports on cancels it
/// and returns at once, without waiting for it; the backup then stops, its
/// partial file removed, and fails with `WB_CANCELLED` once the callback
/// returns.
pub type wb_progress_fn = Option<
    unsafe extern "C" fn(userdata: *mut core::ffi::c_void, progress: *const wb_progress) -> i32,
>;
