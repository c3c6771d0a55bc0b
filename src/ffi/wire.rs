//! The JSON of the C ABI, and only here: configuration, request bodies and
//! options are parsed into the core's typed structs, and results rendered
//! from them. Messages are those of the C ABI's documentation: a faulty
//! configuration key or option is named with its path
//! (`serde_path_to_error`), e.g. "configuration key `owner.uid` must be an
//! integer from 0 to 4294967294".

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::archive::walk::Skipped;
use crate::archive::writer::ArchiveSummary;
use crate::catalog::from_ms;
use crate::config::{self, CompressionLevel, EngineConfig, Owner};
use crate::engine::{ArchiveOptions, BackupDetails};
use crate::error::{Error, Result};
use crate::index::{EntryKind, FileEntry, VerifyReport};
use crate::operations::{OpKind, OperationRecord};
use crate::request::{CreateRequest, RestoreRequest};
use crate::restore::RestoreSummary;
use crate::space::DryRunReport;

/// The engine configuration (`wb_engine_new`).
pub fn engine_config(text: &str) -> Result<EngineConfig> {
    let value = parse(text, "configuration is not valid JSON")?;
    if !value.is_object() {
        return Err(Error::invalid("configuration must be a JSON object"));
    }
    keyed("configuration key", value)
}

/// A create request body (`wb_backup_create_check`, `wb_backup_create`).
pub fn create_request(text: &str) -> Result<CreateRequest> {
    request_body(text)
}

/// A restore request body (`wb_backup_restore_check`, `wb_backup_restore`).
pub fn restore_request(text: &str) -> Result<RestoreRequest> {
    request_body(text)
}

fn request_body<T: DeserializeOwned>(text: &str) -> Result<T> {
    let value = parse(
        text,
        "The data passed in the request was not in a parsable format",
    )?;
    if !value.is_object() {
        return Err(Error::invalid("the request body must be a JSON object"));
    }
    // A body's checks fail with their own message, whatever the field.
    T::deserialize(value).map_err(|e| Error::invalid(e.to_string()))
}

/// The options of the archive calls, which take the engine configuration's
/// `compression_level`, `threads`, `write_limit`, `disk_limit` and `owner`
/// with the same checks. NULL, empty or blank text means the defaults.
pub fn archive_options(text: Option<&str>) -> Result<ArchiveOptions> {
    let Some(text) = text.filter(|t| !t.trim().is_empty()) else {
        return Ok(ArchiveOptions::default());
    };
    let value = parse(text, "options are not valid JSON")?;
    let Value::Object(mut own) = value else {
        return Err(Error::invalid("options must be a JSON object"));
    };
    // The keys shared with the configuration are checked after the others
    // (an unknown key is reported before an ill-typed shared one).
    let shared: Map<String, Value> = SHARED_OPTIONS
        .iter()
        .filter_map(|key| own.remove_entry(*key))
        .collect();
    let own: OwnOptions = keyed("option", Value::Object(own))?;
    let shared: SharedOptions = keyed("option", Value::Object(shared))?;
    Ok(ArchiveOptions {
        ignore: own.ignore,
        compression_level: shared.compression_level,
        threads: shared.threads,
        write_limit: shared.write_limit,
        truncate: own.truncate,
        disk_limit: shared.disk_limit,
        owner: shared.owner,
        paths: own.paths,
        ..ArchiveOptions::default()
    })
}

const SHARED_OPTIONS: [&str; 5] = [
    "compression_level",
    "threads",
    "write_limit",
    "disk_limit",
    "owner",
];

/// The options of the archive calls only.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OwnOptions {
    #[serde(default, deserialize_with = "config::string")]
    ignore: String,
    #[serde(default, deserialize_with = "config::boolean")]
    truncate: bool,
    /// Extract only these entries (checked by the call).
    #[serde(default)]
    paths: Vec<String>,
}

/// The options checked as the engine configuration's keys of the same name.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SharedOptions {
    #[serde(default = "best_speed")]
    compression_level: CompressionLevel,
    #[serde(default, deserialize_with = "config::threads")]
    threads: usize,
    #[serde(default, deserialize_with = "config::write_limit")]
    write_limit: u64,
    #[serde(default, deserialize_with = "config::disk_limit")]
    disk_limit: u64,
    #[serde(default)]
    owner: Option<Owner>,
}

