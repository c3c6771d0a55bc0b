//! The engine: the three backup operations of a node (CONTRACT sections 1, 2,
//! 4, 6), their validation, and the guard that lets only one backup or restore
//! hold a server at a time.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::archive::writer::{write_archive, ArchiveSummary, WriteOptions};
use crate::backup_store::BackupStore;
use crate::config::{CompressionLevel, EngineConfig, Owner};
use crate::error::{Error, Result};
use crate::ignore::{IgnoreRules, IGNORE_FILE_MAX};
use crate::panel::{BackupReport, PanelClient, ReportOutcome};
use crate::progress::{CancelToken, Control, Phase, Progress};
use crate::request::{backup_uuid, canonical_uuid, Adapter, CreateRequest, RestoreRequest};
use crate::restore::restore_stream;
use crate::restore_target::{self, RestoreOptions, RestoreSummary};
use crate::safe_fs;

/// What holds a server.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Hold {
    Backup,
    Restore,
}

#[derive(Default)]
struct State {
    /// Server uuid -> the operation holding it.
    servers: HashMap<String, Hold>,
    /// Running backups: uuid -> the token that cancels it (DELETE uses it).
    backups: HashMap<String, Arc<CancelToken>>,
}

pub struct Engine {
    config: EngineConfig,
    store: BackupStore,
    panel: Option<PanelClient>,
    state: Mutex<State>,
    /// Signalled whenever an operation releases its hold.
    released: Condvar,
}

/// Releases a server (and a running backup's uuid) when dropped.
struct HoldGuard<'e> {
    engine: &'e Engine,
    server: String,
    backup: Option<String>,
}

impl Drop for HoldGuard<'_> {
    fn drop(&mut self) {
        let mut state = self.engine.lock_state();
        state.servers.remove(&self.server);
        if let Some(b) = &self.backup {
            state.backups.remove(b);
        }
        self.engine.released.notify_all();
    }
}

