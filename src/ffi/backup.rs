//! The three backup operations of the node.

use std::ffi::{c_char, c_void};

use super::cancel::wb_cancel;
use super::engine::{engine_arc, engine_ref, wb_engine};
use super::error::wb_error;
use super::support::{boundary, clear_string, opt_str_arg, put_string, str_arg, with_control};
use super::{wb_progress_fn, wire};

/// Validates a create request (the body of `POST /api/servers/:uuid/backup`)
/// without starting it: bad JSON or field, bad UUID or unknown adapter
/// (`WB_INVALID_ARGUMENT`), unknown server (`WB_NOT_FOUND`), a backup uuid
/// that exists or runs, or a busy server (`WB_CONFLICT`). Cheap; a host
/// calls it before answering 202. It reserves nothing: `wb_backup_create`
/// checks again, and its first progress report (`WB_PHASE_STARTED`) is the
/// moment the request is accepted for good.
#[no_mangle]
pub unsafe extern "C" fn wb_backup_create_check(
    engine: *const wb_engine,
    server_uuid: *const c_char,
    request_json: *const c_char,
    err: *mut *mut wb_error,
) -> i32 {
    boundary(err, || {
        let engine = engine_ref(engine)?;
        let server = str_arg(server_uuid, "server_uuid")?;
        let request_json = str_arg(request_json, "request_json")?;
        // An unknown server is reported before a faulty body.
        engine.check_server(server)?;
        engine.check_create(server, &wire::create_request(request_json)?)?;
        Ok(())
    })
}

/// Creates a backup of server `server_uuid` from `request_json`
/// (`{"adapter","uuid","ignore"}`, optionally `"reuse": false`). Blocks until the archive is written (and,
/// for `s3`, uploaded) and, with a Panel configured, reported. On success
/// `*details_json` (if `details_json` is not NULL) is the Panel status body
/// `{"checksum","checksum_type","size","successful","parts"}` plus `files`,
/// `changed` (files that changed while read), `skipped`, `reused_members`
/// and `reused_bytes` (what was copied from the previous local archive); free it with
/// `wb_string_free`. `progress`, `userdata` and `cancel` may be NULL.
///
/// Before any file is read, the tree is measured (a walk that reads no
/// data) and the archive's size estimated; when the backup directory's
/// filesystem has less room free, the call fails with `WB_QUOTA` naming
/// both figures (after `WB_PHASE_STARTED`: the Panel is told of the
/// failure). A body with `"dry_run": true` is refused
/// (`WB_INVALID_ARGUMENT`): see `wb_backup_dry_run`.
///
/// Node policy: while `max_running_backups` backups run, the call is still
/// accepted (`WB_PHASE_STARTED`, holding the server and the uuid) and then
/// waits for a slot, oldest first; cancelling it (its token, or
/// `wb_backup_delete` of its uuid) ends the wait with `WB_CANCELLED`. A
/// second create of a queued or running uuid, or on a busy server, is
/// `WB_CONFLICT`; after `wb_engine_cancel_all` it is `WB_CANCELLED`. The
/// server and the slot are given back before the Panel is told
/// (`WB_PHASE_REPORT`).
#[no_mangle]
pub unsafe extern "C" fn wb_backup_create(
    engine: *const wb_engine,
    server_uuid: *const c_char,
    request_json: *const c_char,
    progress: wb_progress_fn,
    userdata: *mut c_void,
    cancel: *const wb_cancel,
    details_json: *mut *mut c_char,
    err: *mut *mut wb_error,
) -> i32 {
    clear_string(details_json);
    boundary(err, || {
        let engine = engine_ref(engine)?;
        let server = str_arg(server_uuid, "server_uuid")?;
        let request_json = str_arg(request_json, "request_json")?;
        engine.check_server(server)?;
        let request = wire::create_request(request_json)?;
        let details = with_control(progress, userdata, cancel, |ctl| {
            engine.create_backup(server, &request, ctl)
        })?;
        put_string(details_json, wire::backup_details(&details));
        Ok(())
    })
}

