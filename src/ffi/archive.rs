//! Archive-level calls for scripts: any directory to a `.tar.gz`, and back;
//! listing and verifying any `.tar.gz` file.

use std::ffi::{c_char, c_void};
use std::path::Path;

use super::cancel::wb_cancel;
use super::error::wb_error;
use super::support::{boundary, clear_string, opt_str_arg, put_string, str_arg, with_control};
use super::wb_progress_fn;
use super::wire;
use crate::engine::{
    archive_create, archive_dry_run, archive_extract, archive_list, archive_verify,
};

/// Archives the directory `source_dir` into the file `archive_path` (written
/// under a temporary name and renamed; an existing file is replaced; an
/// existing directory is `WB_INVALID_ARGUMENT`, before anything is read).
/// `options_json` may be NULL or `{"ignore","compression_level","threads",
/// "write_limit"}`. On success `*summary_json` (if not NULL) holds
/// `checksum`, `checksum_type`, `size`, `entries`, `files`, `source_bytes`,
/// `changed`, `changed_count`, `skipped`, `skipped_count`, `reused_members`,
/// `reused_bytes`; free it with
/// `wb_string_free`.
#[no_mangle]
pub unsafe extern "C" fn wb_archive_create(
    source_dir: *const c_char,
    archive_path: *const c_char,
    options_json: *const c_char,
    progress: wb_progress_fn,
    userdata: *mut c_void,
    cancel: *const wb_cancel,
    summary_json: *mut *mut c_char,
    err: *mut *mut wb_error,
) -> i32 {
    clear_string(summary_json);
    boundary(err, || {
        let source = str_arg(source_dir, "source_dir")?;
        let archive = str_arg(archive_path, "archive_path")?;
        let opts = wire::archive_options(opt_str_arg(options_json, "options_json")?)?;
        let summary = with_control(progress, userdata, cancel, |ctl| {
            archive_create(Path::new(source), Path::new(archive), &opts, ctl)
        })?;
        put_string(summary_json, wire::archive_summary(&summary));
        Ok(())
    })
}

/// What `wb_archive_create` of `source_dir` would hold, without reading
/// file data or writing anything: the same walk and ignore rules.
/// `archive_path` may be NULL; when given, the file there is left out as a
/// create into it would leave it out. `options_json` may be NULL or hold
/// `ignore` (the other options of `wb_archive_create` are accepted and have
/// no effect). On success `*report_json` (if not NULL) is
/// `wb_backup_dry_run`'s report (`estimated_size` is then the worst case:
/// the tar stream stored uncompressed). `cancel` may be NULL.
#[no_mangle]
pub unsafe extern "C" fn wb_archive_dry_run(
    source_dir: *const c_char,
    archive_path: *const c_char,
    options_json: *const c_char,
    cancel: *const wb_cancel,
    report_json: *mut *mut c_char,
    err: *mut *mut wb_error,
) -> i32 {
    clear_string(report_json);
    boundary(err, || {
        let source = str_arg(source_dir, "source_dir")?;
        let archive = opt_str_arg(archive_path, "archive_path")?;
        let opts = wire::archive_options(opt_str_arg(options_json, "options_json")?)?;
        let report = with_control(None, std::ptr::null_mut(), cancel, |ctl| {
            archive_dry_run(Path::new(source), archive.map(Path::new), &opts, ctl)
        })?;
        put_string(report_json, wire::dry_run_report(&report));
        Ok(())
    })
}

/// Extracts the `.tar.gz` file `archive_path` (a FIFO is read as a
/// stream; `cancel` stops the call also while it waits for a writer or for
/// data) into the existing directory `dest_dir`, with the same safety rules as a restore (nothing escapes
/// `dest_dir`; on failure `dest_dir` is unchanged). `options_json` may be
/// NULL or `{"truncate","threads","disk_limit","owner","write_limit",
/// "paths"}` (`paths`: extract only those entries, as a restore's `paths`;
/// a path the archive does not hold is `WB_NOT_FOUND`). On
/// success `*summary_json` (if not NULL) holds `entries`, `files`,
/// `directories`, `symlinks`, `hard_links`, `bytes`, `skipped`.
#[no_mangle]
pub unsafe extern "C" fn wb_archive_extract(
    archive_path: *const c_char,
    dest_dir: *const c_char,
    options_json: *const c_char,
    progress: wb_progress_fn,
    userdata: *mut c_void,
    cancel: *const wb_cancel,
    summary_json: *mut *mut c_char,
    err: *mut *mut wb_error,
) -> i32 {
    clear_string(summary_json);
    boundary(err, || {
        let archive = str_arg(archive_path, "archive_path")?;
        let dest = str_arg(dest_dir, "dest_dir")?;
        let opts = wire::archive_options(opt_str_arg(options_json, "options_json")?)?;
        let summary = with_control(progress, userdata, cancel, |ctl| {
            archive_extract(Path::new(archive), Path::new(dest), &opts, ctl)
        })?;
        put_string(summary_json, wire::restore_summary(&summary));
        Ok(())
    })
}

/// The entries directly under directory `dir` (NULL or `""`: the top
/// level) in the `.tar.gz` file `archive_path`, as `wb_backup_files`:
/// `*files_json` is `{"entries": [...], "path"}`. From the index beside the
/// archive (`<archive_path>.index`) when it matches; else the archive is
/// read once and the index written beside it (when the directory allows;
/// failing to write it is not an error).
#[no_mangle]
pub unsafe extern "C" fn wb_archive_list(
    archive_path: *const c_char,
    dir: *const c_char,
    files_json: *mut *mut c_char,
    err: *mut *mut wb_error,
) -> i32 {
    clear_string(files_json);
    boundary(err, || {
        let archive = str_arg(archive_path, "archive_path")?;
        let dir = opt_str_arg(dir, "dir")?.unwrap_or("");
        let entries = archive_list(Path::new(archive), dir)?;
        put_string(files_json, wire::file_listing(dir, &entries));
        Ok(())
    })
}

/// Verifies the `.tar.gz` file `archive_path` as `wb_backup_verify` does a
/// backup (against the index beside it when there is one); `*report_json`
/// as there.
#[no_mangle]
pub unsafe extern "C" fn wb_archive_verify(
    archive_path: *const c_char,
    progress: wb_progress_fn,
    userdata: *mut c_void,
    cancel: *const wb_cancel,
    report_json: *mut *mut c_char,
    err: *mut *mut wb_error,
) -> i32 {
    clear_string(report_json);
    boundary(err, || {
        let archive = str_arg(archive_path, "archive_path")?;
        let report = with_control(progress, userdata, cancel, |ctl| {
            archive_verify(Path::new(archive), ctl)
        })?;
        put_string(report_json, wire::verify_report(&report));
        Ok(())
    })
}