fn best_speed() -> CompressionLevel {
    CompressionLevel::BestSpeed
}

/// JSON text as a value; a syntax error is `what: <serde's message>`.
fn parse(text: &str, what: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| Error::invalid(format!("{what}: {e}")).with_source(e))
}

/// `value` as `T`; a faulty key is named with its path after `prefix`.
fn keyed<T: DeserializeOwned>(prefix: &str, value: Value) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let message = key_message(prefix, &e.path().to_string(), &e.inner().to_string());
        Error::invalid(message).with_source(e.into_inner())
    })
}

/// The message of a faulty key, from serde's own errors (an unknown key, a
/// missing one) or the checks of src/config.rs, whose messages continue
/// "<prefix> `key`" (see its module documentation).
fn key_message(prefix: &str, path: &str, message: &str) -> String {
    if message.starts_with("unknown field `") {
        return format!("{prefix} `{path}` is not known");
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        let key = rest.trim_end_matches('`');
        return format!("{prefix} `{path}.{key}` is required");
    }
    if let Some((key, rest)) = message.strip_prefix('`').and_then(|m| m.split_once("` ")) {
        return format!("{prefix} `{path}.{key}` {rest}");
    }
    if message.starts_with(':') {
        return format!("{prefix} `{path}`{message}");
    }
    format!("{prefix} `{path}` {message}")
}

/// `wb_backup_create`'s details: the Panel's status body (`checksum`,
/// `checksum_type`, `size`, `successful`, `parts`), plus `files`, `changed`,
/// `skipped` and, with a Panel, `panel_report`. Keys in alphabetical order.
pub fn backup_details(details: &BackupDetails) -> String {
    #[derive(Serialize)]
    struct Part<'a> {
        etag: &'a str,
        part_number: u32,
    }
    #[derive(Serialize)]
    struct Json<'a> {
        changed: Vec<String>,
        checksum: &'a str,
        checksum_type: &'static str,
        files: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        panel_report: Option<String>,
        parts: Option<Vec<Part<'a>>>,
        reused_bytes: u64,
        reused_members: u64,
        size: u64,
        skipped: Vec<SkippedJson>,
        successful: bool,
    }
    let report = &details.report;
    render(&Json {
        changed: lossy_all(&details.archive.changed),
        checksum: &report.checksum,
        checksum_type: details.checksum_type(),
        files: details.archive.files,
        panel_report: details
            .panel_report
            .as_ref()
            .map(crate::engine::report_outcome_text),
        parts: report.parts.as_ref().map(|parts| {
            parts
                .iter()
                .map(|(etag, part_number)| Part {
                    etag,
                    part_number: *part_number,
                })
                .collect()
        }),
        reused_bytes: details.archive.reused_bytes,
        reused_members: details.archive.reused_members,
        size: report.size,
        skipped: skipped_json(&details.archive.skipped),
        successful: report.successful,
    })
}

/// `wb_backup_dry_run`'s report. Keys in alphabetical order.
pub fn dry_run_report(report: &DryRunReport) -> String {
    #[derive(Serialize)]
    struct Json {
        bytes: u64,
        entries: u64,
        estimated_size: u64,
        files: u64,
        ignored: Vec<String>,
        ignored_count: u64,
        skipped: Vec<SkippedJson>,
        skipped_count: u64,
    }
    render(&Json {
        bytes: report.bytes,
        entries: report.entries,
        estimated_size: report.estimated_size,
        files: report.files,
        ignored: lossy_all(&report.ignored),
        ignored_count: report.ignored_count,
        skipped: skipped_json(&report.skipped),
        skipped_count: report.skipped_count,
    })
}

/// `wb_archive_create`'s summary.
pub fn archive_summary(summary: &ArchiveSummary) -> String {
    #[derive(Serialize)]
    struct Json<'a> {
        changed: Vec<String>,
        changed_count: u64,
        checksum: &'a str,
        checksum_type: &'static str,
        entries: u64,
        files: u64,
        reused_bytes: u64,
        reused_members: u64,
        size: u64,
        skipped: Vec<SkippedJson>,
        skipped_count: u64,
        source_bytes: u64,
    }
    render(&Json {
        changed: lossy_all(&summary.changed),
        changed_count: summary.changed_count,
        checksum: &summary.sha1,
        checksum_type: "sha1",
        entries: summary.entries,
        files: summary.files,
        reused_bytes: summary.reused_bytes,
        reused_members: summary.reused_members,
        size: summary.size,
        skipped: skipped_json(&summary.skipped),
        skipped_count: summary.skipped_count,
        source_bytes: summary.source_bytes,
    })
}

