//! The engine: the three backup operations of a node (docs/api.md sections 3-5,
//! 9 and 10), their validation, and the guard that lets only one backup or restore
//! hold a server at a time. Typed: requests and results are Rust structs; the
//! C boundary (`ffi::wire`) parses and renders their JSON.

use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::archive::writer::{
    write_archive_indexed, ArchiveSummary, IndexOutcome, KernelCopy, WriteOptions,
};
use crate::backup_store::{BackupStore, TempArchive};
use crate::catalog::{scan_archives, Catalog, OpState, UNKNOWN_SERVER};
use crate::config::{CompressionLevel, EngineConfig, Owner};
use crate::error::{Error, Result};
use crate::ignore::{IgnoreRules, IGNORE_FILE_MAX};
use crate::index::Index;
use crate::log::{Logger, Sink};
use crate::operations::{CancelOutcome, Kind, OpKind, OperationRecord, Operations, Outcome};
use crate::panel::{BackupReport, PanelClient, ReportOutcome};
use crate::progress::{CancelToken, Control, Phase, Progress};
use crate::reporter::Reporter;
use crate::request::{
    backup_uuid, canonical_uuid, download_url_required, Adapter, CreateRequest, RestoreRequest,
};
use crate::restore::{
    self as restore_target, restore_stream, Recovery, RestoreOptions, RestoreSummary,
};
use crate::safe_fs;
use crate::space::{self, DryRunReport, TreeMeasure};

mod browse;
use crate::selection::{self, FileSource, HttpSource, Scope, SelectedArchive, Selection};
pub use browse::{archive_list, archive_verify, MSG_NO_LOCAL_INDEX};

pub struct Engine {
    config: EngineConfig,
    store: BackupStore,
    panel: Option<Arc<PanelClient>>,
    /// Delivers restore reports in the background (with a Panel).
    reporter: Option<Reporter>,
    log: Arc<Logger>,
    /// What runs and waits, and the node's policy over it.
    ops: Operations,
    /// How many of the engine's own threads (`spawn`) have not ended.
    running: Arc<Running>,
    /// Stops the engine's background work (`cancel_all`).
    background: CancelToken,
}

