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

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::config::PanelConfig;
use crate::error::{Error, Result};
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
    pub fn failed() -> BackupReport {
        BackupReport {
            checksum: String::new(),
            size: 0,
            successful: false,
            parts: None,
        }
    }

    pub fn to_json(&self) -> Value {
        let parts = match &self.parts {
            None => Value::Null,
            Some(parts) => Value::Array(
                parts
                    .iter()
                    .map(|(etag, n)| json!({"etag": etag, "part_number": n}))
                    .collect(),
            ),
        };
        json!({
            "checksum": self.checksum,
            "checksum_type": if self.successful { "sha1" } else { "" },
            "size": self.size,
            "successful": self.successful,
            "parts": parts,
        })
    }
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

enum Failure {
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
    pending_dir: PathBuf,
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
    pub fn new(config: &PanelConfig, backup_directory: &Path) -> PanelClient {
        PanelClient {
            base: format!("{}/api/remote", config.url.trim_end_matches('/')),
            authorization: format!("Bearer {}.{}", config.token_id, config.token),
            agent: agent(Duration::from_secs(15)),
            report_budget: Duration::from_secs(config.report_retry_s),
            pending_dir: backup_directory.join(".pending"),
        }
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
                    if !backoff.wait(&stop) {
                        return Err(Failure::Retry(m));
                    }
                }
                other => return other,
            }
        }
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

    /// `POST /api/remote/backups/<uuid>/restore` with `{"successful": bool}`.
    pub fn report_restore(
        &self,
        backup: &str,
        successful: bool,
        cancel: Option<&CancelToken>,
    ) -> Result<()> {
        let url = format!("{}/backups/{backup}/restore", self.base);
        self.call(
            "POST",
            &url,
            Some(&json!({"successful": successful})),
            cancel,
        )
        .map(|_| ())
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
        let url = format!("{}/backups/{backup}", self.base);
        let body = report.to_json();
        let mut backoff = Backoff::new(
            Duration::from_millis(500),
            Duration::from_secs(60),
            self.report_budget,
        );
        let stop = crate::retry::cancelled_by(cancel);
        loop {
            let reason = match self.once("POST", &url, Some(&body)) {
                Ok(_) => return ReportOutcome::Sent,
                Err(Failure::Final(404, m)) | Err(Failure::Retry(m)) => m,
                Err(Failure::Final(_, m)) => return ReportOutcome::Rejected(m),
            };
            if stop() || !backoff.wait(&stop) {
                return match self.park(backup, &body) {
                    Ok(()) => ReportOutcome::Pending(reason),
                    Err(e) => ReportOutcome::Pending(format!("{reason}; parking it failed: {e}")),
                };
            }
        }
    }

    fn park(&self, backup: &str, body: &Value) -> Result<()> {
        std::fs::create_dir_all(&self.pending_dir)
            .map_err(|e| Error::io("creating the pending reports directory", e))?;
        let tmp = self.pending_dir.join(format!(".{backup}.json.tmp"));
        let path = self.pending_dir.join(format!("{backup}.json"));
        let text = json!({"backup": backup, "body": body}).to_string();
        std::fs::write(&tmp, text).map_err(|e| Error::io("writing a pending report", e))?;
        if let Ok(f) = std::fs::File::open(&tmp) {
            let _ = f.sync_all();
        }
        std::fs::rename(&tmp, &path).map_err(|e| Error::io("writing a pending report", e))?;
        if let Ok(dir) = std::fs::File::open(&self.pending_dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }

    /// Sends the parked reports once each (the standard 30 s policy); a
    /// report leaves `.pending` when the Panel answers 2xx or a final 4xx.
    /// Returns (delivered or settled, still pending).
    pub fn send_pending(&self, cancel: Option<&CancelToken>) -> (usize, usize) {
        let Ok(entries) = std::fs::read_dir(&self.pending_dir) else {
            return (0, 0);
        };
        let (mut done, mut left) = (0, 0);
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json")
                || entry.file_name().to_string_lossy().starts_with('.')
            {
                continue;
            }
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
            let url = format!("{}/backups/{backup}", self.base);
            match self.call_raw("POST", &url, Some(&body), cancel) {
                Ok(_) | Err(Failure::Final(400..=403 | 405..=499, _)) => {
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

/// A URL without its query string (presigned URLs carry credentials).
pub fn redact(url: &str) -> String {
    match url.split_once('?') {
        Some((base, _)) => format!("{base}?…"),
        None => url.to_string(),
    }
}