/// What a backup of server `server_uuid` with `request_json` (the create
/// body, `{"adapter","uuid","ignore"}`; `dry_run` may be given and is not
/// needed) would hold, without making it: the walk of a backup, with the
/// same ignore rules and exclusions, reading no file data. Nothing is
/// written and the Panel is not called; the call takes neither the server
/// nor a backup slot (it never waits for, or delays, a backup or restore).
/// On success `*report_json` (if not NULL) is
/// `{"bytes","entries","estimated_size","files","ignored","ignored_count",
/// "skipped","skipped_count"}`: bytes of file data, entries and files the
/// archive would hold, the estimate of its size (that of the space check
/// of a create), the paths the ignore rules leave out (all counted, the
/// first 1,000 listed; an ignored directory is one path, its contents are
/// not walked) and what a backup would skip for other reasons (the first
/// 100, as `wb_backup_create`'s `skipped`); free it with `wb_string_free`.
/// `cancel` may be NULL; a cancel stops the walk within one entry
/// (`WB_CANCELLED`). Unknown server: `WB_NOT_FOUND`; a faulty body:
/// `WB_INVALID_ARGUMENT`.
#[no_mangle]
pub unsafe extern "C" fn wb_backup_dry_run(
    engine: *const wb_engine,
    server_uuid: *const c_char,
    request_json: *const c_char,
    cancel: *const wb_cancel,
    report_json: *mut *mut c_char,
    err: *mut *mut wb_error,
) -> i32 {
    clear_string(report_json);
    boundary(err, || {
        let engine = engine_ref(engine)?;
        let server = str_arg(server_uuid, "server_uuid")?;
        let request_json = str_arg(request_json, "request_json")?;
        engine.check_server(server)?;
        let request = wire::create_request(request_json)?;
        let report = with_control(None, std::ptr::null_mut(), cancel, |ctl| {
            engine.dry_run_backup(server, &request, ctl)
        })?;
        put_string(report_json, wire::dry_run_report(&report));
        Ok(())
    })
}

/// Validates a restore request (the body of
/// `POST /api/servers/:uuid/backup/:id/restore`) without starting it: bad
/// body, adapter, backup UUID or download URL (`WB_INVALID_ARGUMENT`),
/// unknown server or missing local archive (`WB_NOT_FOUND`), busy server
/// (`WB_CONFLICT`).
#[no_mangle]
pub unsafe extern "C" fn wb_backup_restore_check(
    engine: *const wb_engine,
    server_uuid: *const c_char,
    backup_uuid: *const c_char,
    request_json: *const c_char,
    err: *mut *mut wb_error,
) -> i32 {
    boundary(err, || {
        let engine = engine_ref(engine)?;
        let server = str_arg(server_uuid, "server_uuid")?;
        let backup = str_arg(backup_uuid, "backup_uuid")?;
        let request_json = str_arg(request_json, "request_json")?;
        // An unknown server is reported before a faulty body, and a faulty
        // body before a bad backup uuid.
        engine.check_server(server)?;
        engine.check_restore(server, backup, &wire::restore_request(request_json)?)
    })
}

/// Restores backup `backup_uuid` into server `server_uuid` from
/// `request_json` (`{"adapter","truncate_directory","download_url"}`).
/// Blocks until the files are in place. If it fails or is cancelled, the
/// server's files are as they were before the call. A restore that cannot
/// fit fails with `WB_QUOTA` before the server's files are touched: the
/// archive's uncompressed size (from its gzip members' headers, for a local
/// archive of this engine's) or its bytes of file data (recorded by this
/// node's create of it) against the free space of the server's filesystem,
/// and the file data against `disk_limit`; for other archives the size is
/// not known beforehand and only the limit checks during the restore apply.
/// With a Panel, the result
/// (success or failure) is reported by the engine's reporter thread in the
/// background, after the call has returned: retried for 30 s (or
/// `report_retry_s` when shorter), then parked in
/// `<backup_directory>/.pending/<uuid>.restore.json` for
/// `wb_engine_send_pending_reports`.
#[no_mangle]
pub unsafe extern "C" fn wb_backup_restore(
    engine: *const wb_engine,
    server_uuid: *const c_char,
    backup_uuid: *const c_char,
    request_json: *const c_char,
    progress: wb_progress_fn,
    userdata: *mut c_void,
    cancel: *const wb_cancel,
    err: *mut *mut wb_error,
) -> i32 {
    boundary(err, || {
        let engine = engine_ref(engine)?;
        let server = str_arg(server_uuid, "server_uuid")?;
        let backup = str_arg(backup_uuid, "backup_uuid")?;
        let request_json = str_arg(request_json, "request_json")?;
        engine.check_server(server)?;
        let request = wire::restore_request(request_json)?;
        with_control(progress, userdata, cancel, |ctl| {
            engine.restore_backup(server, backup, &request, ctl)
        })?;
        Ok(())
    })
}