/// `wb_archive_extract`'s summary.
pub fn restore_summary(summary: &RestoreSummary) -> String {
    #[derive(Serialize)]
    struct Json {
        bytes: u64,
        directories: u64,
        entries: u64,
        files: u64,
        hard_links: u64,
        skipped: u64,
        symlinks: u64,
    }
    render(&Json {
        bytes: summary.bytes,
        directories: summary.dirs,
        entries: summary.entries,
        files: summary.files,
        hard_links: summary.hard_links,
        skipped: summary.skipped,
        symlinks: summary.symlinks,
    })
}

#[derive(Serialize)]
struct RecordJson<'a> {
    uuid: &'a str,
    server: &'a str,
    kind: &'static str,
    adapter: &'a str,
    state: &'static str,
    phase: &'a str,
    bytes_done: u64,
    bytes_total: u64,
    files: u64,
    size: u64,
    checksum: &'a str,
    error: Option<&'a str>,
    error_status: Option<i32>,
    started_at: String,
    finished_at: Option<String>,
    panel_report: Option<&'a str>,
    seq: u64,
}

fn rfc3339(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

fn record_json(r: &OperationRecord) -> RecordJson<'_> {
    RecordJson {
        uuid: &r.uuid,
        server: &r.server,
        kind: match r.kind {
            OpKind::Create => "create",
            OpKind::Restore => "restore",
        },
        adapter: &r.adapter,
        state: r.state.name(),
        phase: &r.phase,
        bytes_done: r.bytes_done,
        bytes_total: r.bytes_total,
        files: r.files,
        size: r.size,
        checksum: &r.checksum,
        error: r.error.as_deref(),
        error_status: r.error_status.map(|s| s as i32),
        started_at: rfc3339(from_ms(r.started())),
        finished_at: r.finished_at.map(|ms| rfc3339(from_ms(ms))),
        panel_report: r.panel_report.as_deref(),
        seq: r.seq,
    }
}

/// A backup's state (`wb_backup_status`, `wb_backup_wait`).
pub fn operation_record(record: &OperationRecord) -> String {
    render(&record_json(record))
}

/// A server's backups (`wb_backup_list`).
pub fn operation_records(records: &[OperationRecord]) -> String {
    render(&records.iter().map(record_json).collect::<Vec<_>>())
}

/// `wb_backups_delete_all`'s summary.
pub fn deleted_count(deleted: usize) -> String {
    #[derive(Serialize)]
    struct Json {
        deleted: usize,
    }
    render(&Json { deleted })
}

/// `wb_engine_send_pending_reports`'s summary.
pub fn pending_reports((sent, pending): (usize, usize)) -> String {
    #[derive(Serialize)]
    struct Json {
        pending: usize,
        sent: usize,
    }
    render(&Json { pending, sent })
}

/// `wb_backup_files` / `wb_archive_list`: `{"entries": [...], "path"}`,
/// `path` the directory listed, normalised (`"/"`, `"/world/region"`);
/// each entry `{"link","mode","mtime","name","size","type"}` (`type` one
/// of `file`, `dir`, `symlink`, `hardlink`, `fifo`; `mode` the permission
/// bits as a number; `mtime` seconds since the epoch; `link` the target of
/// a symlink or hard link, else null). Names that are not UTF-8 are shown
/// with U+FFFD in place of the bad bytes.
pub fn file_listing(dir: &str, entries: &[FileEntry]) -> String {
    #[derive(Serialize)]
    struct EntryJson {
        link: Option<String>,
        mode: u32,
        mtime: i64,
        name: String,
        size: u64,
        #[serde(rename = "type")]
        kind: &'static str,
    }
    #[derive(Serialize)]
    struct Json {
        entries: Vec<EntryJson>,
        path: String,
    }
    let dir = crate::index::browse::normalize_dir(dir).unwrap_or_default();
    render(&Json {
        entries: entries
            .iter()
            .map(|e| EntryJson {
                link: matches!(e.kind, EntryKind::Symlink | EntryKind::HardLink)
                    .then(|| lossy(&e.link)),
                mode: e.mode,
                mtime: e.mtime,
                name: lossy(&e.name),
                size: e.size,
                kind: e.kind.name(),
            })
            .collect(),
        path: format!("/{}", lossy(&dir)),
    })
}

