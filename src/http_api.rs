//! The node's HTTP API (docs/api.md sections 1-5), once for every host: the
//! route table, Wings' 404 and 405 answers and messages, reading request
//! bodies, calling the engine, and the status, headers and body of each
//! answer, byte for byte. A host keeps its HTTP server, authentication, the
//! request-size limit (it tells the dispatcher how reading the body went),
//! its request log, and the loop that writes an event stream. The end of
//! each create or restore a request started is logged here, through the
//! engine's log.
//!
//! Adding a route is one line in [`ROUTES`] and a handler function.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::ffi::wire;
use crate::log::Level;
use crate::operations::OperationRecord;
use crate::Status;

/// Wings' message for a path, server or backup that does not exist.
pub const MSG_NO_RESOURCE: &str = "The requested resource does not exist on this instance.";
pub const MSG_NOT_ALLOWED: &str = "The requested method is not allowed on this endpoint.";
pub const MSG_TOO_LARGE: &str = "The request body is larger than the 1 MiB allowed.";
pub const MSG_UNREADABLE: &str = "The request body could not be read.";
pub const MSG_SLOW_BODY: &str = "The request body was not received in time.";

/// How long one wait on the engine lasts inside a longer wait.
const WAIT_SLICE: Duration = Duration::from_secs(1);

/// The request body as the host read it.
#[derive(Clone, Copy, Debug)]
pub enum Body<'a> {
    /// Read whole, within the host's limit (1 MiB).
    Read(&'a [u8]),
    /// Over the limit: 413 on the routes that read a body.
    TooLarge,
    /// The connection failed while it was read: 400.
    Unreadable,
    /// Not received within the host's read timeout: 408.
    TimedOut,
}

/// One request, after the host's authentication.
#[derive(Clone, Copy, Debug)]
pub struct HttpRequest<'a> {
    pub method: &'a str,
    /// The decoded path, without the query.
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: &'a str,
    pub body: Body<'a>,
    /// A restore answers 202 once started instead of 204 once done.
    pub async_restore: bool,
}

/// A create or restore the engine accepted (the engine logs its end).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Started {
    pub kind: &'static str,
    pub server: String,
    pub backup: String,
}

/// An event stream to go on with: [`next_event`] after `seq`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventStream {
    pub server: String,
    pub backup: String,
    pub seq: u64,
}

/// The answer: status, headers and body to send as they are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    pub started: Option<Started>,
    /// Set on an event stream that has not ended with its first event
    /// (`body`): the host writes `body`, then each [`next_event`].
    pub stream: Option<EventStream>,
}

impl HttpResponse {
    fn empty(status: u16) -> Self {
        HttpResponse {
            status,
            headers: Vec::new(),
            body: String::new(),
            started: None,
            stream: None,
        }
    }

    /// A JSON body as the library renders it, and a newline.
    fn json(status: u16, body: String) -> Self {
        HttpResponse {
            headers: vec![("Content-Type", "application/json".into())],
            body: body + "\n",
            ..Self::empty(status)
        }
    }

    /// `{"error": message}`.
    pub fn error(status: u16, message: &str) -> Self {
        let body = serde_json::json!({ "error": message }).to_string();
        Self::json(status, escape_html(&body))
    }

    fn from_error(e: &Error) -> Self {
        Self::error(e.status.http_status(), &e.message)
    }
}

/// What a handler gets: the engine, the request, the server and the
/// captured `:id` of the path.
struct Call<'a> {
    engine: &'a Arc<Engine>,
    req: &'a HttpRequest<'a>,
    server: &'a str,
    id: &'a str,
}