/// Deletes the local archive of backup `backup_uuid`: `WB_NOT_FOUND` if there
/// is none. A backup of that uuid still being created, or waiting for a
/// slot, is cancelled, its partial file removed, and the call succeeds (it
/// waits up to 60 s for the backup to stop, else `WB_INTERNAL`; called from
/// that backup's own progress callback, it returns at once, and the backup
/// stops, removing its partial file, when the callback returns). It never
/// waits for the Panel: a backup whose archive is written and whose result
/// the Panel is still being told is deleted at once, its report goes on.
#[no_mangle]
pub unsafe extern "C" fn wb_backup_delete(
    engine: *const wb_engine,
    server_uuid: *const c_char,
    backup_uuid: *const c_char,
    err: *mut *mut wb_error,
) -> i32 {
    boundary(err, || {
        let engine = engine_ref(engine)?;
        engine.delete_backup(
            str_arg(server_uuid, "server_uuid")?,
            str_arg(backup_uuid, "backup_uuid")?,
        )
    })
}

/// Starts a create like `wb_backup_create`, on a thread of the engine's,
/// and returns once it is accepted (`WB_OK`: from then on
/// `wb_backup_status` knows it) or has failed before that (its status: bad
/// request, unknown server, `WB_CONFLICT`, ...). Its progress and outcome
/// are read with `wb_backup_status` and `wb_backup_wait`; it is cancelled
/// with `wb_backup_cancel`, `wb_backup_delete` or `wb_engine_cancel_all`.
#[no_mangle]
pub unsafe extern "C" fn wb_backup_start(
    engine: *const wb_engine,
    server_uuid: *const c_char,
    request_json: *const c_char,
    err: *mut *mut wb_error,
) -> i32 {
    boundary(err, || {
        let engine = engine_arc(engine)?;
        let server = str_arg(server_uuid, "server_uuid")?;
        let request_json = str_arg(request_json, "request_json")?;
        engine.check_server(server)?;
        engine.start_backup(server, &wire::create_request(request_json)?)
    })
}

/// Starts a restore like `wb_backup_restore`, on a thread of the engine's,
/// and returns once it is accepted or has failed before that, as
/// `wb_backup_start`. Its outcome is the state `wb_backup_wait` returns
/// once it has ended (`error_status` the status the blocking call would
/// have returned).
#[no_mangle]
pub unsafe extern "C" fn wb_restore_start(
    engine: *const wb_engine,
    server_uuid: *const c_char,
    backup_uuid: *const c_char,
    request_json: *const c_char,
    err: *mut *mut wb_error,
) -> i32 {
    boundary(err, || {
        let engine = engine_arc(engine)?;
        let server = str_arg(server_uuid, "server_uuid")?;
        let backup = str_arg(backup_uuid, "backup_uuid")?;
        let request_json = str_arg(request_json, "request_json")?;
        engine.check_server(server)?;
        engine.start_restore(server, backup, &wire::restore_request(request_json)?)
    })
}

