//! The Panel client (docs/api.md section 6): upload URLs for S3 backups, backup
//! status reports and restore reports, with the headers of docs/api.md section 6.1, a 15 s
//! timeout per call and retries.
//!
//! Backup status reports get the patient policy: 5xx, transport errors and
//! 404 (the Panel may not have stored the backup's row yet) are retried with
//! backoff for `report_retry_s`; a report still unsent then is parked in
//! `<backup_directory>/.pending/<uuid>.json` and sent again by
//! `send_pending`. A finished archive is never deleted because a report
//! failed.
//!
//! Restore reports are sent in the background by the engine's reporter
//! (`crate::reporter`) with the standard 30 s policy (or `report_retry_s`
//! when that is shorter); one still unsent then is parked in
//! `<backup_directory>/.pending/<uuid>.restore.json`.
//!
//! Every retry is logged at WARN as it happens, with the attempt number and
//! the URL without credentials or query string.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::config::PanelConfig;
use crate::error::{Error, Result};
use crate::log::Logger;
use crate::progress::CancelToken;
use crate::retry::Backoff;

/// A status report body (docs/api.md section 6).
#[derive(Clone, Debug, PartialEq)]
pub struct BackupReport {
    pub checksum: String,
    pub size: u64,
    pub successful: bool,
    /// `(etag, part_number)` in part order; `None` for local backups.
    pub parts: Option<Vec<(String, u32)>>,
}

impl BackupReport {
    /// The report of a backup that wrote `archive` (and, for `s3`,
    /// uploaded `parts`).
    pub fn succeeded(
        archive: &crate::archive::writer::ArchiveSummary,
        parts: Option<Vec<(String, u32)>>,
    ) -> BackupReport {
        BackupReport {
            checksum: archive.sha1.clone(),
            size: archive.size,
            successful: true,
            parts,
        }
    }

    pub fn failed() -> BackupReport {
        BackupReport {
            checksum: String::new(),
            size: 0,
            successful: false,
            parts: None,
        }
    }

    /// A report as [`to_json`](Self::to_json) wrote it.
    pub fn from_json(v: &Value) -> Option<BackupReport> {
        let body = ReportBody::deserialize(v).ok()?;
        Some(BackupReport {
            checksum: body.checksum,
            size: body.size,
            successful: body.successful,
            parts: body
                .parts
                .map(|parts| parts.into_iter().map(|p| (p.etag, p.part_number)).collect()),
        })
    }

    pub fn to_json(&self) -> Value {
        let body = ReportBody {
            checksum: self.checksum.clone(),
            checksum_type: if self.successful { "sha1" } else { "" }.to_string(),
            size: self.size,
            successful: self.successful,
            parts: self.parts.as_ref().map(|parts| {
                parts
                    .iter()
                    .map(|(etag, n)| ReportPart {
                        etag: etag.clone(),
                        part_number: *n,
                    })
                    .collect()
            }),
        };
        serde_json::to_value(body).unwrap_or(Value::Null)
    }
}

/// The body of `POST /api/remote/backups/<uuid>`.
#[derive(Serialize, Deserialize)]
struct ReportBody {
    checksum: String,
    checksum_type: String,
    size: u64,
    successful: bool,
    parts: Option<Vec<ReportPart>>,
}

#[derive(Serialize, Deserialize)]
struct ReportPart {
    etag: String,
    part_number: u32,
}

/// The presigned part URLs the Panel hands out for an S3 backup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadPlan {
    pub parts: Vec<String>,
    pub part_size: u64,
    /// Pelican's cap on parts in flight.
    pub max_concurrent: Option<usize>,
}

/// How a backup report ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReportOutcome {
    Sent,
    /// The Panel refused it for good (a 4xx other than 404).
    Rejected(String),
    /// Not delivered in time; parked in `.pending` to be sent later.
    Pending(String),
}

pub(crate) enum Failure {
    /// Worth retrying: a transport error or a 5xx (or a 404 for reports).
    Retry(String),
    /// A final answer.
    Final(u16, String),
}

pub struct PanelClient {
    base: String,
    authorization: String,
    agent: ureq::Agent,
    report_budget: Duration,
    restore_budget: Duration,
    pending_dir: PathBuf,
    log: Arc<Logger>,
}

/// The directory of the backup directory that holds the parked reports,
/// and each backup report while it is sent.
pub const PENDING_DIR: &str = ".pending";

/// The suffix of a report's written-ahead copy (`.<parked name>.sending`),
/// kept while the report is sent.
const SENDING: &str = ".sending";