impl Engine {
    /// Starts an engine: creates the backup directory if needed, removes
    /// temporary archives abandoned by a killed process, and finishes or
    /// undoes restores a crash interrupted.
    pub fn new(config: EngineConfig) -> Result<Engine> {
        if !config.data_directory.is_dir() {
            std::fs::create_dir_all(&config.data_directory)
                .map_err(|e| Error::io("creating the data directory", e))?;
        }
        let store = BackupStore::open(&config.backup_directory)?;
        store.remove_stale_temps();
        let panel = config
            .panel
            .as_ref()
            .map(|p| PanelClient::new(p, &config.backup_directory));
        let engine = Engine {
            config,
            store,
            panel,
            state: Mutex::new(State::default()),
            released: Condvar::new(),
        };
        engine.recover_all_servers();
        Ok(engine)
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    fn lock_state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps inconsistent
        // (each update is a single insert or remove), so keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn recover_all_servers(&self) {
        let Ok(entries) = std::fs::read_dir(&self.config.data_directory) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if canonical_uuid(&name.to_string_lossy()).is_none() {
                continue;
            }
            if let Ok(fd) = safe_fs::open_trusted_dir(&entry.path()) {
                let _ = restore_target::recover(std::os::fd::AsFd::as_fd(&fd));
            }
        }
    }

    /// The server's root directory; a server uuid that is not canonical or
    /// has no directory is not found (CONTRACT section 1).
    fn server_root(&self, server: &str) -> Result<PathBuf> {
        let not_found =
            || Error::not_found("The requested resource does not exist on this instance.");
        if canonical_uuid(server).is_none() {
            return Err(not_found());
        }
        let root = self.config.data_directory.join(server);
        match std::fs::metadata(&root) {
            Ok(m) if m.is_dir() => Ok(root),
            _ => Err(not_found()),
        }
    }

    fn open_root(&self, root: &Path) -> Result<OwnedFd> {
        safe_fs::open_trusted_dir(root).map_err(|e| Error::os("opening the server directory", e))
    }

    /// Takes the server for an operation, or fails with a conflict.
    fn hold(
        &self,
        server: &str,
        what: Hold,
        backup: Option<(&str, Arc<CancelToken>)>,
    ) -> Result<HoldGuard<'_>> {
        let mut state = self.lock_state();
        if let Some((uuid, _)) = &backup {
            if state.backups.contains_key(*uuid) {
                return Err(Error::conflict(
                    "a backup with this uuid is already running",
                ));
            }
        }
        if let Some(current) = state.servers.get(server) {
            let doing = match current {
                Hold::Backup => "a backup",
                Hold::Restore => "a restore",
            };
            return Err(Error::conflict(format!(
                "{doing} is already running for this server"
            )));
        }
        state.servers.insert(server.to_string(), what);
        let backup = backup.map(|(uuid, token)| {
            state.backups.insert(uuid.to_string(), token);
            uuid.to_string()
        });
        Ok(HoldGuard {
            engine: self,
            server: server.to_string(),
            backup,
        })
    }

    fn busy_error(&self, server: &str, backup: Option<&str>) -> Option<Error> {
        let state = self.lock_state();
        if let Some(b) = backup {
            if state.backups.contains_key(b) {
                return Some(Error::conflict(
                    "a backup with this uuid is already running",
                ));
            }
        }
        state
            .servers
            .contains_key(server)
            .then(|| Error::conflict("another backup or restore is running for this server"))
    }

    /// Validates a create request without starting it (what a host checks
    /// before answering 202).
    pub fn check_create(&self, server: &str, request_json: &str) -> Result<CreateRequest> {
        self.server_root(server)?;
        let request = CreateRequest::parse(request_json)?;
        self.check_create_adapter(request.adapter)?;
        if self.store.exists(&request.uuid) {
            return Err(Error::conflict("a backup with this uuid already exists"));
        }
        if let Some(e) = self.busy_error(server, Some(&request.uuid)) {
            return Err(e);
        }
        Ok(request)
    }

    /// An s3 backup needs a Panel for its upload URLs (an s3 restore only
    /// downloads, and needs none).
    fn check_create_adapter(&self, adapter: Adapter) -> Result<()> {
        match adapter {
            Adapter::S3 if self.panel.is_none() => Err(Error::invalid(
                "the s3 adapter needs a Panel to hand out upload URLs, and none is configured",
            )),
            _ => Ok(()),
        }
    }

    /// Creates a backup of server `server`. Blocks until it is written (for
    /// `s3`, uploaded) and, with a Panel configured, reported. The first
    /// progress report (phase `Started`) means the request was valid and the
    /// server is held; from then on exactly one final report goes to the
    /// Panel, success or failure. Returns the details JSON.
    pub fn create_backup(
        &self,
        server: &str,
        request_json: &str,
        ctl: &mut Control<'_>,
    ) -> Result<String> {
        let request = self.check_create(server, request_json)?;
        let root = self.server_root(server)?;
        let token = Arc::new(CancelToken::new());
        let hold = self.hold(
            server,
            Hold::Backup,
            Some((&request.uuid, Arc::clone(&token))),
        )?;
        // Re-check under the hold: another call may have finished this uuid.
        if self.store.exists(&request.uuid) {
            return Err(Error::conflict("a backup with this uuid already exists"));
        }
        ctl.also_cancelled_by(token);
        let outcome = ctl
            .report(Progress::at(Phase::Started))
            .and_then(|_| self.run_backup(&request, &root, ctl));
        // The server is free again while the Panel is told.
        drop(hold);
        let report = match &outcome {
            Ok(done) => done.report.clone(),
            Err(_) => BackupReport::failed(),
        };
        let delivery = self.panel.as_ref().map(|panel| {
            ctl.report_final(Progress::at(Phase::Report));
            panel.report_backup(&request.uuid, &report, ctl.cancel_token())
        });
        let done = outcome?;
        ctl.report_final(
            Progress::done(done.summary.source_bytes, done.summary.entries)
                .with_archive_bytes(done.summary.size),
        );
        let mut details = done.details;
        if let Some(delivery) = delivery {
            details["panel_report"] = match delivery {
                ReportOutcome::Sent => json!("sent"),
                ReportOutcome::Rejected(m) => json!(format!("rejected: {m}")),
                ReportOutcome::Pending(m) => json!(format!("pending: {m}")),
            };
        }
        Ok(details.to_string())
    }

    /// Writes the archive (and uploads it, for `s3`).
    fn run_backup(
        &self,
        request: &CreateRequest,
        root: &Path,
        ctl: &mut Control<'_>,
    ) -> Result<FinishedBackup> {
        let root_fd = self.open_root(root)?;
        let ignore = ignore_rules(&request.ignore, &root_fd);
        let mut temp = self.store.create_temp(&request.uuid)?;
        let summary = write_archive(
            root_fd,
            &ignore,
            &mut temp.file,
            &self.write_options(self.config.compression_level),
            ctl,
        )?;
        ctl.check()?;
        let parts = match request.adapter {
            Adapter::Wings => {
                temp.publish(&self.store.archive_path(&request.uuid))?;
                None
            }
            Adapter::S3 => {
                let panel = self
                    .panel
                    .as_ref()
                    .ok_or_else(|| Error::invalid("no Panel is configured"))?;
                let plan = panel.upload_plan(&request.uuid, summary.size, ctl.cancel_token())?;
                let parts = crate::s3::upload_parts(
                    &temp.file,
                    summary.size,
                    &plan,
                    self.config.upload_concurrency,
                    ctl,
                )?;
                // The local copy of an s3 backup always goes (dropping `temp`).
                drop(temp);
                Some(parts)
            }
        };
        let report = BackupReport {
            checksum: summary.sha1.clone(),
            size: summary.size,
            successful: true,
            parts,
        };
        Ok(FinishedBackup {
            details: details_value(&summary, &report),
            report,
            summary,
        })
    }

    fn write_options(&self, level: CompressionLevel) -> WriteOptions {
        WriteOptions {
            level,
            threads: self.config.worker_threads(),
            write_limit: self.config.write_limit,
            exclude: Vec::new(),
        }
    }

    /// Validates a restore request without starting it.
    pub fn check_restore(
        &self,
        server: &str,
        backup: &str,
        request_json: &str,
    ) -> Result<RestoreRequest> {
        self.server_root(server)?;
        let request = RestoreRequest::parse(request_json)?;
        let backup = backup_uuid(backup)?;
        match (&request.adapter, &request.download_url) {
            (Adapter::Wings, _) if !self.store.exists(&backup) => {
                return Err(Error::not_found(
                    "The requested backup was not found on this server.",
                ))
            }
            (Adapter::S3, Some(url)) => {
                crate::download::check_url(url, &self.config.restore_host_allowlist)?
            }
            _ => {}
        }
        if let Some(e) = self.busy_error(server, None) {
            return Err(e);
        }
        Ok(request)
    }

    /// Restores backup `backup` into server `server`. Blocks until done; with
    /// a Panel configured, the result is reported to it whatever it is.
    pub fn restore_backup(
        &self,
        server: &str,
        backup: &str,
        request_json: &str,
        ctl: &mut Control<'_>,
    ) -> Result<RestoreSummary> {
        let request = self.check_restore(server, backup, request_json)?;
        let backup = backup_uuid(backup)?;
        let root = self.server_root(server)?;
        let hold = self.hold(server, Hold::Restore, None)?;
        let outcome = ctl
            .report(Progress::at(Phase::Started))
            .and_then(|_| self.run_restore(&request, &backup, &root, ctl));
        drop(hold);
        if let Some(panel) = &self.panel {
            ctl.report_final(Progress::at(Phase::Report));
            // A report that cannot be delivered does not undo the restore.
            let _ = panel.report_restore(&backup, outcome.is_ok(), ctl.cancel_token());
        }
        let summary = outcome?;
        ctl.report_final(Progress::done(summary.bytes, summary.entries));
        Ok(summary)
    }

    fn run_restore(
        &self,
        request: &RestoreRequest,
        backup: &str,
        root: &Path,
        ctl: &mut Control<'_>,
    ) -> Result<RestoreSummary> {
        let root_fd = self.open_root(root)?;
        // An earlier restore's stage that cannot be finished (yet) does not
        // stop this one: it stays, with what it holds, for the next try.
        let _ = restore_target::recover(std::os::fd::AsFd::as_fd(&root_fd));
        let opts = self.restore_options(request.truncate_directory);
        let threads = self.config.worker_threads();
        match (&request.adapter, &request.download_url) {
            (Adapter::S3, Some(url)) => {
                let mut download = crate::download::open(url, &self.config.restore_host_allowlist)?;
                restore_stream(
                    &mut download.reader,
                    download.len.unwrap_or(0),
                    root_fd,
                    opts,
                    threads,
                    self.config.write_limit,
                    ctl,
                )
            }
            _ => {
                let (mut file, len) = self.store.open_archive(backup)?;
                restore_stream(
                    &mut file,
                    len,
                    root_fd,
                    opts,
                    threads,
                    self.config.write_limit,
                    ctl,
                )
            }
        }
    }

    /// Sends the backup reports parked in `.pending` (see `PanelClient`):
    /// returns (settled, still pending).
    pub fn send_pending_reports(&self, cancel: Option<&CancelToken>) -> (usize, usize) {
        match &self.panel {
            Some(panel) => panel.send_pending(cancel),
            None => (0, 0),
        }
    }

    fn restore_options(&self, truncate: bool) -> RestoreOptions {
        RestoreOptions {
            truncate,
            owner: self.config.owner,
            disk_limit: self.config.disk_limit,
        }
    }

    /// Deletes the local archive of backup `backup`. A backup still being
    /// created is cancelled first (its partial file is removed) and counts
    /// as deleted.
    pub fn delete_backup(&self, server: &str, backup: &str) -> Result<()> {
        self.server_root(server)?;
        let backup = backup_uuid(backup)?;
        let running = self.lock_state().backups.get(&backup).cloned();
        if let Some(token) = running {
            token.trigger();
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut state = self.lock_state();
            while state.backups.contains_key(&backup) {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(Error::internal("the running backup did not stop in time"));
                }
                state = self
                    .released
                    .wait_timeout(state, left)
                    .map(|(s, _)| s)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
            drop(state);
            return match self.store.delete(&backup) {
                Ok(())
                | Err(Error {
                    status: crate::Status::NotFound,
                    ..
                }) => Ok(()),
                Err(e) => Err(e),
            };
        }
        self.store.delete(&backup)
    }
}