type Handler = fn(&Call<'_>) -> Result<HttpResponse>;

/// One route: a method and a path under `/api/servers/:uuid/` whose `:id`
/// segment is captured.
struct Route {
    method: &'static str,
    path: &'static str,
    handler: Handler,
}

const ROUTES: &[Route] = &[
    Route {
        method: "POST",
        path: "backup",
        handler: create,
    },
    Route {
        method: "GET",
        path: "backups",
        handler: list,
    },
    Route {
        method: "DELETE",
        path: "backups",
        handler: delete_all,
    },
    Route {
        method: "DELETE",
        path: "deleteAllBackups",
        handler: delete_all,
    },
    Route {
        method: "GET",
        path: "backup/:id",
        handler: status,
    },
    Route {
        method: "DELETE",
        path: "backup/:id",
        handler: delete,
    },
    Route {
        method: "POST",
        path: "backup/:id/restore",
        handler: restore,
    },
    Route {
        method: "POST",
        path: "backup/:id/cancel",
        handler: cancel,
    },
    Route {
        method: "GET",
        path: "backup/:id/events",
        handler: events,
    },
    Route {
        method: "GET",
        path: "backup/:id/files",
        handler: files,
    },
    Route {
        method: "POST",
        path: "backup/:id/verify",
        handler: verify,
    },
];

/// The `:id` a route's path captures from `segments`, if it matches.
fn matches<'p>(route: &Route, segments: &[&'p str]) -> Option<&'p str> {
    let pattern: Vec<&str> = route.path.split('/').collect();
    if pattern.len() != segments.len() {
        return None;
    }
    let mut id = "";
    for (p, s) in pattern.iter().zip(segments) {
        match *p {
            ":id" => id = s,
            _ if p == s => {}
            _ => return None,
        }
    }
    Some(id)
}

/// Answers one request: 404 for a path no route has (an empty segment
/// included), 405 with `Allow` for a method the path does not take, 404 for
/// a server that is not a UUID naming a directory (Wings' ServerExists),
/// else the route's answer.
pub fn handle(engine: &Arc<Engine>, req: &HttpRequest<'_>) -> HttpResponse {
    let began = Instant::now();
    let not_found = || HttpResponse::error(404, MSG_NO_RESOURCE);
    let Some(rest) = req.path.strip_prefix("/api/servers/") else {
        return not_found();
    };
    let parts: Vec<&str> = rest.split('/').collect();
    if parts.len() < 2 || parts.contains(&"") {
        return not_found();
    }
    let (server, segments) = (parts[0], &parts[1..]);
    let found: Vec<(&Route, &str)> = ROUTES
        .iter()
        .filter_map(|r| matches(r, segments).map(|id| (r, id)))
        .collect();
    if found.is_empty() {
        return not_found();
    }
    let Some(&(route, id)) = found.iter().find(|(r, _)| r.method == req.method) else {
        let mut allowed: Vec<&str> = found.iter().map(|(r, _)| r.method).collect();
        allowed.sort_unstable();
        let mut resp = HttpResponse::error(405, MSG_NOT_ALLOWED);
        resp.headers.push(("Allow", allowed.join(", ")));
        return resp;
    };
    if engine.check_server(server).is_err() {
        return not_found();
    }
    let call = Call {
        engine,
        req,
        server,
        id,
    };
    let resp = (route.handler)(&call).unwrap_or_else(|e| HttpResponse::from_error(&e));
    if let Some(started) = resp.started.clone() {
        log_end(engine, started, began);
    }
    resp
}

/// Logs the end of an operation a request (begun at `began`) started, once
/// it has ended, through the engine's log: [`OperationEnd::line`] and the
/// time since the request began. The engine waits for this line as it waits
/// for the operation (`wait_idle`).
fn log_end(engine: &Arc<Engine>, started: Started, began: Instant) {
    let what = format!(
        "{} server={} backup={}",
        started.kind, started.server, started.backup
    );
    let spawned = engine.spawn("wb-operation-log", move |engine| loop {
        if let Some(end) = operation_end(engine, &started, Duration::from_secs(60)) {
            let took = began.elapsed().as_secs_f64();
            let line = format!("{} duration={took:.3}s", end.line());
            engine.logger().log(end.level, &line);
            return;
        }
    });
    if let Err(e) = spawned {
        let error = serde_json::Value::from(e.message);
        engine.logger().warn(&format!(
            "started, its end will not be logged: {what} error={error}"
        ));
    }
}