/// What a parked report is: its file name in `.pending` and where it goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportKind {
    /// `<uuid>.json`, `POST /backups/<uuid>`.
    Backup,
    /// `<uuid>.restore.json`, `POST /backups/<uuid>/restore`.
    Restore,
}

impl ReportKind {
    fn suffix(self) -> &'static str {
        match self {
            ReportKind::Backup => ".json",
            ReportKind::Restore => ".restore.json",
        }
    }

    /// The kind of a file in `.pending` and its backup's uuid, if it is one.
    fn of_file(name: &str) -> Option<(ReportKind, &str)> {
        if let Some(uuid) = name.strip_suffix(ReportKind::Restore.suffix()) {
            return Some((ReportKind::Restore, uuid));
        }
        name.strip_suffix(ReportKind::Backup.suffix())
            .map(|uuid| (ReportKind::Backup, uuid))
    }
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent(concat!("wings-backup/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

impl PanelClient {
    pub fn new(config: &PanelConfig, backup_directory: &Path, log: Arc<Logger>) -> PanelClient {
        let report_budget = Duration::from_secs(config.report_retry_s);
        PanelClient {
            base: format!("{}/api/remote", config.url.trim_end_matches('/')),
            authorization: format!("Bearer {}.{}", config.token_id, config.token),
            agent: agent(Duration::from_secs(15)),
            report_budget,
            restore_budget: report_budget.min(Duration::from_secs(30)),
            pending_dir: backup_directory.join(PENDING_DIR),
            log,
        }
    }

    fn url(&self, kind: ReportKind, backup: &str) -> String {
        match kind {
            ReportKind::Backup => format!("{}/backups/{backup}", self.base),
            ReportKind::Restore => format!("{}/backups/{backup}/restore", self.base),
        }
    }

    /// Logs a failed attempt that will be retried after `next`.
    pub(crate) fn log_retry(
        &self,
        method: &str,
        url: &str,
        attempt: u32,
        next: Duration,
        reason: &str,
    ) {
        let url = redact(url);
        // A transport error's text starts with the call itself.
        let prefix = format!("{method} {url}: ");
        let reason = reason.strip_prefix(prefix.as_str()).unwrap_or(reason);
        self.log.warn(&format!(
            "Panel call failed, retrying: {method} {url} attempt {attempt} failed ({reason}); next attempt in {:.1}s",
            next.as_secs_f64()
        ));
    }

    /// One request; `Ok` with the body for a 2xx.
    fn once(
        &self,
        method: &str,
        url: &str,
        body: Option<&Value>,
    ) -> std::result::Result<String, Failure> {
        let result = match body {
            Some(body) => self
                .agent
                .post(url)
                .header("Authorization", &self.authorization)
                .header("Accept", "application/vnd.pterodactyl.v1+json")
                .header("Content-Type", "application/json")
                .send(body.to_string()),
            None => {
                debug_assert_eq!(method, "GET");
                self.agent
                    .get(url)
                    .header("Authorization", &self.authorization)
                    .header("Accept", "application/vnd.pterodactyl.v1+json")
                    .header("Content-Type", "application/json")
                    .call()
            }
        };
        let mut response = match result {
            Ok(r) => r,
            Err(e) => return Err(Failure::Retry(format!("{method} {}: {e}", redact(url)))),
        };
        let status = response.status().as_u16();
        let mut text = String::new();
        let _ = response
            .body_mut()
            .as_reader()
            .take(64 * 1024)
            .read_to_string(&mut text);
        if (200..300).contains(&status) {
            return Ok(text);
        }
        let message = format!("the Panel answered {status}: {}", panel_error(&text));
        if status >= 500 {
            Err(Failure::Retry(message))
        } else {
            Err(Failure::Final(status, message))
        }
    }

    /// A request with the standard policy: 5xx and transport errors retried
    /// for up to 30 s, 4xx final (returned as `Failure::Final`).
    fn call_raw(
        &self,
        method: &str,
        url: &str,
        body: Option<&Value>,
        cancel: Option<&CancelToken>,
    ) -> std::result::Result<String, Failure> {
        let mut backoff = Backoff::new(
            Duration::from_millis(500),
            Duration::from_secs(8),
            Duration::from_secs(30),
        );
        let stop = crate::retry::cancelled_by(cancel);
        loop {
            match self.once(method, url, body) {
                Err(Failure::Retry(m)) => {
                    if !self.wait_logged(&mut backoff, &stop, method, url, &m) {
                        return Err(Failure::Retry(m));
                    }
                }
                other => return other,
            }
        }
    }

    /// `backoff.wait`, logging the retry first when there is one.
    fn wait_logged(
        &self,
        backoff: &mut Backoff,
        stop: &dyn Fn() -> bool,
        method: &str,
        url: &str,
        reason: &str,
    ) -> bool {
        if stop() {
            return false;
        }
        let Some(delay) = backoff.next_delay() else {
            return false;
        };
        self.log_retry(method, url, backoff.attempts(), delay, reason);
        let until = std::time::Instant::now() + delay;
        while std::time::Instant::now() < until {
            if stop() {
                return false;
            }
            std::thread::sleep((until - std::time::Instant::now()).min(Duration::from_millis(50)));
        }
        !stop()
    }

    fn call(
        &self,
        method: &str,
        url: &str,
        body: Option<&Value>,
        cancel: Option<&CancelToken>,
    ) -> Result<String> {
        match self.call_raw(method, url, body, cancel) {
            Ok(text) => Ok(text),
            Err(_) if cancel.is_some_and(|c| c.is_triggered()) => Err(Error::cancelled()),
            Err(Failure::Final(_, m)) | Err(Failure::Retry(m)) => Err(Error::remote(m)),
        }
    }

    /// `GET /api/remote/backups/<uuid>?size=<bytes>`.
    pub fn upload_plan(
        &self,
        backup: &str,
        size: u64,
        cancel: Option<&CancelToken>,
    ) -> Result<UploadPlan> {
        let url = format!("{}/backups/{backup}?size={size}", self.base);
        let text = self.call("GET", &url, None, cancel)?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| Error::remote(format!("the Panel's upload URLs are not JSON: {e}")))?;
        let parts = value["parts"]
            .as_array()
            .ok_or_else(|| Error::remote("the Panel's answer has no `parts` list"))?
            .iter()
            .map(|p| p.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Error::remote("the Panel's `parts` are not all URLs"))?;
        let part_size = value["part_size"]
            .as_u64()
            .filter(|n| *n > 0)
            .ok_or_else(|| Error::remote("the Panel's answer has no valid `part_size`"))?;
        let max_concurrent = value["max_concurrent_uploads"]
            .as_u64()
            .filter(|n| *n > 0)
            .map(|n| n as usize);
        Ok(UploadPlan {
            parts,
            part_size,
            max_concurrent,
        })
    }

    /// One attempt at `POST /api/remote/backups/<uuid>/restore` with
    /// `{"successful": bool}` (the reporter schedules the retries).
    pub(crate) fn restore_once(
        &self,
        backup: &str,
        successful: bool,
    ) -> std::result::Result<(), Failure> {
        let url = self.url(ReportKind::Restore, backup);
        self.once("POST", &url, Some(&restore_body(successful)))
            .map(|_| ())
    }

    /// The retry policy of a restore report: the standard one (30 s), or
    /// `report_retry_s` when that is shorter.
    pub(crate) fn restore_backoff(&self) -> Backoff {
        Backoff::new(
            Duration::from_millis(500),
            Duration::from_secs(8),
            self.restore_budget,
        )
    }

    /// Parks a restore report for `send_pending` (a later restore report of
    /// the same backup replaces it: the Panel keeps the latest).
    /// Parks `report` of backup `backup` (for `send_pending`) unless a
    /// report of it is parked already.
    pub fn park_backup_once(&self, backup: &str, report: &BackupReport) -> Result<()> {
        let name = format!("{backup}{}", ReportKind::Backup.suffix());
        if self.pending_dir.join(name).exists() {
            return Ok(());
        }
        self.park(ReportKind::Backup, backup, &report.to_json())
    }

    pub fn park_restore(&self, backup: &str, successful: bool) -> Result<()> {
        self.park(ReportKind::Restore, backup, &restore_body(successful))
    }

    pub(crate) fn restore_url(&self, backup: &str) -> String {
        self.url(ReportKind::Restore, backup)
    }

    pub(crate) fn logger(&self) -> &Logger {
        &self.log
    }

    /// `POST /api/remote/backups/<uuid>` with the patient policy, parking
    /// the report when it cannot be delivered. `cancel` (a host shutting
    /// down) parks it at once.
    pub fn report_backup(
        &self,
        backup: &str,
        report: &BackupReport,
        cancel: Option<&CancelToken>,
    ) -> ReportOutcome {
        let url = self.url(ReportKind::Backup, backup);
        let body = report.to_json();
        // Written ahead: a process killed while it reports leaves it for
        // the next start (`take_sending`). Hidden from `send_pending`, so
        // the report is never sent twice at once.
        let sending = self.sending_path(ReportKind::Backup, backup);
        let written_ahead = self.write_report(&sending, backup, &body).is_ok();
        let settled = |outcome: ReportOutcome| {
            if written_ahead {
                let _ = std::fs::remove_file(&sending);
            }
            outcome
        };
        let mut backoff = Backoff::new(
            Duration::from_millis(500),
            Duration::from_secs(60),
            self.report_budget,
        );
        let stop = crate::retry::cancelled_by(cancel);
        loop {
            let reason = match self.once("POST", &url, Some(&body)) {
                Ok(_) => return settled(ReportOutcome::Sent),
                Err(Failure::Final(404, m)) | Err(Failure::Retry(m)) => m,
                Err(Failure::Final(_, m)) => return settled(ReportOutcome::Rejected(m)),
            };
            if !self.wait_logged(&mut backoff, &stop, "POST", &url, &reason) {
                let outcome = match self.park(ReportKind::Backup, backup, &body) {
                    Ok(()) => ReportOutcome::Pending(reason),
                    Err(e) => ReportOutcome::Pending(format!("{reason}; parking it failed: {e}")),
                };
                self.log_parked(ReportKind::Backup, backup, &outcome);
                return settled(outcome);
            }
        }
    }

    /// Logs at WARN that a report was parked (or could not be).
    pub(crate) fn log_parked(&self, kind: ReportKind, backup: &str, outcome: &ReportOutcome) {
        let what = match kind {
            ReportKind::Backup => "backup",
            ReportKind::Restore => "restore",
        };
        if let ReportOutcome::Pending(reason) = outcome {
            self.log.warn(&format!(
                "the {what} report of backup {backup} was not delivered; parked as .pending/{backup}{}: {reason}",
                kind.suffix()
            ));
        }
    }

    fn park(&self, kind: ReportKind, backup: &str, body: &Value) -> Result<()> {
        let name = format!("{backup}{}", kind.suffix());
        self.write_report(&self.pending_dir.join(name), backup, body)
    }

    /// Writes a report file at `path` in `.pending` durably (written,
    /// synced, renamed into place).
    fn write_report(&self, path: &Path, backup: &str, body: &Value) -> Result<()> {
        std::fs::create_dir_all(&self.pending_dir)
            .map_err(|e| Error::io("creating the pending reports directory", e))?;
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let tmp = self.pending_dir.join(format!(".{name}.tmp"));
        let text = json!({"backup": backup, "body": body}).to_string();
        std::fs::write(&tmp, text).map_err(|e| Error::io("writing a pending report", e))?;
        if let Ok(f) = std::fs::File::open(&tmp) {
            let _ = f.sync_all();
        }
        std::fs::rename(&tmp, path).map_err(|e| Error::io("writing a pending report", e))?;
        if let Ok(dir) = std::fs::File::open(&self.pending_dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }

    /// Writes `report` of backup `backup` ahead, where `report_backup`
    /// keeps it while it is sent, for `take_sending` at the next start if
    /// the process is killed before the report is settled. Best effort.
    pub fn write_ahead(&self, backup: &str, report: &BackupReport) {
        let path = self.sending_path(ReportKind::Backup, backup);
        let _ = self.write_report(&path, backup, &report.to_json());
    }

    /// Where the report of backup `backup` is kept while it is sent.
    fn sending_path(&self, kind: ReportKind, backup: &str) -> PathBuf {
        self.pending_dir
            .join(format!(".{backup}{}{SENDING}", kind.suffix()))
    }

    /// Writes the restore report of backup `backup` ahead, while the
    /// reporter holds it (see [`promote_sending_restores`]). Best effort.
    ///
    /// [`promote_sending_restores`]: Self::promote_sending_restores
    pub fn write_ahead_restore(&self, backup: &str, successful: bool) {
        let path = self.sending_path(ReportKind::Restore, backup);
        let _ = self.write_report(&path, backup, &restore_body(successful));
    }

    /// The report of `kind` of backup `backup` is settled (delivered,
    /// refused or parked): its written-ahead copy goes.
    pub fn settled(&self, kind: ReportKind, backup: &str) {
        let _ = std::fs::remove_file(self.sending_path(kind, backup));
    }

    /// At start: the restore reports a process that is gone held when it
    /// stopped become parked ones (a newer one replacing a parked report of
    /// the same backup, as `park_restore` does). Returns how many.
    pub fn promote_sending_restores(&self) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.pending_dir) else {
            return 0;
        };
        let mut promoted = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(parked) = name
                .strip_prefix('.')
                .and_then(|n| n.strip_suffix(SENDING))
                .filter(|n| matches!(ReportKind::of_file(n), Some((ReportKind::Restore, _))))
            else {
                continue;
            };
            if std::fs::rename(entry.path(), self.pending_dir.join(parked)).is_ok() {
                promoted += 1;
            }
        }
        promoted
    }

    /// The report a process that is gone was sending for `backup` when it
    /// stopped, if any (its file is removed): the backup had ended so.
    pub fn take_sending(&self, backup: &str) -> Option<BackupReport> {
        let path = self.sending_path(ReportKind::Backup, backup);
        let text = std::fs::read_to_string(&path).ok();
        let _ = std::fs::remove_file(&path);
        let v: Value = serde_json::from_str(&text?).ok()?;
        (v["backup"].as_str() == Some(backup))
            .then(|| BackupReport::from_json(&v["body"]))
            .flatten()
    }

    /// Sends the parked reports, backup and restore ones, once each (the
    /// standard 30 s policy); a report leaves `.pending` when the Panel
    /// answers 2xx or a final 4xx. Returns (delivered or settled, still
    /// pending).
    pub fn send_pending(&self, cancel: Option<&CancelToken>) -> (usize, usize) {
        self.send_pending_with(cancel, &mut |_, _| {})
    }

    /// [`send_pending`](Self::send_pending), calling `delivered` with the
    /// kind and backup of each report the Panel took.
    pub fn send_pending_with(
        &self,
        cancel: Option<&CancelToken>,
        delivered: &mut dyn FnMut(ReportKind, &str),
    ) -> (usize, usize) {
        let Ok(entries) = std::fs::read_dir(&self.pending_dir) else {
            return (0, 0);
        };
        let (mut done, mut left) = (0, 0);
        for entry in entries.flatten() {
            let path = entry.path();
            let file_name = entry.file_name().to_string_lossy().into_owned();
            if file_name.starts_with('.') {
                continue;
            }
            let Some((kind, _)) = ReportKind::of_file(&file_name) else {
                continue;
            };
            let parsed: Option<(String, Value)> = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                .and_then(|v| {
                    let backup = crate::request::canonical_uuid(v["backup"].as_str()?)?;
                    Some((backup, v["body"].clone()))
                });
            let Some((backup, body)) = parsed else {
                // Unreadable: keep it for an operator to look at.
                left += 1;
                continue;
            };
            let url = self.url(kind, &backup);
            match self.call_raw("POST", &url, Some(&body), cancel) {
                Ok(_) => {
                    let _ = std::fs::remove_file(&path);
                    delivered(kind, &backup);
                    done += 1;
                }
                Err(Failure::Final(400..=403 | 405..=499, _)) => {
                    let _ = std::fs::remove_file(&path);
                    done += 1;
                }
                Err(_) => left += 1,
            }
        }
        (done, left)
    }
}