/// The rules a backup uses: the request's, or else the server's
/// `.pteroignore` (`.pelicanignore` when there is none) if it is a regular
/// file of at most 32 KiB; otherwise none.
fn ignore_rules(request_ignore: &str, root: &OwnedFd) -> IgnoreRules {
    if !request_ignore.is_empty() {
        return IgnoreRules::parse(request_ignore.as_bytes());
    }
    for name in [c".pteroignore", c".pelicanignore"] {
        let root = std::os::fd::AsFd::as_fd(root);
        let st = match safe_fs::lstat_at(root, name) {
            Ok(st) => st,
            Err(_) => continue,
        };
        if safe_fs::file_type(&st) != rustix::fs::FileType::RegularFile {
            // A symlink, directory or anything else disables the file.
            return IgnoreRules::default();
        }
        return read_small_file(root, name)
            .map_or_else(IgnoreRules::default, |t| IgnoreRules::parse(&t));
    }
    IgnoreRules::default()
}

fn read_small_file(dir: std::os::fd::BorrowedFd<'_>, name: &std::ffi::CStr) -> Option<Vec<u8>> {
    let fd = safe_fs::open_file(dir, name).ok()?;
    let st = rustix::fs::fstat(&fd).ok()?;
    if safe_fs::file_type(&st) != rustix::fs::FileType::RegularFile
        || st.st_size as u64 > IGNORE_FILE_MAX
    {
        return None;
    }
    let mut data = Vec::with_capacity(st.st_size as usize);
    let mut buf = [0u8; 8192];
    loop {
        match rustix::io::read(&fd, &mut buf) {
            Ok(0) => break,
            Ok(n) => data.extend_from_slice(&buf[..n]),
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return None,
        }
        if data.len() as u64 > IGNORE_FILE_MAX {
            return None;
        }
    }
    Some(data)
}