/// The body as text, or the answer to a body the host could not read
/// within its limits.
fn body_text<'a>(call: &Call<'a>) -> std::result::Result<&'a str, Box<HttpResponse>> {
    let closed = |status, message| {
        // The connection cannot carry another request after a failed read.
        let mut resp = HttpResponse::error(status, message);
        resp.headers.push(("Connection", "close".into()));
        Box::new(resp)
    };
    let bytes = match call.req.body {
        Body::Read(bytes) => bytes,
        Body::TooLarge => return Err(Box::new(HttpResponse::error(413, MSG_TOO_LARGE))),
        Body::Unreadable => return Err(closed(400, MSG_UNREADABLE)),
        Body::TimedOut => return Err(closed(408, MSG_SLOW_BODY)),
    };
    let invalid = |m: &str| Box::new(HttpResponse::from_error(&Error::invalid(m)));
    if bytes.contains(&0) {
        return Err(invalid("`request_json` contains a NUL byte"));
    }
    std::str::from_utf8(bytes).map_err(|_| invalid("`request_json` is not valid UTF-8"))
}

/// Waits until the newest operation of the backup has ended.
fn finished(engine: &Engine, server: &str, backup: &str) -> Result<OperationRecord> {
    let mut record = engine.backup_status(server, backup)?;
    while !record.state.finished() {
        record = match engine.wait_backup(server, backup, record.seq, WAIT_SLICE) {
            Ok(record) => record,
            // Its record went with the backup: a DELETE cancelled it.
            Err(e) if e.status == Status::NotFound => {
                return Err(Error::new(
                    Status::Cancelled,
                    "the operation was cancelled: the backup was deleted",
                ))
            }
            Err(e) => return Err(e),
        };
    }
    Ok(record)
}

/// The error a failed or cancelled operation ended with.
fn outcome(record: &OperationRecord) -> Result<()> {
    match record.error_status {
        Some(status) => Err(Error::new(status, record.error.clone().unwrap_or_default())),
        None => Ok(()),
    }
}

fn started(kind: &'static str, server: &str, backup: &str) -> Option<Started> {
    Some(Started {
        kind,
        server: server.into(),
        backup: backup.into(),
    })
}

/// POST .../backup: 202 once the engine has accepted the backup (it may then
/// wait for a slot); with `"wait": true` in the body, 200 and its state once
/// it has ended; with `"dry_run": true`, 200 and what the backup would hold
/// (nothing is written, the Panel is not called).
fn create(call: &Call<'_>) -> Result<HttpResponse> {
    let text = match body_text(call) {
        Ok(text) => text,
        Err(resp) => return Ok(*resp),
    };
    let request = wire::create_request(text)?;
    if request.dry_run {
        let report = call.engine.dry_run_backup(
            call.server,
            &request,
            &mut crate::progress::Control::none(),
        )?;
        return Ok(HttpResponse::json(200, wire::dry_run_report(&report)));
    }
    call.engine.start_backup(call.server, &request)?;
    let wait = serde_json::from_str::<serde_json::Value>(text)
        .map(|v| v.get("wait") == Some(&serde_json::Value::Bool(true)))
        .unwrap_or(false);
    let started = started("backup", call.server, &request.uuid);
    let mut resp = if wait {
        match finished(call.engine, call.server, &request.uuid).and_then(|r| outcome(&r).map(|_| r))
        {
            Ok(record) => HttpResponse::json(200, wire::operation_record(&record)),
            Err(e) => HttpResponse::from_error(&e),
        }
    } else {
        HttpResponse::empty(202)
    };
    resp.started = started;
    Ok(resp)
}

/// POST .../backup/:id/restore: 204 once the files are in place (the engine
/// tells the Panel in the background), or 202 once started with
/// `async_restore`. A client that gives up does not stop it halfway.
fn restore(call: &Call<'_>) -> Result<HttpResponse> {
    let text = match body_text(call) {
        Ok(text) => text,
        Err(resp) => return Ok(*resp),
    };
    let request = wire::restore_request(text)?;
    call.engine.start_restore(call.server, call.id, &request)?;
    let backup = call.id.to_ascii_lowercase();
    let mut resp = if call.req.async_restore {
        HttpResponse::empty(202)
    } else {
        match finished(call.engine, call.server, &backup).and_then(|r| outcome(&r)) {
            Ok(()) => HttpResponse::empty(204),
            Err(e) => HttpResponse::from_error(&e),
        }
    };
    resp.started = started("restore", call.server, &backup);
    Ok(resp)
}