/// The state of backup `backup_uuid` of server `server_uuid`: its newest
/// operation (a create, or a restore of it), else its local archive.
/// `*state_json` is `{"uuid","server","kind","adapter","state","phase",
/// "bytes_done","bytes_total","files","size","checksum","error",
/// "error_status","started_at","finished_at","panel_report","seq"}`:
/// `kind` `"create"` or `"restore"`; `state` `"queued"`, `"running"`,
/// `"succeeded"`, `"failed"` or `"cancelled"`; `phase` the last progress
/// phase in lower case (`"started"`, `"archive"`, ..., `"done"`);
/// `error` the message and `error_status` the `WB_*` value of a failed or
/// cancelled operation (else null); times in RFC 3339, UTC (`finished_at`
/// null until it ends); `seq` grows at each change (see `wb_backup_wait`).
/// A local archive the engine ran no operation for is `succeeded`, with its
/// size and its file's time. `WB_NOT_FOUND` when neither is known. Free the
/// string with `wb_string_free`.
#[no_mangle]
pub unsafe extern "C" fn wb_backup_status(
    engine: *const wb_engine,
    server_uuid: *const c_char,
    backup_uuid: *const c_char,
    state_json: *mut *mut c_char,
    err: *mut *mut wb_error,
) -> i32 {
    clear_string(state_json);
    boundary(err, || {
        let engine = engine_ref(engine)?;
        let server = str_arg(server_uuid, "server_uuid")?;
        let backup = str_arg(backup_uuid, "backup_uuid")?;
        let record = engine.backup_status(server, backup)?;
        put_string(state_json, wire::operation_record(&record));
        Ok(())
    })
}

/// Waits until the state of backup `backup_uuid` has a `seq` above
/// `after_seq`, its operation has ended, or `timeout_ms` milliseconds have
/// passed, then stores the state (as `wb_backup_status`) in `*state_json`.
/// Progress wakes a waiter at most 4 times a second (phase changes and the
/// end at once). A backup with no operation in flight answers at once.
/// `WB_NOT_FOUND` as `wb_backup_status`.
#[no_mangle]
pub unsafe extern "C" fn wb_backup_wait(
    engine: *const wb_engine,
    server_uuid: *const c_char,
    backup_uuid: *const c_char,
    after_seq: u64,
    timeout_ms: u32,
    state_json: *mut *mut c_char,
    err: *mut *mut wb_error,
) -> i32 {
    clear_string(state_json);
    boundary(err, || {
        let engine = engine_ref(engine)?;
        let server = str_arg(server_uuid, "server_uuid")?;
        let backup = str_arg(backup_uuid, "backup_uuid")?;
        let timeout = std::time::Duration::from_millis(timeout_ms.into());
        let record = engine.wait_backup(server, backup, after_seq, timeout)?;
        put_string(state_json, wire::operation_record(&record));
        Ok(())
    })
}

/// The backups of server `server_uuid` (operations in flight, and finished
/// ones whose archives are there), newest first: `*json` is a JSON array of
/// states as `wb_backup_status` gives them. Free it with `wb_string_free`.
#[no_mangle]
pub unsafe extern "C" fn wb_backup_list(
    engine: *const wb_engine,
    server_uuid: *const c_char,
    json: *mut *mut c_char,
    err: *mut *mut wb_error,
) -> i32 {
    clear_string(json);
    boundary(err, || {
        let engine = engine_ref(engine)?;
        let records = engine.list_backups(str_arg(server_uuid, "server_uuid")?)?;
        put_string(json, wire::operation_records(&records));
        Ok(())
    })
}

/// Cancels the queued or running create or restore of backup `backup_uuid`
/// on server `server_uuid` without waiting: it stops within a second (a
/// create removes its partial file and reports `successful: false`, a
/// restore leaves the server's files as they were). `WB_CONFLICT` when its
/// operation has already ended, when a create's archive is written and
/// only its report to the Panel is going out, or when a restore has begun
/// putting its files in place (phase `commit`, which is not undone);
/// `WB_NOT_FOUND` when the engine knows no such backup.
#[no_mangle]
pub unsafe extern "C" fn wb_backup_cancel(
    engine: *const wb_engine,
    server_uuid: *const c_char,
    backup_uuid: *const c_char,
    err: *mut *mut wb_error,
) -> i32 {
    boundary(err, || {
        let engine = engine_ref(engine)?;
        engine.cancel_backup(
            str_arg(server_uuid, "server_uuid")?,
            str_arg(backup_uuid, "backup_uuid")?,
        )
    })
}