/// `wb_backup_verify` / `wb_archive_verify`: `{"bytes","error_count",
/// "errors","files","indexed","members","ok"}`, each error
/// `{"member","message","offset","path"}` (`member` the gzip member's
/// number from 0 and `offset` where it starts in the archive file, null for
/// a problem outside the members; `path` the entry the damage is in, null
/// when not known).
pub fn verify_report(report: &VerifyReport) -> String {
    #[derive(Serialize)]
    struct ErrorJson {
        member: Option<u64>,
        message: String,
        offset: Option<u64>,
        path: Option<String>,
    }
    #[derive(Serialize)]
    struct Json {
        bytes: u64,
        error_count: u64,
        errors: Vec<ErrorJson>,
        files: u64,
        indexed: bool,
        members: u64,
        ok: bool,
    }
    render(&Json {
        bytes: report.bytes,
        error_count: report.error_count,
        errors: report
            .errors
            .iter()
            .map(|e| ErrorJson {
                member: e.member,
                message: e.message.clone(),
                offset: e.offset,
                path: e.path.as_deref().map(lossy),
            })
            .collect(),
        files: report.files,
        indexed: report.indexed,
        members: report.members,
        ok: report.ok,
    })
}

#[derive(Serialize)]
struct SkippedJson {
    path: String,
    reason: String,
}

fn skipped_json(skipped: &[Skipped]) -> Vec<SkippedJson> {
    skipped
        .iter()
        .map(|s| SkippedJson {
            path: lossy(&s.path),
            reason: s.reason.clone(),
        })
        .collect()
}

fn lossy(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

fn lossy_all(paths: &[Vec<u8>]) -> Vec<String> {
    paths.iter().map(|p| lossy(p)).collect()
}

/// The answer of `wb_http_handle`.
pub fn http_response(resp: &crate::http_api::HttpResponse) -> String {
    #[derive(Serialize)]
    struct Started<'a> {
        kind: &'a str,
        server: &'a str,
        backup: &'a str,
    }
    #[derive(Serialize)]
    struct Stream<'a> {
        server: &'a str,
        backup: &'a str,
        seq: u64,
    }
    #[derive(Serialize)]
    struct Json<'a> {
        status: u16,
        headers: Vec<[&'a str; 2]>,
        body: &'a str,
        started: Option<Started<'a>>,
        stream: Option<Stream<'a>>,
    }
    render(&Json {
        status: resp.status,
        headers: resp.headers.iter().map(|(k, v)| [*k, v.as_str()]).collect(),
        body: &resp.body,
        started: resp.started.as_ref().map(|s| Started {
            kind: s.kind,
            server: &s.server,
            backup: &s.backup,
        }),
        stream: resp.stream.as_ref().map(|s| Stream {
            server: &s.server,
            backup: &s.backup,
            seq: s.seq,
        }),
    })
}

/// An event of `wb_http_next_event` (`None`: nothing new after `after_seq`).
pub fn http_event(event: Option<&crate::http_api::Event>, after_seq: u64) -> String {
    #[derive(Serialize)]
    struct Json<'a> {
        chunk: Option<&'a str>,
        seq: u64,
        done: bool,
    }
    render(&Json {
        chunk: event.map(|e| e.chunk.as_str()),
        seq: event.map_or(after_seq, |e| e.seq),
        done: event.is_some_and(|e| e.done),
    })
}

/// `wb_http_operation_end`'s answer (`None`: still running).
pub fn operation_end(end: Option<&crate::http_api::OperationEnd>) -> String {
    #[derive(Serialize)]
    struct Json<'a> {
        ended: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        level: Option<i32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        message: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        fields: Option<Vec<[&'a str; 2]>>,
    }
    render(&Json {
        ended: end.is_some(),
        level: end.map(|e| e.level as i32),
        message: end.map(|e| e.message.as_str()),
        fields: end.map(|e| e.fields.iter().map(|(k, v)| [*k, v.as_str()]).collect()),
    })
}