/// DELETE .../backup/:id: the engine cancels a backup of that uuid still
/// running or queued first.
fn delete(call: &Call<'_>) -> Result<HttpResponse> {
    call.engine.delete_backup(call.server, call.id)?;
    let (backup, server) = (call.id.to_ascii_lowercase(), call.server);
    call.engine
        .logger()
        .info(&format!("backup deleted backup={backup} server={server}"));
    Ok(HttpResponse::empty(204))
}

/// GET .../backup/:id: the backup's state.
fn status(call: &Call<'_>) -> Result<HttpResponse> {
    let record = call.engine.backup_status(call.server, call.id)?;
    Ok(HttpResponse::json(200, wire::operation_record(&record)))
}

/// POST .../backup/:id/cancel: 202; the create or restore stops within a
/// second.
fn cancel(call: &Call<'_>) -> Result<HttpResponse> {
    call.engine.cancel_backup(call.server, call.id)?;
    Ok(HttpResponse::empty(202))
}

/// GET .../backups: the server's backups, newest first.
fn list(call: &Call<'_>) -> Result<HttpResponse> {
    let records = call.engine.list_backups(call.server)?;
    let body = escape_html(&wire::operation_records(&records));
    Ok(HttpResponse::json(200, body))
}

/// DELETE .../backups (and Pelican's .../deleteAllBackups): every local
/// archive of the server goes, its creates in flight are cancelled.
fn delete_all(call: &Call<'_>) -> Result<HttpResponse> {
    let deleted = call.engine.delete_all_backups(call.server)?;
    let server = call.server;
    call.engine
        .logger()
        .info(&format!("backups deleted server={server} count={deleted}"));
    Ok(HttpResponse::json(200, wire::deleted_count(deleted)))
}

/// The value of `key` in a query string (`a=1&b=x%2Fy`), percent- and
/// `+`-decoded; the last one wins. A value that is not UTF-8 once decoded
/// is an invalid argument. A `#` ends the query: a fragment some HTTP
/// servers leave on a request target (Go's) is not part of it, as it is
/// not for those that strip it (Python's).
fn query_param(query: &str, key: &str) -> Result<Option<String>> {
    let query = query.split_once('#').map_or(query, |(q, _)| q);
    let mut found = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |t: &str| {
            percent_encoding::percent_decode_str(&t.replace('+', " "))
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| Error::invalid("the query string is not valid UTF-8"))
        };
        if decode(k)? == key {
            found = Some(decode(v)?);
        }
    }
    Ok(found)
}

/// GET .../backup/:id/files?path=DIR: the entries directly under DIR (the
/// top level without `path`), from the archive's index.
fn files(call: &Call<'_>) -> Result<HttpResponse> {
    let dir = query_param(call.req.query, "path")?.unwrap_or_default();
    if dir.contains('\0') {
        return Err(Error::invalid("the path contains a NUL byte"));
    }
    let entries = call.engine.list_files(call.server, call.id, &dir)?;
    let body = escape_html(&wire::file_listing(&dir, &entries));
    Ok(HttpResponse::json(200, body))
}

/// POST .../backup/:id/verify: 200 with what a check of every member,
/// the tar structure and every entry against the index found (`ok` false
/// when anything is wrong).
fn verify(call: &Call<'_>) -> Result<HttpResponse> {
    let report =
        call.engine
            .verify_backup(call.server, call.id, &mut crate::progress::Control::none())?;
    let body = escape_html(&wire::verify_report(&report));
    Ok(HttpResponse::json(200, body))
}

/// GET .../backup/:id/events: a text/event-stream of "progress" events (the
/// state, at most 4 a second) and one "done" event, after which it ends.
fn events(call: &Call<'_>) -> Result<HttpResponse> {
    let record = call.engine.backup_status(call.server, call.id)?;
    let event = render_event(&record);
    let mut resp = HttpResponse::empty(200);
    resp.headers = vec![
        ("Content-Type", "text/event-stream".into()),
        ("Cache-Control", "no-cache".into()),
    ];
    resp.body = event.chunk;
    if !event.done {
        resp.stream = Some(EventStream {
            server: call.server.into(),
            backup: call.id.into(),
            seq: event.seq,
        });
    }
    Ok(resp)
}