impl Engine {
    /// Starts an engine: creates the backup directory if needed, removes
    /// temporary archives abandoned by a killed process, finishes or undoes
    /// restores a crash interrupted, and opens the catalog of operations
    /// (reconciled with the archives: operations a stopped process left
    /// running are failed, archives it did not know are recorded).
    pub fn new(config: EngineConfig) -> Result<Engine> {
        if !config.data_directory.is_dir() {
            std::fs::create_dir_all(&config.data_directory)
                .map_err(|e| Error::io("creating the data directory", e))?;
        }
        let store = BackupStore::open(&config.backup_directory)?;
        store.remove_stale_temps();
        let catalog = Arc::new(Catalog::open(&config.backup_directory));
        let reconciled = catalog.reconcile(&scan_archives(&config.backup_directory));
        let log = Logger::new();
        let panel = config.panel.as_ref().map(|p| {
            Arc::new(PanelClient::new(
                p,
                &config.backup_directory,
                Arc::clone(&log),
            ))
        });
        for (kind, uuid) in &reconciled.interrupted {
            if *kind != OpKind::Create {
                continue;
            }
            // The index goes in place just before the archive: one whose
            // archive never followed is removed.
            if !store.exists(uuid) {
                let _ = std::fs::remove_file(store.local_index_path(uuid));
            }
            if let Some(panel) = &panel {
                settle_interrupted_create(panel, &catalog, &store, uuid, &log);
            }
        }
        // The stages first: what their recovery did decides how the
        // restores the stop interrupted ended.
        let recovered = recover_all_servers(&config.data_directory, &log);
        settle_interrupted_restores(
            panel.as_deref(),
            &catalog,
            &reconciled.interrupted,
            &recovered,
            &log,
        );
        if let Some(panel) = &panel {
            // Restore reports a killed process still held: parked now, sent
            // as the parked reports are.
            let promoted = panel.promote_sending_restores();
            if promoted > 0 {
                log.info(&format!(
                    "{promoted} restore report(s) a stopped process had not sent were parked"
                ));
            }
        }
        let reporter = match &panel {
            Some(panel) => Some(
                Reporter::start(Arc::clone(panel))
                    .map_err(|e| Error::io("starting the Panel reporter thread", e))?,
            ),
            None => None,
        };
        let engine = Engine {
            ops: Operations::with_catalog(config.max_running_backups, Some(catalog)),
            config,
            store,
            panel,
            running: Arc::default(),
            background: CancelToken::new(),
            reporter,
            log,
        };
        Ok(engine)
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Sets where the engine's log messages go (`None`: nowhere). The sink
    /// may be called from any of the engine's threads; once this returns,
    /// the previous sink is never called again.
    pub fn set_logger(&self, sink: Option<Sink>) {
        self.log.set(sink);
    }

    /// The engine's log (the sink set with `set_logger`).
    pub fn logger(&self) -> &Logger {
        &self.log
    }

    /// The server's root directory; a server uuid that is not canonical or
    /// has no directory is not found (docs/api.md section 1).
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

    /// Fails with `NotFound` unless `server` is a canonical UUID with a
    /// directory (the first check of every call on a server).
    pub fn check_server(&self, server: &str) -> Result<()> {
        self.server_root(server).map(|_| ())
    }

    /// Validates a create request without starting it (what a host checks
    /// before answering 202). Returns the backup's canonical UUID.
    pub fn check_create(&self, server: &str, request: &CreateRequest) -> Result<String> {
        self.server_root(server)?;
        let uuid = backup_uuid(&request.uuid)?;
        if request.dry_run {
            // A host that did not route the dry run must not make a backup.
            return Err(Error::invalid(
                "a dry run is asked with wb_backup_dry_run (Go DryRun, Python dry_run), not with a create",
            ));
        }
        self.check_create_adapter(request.adapter)?;
        if self.store.exists(&uuid) {
            return Err(Error::conflict(crate::operations::MSG_UUID_EXISTS));
        }
        self.ops.check(server, Some(&uuid))?;
        Ok(uuid)
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
    /// Panel, success or failure.
    pub fn create_backup(
        &self,
        server: &str,
        request: &CreateRequest,
        ctl: &mut Control<'_>,
    ) -> Result<BackupDetails> {
        let uuid = self.check_create(server, request)?;
        let request = CreateRequest {
            uuid,
            ..request.clone()
        };
        let root = self.server_root(server)?;
        let mut ticket = self.ops.admit(server, Kind::Backup, Some(&request.uuid))?;
        // Re-check under the hold: another call may have finished this uuid.
        if self.store.exists(&request.uuid) {
            return Err(Error::conflict(crate::operations::MSG_UUID_EXISTS));
        }
        ctl.also_cancelled_by(ticket.token());
        ticket.track(OpKind::Create, &request.uuid, request.adapter.name());
        ctl.observe(ticket.observer());
        // Accepted; a backup with no free slot then waits for one.
        let outcome = ctl
            .report(Progress::at(Phase::Started))
            .and_then(|_| ticket.wait_for_slot(ctl))
            .and_then(|_| self.run_backup(server, &request, &root, ctl))
            .map_err(|e| self.ops.explain(e));
        // The server and the slot are free again while the Panel is told.
        ticket.release_server();
        let report = match &outcome {
            Ok(done) => done.report.clone(),
            Err(_) => BackupReport::failed(),
        };
        let delivery = self.panel.as_ref().map(|panel| {
            ctl.report_final(Progress::at(Phase::Report));
            // Retried for its whole budget also when the backup was
            // cancelled or deleted (the Panel's row ends, and an s3 upload
            // is aborted, only through it); only the engine's shutdown
            // parks it at once.
            panel.report_backup(&request.uuid, &report, Some(&self.background))
        });
        ticket.finish(Outcome {
            error: outcome.as_ref().err(),
            bytes: outcome.as_ref().map_or(0, |d| d.archive.source_bytes),
            files: outcome.as_ref().map_or(0, |d| d.archive.files),
            size: outcome.as_ref().map_or(0, |d| d.archive.size),
            checksum: outcome
                .as_ref()
                .map_or(String::new(), |d| d.report.checksum.clone()),
            panel_report: delivery.as_ref().map(report_outcome_text),
        });
        let mut details = outcome?;
        ctl.report_final(
            Progress::done(details.archive.source_bytes, details.archive.entries)
                .with_archive_bytes(details.archive.size),
        );
        details.panel_report = delivery;
        self.log_skipped(server, &request.uuid, &details.archive);
        Ok(details)
    }

    /// Says in the log, at WARN, that a backup left entries out (files it
    /// could not read, sockets, ...), with the first of them: the state
    /// an HTTP client sees does not list them.
    fn log_skipped(&self, server: &str, backup: &str, archive: &ArchiveSummary) {
        let Some(first) = archive.skipped.first() else {
            return;
        };
        self.log.warn(&crate::log::line(
            "backup left entries out",
            [
                ("server", server.to_string()),
                ("backup", backup.to_string()),
                ("skipped", archive.skipped_count.to_string()),
                ("first", String::from_utf8_lossy(&first.path).into_owned()),
                ("reason", first.reason.clone()),
            ],
        ));
    }

    /// Writes the archive (and uploads it, for `s3`).
    fn run_backup(
        &self,
        server: &str,
        request: &CreateRequest,
        root: &Path,
        ctl: &mut Control<'_>,
    ) -> Result<BackupDetails> {
        let root_fd = self.open_root(root)?;
        let ignore = ignore_rules(&request.ignore, &root_fd);
        // The space check, before any file is read or the archive begun;
        // its walk's total serves the progress reports too.
        let measure = self.check_backup_room(server, &root_fd, &ignore, ctl)?;
        let mut temp = self.store.create_temp(&request.uuid)?;
        let mut options = self.write_options(self.config.compression_level);
        options.known_total = Some(measure.bytes);
        let name = format!("{}.tar.gz", request.uuid);
        if request.adapter == Adapter::Wings && request.reuse && self.config.backup_reuse {
            options.reuse_from = self.previous_archive(server, &request.uuid);
        }
        // An s3 backup's index stays here, apart from the local archives.
        let index_store = match request.adapter {
            Adapter::Wings => None,
            Adapter::S3 => self.store.s3_index_store().ok(),
        };
        let (summary, index) = write_with_index(
            index_store.as_ref().unwrap_or(&self.store),
            &name,
            root_fd,
            &ignore,
            &mut temp,
            &options,
            ctl,
        )?;
        ctl.check()?;
        let archive_path = self.store.archive_path(&request.uuid);
        let parts = match request.adapter {
            Adapter::Wings => {
                if let Some(panel) = &self.panel {
                    // Written ahead of the archive: a process killed once
                    // the archive is in place still reports it at the next
                    // start (`settle_interrupted_create`).
                    panel.write_ahead(&request.uuid, &BackupReport::succeeded(&summary, None));
                }
                self.publish_index(index, &self.store.local_index_path(&request.uuid));
                if let Err(e) = temp.publish(&archive_path) {
                    if e.status != crate::Status::Conflict {
                        let _ = std::fs::remove_file(self.store.local_index_path(&request.uuid));
                    }
                    return Err(e);
                }
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
                // The local copy of an s3 backup always goes (dropping
                // `temp`); its index stays, for browsing and restoring
                // single files through ranged downloads.
                drop(temp);
                self.publish_index(index, &self.store.s3_index_path(&request.uuid));
                Some(parts)
            }
        };
        Ok(BackupDetails {
            report: BackupReport::succeeded(&summary, parts),
            archive: summary,
            panel_report: None,
        })
    }

    /// The newest succeeded local backup of `server` (other than `uuid`)
    /// whose archive and index are both there: what a new backup of the
    /// server may reuse. Whether the index matches the archive and the new
    /// backup's settings is checked when it is opened.
    fn previous_archive(&self, server: &str, uuid: &str) -> Option<std::path::PathBuf> {
        let catalog = self.ops.tracker().catalog()?;
        catalog
            .list(server)
            .into_iter()
            .filter(|r| {
                r.kind == OpKind::Create
                    && r.state == crate::catalog::OpState::Succeeded
                    && r.adapter == Adapter::Wings.name()
                    && !r.archive_missing
                    && r.uuid != uuid
            })
            .map(|r| self.store.archive_path(&r.uuid))
            .find(|p| p.is_file() && crate::index::path_for(p).is_file())
    }

    /// Puts the index of backup `uuid`'s archive in place. The index goes
    /// before the archive: an index without its archive is never used, an
    /// archive without its index only works more slowly.
    fn publish_index(&self, index: PendingIndex, path: &Path) {
        if let Err(e) = index.publish(path) {
            self.log.warn(&format!(
                "no index written at {}: {}",
                path.display(),
                e.message
            ));
        }
    }

    fn write_options(&self, level: CompressionLevel) -> WriteOptions {
        WriteOptions {
            level,
            threads: self.config.worker_threads(),
            write_limit: self.config.write_limit,
            exclude: Vec::new(),
            known_total: None,
            reuse_from: None,
            kernel_copy: KernelCopy::default(),
        }
    }

    /// Fails with `Quota` when the backup directory's filesystem cannot
    /// hold the archive by the estimate (`space::estimate_archive`); returns
    /// the walk's measure of the tree.
    fn check_backup_room(
        &self,
        server: &str,
        root: &OwnedFd,
        ignore: &IgnoreRules,
        ctl: &Control<'_>,
    ) -> Result<TreeMeasure> {
        let root = safe_fs::open_dir(std::os::fd::AsFd::as_fd(root), c".")
            .map_err(|e| Error::os("opening the server directory", e))?;
        let measure = space::measure_tree(root, ignore, &[], space::Walk::SpaceCheck, ctl)?;
        let estimate = space::estimate_archive(&measure, self.last_ratio(server));
        let dir = safe_fs::open_trusted_dir(&self.config.backup_directory)
            .map_err(|e| Error::os("opening the backup directory", e))?;
        let free = space::free_bytes(std::os::fd::AsFd::as_fd(&dir))?;
        if estimate > free {
            return Err(space::no_room("the backup's archive", estimate, free));
        }
        Ok(measure)
    }

    /// (archive size, bytes of file data) of the last successful backup of
    /// `server` the catalog recorded with both known.
    fn last_ratio(&self, server: &str) -> Option<(u64, u64)> {
        let catalog = self.ops.tracker().catalog()?;
        catalog
            .list(server)
            .into_iter()
            .find(|r| {
                r.kind == OpKind::Create
                    && r.state == crate::catalog::OpState::Succeeded
                    && r.size > 0
                    && r.bytes_done > 0
            })
            .map(|r| (r.size, r.bytes_done))
    }

    /// What a backup of server `server` with `request`'s ignore rules would
    /// hold, from a walk that reads no file data: the same walk, rules and
    /// exclusions as a backup. Nothing is written and the Panel is not
    /// called. Read-only, it takes neither the server's hold nor a backup
    /// slot, so it never delays a backup or restore (one running meanwhile
    /// may change what it sees). Cancellable through `ctl`.
    pub fn dry_run_backup(
        &self,
        server: &str,
        request: &CreateRequest,
        ctl: &mut Control<'_>,
    ) -> Result<DryRunReport> {
        let root = self.server_root(server)?;
        let root_fd = self.open_root(&root)?;
        let ignore = ignore_rules(&request.ignore, &root_fd);
        let measure = space::measure_tree(root_fd, &ignore, &[], space::Walk::DryRun, ctl)?;
        Ok(DryRunReport::from_measure(measure, self.last_ratio(server)))
    }

    /// Validates a restore request without starting it.
    pub fn check_restore(
        &self,
        server: &str,
        backup: &str,
        request: &RestoreRequest,
    ) -> Result<()> {
        self.server_root(server)?;
        let backup = backup_uuid(backup)?;
        Selection::parse(&request.paths)?;
        match (&request.adapter, &request.download_url) {
            (Adapter::Wings, _) if !self.store.exists(&backup) => {
                return Err(Error::not_found(
                    "The requested backup was not found on this server.",
                ))
            }
            (Adapter::S3, Some(url)) if !url.is_empty() => {
                crate::download::check_url(url, &self.config.restore_host_allowlist)?
            }
            (Adapter::S3, _) => return Err(download_url_required()),
            _ => {}
        }
        self.ops.check(server, None)?;
        // A named path the archive's index does not hold is refused here,
        // before an asynchronous restore is accepted.
        if !request.paths.is_empty() {
            let len = match request.adapter {
                Adapter::Wings => std::fs::metadata(self.store.archive_path(&backup))
                    .ok()
                    .map(|m| m.len()),
                Adapter::S3 => None,
            };
            if request.adapter == Adapter::S3 || len.is_some() {
                if let Some(index) = index_for(&self.store.index_path(&backup), len) {
                    selection::plan(&index, &Selection::parse(&request.paths)?)?;
                }
            }
        }
        Ok(())
    }

    /// Restores backup `backup` into server `server`. Blocks until the files
    /// are in place (or the restore has failed); with a Panel configured, the
    /// result, whatever it is, is then handed to the reporter, which tells
    /// the Panel in the background (see `crate::reporter`).
    pub fn restore_backup(
        &self,
        server: &str,
        backup: &str,
        request: &RestoreRequest,
        ctl: &mut Control<'_>,
    ) -> Result<RestoreSummary> {
        self.check_restore(server, backup, request)?;
        let backup = backup_uuid(backup)?;
        let root = self.server_root(server)?;
        let mut ticket = self.ops.admit(server, Kind::Restore, None)?;
        ctl.also_cancelled_by(ticket.token());
        ticket.track(OpKind::Restore, &backup, request.adapter.name());
        ctl.observe(ticket.observer());
        let outcome = ctl
            .report(Progress::at(Phase::Started))
            .and_then(|_| self.run_restore(request, &backup, &root, ctl))
            .map_err(|e| self.ops.explain(e));
        ticket.release_server();
        if let Some(reporter) = &self.reporter {
            // Delivered (or parked) in the background: a report that cannot
            // be delivered neither delays nor undoes the restore.
            reporter.submit(&backup, outcome.is_ok());
        }
        ticket.finish(Outcome {
            error: outcome.as_ref().err(),
            bytes: outcome.as_ref().map_or(0, |s| s.bytes),
            files: outcome.as_ref().map_or(0, |s| s.files),
            size: outcome.as_ref().map_or(0, |s| s.bytes),
            checksum: String::new(),
            panel_report: None,
        });
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
        let selection = Selection::parse(&request.paths)?;
        if !selection.is_empty() {
            drop(root_fd);
            return self.run_selective(request, backup, root, opts, selection, ctl);
        }
        let recorded = self.recorded_create(backup, request.adapter);
        match (&request.adapter, &request.download_url) {
            (Adapter::S3, Some(url)) => {
                let mut download = crate::download::open(url, &self.config.restore_host_allowlist)?;
                // The space check, before the server's tree is touched.
                if let Some(size) = space::restore_size_estimate(None, download.len, recorded) {
                    space::check_restore_room(&root_fd, &size, opts.disk_limit)?;
                }
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
                if let Some(size) = space::restore_size_estimate(Some((&file, len)), None, recorded)
                {
                    space::check_restore_room(&root_fd, &size, opts.disk_limit)?;
                }
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

    /// A restore limited to `selection` (see `selective_restore`).
    fn run_selective(
        &self,
        request: &RestoreRequest,
        backup: &str,
        root: &Path,
        opts: RestoreOptions,
        selection: Selection,
        ctl: &mut Control<'_>,
    ) -> Result<RestoreSummary> {
        let source = match (&request.adapter, &request.download_url) {
            (Adapter::S3, Some(url)) => SelectiveSource::Remote {
                url,
                allow: &self.config.restore_host_allowlist,
            },
            _ => SelectiveSource::Local(self.store.archive_path(backup)),
        };
        selective_restore(
            &source,
            &self.store.index_path(backup),
            &|| self.open_root(root),
            opts,
            &selection,
            self.config.worker_threads(),
            self.config.write_limit,
            ctl,
        )
    }

    /// Sends the backup and restore reports parked in `.pending` (see
    /// `PanelClient`): returns (settled, still pending).
    /// The record of each operation whose report went has `panel_report`
    /// `sent` from then on.
    pub fn send_pending_reports(&self, cancel: Option<&CancelToken>) -> (usize, usize) {
        let Some(panel) = &self.panel else {
            return (0, 0);
        };
        panel.send_pending_with(cancel, &mut |kind, backup| {
            let kind = match kind {
                crate::panel::ReportKind::Backup => OpKind::Create,
                crate::panel::ReportKind::Restore => OpKind::Restore,
            };
            if let Some(catalog) = self.ops.tracker().catalog() {
                if let Some(mut record) = catalog.get_op(kind, backup) {
                    record.panel_report = Some(report_outcome_text(&ReportOutcome::Sent));
                    catalog.upsert(&record);
                }
            }
        })
    }

    /// Sends again, on a thread of the engine's, the reports a crash or a
    /// Panel outage left parked (`send_pending_reports`), and logs how many
    /// went and how many are still parked (when there were any);
    /// `cancel_all` stops it and `wait_idle` waits for it. Without a Panel
    /// it does nothing. A host calls it once at start.
    pub fn resend_parked_reports(self: &Arc<Self>) -> Result<()> {
        if self.panel.is_none() {
            return Ok(());
        }
        self.spawn("wb-parked-reports", |engine| {
            let (sent, pending) = engine.send_pending_reports(Some(&engine.background));
            if sent + pending > 0 {
                engine.log.info(&format!(
                    "parked Panel reports sent={sent} still_pending={pending}"
                ));
            }
        })
    }

    /// (archive size, bytes of file data) of the successful create of
    /// `backup` with `adapter` this node recorded, if any (an archive the
    /// catalog only found on disk has no bytes of file data recorded).
    fn recorded_create(&self, backup: &str, adapter: Adapter) -> Option<(u64, u64)> {
        let record = self
            .ops
            .tracker()
            .catalog()?
            .get_op(OpKind::Create, backup)?;
        (record.state == crate::catalog::OpState::Succeeded
            && record.adapter == adapter.name()
            && record.size > 0
            && record.bytes_done > 0)
            .then_some((record.size, record.bytes_done))
    }

    fn restore_options(&self, truncate: bool) -> RestoreOptions {
        RestoreOptions {
            truncate,
            owner: self.config.owner,
            disk_limit: self.config.disk_limit,
            scope: None,
        }
    }

    /// Refuses new backups and restores from now on and cancels every call
    /// in progress (a host shutting down), see `Operations::cancel_all`;
    /// stops the reporter, parking the restore reports not yet delivered
    /// (it waits for an attempt in flight, at most one Panel call's 15 s).
    pub fn cancel_all(&self) {
        self.ops.cancel_all();
        self.background.trigger();
        if let Some(reporter) = &self.reporter {
            reporter.stop();
        }
    }

    /// Deletes the local archive of backup `backup`. A backup still being
    /// created or waiting for a slot is cancelled first (its partial file is
    /// removed) and counts as deleted.
    pub fn delete_backup(&self, server: &str, backup: &str) -> Result<()> {
        self.server_root(server)?;
        let backup = backup_uuid(backup)?;
        if self.owner(&backup).is_some_and(|owner| owner != server) {
            return Err(backup_not_found());
        }
        if self.ops.cancel_backup(&backup)? {
            self.ops.tracker().forget(&backup);
            return match self.store.delete(&backup) {
                Ok(())
                | Err(Error {
                    status: crate::Status::NotFound,
                    ..
                }) => Ok(()),
                Err(e) => Err(e),
            };
        }
        self.store.delete(&backup)?;
        self.ops.tracker().forget(&backup);
        Ok(())
    }

    /// The server backup `backup` was created for, when this node recorded
    /// its create (an archive found on disk has none).
    fn owner(&self, backup: &str) -> Option<String> {
        let tracker = self.ops.tracker();
        tracker
            .create_server(backup)
            .or_else(|| Some(tracker.catalog()?.get_op(OpKind::Create, backup)?.server))
            .filter(|server| server != UNKNOWN_SERVER)
    }

    /// The state of backup `backup` of server `server`: its newest
    /// operation (a create, or a restore of it), else its local archive;
    /// `NotFound` when neither is known. The server is the one the backup
    /// was created for, or the one its newest operation restores.
    pub fn backup_status(&self, server: &str, backup: &str) -> Result<OperationRecord> {
        self.server_root(server)?;
        let backup = backup_uuid(backup)?;
        if let Some(record) = self.ops.tracker().get(&backup) {
            if record.server == server || self.owner(&backup).as_deref() == Some(server) {
                return Ok(record);
            }
            return Err(backup_not_found());
        }
        match self.catalog_record(server, &backup) {
            Some(Some(record)) => return Ok(record),
            // Another server's backup.
            Some(None) => return Err(backup_not_found()),
            None => {}
        }
        self.archive_record(server, &backup)
            .ok_or_else(backup_not_found)
    }

    /// The catalog's newest record of `backup` (of an earlier run): None
    /// when the catalog knows none, `Some(None)` when it is another
    /// server's. An archive the catalog found on disk without its server
    /// counts as anybody's.
    fn catalog_record(&self, server: &str, backup: &str) -> Option<Option<OperationRecord>> {
        let found = self.ops.tracker().catalog()?.get(backup)?;
        if found.archive_missing && found.kind == OpKind::Create {
            return None;
        }
        let mut record = found;
        if record.server == UNKNOWN_SERVER {
            record.server = server.to_string();
        } else if record.server != server && self.owner(backup).as_deref() != Some(server) {
            return Some(None);
        }
        record.error_status = record.status();
        Some(Some(record))
    }

    /// The record of a local archive the engine has no operation for.
    fn archive_record(&self, server: &str, backup: &str) -> Option<OperationRecord> {
        let meta = std::fs::symlink_metadata(self.store.archive_path(backup)).ok()?;
        if !meta.is_file() {
            return None;
        }
        let mtime = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
        Some(OperationRecord::from_archive(
            backup,
            server,
            meta.len(),
            mtime,
        ))
    }

    /// The backups of server `server` the engine knows of (operations in
    /// flight, and local archives: the newest operation of each on this
    /// server), newest first. A backup of another server restored onto this
    /// one is that server's, and not listed.
    pub fn list_backups(&self, server: &str) -> Result<Vec<OperationRecord>> {
        self.server_root(server)?;
        let mut list = self.ops.tracker().list(server);
        if let Some(catalog) = self.ops.tracker().catalog() {
            // Records of earlier runs; this run's own are newer (and live).
            let mut seen: std::collections::HashSet<String> =
                list.iter().map(|r| r.uuid.clone()).collect();
            for found in catalog.list(server) {
                if found.archive_missing && found.kind == OpKind::Create {
                    continue;
                }
                if seen.insert(found.uuid.clone()) {
                    let mut record = found;
                    record.error_status = record.status();
                    list.push(record);
                }
            }
        }
        let mut list: Vec<OperationRecord> = list
            .into_iter()
            // The server's backups: operations in flight, and local
            // archives (a failed or cancelled create left none; an s3
            // backup never had one; one removed behind the engine's back
            // is gone).
            .filter(|r| !r.state.finished() || self.store.exists(&r.uuid))
            .filter(|r| r.kind == OpKind::Create || self.owner(&r.uuid).as_deref() == Some(server))
            .collect();
        list.sort_by_key(|r| std::cmp::Reverse(r.started()));
        Ok(list)
    }

    /// Cancels the queued or running create or restore of backup `backup`
    /// on server `server`; it stops within a second. `Conflict` when it has
    /// already ended (a create whose archive is written and whose result
    /// the Panel is still being told too), `NotFound` when the engine does
    /// not know it.
    pub fn cancel_backup(&self, server: &str, backup: &str) -> Result<()> {
        self.server_root(server)?;
        let backup = backup_uuid(backup)?;
        if self.ops.reporting(&backup)
            && self
                .ops
                .tracker()
                .get(&backup)
                .is_some_and(|r| r.server == server)
        {
            // Its archive is written; only its report is going out.
            return Err(Error::conflict(MSG_FINISHED));
        }
        match self.ops.tracker().cancel(server, &backup) {
            Some(CancelOutcome::Cancelled) => Ok(()),
            Some(CancelOutcome::Finished) => Err(Error::conflict(MSG_FINISHED)),
            Some(CancelOutcome::Committing) => Err(Error::conflict(MSG_COMMITTING)),
            None => match self.catalog_record(server, &backup) {
                Some(Some(_)) => Err(Error::conflict(MSG_FINISHED)),
                Some(None) => Err(backup_not_found()),
                None if self.archive_record(server, &backup).is_some() => {
                    Err(Error::conflict(MSG_FINISHED))
                }
                None => Err(backup_not_found()),
            },
        }
    }

    /// Removes every local archive of server `server` and cancels its
    /// queued or running creates (waiting for them to stop writing, not for
    /// their reports to the Panel); returns how many backups went.
    pub fn delete_all_backups(&self, server: &str) -> Result<usize> {
        self.server_root(server)?;
        let mut deleted = 0;
        for record in self.list_backups(server)? {
            // The newest record of a backup of this server may be a restore
            // of it: its archive goes all the same (a create in flight is
            // cancelled).
            let cancelled = record.kind == OpKind::Create
                && !record.state.finished()
                && self.ops.cancel_backup(&record.uuid)?;
            let removed = match self.store.delete(&record.uuid) {
                Ok(()) => true,
                Err(e) if e.status == crate::Status::NotFound => false,
                Err(e) => return Err(e),
            };
            self.ops.tracker().forget(&record.uuid);
            if cancelled || removed {
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// Waits until the state of backup `backup` changes past `after_seq`
    /// (its record's `seq`), its operation ends, or `timeout` passes, and
    /// returns the state then. A backup with no operation in flight
    /// answers at once.
    pub fn wait_backup(
        &self,
        server: &str,
        backup: &str,
        after_seq: u64,
        timeout: Duration,
    ) -> Result<OperationRecord> {
        let status = self.backup_status(server, backup)?;
        if status.state.finished() {
            return Ok(status);
        }
        let backup = backup_uuid(backup)?;
        match self.ops.tracker().wait(&backup, after_seq, timeout) {
            Some(record) if record.server == server => Ok(record),
            _ => self.backup_status(server, &backup),
        }
    }

    /// Starts a create on a thread of the engine's and returns once it is
    /// accepted (phase `Started`: then `backup_status` knows it) or has
    /// failed before that (its error).
    pub fn start_backup(self: &Arc<Self>, server: &str, request: &CreateRequest) -> Result<()> {
        self.check_create(server, request)?;
        let (server, request) = (server.to_string(), request.clone());
        self.start(move |engine, ctl| engine.create_backup(&server, &request, ctl).map(|_| ()))
    }

    /// Starts a restore on a thread of the engine's, as `start_backup`.
    pub fn start_restore(
        self: &Arc<Self>,
        server: &str,
        backup: &str,
        request: &RestoreRequest,
    ) -> Result<()> {
        self.check_restore(server, backup, request)?;
        let (server, backup, request) = (server.to_string(), backup.to_string(), request.clone());
        self.start(move |engine, ctl| {
            engine
                .restore_backup(&server, &backup, &request, ctl)
                .map(|_| ())
        })
    }

    fn start(
        self: &Arc<Self>,
        call: impl FnOnce(&Engine, &mut Control<'_>) -> Result<()> + Send + 'static,
    ) -> Result<()> {
        let (tx, rx) = mpsc::channel::<Result<()>>();
        self.spawn("wb-operation", move |engine| {
            let accepted = tx.clone();
            let mut on_progress = move |p: &Progress| {
                if p.phase == Phase::Started {
                    let _ = accepted.send(Ok(()));
                }
                true
            };
            let mut ctl = Control::new(None, Some(&mut on_progress));
            if let Err(e) = call(engine, &mut ctl) {
                // Ignored once accepted: the receiver has gone.
                let _ = tx.send(Err(e));
            }
        })?;
        rx.recv()
            .unwrap_or_else(|_| Err(Error::internal("the operation ended without a result")))
    }

    /// Runs `f` on a thread of the engine's that `wait_idle` (and so
    /// `wb_engine_free`) waits for, as it waits for the calls.
    ///
    /// The thread is detached, never joined: `wait_idle` waits until `f`
    /// has returned and the thread has dropped its reference to the engine.
    /// (Joining finished threads from the callers' threads once made a
    /// create answer 500 under load in the Go host, `pthread_join`
    /// failing with ESRCH; nothing here needs the join.)
    pub(crate) fn spawn(
        self: &Arc<Self>,
        name: &str,
        f: impl FnOnce(&Arc<Engine>) + Send + 'static,
    ) -> Result<()> {
        let guard = Running::enter(&self.running, Arc::clone(self));
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let guard = guard;
                f(guard.engine());
            })
            .map(drop)
            .map_err(|e| Error::io("starting a thread", e))
    }

    /// Waits up to `timeout` for every call started with `start_backup` or
    /// `start_restore` to end, and for the log line of its end when an HTTP
    /// request started it; true if they all have.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        self.running.wait_idle(timeout)
    }
}

/// `POST .../cancel` of a backup whose operations have all ended.
pub const MSG_FINISHED: &str = "The backup has already finished.";
/// The answer to a cancel of a restore that is putting its files in place.
pub const MSG_COMMITTING: &str =
    "The restore is putting the files in place and can no longer be cancelled.";

fn backup_not_found() -> Error {
    Error::not_found("The requested backup was not found on this server.")
}

/// A backup the node's stop interrupted left the Panel's row (and an s3
/// upload) open. One that had ended and was being reported (its report was
/// written ahead, and for `wings` its archive is here) is recorded as
/// succeeded and its report parked; any other is reported failed. The
/// parked reports go out as a host resends them at start.
fn settle_interrupted_create(
    panel: &PanelClient,
    catalog: &Catalog,
    store: &BackupStore,
    uuid: &str,
    log: &Logger,
) {
    let record = catalog.get_op(OpKind::Create, uuid);
    let ended = panel.take_sending(uuid).filter(|report| {
        report.successful
            && (store.exists(uuid) || record.as_ref().is_some_and(|r| r.adapter == "s3"))
    });
    let parked = match (&ended, record) {
        (Some(report), Some(mut record)) => {
            let parked = panel.park_backup_once(uuid, report);
            record.state = OpState::Succeeded;
            record.phase = Phase::Done.name().to_string();
            record.size = report.size;
            record.checksum = report.checksum.clone();
            record.error = None;
            record.error_status = None;
            record.panel_report = Some(report_outcome_text(&ReportOutcome::Pending(
                "the node stopped while it reported the backup".into(),
            )));
            catalog.upsert(&record);
            parked
        }
        _ => panel.park_backup_once(uuid, &BackupReport::failed()),
    };
    if let Err(e) = parked {
        log.warn(&format!(
            "the report of interrupted backup {uuid} could not be parked: {}",
            e.message
        ));
    }
}

/// Finishes or removes the restore stages a stop left in every server
/// root (`restore::recover`; those of restores still running, in another
/// process, are left alone), logging what it did for each server. Returns
/// what it did, by server.
fn recover_all_servers(data_directory: &Path, log: &Logger) -> HashMap<String, Recovery> {
    let mut recovered = HashMap::new();
    let Ok(entries) = std::fs::read_dir(data_directory) else {
        return recovered;
    };
    for entry in entries.flatten() {
        // (As named on disk: a record names its server as the request did,
        // and the request's name is the directory's.)
        let server = entry.file_name().to_string_lossy().into_owned();
        if canonical_uuid(&server).is_none() {
            continue;
        }
        let Ok(fd) = safe_fs::open_trusted_dir(&entry.path()) else {
            continue;
        };
        let done = restore_target::recover(std::os::fd::AsFd::as_fd(&fd));
        if done.is_empty() {
            continue;
        }
        let fields = [
            ("server", server.clone()),
            ("finished", done.finished.to_string()),
            ("removed", done.removed.to_string()),
            ("running", done.live.to_string()),
        ];
        match &done.error {
            None => log.info(&crate::log::line(
                "interrupted restores recovered (finished: committed, every file restored; \
                 removed: not committed, files unchanged; running: left to their restore)",
                fields,
            )),
            Some(e) => log.warn(&crate::log::line(
                "an interrupted restore could not be recovered; its stage is kept for the \
                 next start or restore of the server",
                fields.into_iter().chain([("error", e.message.clone())]),
            )),
        }
        recovered.insert(server, done);
    }
    recovered
}

/// Restores the node's stop interrupted (their records failed by the
/// catalog's reconcile, so their process is gone), once the stages they
/// left are dealt with (`recover_all_servers`). Where the recovery of the
/// server finished a commit (and this was the server's only interrupted
/// restore), every file of the backup is in place: the restore is recorded
/// as succeeded. Any other left the server's files as they were and stays
/// failed. With a Panel, each gets its one final report parked (sent as a
/// host resends the parked reports at start).
fn settle_interrupted_restores(
    panel: Option<&PanelClient>,
    catalog: &Catalog,
    interrupted: &[(OpKind, String)],
    recovered: &HashMap<String, Recovery>,
    log: &Logger,
) {
    let records: Vec<(String, Option<OperationRecord>)> = interrupted
        .iter()
        .filter(|(kind, _)| *kind == OpKind::Restore)
        .map(|(_, uuid)| (uuid.clone(), catalog.get_op(OpKind::Restore, uuid)))
        .collect();
    for (uuid, record) in &records {
        let server = record.as_ref().map(|r| r.server.as_str());
        let alone = records
            .iter()
            .filter(|(_, r)| r.as_ref().map(|r| r.server.as_str()) == server)
            .count()
            == 1;
        let committed = server
            .and_then(|s| recovered.get(s))
            .is_some_and(|r| r.finished > 0);
        let successful = alone && committed;
        if let (true, Some(record)) = (successful, record) {
            let mut record = record.clone();
            record.state = OpState::Succeeded;
            record.phase = Phase::Done.name().to_string();
            record.error = None;
            record.error_status = None;
            catalog.upsert(&record);
        }
        let fields = [
            ("backup", uuid.clone()),
            ("server", server.unwrap_or_default().to_string()),
        ];
        if successful {
            log.info(&crate::log::line(
                "a restore the node's stop interrupted was finished at start",
                fields,
            ));
        } else {
            log.warn(&crate::log::line(
                "a restore the node's stop interrupted failed; the server's files are as they were",
                fields,
            ));
        }
        if let Some(panel) = panel {
            if let Err(e) = panel.park_restore(uuid, successful) {
                log.warn(&format!(
                    "the report of interrupted restore {uuid} could not be parked: {}",
                    e.message
                ));
            }
        }
    }
}

/// How a report to the Panel went, in words (`panel_report`).
pub fn report_outcome_text(outcome: &ReportOutcome) -> String {
    match outcome {
        ReportOutcome::Sent => "sent".to_string(),
        ReportOutcome::Rejected(m) => format!("rejected: {m}"),
        ReportOutcome::Pending(m) => format!("pending: {m}"),
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

/// A finished backup: the Panel's status body, what the archive holds and
/// left out (the C ABI's details JSON adds `files`, `changed` and `skipped`
/// from it), and how the report to the Panel went.
#[derive(Clone, Debug, PartialEq)]
pub struct BackupDetails {
    pub report: BackupReport,
    pub archive: ArchiveSummary,
    /// `None` when no Panel is configured.
    pub panel_report: Option<ReportOutcome>,
}

impl BackupDetails {
    /// `"sha1"` for a successful backup (the checksum is a SHA-1), else `""`.
    pub fn checksum_type(&self) -> &'static str {
        if self.report.successful {
            "sha1"
        } else {
            ""
        }
    }
}

/// Options of the archive-level calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveOptions {
    /// Ignore rules, in `.pteroignore` syntax.
    pub ignore: String,
    pub compression_level: CompressionLevel,
    /// Worker threads; 0 = one per core.
    pub threads: usize,
    /// MiB/s of archive bytes written or read; 0 = unlimited.
    pub write_limit: u64,
    /// Extract: replace the destination's files (true) or merge into them.
    pub truncate: bool,
    /// Extract: bytes the destination may take afterwards; 0 = no limit.
    pub disk_limit: u64,
    /// Extract: chown everything extracted to this owner.
    pub owner: Option<Owner>,
    /// Extract: only these entries (a directory with everything under
    /// it); empty = all. See `crate::selection`.
    pub paths: Vec<String>,
    /// Create: an earlier archive of the same directory (with its index)
    /// whose unchanged members are copied rather than compressed again.
    pub reuse_from: Option<PathBuf>,
    /// Create: whether copied members are copied by the kernel.
    pub kernel_copy: KernelCopy,
}

impl Default for ArchiveOptions {
    fn default() -> Self {
        ArchiveOptions {
            ignore: String::new(),
            compression_level: CompressionLevel::BestSpeed,
            threads: 0,
            write_limit: 0,
            truncate: false,
            disk_limit: 0,
            owner: None,
            paths: Vec::new(),
            reuse_from: None,
            kernel_copy: KernelCopy::default(),
        }
    }
}

impl ArchiveOptions {
    /// Threads a call may use, at least 1.
    fn worker_threads(&self) -> usize {
        EngineConfig {
            threads: self.threads,
            ..EngineConfig::default()
        }
        .worker_threads()
    }
}

/// The count of the engine's threads that have not ended (`Engine::spawn`).
#[derive(Default)]
struct Running {
    count: Mutex<usize>,
    ended: Condvar,
}

impl Running {
    /// Counts one more thread, which holds `engine` through the guard
    /// until it ends (a panic included).
    fn enter(running: &Arc<Running>, engine: Arc<Engine>) -> RunningGuard {
        *running.count.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        RunningGuard {
            engine: Some(engine),
            running: Arc::clone(running),
        }
    }

    fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now().checked_add(timeout);
        let mut count = self.count.lock().unwrap_or_else(|p| p.into_inner());
        while *count > 0 {
            count = match deadline {
                None => self.ended.wait(count).unwrap_or_else(|p| p.into_inner()),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    let waited = self.ended.wait_timeout(count, left);
                    waited.unwrap_or_else(|p| p.into_inner()).0
                }
            };
        }
        true
    }
}

/// One counted thread: dropping it releases the thread's engine first,
/// then counts the thread as ended, so that once `wait_idle` returns no
/// thread of the engine's holds it.
struct RunningGuard {
    engine: Option<Arc<Engine>>,
    running: Arc<Running>,
}

impl RunningGuard {
    fn engine(&self) -> &Arc<Engine> {
        self.engine.as_ref().expect("held until dropped")
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        drop(self.engine.take());
        let mut count = self.running.count.lock().unwrap_or_else(|p| p.into_inner());
        *count -= 1;
        if *count == 0 {
            self.running.ended.notify_all();
        }
    }
}

/// The index of an archive being written, to be published beside it.
struct PendingIndex {
    temp: Option<TempArchive>,
    outcome: IndexOutcome,
}

impl PendingIndex {
    /// Renames the index into place as `path` (replacing a stale one).
    /// Fails if it could not be written.
    fn publish(self, path: &Path) -> Result<()> {
        match (self.temp, self.outcome) {
            (Some(temp), IndexOutcome::Written(file)) => {
                drop(file);
                temp.publish_replacing(path)
            }
            (_, IndexOutcome::Failed(e)) => Err(e),
            _ => Err(Error::internal("the index was not started")),
        }
    }
}

/// Writes the archive of `root` into `temp` (to become `final_name`) and
/// its index under a temporary name in `store`'s directory, where it is to
/// be published. A failure of the index alone leaves the archive whole,
/// without one.
fn write_with_index(
    store: &BackupStore,
    final_name: &str,
    root: OwnedFd,
    ignore: &IgnoreRules,
    temp: &mut TempArchive,
    opts: &WriteOptions,
    ctl: &mut Control<'_>,
) -> Result<(ArchiveSummary, PendingIndex)> {
    let header = crate::index::IndexHeader::new(
        opts.level.name(),
        ignore.digest(),
        crate::archive::gzip::BLOCK_SIZE,
    );
    let started = store
        .create_temp_for(&format!("{final_name}{}", crate::index::SUFFIX))
        .and_then(|t| {
            let out = t
                .file
                .try_clone()
                .map_err(|e| Error::io("opening the archive index", e))?;
            Ok((t, crate::index::IndexWriter::new(out, &header)?))
        });
    let (index_temp, writer, failed) = match started {
        Ok((t, w)) => (Some(t), Some(w), None),
        Err(e) => (None, None, Some(e)),
    };
    let mut opts = opts.clone();
    if let Some(t) = &index_temp {
        if let Ok(m) = t.file.metadata() {
            use std::os::unix::fs::MetadataExt;
            opts.exclude.push((m.dev(), m.ino()));
        }
    }
    let (summary, outcome) =
        write_archive_indexed(root, ignore, &mut temp.file, writer, &opts, ctl)?;
    let outcome = match failed {
        Some(e) => IndexOutcome::Failed(e),
        None => outcome,
    };
    Ok((
        summary,
        PendingIndex {
            temp: index_temp,
            outcome,
        },
    ))
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
/// name beside it, then renamed).
pub fn archive_create(
    source: &Path,
    archive: &Path,
    opts: &ArchiveOptions,
    ctl: &mut Control<'_>,
) -> Result<ArchiveSummary> {
    let root = existing_dir(source, "the source")?;
    let parent = archive
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = archive
        .file_name()
        .ok_or_else(|| Error::invalid("the archive path has no file name"))?;
    // Checked before any file is read: renaming the finished archive over a
    // directory would fail only after it had all been written.
    if std::fs::symlink_metadata(archive).is_ok_and(|m| m.is_dir()) {
        return Err(Error::invalid(format!(
            "the archive path {} is a directory",
            archive.display()
        )));
    }
    if !parent.exists() {
        return Err(Error::not_found(
            "the directory of the archive path does not exist",
        ));
    }
    let store = BackupStore::open(parent)?;
    let name = name.to_string_lossy();
    let mut temp = store.create_temp_for(&name)?;
    let mut exclude = crate::archive::writer::output_identities(&temp.file, archive);
    // Nor the index being written, or the one the new archive replaces.
    let index_path = crate::index::path_for(archive);
    if let Ok(m) = std::fs::metadata(&index_path) {
        exclude.push((
            std::os::unix::fs::MetadataExt::dev(&m),
            std::os::unix::fs::MetadataExt::ino(&m),
        ));
    }
    ctl.report(Progress::at(Phase::Started))?;
    let ignore = IgnoreRules::parse(opts.ignore.as_bytes());
    let (summary, index) = write_with_index(
        &store,
        &name,
        root,
        &ignore,
        &mut temp,
        &WriteOptions {
            level: opts.compression_level,
            threads: opts.worker_threads(),
            write_limit: opts.write_limit,
            exclude,
            known_total: None,
            reuse_from: opts.reuse_from.clone(),
            kernel_copy: opts.kernel_copy,
        },
        ctl,
    )?;
    ctl.check()?;
    // An index that cannot be written leaves none (a stale one would not
    // match the new archive, and is never used).
    let indexed = index.publish(&index_path).is_ok();
    if let Err(e) = temp.publish_replacing(archive) {
        // No archive there: no index of it either.
        if indexed {
            let _ = std::fs::remove_file(&index_path);
        }
        return Err(e);
    }
    if !indexed {
        let _ = std::fs::remove_file(&index_path);
    }
    ctl.report_final(
        Progress::done(summary.source_bytes, summary.entries).with_archive_bytes(summary.size),
    );
    Ok(summary)
}

/// What `archive_create` of `source` with `opts.ignore` would hold, from
/// the walk it makes, reading no file data and writing nothing. The file
/// at `archive` (when given and inside `source`) is left out, as a create
/// into it would. The estimate of the size is the worst case (there is no
/// earlier archive to take a ratio from).
pub fn archive_dry_run(
    source: &Path,
    archive: Option<&Path>,
    opts: &ArchiveOptions,
    ctl: &mut Control<'_>,
) -> Result<DryRunReport> {
    let root = existing_dir(source, "the source")?;
    let exclude: Vec<(u64, u64)> = archive
        .and_then(|a| std::fs::metadata(a).ok().filter(|m| m.is_file()))
        .map(|m| {
            use std::os::unix::fs::MetadataExt;
            vec![(m.dev(), m.ino())]
        })
        .unwrap_or_default();
    let ignore = IgnoreRules::parse(opts.ignore.as_bytes());
    let measure = space::measure_tree(root, &ignore, &exclude, space::Walk::DryRun, ctl)?;
    Ok(DryRunReport::from_measure(measure, None))
}

/// Where a selective restore reads the archive.
enum SelectiveSource<'a> {
    /// A local archive file.
    Local(PathBuf),
    /// An object behind a download URL (`s3`).
    Remote {
        url: &'a str,
        allow: &'a [crate::config::AllowEntry],
    },
}

/// The index at `index_path`, if there is one, it belongs to the archive
/// (for a local archive, `archive_len`: one that records that length) and
/// the archive can be read member by member (`selection::by_members`). Its
/// members are read first, passing over the entries: an archive made
/// elsewhere is often one member and then streamed, so its entries (which
/// can be many, with long names) are not loaded for nothing.
fn index_for(index_path: &Path, archive_len: Option<u64>) -> Option<Index> {
    let (members, footer) = crate::index::IndexReader::open(index_path)
        .ok()??
        .finish()
        .ok()?;
    if archive_len.is_some_and(|len| footer.archive_size != len) || !selection::by_members(&members)
    {
        return None;
    }
    match (archive_len, Index::load(index_path)) {
        (Some(len), Ok(Some(index))) if index.footer.archive_size == len => Some(index),
        (None, Ok(Some(index))) => Some(index),
        _ => None,
    }
}

/// A restore limited to `selection` (see `crate::selection`). With the
/// archive's index (at `index_path`; for a local archive only if it has the
/// archive's length), only the members holding the selected entries are
/// read: from the file, or through `Range` requests. Without one, or when
/// the server ignores ranges, the whole archive is streamed and only the
/// selection restored. A named path the backup does not hold is a
/// not-found error before anything is touched (from the index before
/// anything is read). A hard link in the selection to a file outside it
/// that the first pass did not read makes one more pass over the whole
/// archive with that file as a link source.
#[allow(clippy::too_many_arguments)]
fn selective_restore(
    source: &SelectiveSource<'_>,
    index_path: &Path,
    open_root: &dyn Fn() -> Result<OwnedFd>,
    opts: RestoreOptions,
    selection: &Selection,
    threads: usize,
    limit: u64,
    ctl: &mut Control<'_>,
) -> Result<RestoreSummary> {
    let open_local = |path: &Path| -> Result<(std::fs::File, u64)> {
        let file = crate::safe_fs::open_for_reading(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                Error::not_found("The requested backup was not found on this server.")
            }
            _ => Error::io("opening the backup", e),
        })?;
        let meta = file
            .metadata()
            .map_err(|e| Error::io("opening the backup", e))?;
        if !meta.is_file() {
            return Err(Error::not_found(
                "The requested backup was not found on this server.",
            ));
        }
        Ok((file, meta.len()))
    };
    let local = match source {
        SelectiveSource::Local(path) => Some(open_local(path)?),
        SelectiveSource::Remote { .. } => None,
    };
    let index = index_for(index_path, local.as_ref().map(|(_, len)| *len));
    let plan = match &index {
        Some(index) => Some(selection::plan(index, selection)?),
        None => None,
    };
    let scoped = |sources: HashSet<Vec<u8>>| {
        let scope = Arc::new(Scope::new(selection.clone(), sources));
        let mut o = opts.clone();
        o.scope = Some(scope.clone());
        (scope, o)
    };
    // The whole archive, streamed, with the selection as the scope (`body`:
    // a whole-object answer already open).
    let full = |sources: HashSet<Vec<u8>>,
                ctl: &mut Control<'_>,
                body: Option<crate::download::Download>| {
        let (scope, o) = scoped(sources);
        let result = (|| match (source, body) {
            (SelectiveSource::Remote { url, allow }, body) => {
                let mut d = match body {
                    Some(d) => d,
                    None => crate::download::open(url, allow)?,
                };
                let len = d.len.unwrap_or(0);
                restore_stream(&mut d.reader, len, open_root()?, o, threads, limit, ctl)
            }
            (SelectiveSource::Local(path), _) => {
                let (mut file, len) = open_local(path)?;
                restore_stream(&mut file, len, open_root()?, o, threads, limit, ctl)
            }
        })();
        (result, scope.missing_sources())
    };
    let sources = plan
        .as_ref()
        .map(|p| p.link_sources.clone())
        .unwrap_or_default();
    let (result, missing) = match (&index, &plan) {
        (Some(index), Some(plan)) => match (source, &local) {
            (SelectiveSource::Local(_), Some((file, _))) => {
                let file = file
                    .try_clone()
                    .map_err(|e| Error::io("opening the backup", e))?;
                let (scope, o) = scoped(sources.clone());
                let mut src = SelectedArchive::new(index, plan, FileSource(file));
                let result = restore_stream(&mut src, 0, open_root()?, o, threads, limit, ctl);
                (result, scope.missing_sources())
            }
            (SelectiveSource::Remote { url, allow }, _) => {
                let mut http = HttpSource::new(url, allow, index.footer.archive_size);
                match http.first(index, plan) {
                    // The server ignores ranges: its answer is the whole
                    // object, streamed instead.
                    Err(whole) => full(sources.clone(), ctl, whole),
                    Ok(()) => {
                        let (scope, o) = scoped(sources.clone());
                        let mut src = SelectedArchive::new(index, plan, http);
                        let result =
                            restore_stream(&mut src, 0, open_root()?, o, threads, limit, ctl);
                        (result, scope.missing_sources())
                    }
                }
            }
            (SelectiveSource::Local(_), None) => return Err(Error::internal("no archive")),
        },
        _ => full(sources.clone(), ctl, None),
    };
    match result {
        Err(e) if !missing.is_empty() && e.status == crate::Status::CorruptArchive => {
            let mut all = sources;
            all.extend(missing);
            full(all, ctl, None).0
        }
        other => other,
    }
}

/// Extracts a `.tar.gz` file into a directory with the same safety rules as
/// a backup restore.
pub fn archive_extract(
    archive: &Path,
    dest: &Path,
    opts: &ArchiveOptions,
    ctl: &mut Control<'_>,
) -> Result<RestoreSummary> {
    let root = existing_dir(dest, "the destination")?;
    // Any file the caller names, a pipe included (read as a stream, which
    // the call's cancel stops even while it waits for a writer or data).
    let fifo = std::fs::metadata(archive)
        .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_fifo(&m.file_type()));
    let opened: std::io::Result<(Box<dyn std::io::Read + Send>, u64)> = if fifo {
        let cancel = Arc::new(crate::progress::CancelToken::new());
        ctl.also_cancelled_by(Arc::clone(&cancel));
        safe_fs::FifoReader::open(archive, cancel).map(|f| (Box::new(f) as _, 0))
    } else {
        std::fs::File::open(archive).map(|f| {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            (Box::new(f) as _, len)
        })
    };
    let (mut file, len) = match opened {
        Ok(opened) => opened,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::not_found("the archive does not exist"))
        }
        Err(e) => return Err(Error::io("opening the archive", e)),
    };
    let selection = Selection::parse(&opts.paths)?;
    let restore_opts = RestoreOptions {
        truncate: opts.truncate,
        owner: opts.owner,
        disk_limit: opts.disk_limit,
        scope: None,
    };
    ctl.report(Progress::at(Phase::Started))?;
    let summary = if selection.is_empty() {
        restore_stream(
            &mut *file,
            len,
            root,
            restore_opts,
            opts.worker_threads(),
            opts.write_limit,
            ctl,
        )?
    } else {
        drop(root);
        selective_restore(
            &SelectiveSource::Local(archive.to_path_buf()),
            &crate::index::path_for(archive),
            &|| existing_dir(dest, "the destination"),
            restore_opts,
            &selection,
            opts.worker_threads(),
            opts.write_limit,
            ctl,
        )?
    };
    ctl.report_final(Progress::done(summary.bytes, summary.entries));
    Ok(summary)
}