/// The Panel's error JSON `{"errors":[{"code","status","detail"}]}` as text.
fn panel_error(text: &str) -> String {
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        if let Some(first) = v["errors"].as_array().and_then(|a| a.first()) {
            return format!(
                "{}: {}",
                first["code"].as_str().unwrap_or("error"),
                first["detail"].as_str().unwrap_or("")
            );
        }
    }
    excerpt(text)
}

/// The first bytes of a response body, on one line.
pub fn excerpt(text: &str) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    one_line.trim().to_string()
}

/// The body of a restore report.
fn restore_body(successful: bool) -> Value {
    json!({ "successful": successful })
}

/// A URL without its query string (presigned URLs carry credentials) or
/// user information (`user:password@`).
pub fn redact(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, _)) => (base, "?…"),
        None => (url, ""),
    };
    let base = match base.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
            match authority.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://REDACTED@{host}{path}"),
                None => base.to_string(),
            }
        }
        None => base.to_string(),
    };
    format!("{base}{query}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_drops_credentials_and_query_strings() {
        assert_eq!(
            redact("https://user:pw@panel.example/api/remote/backups/x?sig=abc"),
            "https://REDACTED@panel.example/api/remote/backups/x?…"
        );
        assert_eq!(redact("http://127.0.0.1:9/a"), "http://127.0.0.1:9/a");
    }

    #[test]
    fn pending_file_names_tell_the_kinds_apart() {
        let u = "0b3c1d0e-1111-4222-8333-444455556666";
        assert_eq!(
            ReportKind::of_file(&format!("{u}.restore.json")),
            Some((ReportKind::Restore, u))
        );
        assert_eq!(
            ReportKind::of_file(&format!("{u}.json")),
            Some((ReportKind::Backup, u))
        );
        assert_eq!(ReportKind::of_file("notes.txt"), None);
    }
}