fn render(value: &impl Serialize) -> String {
    serde_json::to_string(value).expect("structs of strings and numbers serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_errors_name_the_key() {
        for (json, message) in [
            ("{", "configuration is not valid JSON: EOF while parsing an object at line 1 column 1"),
            ("[]", "configuration must be a JSON object"),
            (r#"{"nope":1}"#, "configuration key `nope` is not known"),
            (r#"{"threads":null}"#, "configuration key `threads` must be an integer from 0 to 1024"),
            (r#"{"write_limit":1.0}"#, "configuration key `write_limit` must be an integer from 0 to 1048576"),
            (
                r#"{"compression_level":"fast"}"#,
                "configuration key `compression_level`: unknown level \"fast\" (expected none, best_speed or best_compression)",
            ),
            (r#"{"owner":[]}"#, "configuration key `owner` must be an object"),
            (r#"{"owner":{"gid":1},"threads":-1}"#, "configuration key `owner` needs both `uid` and `gid`"),
            (r#"{"owner":{"uid":"a","gid":1}}"#, "configuration key `owner.uid` must be an integer from 0 to 4294967294"),
            (r#"{"owner":{"uid":1,"gid":2,"x":3}}"#, "configuration key `owner.x` is not known"),
            (r#"{"panel":{"token_id":"a","token":"b"}}"#, "configuration key `panel.url` is required"),
            (r#"{"panel":{"url":"http://x","token_id":"a"}}"#, "configuration key `panel.token` is required"),
            (r#"{"panel":{"url":"ftp://x","zz":1}}"#, "configuration key `panel.zz` is not known"),
            (r#"{"panel":{"url":"ftp://x","token_id":"a","token":"b"}}"#, "configuration key `panel.url` must be an http:// or https:// URL"),
            (r#"{"restore_host_allowlist":[1]}"#, "configuration key `restore_host_allowlist` must be an array of strings"),
            (
                r#"{"restore_host_allowlist":["ok.host","bad host!"]}"#,
                "configuration key `restore_host_allowlist`: \"bad host!\" is not a host name, IP address or CIDR",
            ),
            (r#"{"data_directory":""}"#, "configuration key `data_directory` must be a non-empty path"),
        ] {
            let err = engine_config(json).unwrap_err();
            assert_eq!(err.status, crate::Status::InvalidArgument);
            assert_eq!(err.message, message, "{json}");
        }
        // The last of a repeated key counts, as in any JSON object.
        assert_eq!(
            engine_config(r#"{"threads":"x","threads":3}"#)
                .unwrap()
                .threads,
            3
        );
        let c = engine_config(r#"{"upload_concurrency":0,"panel":null,"owner":null}"#).unwrap();
        assert_eq!((c.upload_concurrency, c.panel, c.owner), (1, None, None));
    }

    #[test]
    fn a_syntax_error_keeps_its_source() {
        let err = engine_config("{").unwrap_err();
        let source = std::error::Error::source(&err).expect("a source");
        assert!(source.downcast_ref::<serde_json::Error>().is_some());
    }

    #[test]
    fn archive_options_are_checked_like_the_configuration() {
        for (json, message) in [
            ("[]", "options must be a JSON object"),
            (
                r#"{"data_directory":"/x"}"#,
                "option `data_directory` is not known",
            ),
            (r#"{"ignore":null}"#, "option `ignore` must be a string"),
            (r#"{"truncate":"x"}"#, "option `truncate` must be a boolean"),
            (
                r#"{"owner":{"uid":1}}"#,
                "option `owner` needs both `uid` and `gid`",
            ),
            (
                r#"{"disk_limit":-1}"#,
                "option `disk_limit` must be an integer from 0 to 18446744073709551615",
            ),
            // The shared keys are checked after the others.
            (r#"{"threads":"x","zz":1}"#, "option `zz` is not known"),
            (
                r#"{"threads":"x","truncate":1}"#,
                "option `truncate` must be a boolean",
            ),
        ] {
            assert_eq!(
                archive_options(Some(json)).unwrap_err().message,
                message,
                "{json}"
            );
        }
        assert_eq!(
            archive_options(Some("  ")).unwrap(),
            ArchiveOptions::default()
        );
        let o = archive_options(Some(
            r#"{"ignore":"*.log","compression_level":"none","threads":2,"truncate":true,"owner":{"uid":1,"gid":2}}"#,
        ))
        .unwrap();
        assert_eq!(o.compression_level, CompressionLevel::None);
        assert_eq!(
            (o.ignore.as_str(), o.threads, o.truncate),
            ("*.log", 2, true)
        );
        assert_eq!(o.owner, Some(Owner { uid: 1, gid: 2 }));
    }

    #[test]
    fn request_bodies_report_their_first_fault_in_a_fixed_order() {
        const UUID: &str = "0b7d3f52-1c2a-4d5e-8f90-a1b2c3d4e5f6";
        for (json, message) in [
            ("null", "the request body must be a JSON object".to_string()),
            (
                r#"{"uuid":"x"}"#,
                "the field `adapter` is required".to_string(),
            ),
            (
                r#"{"adapter":null}"#,
                "the field `adapter` must be a string".to_string(),
            ),
            (
                r#"{"adapter":"wings","uuid":"x","ignore":1}"#,
                "The backup identifier must be a valid UUID.".to_string(),
            ),
            (
                &format!(r#"{{"adapter":"wings","uuid":"{UUID}"}}"#),
                "the field `ignore` is required".to_string(),
            ),
        ] {
            assert_eq!(create_request(json).unwrap_err().message, message, "{json}");
        }
        let ok = create_request(&format!(
            r#"{{"adapter":"s3","uuid":"{}","ignore":"x","extra":[1]}}"#,
            UUID.to_uppercase()
        ))
        .unwrap();
        assert_eq!(
            (ok.adapter, ok.uuid.as_str()),
            (crate::request::Adapter::S3, UUID)
        );
        for (json, message) in [
            (
                r#"{"adapter":"x","download_url":1}"#,
                "provided adapter is not valid: \"x\" (expected \"wings\" or \"s3\")",
            ),
            (
                r#"{"adapter":"wings","download_url":5}"#,
                "the field `download_url` must be a string",
            ),
            (
                r#"{"adapter":"s3","download_url":null}"#,
                "The download_url field is required when the backup adapter is set to S3.",
            ),
        ] {
            assert_eq!(
                restore_request(json).unwrap_err().message,
                message,
                "{json}"
            );
        }
        let r = restore_request(r#"{"adapter":"wings","truncate_directory":null,"x":1}"#).unwrap();
        assert!(!r.truncate_directory);
    }

    #[test]
    fn results_render_as_the_abi_documents() {
        let details = BackupDetails {
            report: crate::panel::BackupReport {
                checksum: "abc".into(),
                size: 7,
                successful: true,
                parts: Some(vec![("\"e1\"".into(), 1)]),
            },
            archive: ArchiveSummary {
                files: 2,
                changed: vec![b"a\xff".to_vec()],
                skipped: vec![Skipped {
                    path: b"s".to_vec(),
                    reason: "why".into(),
                }],
                ..ArchiveSummary::default()
            },
            panel_report: Some(crate::panel::ReportOutcome::Pending("later".into())),
        };
        assert_eq!(
            backup_details(&details),
            r#"{"changed":["a�"],"checksum":"abc","checksum_type":"sha1","files":2,"panel_report":"pending: later","parts":[{"etag":"\"e1\"","part_number":1}],"reused_bytes":0,"reused_members":0,"size":7,"skipped":[{"path":"s","reason":"why"}],"successful":true}"#
        );
        let no_panel = BackupDetails {
            panel_report: None,
            ..details
        };
        assert!(!backup_details(&no_panel).contains("panel_report"));
        assert_eq!(pending_reports((1, 2)), r#"{"pending":2,"sent":1}"#);
        assert_eq!(
            dry_run_report(&DryRunReport {
                bytes: 5,
                entries: 3,
                estimated_size: 1600,
                files: 1,
                ignored: vec![b"logs".to_vec()],
                ignored_count: 4,
                skipped: vec![Skipped {
                    path: b"s".to_vec(),
                    reason: "why".into(),
                }],
                skipped_count: 1,
            }),
            r#"{"bytes":5,"entries":3,"estimated_size":1600,"files":1,"ignored":["logs"],"ignored_count":4,"skipped":[{"path":"s","reason":"why"}],"skipped_count":1}"#
        );
        assert_eq!(
            restore_summary(&RestoreSummary {
                dirs: 3,
                ..RestoreSummary::default()
            }),
            r#"{"bytes":0,"directories":3,"entries":0,"files":0,"hard_links":0,"skipped":0,"symlinks":0}"#
        );
    }
}
