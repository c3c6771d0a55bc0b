//! The node's HTTP API in one call (see `crate::http_api`): a host passes
//! each authenticated request and writes back the answer it is given.

use std::ffi::c_char;
use std::time::Duration;

use super::engine::{engine_arc, engine_ref, wb_engine};
use super::error::wb_error;
use super::support::{boundary, clear_string, lossy_arg, put_string, str_arg};
use super::wire;
use crate::error::Error;
use crate::http_api::{self, Body, HttpRequest};

/// `wb_http_handle` flag: a restore answers 202 once started instead of 204
/// once its files are in place (the hosts' `--async-restore`).
pub const WB_HTTP_ASYNC_RESTORE: u32 = 1;
/// `wb_http_handle` flag: the body was over the host's limit (1 MiB) and
/// was not passed; a route that reads a body answers 413.
pub const WB_HTTP_BODY_TOO_LARGE: u32 = 2;
/// `wb_http_handle` flag: reading the body failed; a route that reads a
/// body answers 400 (with `Connection: close`).
pub const WB_HTTP_BODY_UNREADABLE: u32 = 4;
/// `wb_http_handle` flag: the body did not arrive within the host's read
/// timeout; a route that reads a body answers 408 (with `Connection: close`).
pub const WB_HTTP_BODY_TIMED_OUT: u32 = 8;

/// Answers one request of the node's HTTP API (docs/api.md sections 1-5),
/// after the host has checked its bearer token: `method` and `path` (decoded,
/// without the query; bytes that are not UTF-8 are taken as U+FFFD), `query` (raw, without `?`; NULL for none), the body
/// (`body_len` bytes, `body` may be NULL when 0) and `WB_HTTP_*` flags.
/// Routing, 404 and 405, Wings' messages, the engine calls and the
/// rendering of the answer are the library's. It blocks for as long as the
/// answer needs (a create with `"wait": true`, a synchronous restore).
///
/// `*response_json` (free with `wb_string_free`) is
/// `{"status": 204, "headers": [["Name","value"], ...], "body": "...",
/// "started": null | {"kind": "backup"|"restore", "server", "backup"},
/// "stream": null | {"server", "backup", "seq"}}`: send `status`, `headers`
/// and `body` as they are (no header other than these, plus what the HTTP
/// server adds itself). `started` names a create or restore the request
/// started; the engine logs its end (`wb_engine_set_logger`, at
/// `WB_LOG_INFO`, `WB_LOG_WARN` if it failed: "backup finished server=...
/// backup=... bytes=... outcome=ok duration=1.234s"), and
/// `wb_engine_wait_idle` waits for that line as for the operation. `stream` means an event stream goes
/// on after `body`: call `wb_http_next_event` until an event is `done`,
/// writing and flushing each `chunk`. Errors of the request itself are
/// answers (status >= 400), not statuses of this call; the call fails only
/// on bad arguments (`WB_INVALID_ARGUMENT`) or a panic (`WB_INTERNAL`).
#[no_mangle]
pub unsafe extern "C" fn wb_http_handle(
    engine: *const wb_engine,
    method: *const c_char,
    path: *const c_char,
    query: *const c_char,
    body: *const u8,
    body_len: usize,
    flags: u32,
    response_json: *mut *mut c_char,
    err: *mut *mut wb_error,
) -> i32 {
    clear_string(response_json);
    boundary(err, || {
        let engine = engine_arc(engine)?;
        let bytes: &[u8] = if body_len == 0 {
            &[]
        } else if body.is_null() {
            return Err(Error::invalid("`body` is NULL"));
        } else {
            // SAFETY: the caller passes `body_len` readable bytes at `body`.
            unsafe { std::slice::from_raw_parts(body, body_len) }
        };
        let body = if flags & WB_HTTP_BODY_TIMED_OUT != 0 {
            Body::TimedOut
        } else if flags & WB_HTTP_BODY_UNREADABLE != 0 {
            Body::Unreadable
        } else if flags & WB_HTTP_BODY_TOO_LARGE != 0 {
            Body::TooLarge
        } else {
            Body::Read(bytes)
        };
        // A path or query that is not UTF-8 matches no route: decoded
        // lossily, it is answered 404 rather than refused.
        let path = lossy_arg(path, "path")?;
        let query = match query.is_null() {
            true => Default::default(),
            false => lossy_arg(query, "query")?,
        };
        let req = HttpRequest {
            method: str_arg(method, "method")?,
            path: &path,
            query: &query,
            body,
            async_restore: flags & WB_HTTP_ASYNC_RESTORE != 0,
        };
        let resp = http_api::handle(engine, &req);
        put_string(response_json, wire::http_response(&resp));
        Ok(())
    })
}

/// The next event of a stream `wb_http_handle` began (its `stream`): waits
/// up to `timeout_ms` for the backup's state to move past `after_seq`.
/// `*event_json` is `{"chunk": "event: ...\n\n" | null, "seq", "done"}`:
/// write and flush `chunk`, then ask again after `seq` unless `done`;
/// `chunk` null means nothing changed in time (check the client, ask
/// again). `WB_NOT_FOUND` once the backup is gone (end the stream).
#[no_mangle]
pub unsafe extern "C" fn wb_http_next_event(
    engine: *const wb_engine,
    server_uuid: *const c_char,
    backup_uuid: *const c_char,
    after_seq: u64,
    timeout_ms: u32,
    event_json: *mut *mut c_char,
    err: *mut *mut wb_error,
) -> i32 {
    clear_string(event_json);
    boundary(err, || {
        let engine = engine_ref(engine)?;
        let server = str_arg(server_uuid, "server_uuid")?;
        let backup = str_arg(backup_uuid, "backup_uuid")?;
        let timeout = Duration::from_millis(timeout_ms.into());
        let event = http_api::next_event(engine, server, backup, after_seq, timeout)?;
        put_string(event_json, wire::http_event(event.as_ref(), after_seq));
        Ok(())
    })
}

/// Waits up to `timeout_ms` for the create or restore a request started
/// (`wb_http_handle`'s `started`: `kind`, `server_uuid`, `backup_uuid`) to
/// end. `*end_json` is `{"ended": false}` while it runs, else `{"ended":
/// true, "level": WB_LOG_INFO|WB_LOG_WARN, "message": "backup finished",
/// "fields": [["server", ...], ["backup", ...], ["bytes", ...], ...,
/// ["outcome", "ok"|"WB_..."], ["error", ...]]}`: the fields of the line
/// the engine logs itself when the operation ends.
#[no_mangle]
pub unsafe extern "C" fn wb_http_operation_end(
    engine: *const wb_engine,
    kind: *const c_char,
    server_uuid: *const c_char,
    backup_uuid: *const c_char,
    timeout_ms: u32,
    end_json: *mut *mut c_char,
    err: *mut *mut wb_error,
) -> i32 {
    clear_string(end_json);
    boundary(err, || {
        let engine = engine_ref(engine)?;
        let kind = match str_arg(kind, "kind")? {
            "backup" => "backup",
            "restore" => "restore",
            _ => {
                return Err(Error::invalid(
                    "`kind` is neither \"backup\" nor \"restore\"",
                ))
            }
        };
        let started = http_api::Started {
            kind,
            server: str_arg(server_uuid, "server_uuid")?.into(),
            backup: str_arg(backup_uuid, "backup_uuid")?.into(),
        };
        let timeout = Duration::from_millis(timeout_ms.into());
        let end = http_api::operation_end(engine, &started, timeout);
        put_string(end_json, wire::operation_end(end.as_ref()));
        Ok(())
    })
}