/// Removes every local archive of server `server_uuid` the engine knows of,
/// and cancels its queued or running creates (waiting for them to stop
/// writing, 60 s at most each, never for the Panel, as `wb_backup_delete`);
/// other servers' backups are untouched. `*json` (if not
/// NULL) is `{"deleted": n}`; free it with `wb_string_free`.
#[no_mangle]
pub unsafe extern "C" fn wb_backups_delete_all(
    engine: *const wb_engine,
    server_uuid: *const c_char,
    json: *mut *mut c_char,
    err: *mut *mut wb_error,
) -> i32 {
    clear_string(json);
    boundary(err, || {
        let engine = engine_ref(engine)?;
        let deleted = engine.delete_all_backups(str_arg(server_uuid, "server_uuid")?)?;
        put_string(json, wire::deleted_count(deleted));
        Ok(())
    })
}

/// The entries directly under directory `dir` (NULL, `""` or `"/"`: the
/// top level; `world`, `world/` and `/world` alike) in backup
/// `backup_uuid` of server `server_uuid`. `*files_json` is
/// `{"entries": [{"link","mode","mtime","name","size","type"}], "path"}`
/// sorted by name (see docs/api.md); free it with `wb_string_free`. Read
/// from the archive's index; an archive without one is read once and the
/// index written beside it. `WB_INVALID_ARGUMENT` for a path with `..`;
/// `WB_NOT_FOUND` for an unknown server or backup, a path the archive does
/// not hold or that is not a directory, or an `s3` backup whose index is
/// not on this node; `WB_CORRUPT_ARCHIVE` for an archive that cannot be
/// read. Does not hold the server.
#[no_mangle]
pub unsafe extern "C" fn wb_backup_files(
    engine: *const wb_engine,
    server_uuid: *const c_char,
    backup_uuid: *const c_char,
    dir: *const c_char,
    files_json: *mut *mut c_char,
    err: *mut *mut wb_error,
) -> i32 {
    clear_string(files_json);
    boundary(err, || {
        let engine = engine_ref(engine)?;
        let server = str_arg(server_uuid, "server_uuid")?;
        let backup = str_arg(backup_uuid, "backup_uuid")?;
        let dir = opt_str_arg(dir, "dir")?.unwrap_or("");
        let entries = engine.list_files(server, backup, dir)?;
        put_string(files_json, wire::file_listing(dir, &entries));
        Ok(())
    })
}

/// Reads the local archive of backup `backup_uuid` once and checks every
/// gzip member (CRC, length; with the index beside it, offset, lengths and
/// checksum), the tar structure and, with an index, every entry against
/// it. `*report_json` is `{"bytes","error_count","errors","files",
/// "indexed","members","ok"}`, each error `{"member","message","offset",
/// "path"}` (at most 100 listed, all counted in `error_count`); free it
/// with `wb_string_free`. Damage is in the report (`ok` false), not the
/// status: `WB_OK` whenever the archive could be read to its end.
/// `WB_NOT_FOUND` for an unknown server or a backup without a local
/// archive, `WB_CANCELLED`, `WB_IO`. Progress: `WB_PHASE_STARTED`, then
/// `WB_PHASE_EXTRACT` (archive bytes read of the archive's size), then
/// `WB_PHASE_DONE`. Does not hold the server: it only reads, from a file it
/// opened at the start (a delete meanwhile does not cut it short).
#[no_mangle]
pub unsafe extern "C" fn wb_backup_verify(
    engine: *const wb_engine,
    server_uuid: *const c_char,
    backup_uuid: *const c_char,
    progress: wb_progress_fn,
    userdata: *mut c_void,
    cancel: *const wb_cancel,
    report_json: *mut *mut c_char,
    err: *mut *mut wb_error,
) -> i32 {
    clear_string(report_json);
    boundary(err, || {
        let engine = engine_ref(engine)?;
        let server = str_arg(server_uuid, "server_uuid")?;
        let backup = str_arg(backup_uuid, "backup_uuid")?;
        let report = with_control(progress, userdata, cancel, |ctl| {
            engine.verify_backup(server, backup, ctl)
        })?;
        put_string(report_json, wire::verify_report(&report));
        Ok(())
    })
}