fn lossy(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

/// A backup written (and uploaded), not yet reported.
struct FinishedBackup {
    details: Value,
    report: BackupReport,
    summary: ArchiveSummary,
}

/// The details of a backup: the Panel's status body (CONTRACT section 3),
/// plus what the archive left out or saw change (`files`, `changed`,
/// `skipped`), which the Panel ignores.
fn details_value(summary: &ArchiveSummary, report: &BackupReport) -> Value {
    let mut body = report.to_json();
    body["files"] = json!(summary.files);
    body["changed"] = json!(summary.changed.iter().map(|p| lossy(p)).collect::<Vec<_>>());
    body["skipped"] = json!(summary
        .skipped
        .iter()
        .map(|s| json!({"path": lossy(&s.path), "reason": s.reason}))
        .collect::<Vec<_>>());
    body
}

/// Options of the archive-level calls.
#[derive(Clone, Debug)]
pub struct ArchiveOptions {
    pub ignore: String,
    pub compression_level: CompressionLevel,
    pub threads: usize,
    pub write_limit: u64,
    pub truncate: bool,
    pub disk_limit: u64,
    pub owner: Option<Owner>,
}

impl ArchiveOptions {
    pub fn from_json(text: Option<&str>) -> Result<ArchiveOptions> {
        let mut opts = ArchiveOptions {
            ignore: String::new(),
            compression_level: CompressionLevel::BestSpeed,
            threads: 0,
            write_limit: 0,
            truncate: false,
            disk_limit: 0,
            owner: None,
        };
        let Some(text) = text.filter(|t| !t.trim().is_empty()) else {
            return Ok(opts);
        };
        let value: Value = serde_json::from_str(text)
            .map_err(|e| Error::invalid(format!("options are not valid JSON: {e}")))?;
        let Value::Object(map) = value else {
            return Err(Error::invalid("options must be a JSON object"));
        };
        // Reuse the engine configuration's checks for the shared keys.
        let mut engine_keys = serde_json::Map::new();
        for (key, v) in map {
            match key.as_str() {
                "ignore" => {
                    opts.ignore = v
                        .as_str()
                        .ok_or_else(|| Error::invalid("option `ignore` must be a string"))?
                        .to_string()
                }
                "truncate" => {
                    opts.truncate = v
                        .as_bool()
                        .ok_or_else(|| Error::invalid("option `truncate` must be a boolean"))?
                }
                "compression_level" | "threads" | "write_limit" | "disk_limit" | "owner" => {
                    engine_keys.insert(key, v);
                }
                _ => return Err(Error::invalid(format!("option `{key}` is not known"))),
            }
        }
        let config = EngineConfig::from_json(&Value::Object(engine_keys).to_string())
            .map_err(|e| Error::invalid(e.message.replace("configuration key", "option")))?;
        opts.compression_level = config.compression_level;
        opts.threads = config.worker_threads();
        opts.write_limit = config.write_limit;
        opts.disk_limit = config.disk_limit;
        opts.owner = config.owner;
        Ok(opts)
    }
}

fn existing_dir(path: &Path, what: &str) -> Result<OwnedFd> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => {}
        _ => {
            return Err(Error::not_found(format!(
                "{what} is not an existing directory"
            )))
        }
    }
    safe_fs::open_trusted_dir(path).map_err(|e| Error::os(format!("opening {what}"), e))
}

