//! `wb_engine`: configuration and lifetime.

use std::ffi::c_char;

use super::error::wb_error;
use super::support::{boundary, str_arg};
use crate::engine::Engine;
use crate::error::Error;

/// An engine: one node's configuration and the state of its running
/// operations. Safe to share between threads.
pub struct wb_engine {
    pub(crate) inner: std::sync::Arc<Engine>,
}

/// Creates an engine from a JSON configuration (docs/api.md section 12):
/// `data_directory`, `backup_directory`, `compression_level` (`"none"`,
/// `"best_speed"`, `"best_compression"`), `write_limit` (MiB/s), `threads`
/// (0 = all cores), `owner` `{"uid","gid"}`, `disk_limit` (bytes),
/// `restore_host_allowlist` (hosts, IPs, CIDRs), `upload_concurrency`,
/// `max_running_backups` (backups running at once, default 4; more wait,
/// accepted, inside `wb_backup_create`), and `panel` `{"url","token_id","token","report_retry_s"}`. Unknown or
/// ill-typed keys are `WB_INVALID_ARGUMENT` naming the key. Creating an
/// engine removes abandoned temporary archives and finishes or undoes
/// restores that a crash interrupted. With a Panel, it also starts the
/// engine's reporter thread, which tells the Panel the results of restores
/// in the background until `wb_engine_cancel_all` or `wb_engine_free`.
#[no_mangle]
pub unsafe extern "C" fn wb_engine_new(
    config_json: *const c_char,
    out: *mut *mut wb_engine,
    err: *mut *mut wb_error,
) -> i32 {
    if !out.is_null() {
        // SAFETY: `out` is a valid `wb_engine **` by contract.
        unsafe { *out = std::ptr::null_mut() };
    }
    boundary(err, || {
        if out.is_null() {
            return Err(Error::invalid("`out` is NULL"));
        }
        let config = super::wire::engine_config(str_arg(config_json, "config_json")?)?;
        let engine = Engine::new(config)?;
        // SAFETY: checked non-NULL above.
        unsafe {
            *out = Box::into_raw(Box::new(wb_engine {
                inner: std::sync::Arc::new(engine),
            }))
        };
        Ok(())
    })
}

/// Frees an engine. No call may still be using it; the calls started with
/// `wb_backup_start` or `wb_restore_start` are waited for (call
/// `wb_engine_cancel_all` first to stop them). Then stops and joins the
/// reporter thread: restore reports not yet delivered are parked in
/// `<backup_directory>/.pending/` (this waits for a Panel call in flight,
/// at most its 15 s timeout). NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn wb_engine_free(engine: *mut wb_engine) {
    if !engine.is_null() {
        // SAFETY: a pointer from `wb_engine_new`, freed once.
        let engine = unsafe { Box::from_raw(engine) };
        engine.inner.wait_idle(std::time::Duration::MAX);
        drop(engine);
    }
}

/// Waits up to `timeout_ms` milliseconds for every call started with
/// `wb_backup_start` or `wb_restore_start` to end (a host shutting down,
/// after `wb_engine_cancel_all`): 1 if they all have, else 0. NULL: 1.
#[no_mangle]
pub unsafe extern "C" fn wb_engine_wait_idle(engine: *const wb_engine, timeout_ms: u32) -> i32 {
    match engine_ref(engine) {
        Ok(engine) => {
            i32::from(engine.wait_idle(std::time::Duration::from_millis(timeout_ms.into())))
        }
        Err(_) => 1,
    }
}

pub(crate) fn engine_arc<'a>(
    engine: *const wb_engine,
) -> crate::error::Result<&'a std::sync::Arc<Engine>> {
    // SAFETY: NULL or a live engine the caller keeps alive during the call.
    unsafe { engine.as_ref() }
        .map(|e| &e.inner)
        .ok_or_else(|| Error::invalid("`engine` is NULL"))
}

pub(crate) fn engine_ref<'a>(engine: *const wb_engine) -> crate::error::Result<&'a Engine> {
    engine_arc(engine).map(|e| &**e)
}

/// Sends the backup status reports and restore reports that could not be
/// delivered earlier (parked in `<backup_directory>/.pending/` as
/// `<uuid>.json` and `<uuid>.restore.json`), one attempt each with the
/// usual retries; a report is dropped once the Panel answers 2xx or a final
/// 4xx. Hosts call it when they start (it may block while the Panel is slow,
/// so from a background thread). On success `*summary_json` (if not NULL) is
/// `{"sent": n, "pending": m}`. Without a Panel it does nothing.
#[no_mangle]
pub unsafe extern "C" fn wb_engine_send_pending_reports(
    engine: *const wb_engine,
    cancel: *const super::cancel::wb_cancel,
    summary_json: *mut *mut c_char,
    err: *mut *mut wb_error,
) -> i32 {
    super::support::clear_string(summary_json);
    boundary(err, || {
        let engine = engine_ref(engine)?;
        let reports = engine.send_pending_reports(super::cancel::token(cancel));
        super::support::put_string(summary_json, super::wire::pending_reports(reports));
        Ok(())
    })
}

/// Starts sending again, on a thread of the engine's, the reports
/// `wb_engine_send_pending_reports` would send, and logs through the
/// engine's log (`wb_engine_set_logger`) how many went and how many are
/// still parked: "parked Panel reports sent=N still_pending=M".
/// `wb_engine_cancel_all` stops it; `wb_engine_wait_idle` and
/// `wb_engine_free` wait for it. Without a Panel it does nothing. A host
/// calls it once, when it starts, after setting the logger.
#[no_mangle]
pub unsafe extern "C" fn wb_engine_resend_parked_reports(
    engine: *const wb_engine,
    err: *mut *mut wb_error,
) -> i32 {
    boundary(err, || engine_arc(engine)?.resend_parked_reports())
}

/// Cancels every backup and restore of this engine in progress (queued,
/// running, or still telling the Panel, whose report is then parked for the
/// next start) and refuses new ones from now on with `WB_CANCELLED` ("The
/// node is shutting down."); deletes still work. Each cancelled call returns
/// `WB_CANCELLED` promptly, its partial files removed. Also stops and joins
/// the reporter thread, parking the restore reports not yet delivered (and
/// any handed to it later); this waits for a Panel call in flight, at most
/// its 15 s timeout. For a host shutting down; safe from any thread, and
/// more than once. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn wb_engine_cancel_all(engine: *const wb_engine) {
    if let Ok(engine) = engine_ref(engine) {
        engine.cancel_all();
    }
}