/// One event of a stream, rendered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// `event: progress|done\ndata: <state>\n\n`.
    pub chunk: String,
    pub seq: u64,
    /// The last event: the stream ends after it.
    pub done: bool,
}

fn render_event(record: &OperationRecord) -> Event {
    let done = record.state.finished();
    let name = if done { "done" } else { "progress" };
    Event {
        chunk: format!(
            "event: {name}\ndata: {}\n\n",
            wire::operation_record(record)
        ),
        seq: record.seq,
        done,
    }
}

/// The next event of a stream after `after_seq`, or `None` if nothing
/// changed within `timeout` (the host checks its client and asks again).
pub fn next_event(
    engine: &Engine,
    server: &str,
    backup: &str,
    after_seq: u64,
    timeout: Duration,
) -> Result<Option<Event>> {
    let record = engine.wait_backup(server, backup, after_seq, timeout)?;
    if record.seq > after_seq || record.state.finished() {
        return Ok(Some(render_event(&record)));
    }
    Ok(None)
}

/// How an operation a request started ended, for the host's log: a
/// message (`backup finished`, `restore finished`) at `Info`, or `Warn`
/// when it failed, and its fields in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperationEnd {
    pub level: Level,
    pub message: String,
    pub fields: Vec<(&'static str, String)>,
}

/// Waits up to `timeout` for the operation `started` names to end: `None`
/// if it still runs then (ask again).
pub fn operation_end(
    engine: &Engine,
    started: &Started,
    timeout: Duration,
) -> Option<OperationEnd> {
    let (server, backup) = (started.server.as_str(), started.backup.as_str());
    let mut fields = vec![
        ("server", server.to_string()),
        ("backup", backup.to_string()),
    ];
    let deadline = Instant::now() + timeout;
    let outcome = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match engine
            .backup_status(server, backup)
            .and_then(|r| match r.state.finished() {
                true => Ok(r),
                false => engine.wait_backup(server, backup, r.seq, left.min(WAIT_SLICE)),
            }) {
            Ok(r) if r.state.finished() => {
                fields.push(("bytes", r.size.to_string()));
                if !r.checksum.is_empty() {
                    fields.push(("sha1", r.checksum.clone()));
                }
                if let Some(report) = &r.panel_report {
                    fields.push(("panel_report", report.clone()));
                }
                break outcome(&r);
            }
            Ok(_) if left.is_zero() => return None,
            Ok(_) => continue,
            Err(e) => break Err(e), // deleted meanwhile
        }
    };
    let level = match outcome {
        Ok(()) => {
            fields.push(("outcome", "ok".into()));
            Level::Info
        }
        Err(e) => {
            fields.push(("outcome", e.status.name().into()));
            fields.push(("error", e.message));
            Level::Warn
        }
    };
    Some(OperationEnd {
        level,
        message: format!("{} finished", started.kind),
        fields,
    })
}

impl OperationEnd {
    /// The log line: the message, then each field as `key=value`, the value
    /// quoted (as JSON) when it is empty or holds a space, `"`, `=` or a
    /// character that is not printable, as Go's log/slog text writes values.
    pub fn line(&self) -> String {
        crate::log::line(&self.message, self.fields.iter().map(|(k, v)| (*k, v)))
    }
}