/// Archives any directory into a `.tar.gz` file (written under a temporary
/// name beside it, then renamed). Returns a JSON summary.
pub fn archive_create(
    source: &Path,
    archive: &Path,
    opts: &ArchiveOptions,
    ctl: &mut Control<'_>,
) -> Result<String> {
    let root = existing_dir(source, "the source")?;
    let parent = archive
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = archive
        .file_name()
        .ok_or_else(|| Error::invalid("the archive path has no file name"))?;
    if !parent.exists() {
        return Err(Error::not_found(
            "the directory of the archive path does not exist",
        ));
    }
    let store = BackupStore::open(parent)?;
    let mut temp = store.create_temp(&name.to_string_lossy())?;
    let exclude = crate::archive::writer::output_identities(&temp.file, archive);
    ctl.report(Progress::at(Phase::Started))?;
    let ignore = IgnoreRules::parse(opts.ignore.as_bytes());
    let summary = write_archive(
        root,
        &ignore,
        &mut temp.file,
        &WriteOptions {
            level: opts.compression_level,
            threads: opts.threads,
            write_limit: opts.write_limit,
            exclude,
        },
        ctl,
    )?;
    ctl.check()?;
    temp.publish_replacing(archive)?;
    ctl.report_final(
        Progress::done(summary.source_bytes, summary.entries).with_archive_bytes(summary.size),
    );
    Ok(json!({
        "checksum": summary.sha1,
        "checksum_type": "sha1",
        "size": summary.size,
        "entries": summary.entries,
        "files": summary.files,
        "source_bytes": summary.source_bytes,
        "changed": summary.changed.iter().map(|p| lossy(p)).collect::<Vec<_>>(),
        "changed_count": summary.changed_count,
        "skipped": summary.skipped.iter().map(|s| json!({"path": lossy(&s.path), "reason": s.reason})).collect::<Vec<_>>(),
        "skipped_count": summary.skipped_count,
    })
    .to_string())
}

/// Extracts a `.tar.gz` file into a directory with the same safety rules as
/// a backup restore. Returns a JSON summary.
pub fn archive_extract(
    archive: &Path,
    dest: &Path,
    opts: &ArchiveOptions,
    ctl: &mut Control<'_>,
) -> Result<String> {
    let root = existing_dir(dest, "the destination")?;
    let mut file = match std::fs::File::open(archive) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::not_found("the archive does not exist"))
        }
        Err(e) => return Err(Error::io("opening the archive", e)),
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    ctl.report(Progress::at(Phase::Started))?;
    let summary = restore_stream(
        &mut file,
        len,
        root,
        RestoreOptions {
            truncate: opts.truncate,
            owner: opts.owner,
            disk_limit: opts.disk_limit,
        },
        opts.threads,
        opts.write_limit,
        ctl,
    )?;
    ctl.report_final(Progress::done(summary.bytes, summary.entries));
    Ok(summary_json(&summary))
}

pub fn summary_json(s: &RestoreSummary) -> String {
    json!({
        "entries": s.entries,
        "files": s.files,
        "directories": s.dirs,
        "symlinks": s.symlinks,
        "hard_links": s.hard_links,
        "bytes": s.bytes,
        "skipped": s.skipped,
    })
    .to_string()
}