/// JSON with `<`, `>`, `&`, U+2028 and U+2029 escaped, as Go's encoder
/// writes it (the hosts' error bodies have always been written so).
fn escape_html(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EngineConfig;
    use std::path::PathBuf;

    const SERVER: &str = "8f0c3a52-6d1e-4b7a-9c2f-1e5d7a3b9c40";

    struct Node {
        dir: PathBuf,
        engine: Arc<Engine>,
    }

    impl Drop for Node {
        fn drop(&mut self) {
            self.engine.cancel_all();
            self.engine.wait_idle(Duration::from_secs(30));
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn node() -> Node {
        let dir = std::env::temp_dir().join(format!("wb-http-{}", crate::safe_fs::nonce()));
        let data = dir.join("volumes");
        std::fs::create_dir_all(data.join(SERVER).join("world")).unwrap();
        std::fs::write(data.join(SERVER).join("world/level.dat"), b"level").unwrap();
        let config = EngineConfig {
            data_directory: data,
            backup_directory: dir.join("backups"),
            threads: 1,
            ..EngineConfig::default()
        };
        Node {
            engine: Arc::new(Engine::new(config).unwrap()),
            dir,
        }
    }

    fn call(node: &Node, method: &str, path: &str, body: Body<'_>) -> HttpResponse {
        let req = HttpRequest {
            method,
            path,
            query: "",
            body,
            async_restore: false,
        };
        handle(&node.engine, &req)
    }

    fn r_started(backup: &str) -> Started {
        Started {
            kind: "backup",
            server: SERVER.into(),
            backup: backup.into(),
        }
    }

    fn error_body(message: &str) -> String {
        format!("{{\"error\":\"{message}\"}}\n")
    }

    #[test]
    fn unknown_paths_and_servers_are_404_with_wings_message() {
        let n = node();
        let other = "11111111-2222-4333-8444-555555555555";
        for path in [
            "/",
            "/api/servers/",
            &format!("/api/servers/{SERVER}"),
            &format!("/api/servers/{SERVER}/"),
            &format!("/api/servers/{SERVER}//backup"),
            &format!("/api/servers/{SERVER}/backup/"),
            &format!("/api/servers/{SERVER}/nothing"),
            &format!("/api/servers/{SERVER}/backup/x/y/z"),
            &format!("//api/servers/{SERVER}/backups"),
            &format!("/api/servers/{other}/backups"),
            "/api/servers/not-a-uuid/backups",
            "/api/servers/../backups",
        ] {
            let r = call(&n, "GET", path, Body::Read(b""));
            assert_eq!(r.status, 404, "{path}");
            assert_eq!(r.body, error_body(MSG_NO_RESOURCE), "{path}");
            assert_eq!(
                r.headers,
                vec![("Content-Type", "application/json".to_string())]
            );
        }
    }

    #[test]
    fn a_method_the_path_does_not_take_is_405_naming_the_allowed_ones() {
        let n = node();
        for (method, path, allow) in [
            ("GET", "backup", "POST"),
            ("HEAD", "backup/x", "DELETE, GET"),
            ("POST", "backups", "DELETE, GET"),
            ("GET", "deleteAllBackups", "DELETE"),
            ("OPTIONS", "backup/x/restore", "POST"),
            ("GET", "backup/x/cancel", "POST"),
            ("POST", "backup/x/events", "GET"),
        ] {
            // 405 comes before the server check, as in Wings' router.
            let path = format!("/api/servers/not-a-server/{path}");
            let r = call(&n, method, &path, Body::Read(b""));
            assert_eq!(r.status, 405, "{method} {path}");
            assert_eq!(r.body, error_body(MSG_NOT_ALLOWED));
            assert!(
                r.headers.contains(&("Allow", allow.to_string())),
                "{:?}",
                r.headers
            );
        }
    }

    #[test]
    fn bodies_the_host_could_not_read_are_answered_on_routes_that_read_one() {
        let n = node();
        let create = format!("/api/servers/{SERVER}/backup");
        let r = call(&n, "POST", &create, Body::TooLarge);
        assert_eq!(
            (r.status, r.body.as_str()),
            (413, error_body(MSG_TOO_LARGE).as_str())
        );
        let r = call(&n, "POST", &create, Body::TimedOut);
        assert_eq!(r.status, 408);
        assert!(r.headers.contains(&("Connection", "close".to_string())));
        let r = call(&n, "POST", &create, Body::Unreadable);
        assert_eq!(
            (r.status, r.body.as_str()),
            (400, error_body(MSG_UNREADABLE).as_str())
        );
        // A route without a body does not care; an unknown server is 404 first.
        let r = call(
            &n,
            "GET",
            &format!("/api/servers/{SERVER}/backups"),
            Body::TooLarge,
        );
        assert_eq!((r.status, r.body.as_str()), (200, "[]\n"));
        let r = call(
            &n,
            "POST",
            "/api/servers/not-a-server/backup",
            Body::TooLarge,
        );
        assert_eq!(r.status, 404);
        let r = call(&n, "POST", &create, Body::Read(b"{\"uuid\":\0}"));
        assert_eq!(r.body, error_body("`request_json` contains a NUL byte"));
        let r = call(&n, "POST", &create, Body::Read(b"{\xff}"));
        assert_eq!(
            (r.status, r.body.as_str()),
            (
                400,
                error_body("`request_json` is not valid UTF-8").as_str()
            )
        );
    }

    #[test]
    fn a_backup_through_the_routes() {
        let n = node();
        let backup = "0b5c7f3e-1a2b-4c3d-8e4f-5a6b7c8d9e0f";
        let base = format!("/api/servers/{SERVER}");
        let body = format!(
            "{{\"adapter\":\"wings\",\"uuid\":\"{}\",\"ignore\":\"\",\"wait\":true}}",
            backup.to_uppercase()
        );
        let r = call(
            &n,
            "POST",
            &format!("{base}/backup"),
            Body::Read(body.as_bytes()),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(
            r.body.ends_with("}\n") && r.body.contains("\"state\":\"succeeded\""),
            "{}",
            r.body
        );
        assert_eq!(
            r.started,
            Some(Started {
                kind: "backup",
                server: SERVER.into(),
                backup: backup.into()
            })
        );
        // A second create of the same uuid: 409, and nothing started.
        let r = call(
            &n,
            "POST",
            &format!("{base}/backup"),
            Body::Read(body.as_bytes()),
        );
        assert_eq!((r.status, r.started.is_none()), (409, true), "{}", r.body);

        let r = call(
            &n,
            "GET",
            &format!("{base}/backup/{backup}"),
            Body::Read(b""),
        );
        assert_eq!(r.status, 200);
        let state: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(state["uuid"], backup);
        // The stream of an ended backup is its "done" event alone.
        let r = call(
            &n,
            "GET",
            &format!("{base}/backup/{backup}/events"),
            Body::Read(b""),
        );
        assert_eq!(r.status, 200);
        assert!(r
            .headers
            .contains(&("Content-Type", "text/event-stream".to_string())));
        assert!(r
            .headers
            .contains(&("Cache-Control", "no-cache".to_string())));
        assert!(
            r.body.starts_with("event: done\ndata: {") && r.body.ends_with("}\n\n"),
            "{}",
            r.body
        );
        assert_eq!(r.stream, None);
        let event = next_event(&n.engine, SERVER, backup, 0, Duration::ZERO)
            .unwrap()
            .unwrap();
        assert_eq!((event.chunk, event.done), (r.body, true));
        let end = operation_end(&n.engine, &r_started(backup), Duration::from_secs(5)).unwrap();
        assert_eq!(
            (end.level, end.message.as_str()),
            (Level::Info, "backup finished")
        );
        let names: Vec<&str> = end.fields.iter().map(|(k, _)| *k).collect();
        assert_eq!(names, ["server", "backup", "bytes", "sha1", "outcome"]);
        assert_eq!(end.fields[4].1, "ok");

        let r = call(
            &n,
            "POST",
            &format!("{base}/backup/{backup}/cancel"),
            Body::Read(b""),
        );
        assert_eq!(r.status, 409, "{}", r.body);
        let restore = br#"{"adapter":"wings","truncate_directory":true}"#;
        let r = call(
            &n,
            "POST",
            &format!("{base}/backup/{backup}/restore"),
            Body::Read(restore),
        );
        assert_eq!(
            (r.status, r.body.as_str(), r.headers.is_empty()),
            (204, "", true)
        );
        assert_eq!(r.started.unwrap().kind, "restore");
        let r = call(&n, "GET", &format!("{base}/backups"), Body::Read(b""));
        assert!(
            r.body.starts_with('[') && r.body.contains(backup),
            "{}",
            r.body
        );
        let r = call(
            &n,
            "DELETE",
            &format!("{base}/backup/{backup}"),
            Body::Read(b""),
        );
        assert_eq!((r.status, r.body.as_str()), (204, ""));
        let r = call(
            &n,
            "DELETE",
            &format!("{base}/backup/{backup}"),
            Body::Read(b""),
        );
        assert_eq!(r.status, 404);
        let end = operation_end(&n.engine, &r_started(backup), Duration::ZERO).unwrap();
        assert_eq!(end.level, Level::Warn);
        assert_eq!(end.fields[2], ("outcome", "WB_NOT_FOUND".to_string()));
        let r = call(
            &n,
            "DELETE",
            &format!("{base}/deleteAllBackups"),
            Body::Read(b""),
        );
        assert_eq!((r.status, r.body.as_str()), (200, "{\"deleted\":0}\n"));
    }

    #[test]
    fn a_create_without_wait_is_202_with_an_empty_body() {
        let n = node();
        let body =
            br#"{"adapter":"wings","uuid":"0b5c7f3e-1a2b-4c3d-8e4f-5a6b7c8d9e01","ignore":""}"#;
        let r = call(
            &n,
            "POST",
            &format!("/api/servers/{SERVER}/backup"),
            Body::Read(body),
        );
        assert_eq!(
            (r.status, r.body.as_str(), r.headers.is_empty()),
            (202, "", true)
        );
        assert!(r.started.is_some());
        let r = call(
            &n,
            "POST",
            &format!("/api/servers/{SERVER}/backup"),
            Body::Read(b"[]"),
        );
        assert_eq!(r.status, 400);
    }

    #[test]
    fn query_values_are_decoded_and_end_at_a_fragment() {
        let get = |q: &str| query_param(q, "path").unwrap();
        assert_eq!(get(""), None);
        assert_eq!(get("path"), Some(String::new()));
        assert_eq!(get("path=a+b%20c%2Fd"), Some("a b c/d".into()));
        assert_eq!(get("path=x&other=1&path=%C3%A9"), Some("é".into()));
        assert_eq!(get("path=world#frag"), Some("world".into()));
        assert_eq!(get("other=1#path=world"), None);
        assert_eq!(get("path=%23x"), Some("#x".into()));
        assert!(query_param("path=%ff", "path").is_err());
    }

    #[test]
    fn the_engine_logs_the_end_of_what_a_request_started() {
        let n = node();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink_seen = Arc::clone(&seen);
        n.engine.set_logger(Some(Box::new(move |level, m| {
            sink_seen.lock().unwrap().push((level, m.to_string()))
        })));
        let backup = "0b5c7f3e-1a2b-4c3d-8e4f-5a6b7c8d9e02";
        let body = format!(r#"{{"adapter":"wings","uuid":"{backup}","ignore":""}}"#);
        let r = call(
            &n,
            "POST",
            &format!("/api/servers/{SERVER}/backup"),
            Body::Read(body.as_bytes()),
        );
        assert_eq!(r.status, 202, "{}", r.body);
        // wait_idle waits for the line too.
        assert!(n.engine.wait_idle(Duration::from_secs(30)));
        let seen = seen.lock().unwrap();
        let ends: Vec<_> = seen
            .iter()
            .filter(|(_, m)| m.starts_with("backup finished "))
            .collect();
        assert_eq!(ends.len(), 1, "{seen:?}");
        let (level, line) = ends[0];
        assert_eq!(*level, Level::Info);
        let want = format!("backup finished server={SERVER} backup={backup} bytes=");
        assert!(line.starts_with(&want), "{line}");
        assert!(
            line.contains(" sha1=") && line.contains(" outcome=ok duration="),
            "{line}"
        );
        assert!(line.ends_with('s'), "{line}");
    }

    #[test]
    fn an_operation_end_line_quotes_values_as_slog_does() {
        let end = OperationEnd {
            level: Level::Warn,
            message: "restore finished".into(),
            fields: vec![
                ("server", SERVER.into()),
                ("outcome", "WB_NOT_FOUND".into()),
                ("error", "no \"such\" backup".into()),
                ("panel_report", String::new()),
                ("x", "a=b".into()),
            ],
        };
        assert_eq!(
            end.line(),
            format!(
                "restore finished server={SERVER} outcome=WB_NOT_FOUND \
                 error=\"no \\\"such\\\" backup\" panel_report=\"\" x=\"a=b\""
            )
        );
    }

    #[test]
    fn error_bodies_escape_html_as_go_does() {
        let r = HttpResponse::error(400, "a <b> & \u{2028}");
        assert_eq!(
            r.body,
            "{\"error\":\"a \\u003cb\\u003e \\u0026 \\u2028\"}\n"
        );
    }
}
