//! The node-local catalog of operations: every create and restore this node
//! ran or runs, with its state, phase, progress, result and the Panel
//! report's state, in a SQLite database under the backup directory
//! (`<backup_directory>/.wings-backup.db`, mode 0600, WAL mode).
//!
//! The catalog is a record, never the truth about archives: a local archive
//! exists when `<uuid>.tar.gz` does, and [`Catalog::reconcile`] brings the
//! records in line with the directory at start. Nothing here ever fails an
//! operation or stops the node:
//!
//! - a database that is not a database or is corrupt is renamed
//!   `.wings-backup.db.corrupt-<unix seconds>` (its `-wal` beside it) and a
//!   new one is created;
//! - a database that cannot be opened or created at all (read-only or full
//!   directory) leaves the catalog in memory, and [`Catalog::degraded`] says
//!   why; it tries the file again at most once a minute;
//! - a write that fails (disk full) is remembered ([`Catalog::last_error`])
//!   and its record kept in memory, shown by `get` and `list` and written
//!   with the next write that succeeds;
//! - a database deleted or replaced while open is noticed before the next
//!   write: its records are carried into the file now at that path (or a new
//!   one), so nothing recorded is lost.
//!
//! Several processes may share one backup directory on one machine: SQLite's
//! WAL mode lets readers and one writer work at once, writes take the lock
//! first (`BEGIN IMMEDIATE`) and wait up to five seconds for it. Each
//! `Catalog` holds an `flock` on a file of its own
//! (`.wings-backup.db.owner-<id>`) for as long as it lives, and marks the
//! records it writes with that id, so that `reconcile` in one process never
//! fails the running operations of another that is alive.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, ErrorCode, OpenFlags, Transaction, TransactionBehavior};
use rustix::fs::FlockOperation;
use serde::Serialize;

use crate::error::Status;

/// The database's name in the backup directory: a dot-file, so that it is
/// never taken for an archive (those are `<uuid>.tar.gz`).
pub const DATABASE_NAME: &str = ".wings-backup.db";
/// The lock file each open catalog holds: `<DATABASE_NAME>.owner-<id>`.
const OWNER_MARK: &str = ".owner-";
/// At most one write of progress per operation in this interval (a change
/// of phase is written at once).
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);
/// How long a write waits for another process's write to finish.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a catalog running in memory tries its file again.
const RETRY_INTERVAL: Duration = Duration::from_secs(60);
/// The server of a record made from an archive the catalog did not know
/// (an archive does not name its server).
pub const UNKNOWN_SERVER: &str = "";

/// What an operation does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    #[default]
    Create,
    Restore,
}

impl OpKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::Create => "create",
            OpKind::Restore => "restore",
        }
    }

    pub fn parse(s: &str) -> Option<OpKind> {
        match s {
            "create" => Some(OpKind::Create),
            "restore" => Some(OpKind::Restore),
            _ => None,
        }
    }
}

/// Where an operation is in its life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OpState {
    #[default]
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl OpState {
    pub fn as_str(self) -> &'static str {
        match self {
            OpState::Queued => "queued",
            OpState::Running => "running",
            OpState::Succeeded => "succeeded",
            OpState::Failed => "failed",
            OpState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<OpState> {
        match s {
            "queued" => Some(OpState::Queued),
            "running" => Some(OpState::Running),
            "succeeded" => Some(OpState::Succeeded),
            "failed" => Some(OpState::Failed),
            "cancelled" => Some(OpState::Cancelled),
            _ => None,
        }
    }

    /// Queued or running: not finished.
    pub fn is_active(self) -> bool {
        matches!(self, OpState::Queued | OpState::Running)
    }
}

/// One create or restore of one backup. Times are Unix milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct OperationRecord {
    /// The backup's UUID (a create and a restore of one backup share it).
    pub uuid: String,
    /// The server's UUID; [`UNKNOWN_SERVER`] for an archive found on disk
    /// that no record named.
    pub server: String,
    pub kind: OpKind,
    /// `wings` or `s3`.
    pub adapter: String,
    pub state: OpState,
    pub phase: String,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub files: u64,
    /// The archive's size in bytes.
    pub size: u64,
    /// The archive's SHA-1, hex; empty while unknown.
    pub checksum: String,
    pub error: Option<String>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// The Panel report's state (`sent`, `pending: …`, `rejected: …`).
    pub panel_report: Option<String>,
    /// A succeeded local (`wings`) create whose archive was gone when the
    /// catalog last reconciled; the record is kept so its history stays.
    pub archive_missing: bool,
    /// The status of `error` (`WB_*`), for callers that map it to HTTP;
    /// kept by the catalog (a record written before it was has none, see
    /// [`OperationRecord::status`]).
    #[serde(skip)]
    pub error_status: Option<Status>,
    /// Bumped at each change a waiter should see (this run's operations;
    /// not kept by the catalog).
    #[serde(skip)]
    pub seq: u64,
}

impl OperationRecord {
    /// A queued operation with nothing done yet.
    pub fn new(kind: OpKind, uuid: &str, server: &str, adapter: &str) -> OperationRecord {
        OperationRecord {
            uuid: uuid.to_string(),
            server: server.to_string(),
            kind,
            adapter: adapter.to_string(),
            ..OperationRecord::default()
        }
    }

    /// The record of a local archive nothing else is known about.
    pub fn from_archive(uuid: &str, server: &str, size: u64, mtime: SystemTime) -> OperationRecord {
        let at = to_ms(mtime);
        OperationRecord {
            state: OpState::Succeeded,
            phase: crate::progress::Phase::Done.name().to_string(),
            size,
            started_at: Some(at),
            finished_at: Some(at),
            ..OperationRecord::new(OpKind::Create, uuid, server, "wings")
        }
    }

    /// When the operation started (a record without its start: when it
    /// ended, else the epoch), in Unix milliseconds.
    pub fn started(&self) -> i64 {
        self.started_at.or(self.finished_at).unwrap_or(0)
    }

    /// The status of a failed or cancelled operation: the one recorded
    /// when it ended, else (a record from a catalog that did not keep it)
    /// the one its state implies.
    pub fn status(&self) -> Option<Status> {
        self.error_status.or(match self.state {
            OpState::Cancelled => Some(Status::Cancelled),
            OpState::Failed => Some(Status::Internal),
            _ => None,
        })
    }
}

/// Unix milliseconds of `t` (negative before the epoch).
pub fn to_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// The time of Unix milliseconds `ms`.
pub fn from_ms(ms: i64) -> SystemTime {
    let d = Duration::from_millis(ms.unsigned_abs());
    if ms >= 0 {
        UNIX_EPOCH + d
    } else {
        UNIX_EPOCH - d
    }
}

/// What [`Catalog::reconcile`] changed.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ReconcileReport {
    /// Operations left queued or running by a process that is gone, now
    /// `failed`.
    pub interrupted: Vec<(OpKind, String)>,
    /// Archives no record named, now recorded as succeeded creates of
    /// [`UNKNOWN_SERVER`].
    pub adopted: Vec<String>,
    /// Succeeded local creates whose archive is gone, now `archive_missing`.
    pub missing: Vec<String>,
}

/// The error a record of an operation interrupted by the node's stop holds.
pub fn interrupted_message(kind: OpKind) -> String {
    format!("the node stopped while this {} was running", kind.as_str())
}

type Key = (String, OpKind);

/// A record written (or being written) by this process, with the time it
/// was first seen here (its order in a list when it has no start time).
#[derive(Clone)]
struct Entry {
    record: OperationRecord,
    seen_at: i64,
}

impl Entry {
    fn sort_at(&self) -> i64 {
        self.record.started_at.unwrap_or(self.seen_at)
    }
}

/// The latest progress of an operation of this process.
struct Live {
    phase: String,
    done: u64,
    total: u64,
    written: Option<Instant>,
    dirty: bool,
}

/// The database file the connection is on, as it was when opened.
struct DbFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

struct Inner {
    /// This catalog's lock file, held (`flock`) while it lives.
    lock: Option<(PathBuf, File)>,
    conn: Connection,
    file: Option<DbFile>,
    /// Records and deletions (`None`) not yet written: their write failed.
    unsaved: HashMap<Key, Option<Entry>>,
    live: HashMap<Key, Live>,
    degraded: Option<String>,
    last_error: Option<String>,
    retry_at: Option<Instant>,
}

/// The catalog of one backup directory. `Send + Sync`; every call is short.
pub struct Catalog {
    dir: PathBuf,
    owner: String,
    inner: Mutex<Inner>,
}

fn now_ms() -> i64 {
    to_ms(SystemTime::now())
}

fn db_int(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Why a database could not be used.
enum OpenError {
    /// Not a database, or a damaged one: move it aside.
    Corrupt(String),
    /// Anything else (permissions, full or read-only disk): leave it be.
    Other(String),
}

impl From<rusqlite::Error> for OpenError {
    fn from(e: rusqlite::Error) -> OpenError {
        if is_corrupt(&e) {
            OpenError::Corrupt(e.to_string())
        } else {
            OpenError::Other(e.to_string())
        }
    }
}

fn is_corrupt(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt)
    )
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS operations (
    uuid TEXT NOT NULL,
    kind TEXT NOT NULL,
    server TEXT NOT NULL,
    adapter TEXT NOT NULL,
    state TEXT NOT NULL,
    phase TEXT NOT NULL,
    bytes_done INTEGER NOT NULL,
    bytes_total INTEGER NOT NULL,
    files INTEGER NOT NULL,
    size INTEGER NOT NULL,
    checksum TEXT NOT NULL,
    error TEXT,
    started_at INTEGER,
    finished_at INTEGER,
    panel_report TEXT,
    archive_missing INTEGER NOT NULL DEFAULT 0,
    error_status INTEGER,
    owner TEXT NOT NULL,
    seen_at INTEGER NOT NULL,
    sort_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (uuid, kind)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS operations_by_server ON operations (server, sort_at DESC, seen_at DESC, uuid);
CREATE INDEX IF NOT EXISTS operations_active ON operations (state)
    WHERE state IN ('queued', 'running');
";

const COLUMNS: &str = "uuid, kind, server, adapter, state, phase, bytes_done, bytes_total, \
    files, size, checksum, error, started_at, finished_at, panel_report, archive_missing, seen_at, \
    error_status";

/// Opens the database at `path` (creating it, mode 0600), in WAL mode, and
/// checks it.
fn open_db(path: &Path) -> Result<Connection, OpenError> {
    // Created here so that its mode is 0600 whatever the umask; SQLite gives
    // its -wal and -shm files the same mode.
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| OpenError::Other(format!("opening {}: {e}", path.display())))?;
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_NOFOLLOW,
    )?;
    prepare(&conn)?;
    let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    if check != "ok" {
        return Err(OpenError::Corrupt(format!("integrity check: {check}")));
    }
    Ok(conn)
}

fn prepare(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") && !mode.eq_ignore_ascii_case("memory") {
        return Err(rusqlite::Error::InvalidQuery);
    }
    conn.execute_batch("PRAGMA synchronous = NORMAL;")?;
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    tx.execute_batch(SCHEMA)?;
    // A catalog written before `error_status` was kept gains the column
    // (its records keep the status their state implies).
    let has_status: bool = tx.query_row(
        "SELECT COUNT(*) FROM pragma_table_info('operations') WHERE name = 'error_status'",
        [],
        |r| r.get::<_, i64>(0).map(|n| n > 0),
    )?;
    if !has_status {
        tx.execute_batch("ALTER TABLE operations ADD COLUMN error_status INTEGER;")?;
    }
    tx.commit()
}

/// Renames a damaged database (and its `-wal`) aside and removes its `-shm`.
fn move_aside(path: &Path) -> std::io::Result<PathBuf> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut aside = sidecar(path, &format!(".corrupt-{secs}"));
    if aside.exists() {
        aside = sidecar(
            path,
            &format!(".corrupt-{secs}-{}", crate::safe_fs::nonce()),
        );
    }
    match std::fs::rename(path, &aside) {
        Ok(()) => {}
        // Another process moved it first.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(aside),
        Err(e) => return Err(e),
    }
    let _ = std::fs::rename(sidecar(path, "-wal"), sidecar(&aside, "-wal"));
    let _ = std::fs::remove_file(sidecar(path, "-shm"));
    Ok(aside)
}

/// Opens the catalog file in `dir`, moving a damaged one aside once.
fn open_file(dir: &Path) -> Result<(Connection, DbFile), String> {
    if !dir.is_dir() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("creating the backup directory {}: {e}", dir.display()))?;
        let _ = std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700));
    }
    let path = dir.join(DATABASE_NAME);
    let conn = match open_db(&path) {
        Ok(c) => c,
        Err(OpenError::Corrupt(why)) => {
            move_aside(&path).map_err(|e| {
                format!(
                    "the catalog {} is damaged ({why}) and could not be moved aside: {e}",
                    path.display()
                )
            })?;
            match open_db(&path) {
                Ok(c) => c,
                Err(OpenError::Corrupt(e) | OpenError::Other(e)) => {
                    return Err(format!("creating the catalog {}: {e}", path.display()))
                }
            }
        }
        Err(OpenError::Other(e)) => {
            return Err(format!("opening the catalog {}: {e}", path.display()))
        }
    };
    let meta = std::fs::symlink_metadata(&path)
        .map_err(|e| format!("opening the catalog {}: {e}", path.display()))?;
    Ok((
        conn,
        DbFile {
            path,
            dev: meta.dev(),
            ino: meta.ino(),
        },
    ))
}

fn memory_db() -> Connection {
    let conn = Connection::open_in_memory().expect("SQLite opens an in-memory database");
    prepare(&conn).expect("the schema is created in memory");
    conn
}

fn row_entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<Entry> {
    let kind: String = r.get(1)?;
    let state: String = r.get(4)?;
    let int = |i: usize| -> rusqlite::Result<u64> { Ok(r.get::<_, i64>(i)?.max(0) as u64) };
    Ok(Entry {
        record: OperationRecord {
            uuid: r.get(0)?,
            kind: OpKind::parse(&kind).unwrap_or_default(),
            server: r.get(2)?,
            adapter: r.get(3)?,
            state: OpState::parse(&state).unwrap_or(OpState::Failed),
            phase: r.get(5)?,
            bytes_done: int(6)?,
            bytes_total: int(7)?,
            files: int(8)?,
            size: int(9)?,
            checksum: r.get(10)?,
            error: r.get(11)?,
            started_at: r.get(12)?,
            finished_at: r.get(13)?,
            panel_report: r.get(14)?,
            archive_missing: r.get::<_, i64>(15)? != 0,
            error_status: r.get::<_, Option<i32>>(17)?.and_then(Status::from_code),
            seq: 0,
        },
        seen_at: r.get(16)?,
    })
}

/// Writes `e` (insert, or update keeping its first `seen_at`).
fn write_entry(tx: &Transaction<'_>, e: &Entry, owner: &str) -> rusqlite::Result<()> {
    let r = &e.record;
    tx.prepare_cached(
        "INSERT INTO operations (uuid, kind, server, adapter, state, phase, bytes_done, \
         bytes_total, files, size, checksum, error, started_at, finished_at, panel_report, \
         archive_missing, owner, seen_at, sort_at, updated_at, error_status) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, \
         ?18, COALESCE(?13, ?18), ?19, ?20) \
         ON CONFLICT (uuid, kind) DO UPDATE SET server = excluded.server, \
         adapter = excluded.adapter, state = excluded.state, phase = excluded.phase, \
         bytes_done = excluded.bytes_done, bytes_total = excluded.bytes_total, \
         files = excluded.files, size = excluded.size, checksum = excluded.checksum, \
         error = excluded.error, started_at = excluded.started_at, \
         finished_at = excluded.finished_at, panel_report = excluded.panel_report, \
         archive_missing = excluded.archive_missing, owner = excluded.owner, \
         error_status = excluded.error_status, \
         sort_at = COALESCE(excluded.started_at, operations.seen_at), \
         updated_at = excluded.updated_at",
    )?
    .execute(params![
        r.uuid,
        r.kind.as_str(),
        r.server,
        r.adapter,
        r.state.as_str(),
        r.phase,
        db_int(r.bytes_done),
        db_int(r.bytes_total),
        db_int(r.files),
        db_int(r.size),
        r.checksum,
        r.error,
        r.started_at,
        r.finished_at,
        r.panel_report,
        r.archive_missing as i64,
        owner,
        e.seen_at,
        now_ms(),
        r.error_status.map(|s| s as i32),
    ])?;
    Ok(())
}

/// Every record of `conn`, with the owner each was written by.
fn all_rows(conn: &Connection) -> rusqlite::Result<Vec<(Entry, String)>> {
    let mut stmt = conn.prepare(&format!("SELECT {COLUMNS}, owner FROM operations"))?;
    let rows = stmt.query_map([], |r| Ok((row_entry(r)?, r.get(18)?)))?;
    rows.collect()
}

/// Carries `rows` into `conn`, keeping what `conn` already has.
fn carry_over(conn: &Connection, rows: &[(Entry, String)]) -> rusqlite::Result<()> {
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    for (e, owner) in rows {
        let key = (e.record.uuid.as_str(), e.record.kind.as_str());
        let known: bool = tx
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM operations WHERE uuid = ?1 AND kind = ?2)",
            )?
            .query_row(params![key.0, key.1], |r| r.get(0))?;
        if !known {
            write_entry(&tx, e, owner)?;
        }
    }
    tx.commit()
}

/// Creates and locks this catalog's lock file in `dir`. It is locked under
/// another name and renamed into place, so that no other process ever sees
/// it unlocked (and removes it as a dead catalog's).
fn take_lock(dir: &Path, owner: &str) -> Option<(PathBuf, File)> {
    let path = dir.join(format!("{DATABASE_NAME}{OWNER_MARK}{owner}"));
    let new = dir.join(format!("{DATABASE_NAME}.new-owner-{owner}"));
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&new)
        .ok()?;
    let placed = rustix::fs::flock(&f, FlockOperation::NonBlockingLockExclusive).is_ok()
        && std::fs::rename(&new, &path).is_ok();
    if !placed {
        let _ = std::fs::remove_file(&new);
        return None;
    }
    Some((path, f))
}

/// Whether the catalog holding lock file `path` is alive (holds its lock).
fn owner_alive(path: &Path) -> bool {
    let Ok(file) = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
    else {
        return false;
    };
    match rustix::fs::flock(&file, FlockOperation::NonBlockingLockShared) {
        Ok(()) => false,
        Err(e) => e == rustix::io::Errno::WOULDBLOCK,
    }
}

impl Inner {
    /// Switches to the database now at the file's path when the one open was
    /// deleted or replaced, carrying every record over.
    fn follow_file(&mut self, dir: &Path, owner: &str) {
        let moved = match &self.file {
            None => {
                if self.retry_at.is_some_and(|t| Instant::now() >= t) {
                    self.retry_at = Some(Instant::now() + RETRY_INTERVAL);
                    true
                } else {
                    false
                }
            }
            Some(f) => match std::fs::symlink_metadata(&f.path) {
                Ok(m) => m.dev() != f.dev || m.ino() != f.ino,
                Err(_) => true,
            },
        };
        if moved {
            self.reopen(dir, owner);
        }
    }

    /// Opens the file again (a new one if it is gone), carrying over what
    /// the current connection holds; stays in memory if that fails.
    fn reopen(&mut self, dir: &Path, owner: &str) {
        let rows = all_rows(&self.conn).unwrap_or_default();
        let old = std::mem::replace(&mut self.conn, memory_db());
        drop(old);
        if let Some(f) = &self.file {
            if std::fs::symlink_metadata(&f.path).is_err() {
                // The database was deleted: its -wal and -shm are stale and
                // must not be read as those of a new database.
                let _ = std::fs::remove_file(sidecar(&f.path, "-wal"));
                let _ = std::fs::remove_file(sidecar(&f.path, "-shm"));
            }
        }
        match open_file(dir) {
            Ok((conn, file)) => {
                self.conn = conn;
                self.file = Some(file);
                self.degraded = None;
                self.retry_at = None;
                if self.lock.is_none() {
                    self.lock = take_lock(dir, owner);
                }
            }
            Err(why) => {
                self.file = None;
                self.degraded = Some(degraded_message(&why));
                self.retry_at = Some(Instant::now() + RETRY_INTERVAL);
            }
        }
        if let Err(e) = carry_over(&self.conn, &rows) {
            self.last_error = Some(format!("carrying records into the catalog: {e}"));
        }
    }

    /// Handles an error of the database: a damaged one is moved aside and
    /// replaced; any error is remembered.
    fn failed(&mut self, dir: &Path, owner: &str, what: &str, e: rusqlite::Error) {
        self.last_error = Some(format!("{what}: {e}"));
        if is_corrupt(&e) {
            if let Some(f) = &self.file {
                let old = std::mem::replace(&mut self.conn, memory_db());
                drop(old);
                let _ = move_aside(&f.path);
                self.reopen(dir, owner);
            }
        }
    }

    /// Writes what is unsaved and the progress due.
    fn save(&mut self, dir: &Path, owner: &str, flush_all_progress: bool) {
        self.follow_file(dir, owner);
        let now = Instant::now();
        let result = (|| -> rusqlite::Result<()> {
            let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)?;
            for (key, entry) in &self.unsaved {
                match entry {
                    Some(e) => write_entry(&tx, e, owner)?,
                    None => {
                        tx.prepare_cached("DELETE FROM operations WHERE uuid = ?1 AND kind = ?2")?
                            .execute(params![key.0, key.1.as_str()])?;
                    }
                }
            }
            for (key, l) in &self.live {
                let due =
                    flush_all_progress || l.written.is_none_or(|t| now - t >= PROGRESS_INTERVAL);
                if l.dirty && due {
                    tx.prepare_cached(
                        "UPDATE operations SET phase = ?3, bytes_done = ?4, bytes_total = ?5, \
                         updated_at = ?6 WHERE uuid = ?1 AND kind = ?2",
                    )?
                    .execute(params![
                        key.0,
                        key.1.as_str(),
                        l.phase,
                        db_int(l.done),
                        db_int(l.total),
                        now_ms()
                    ])?;
                }
            }
            tx.commit()
        })();
        match result {
            Ok(()) => {
                self.unsaved.clear();
                for l in self.live.values_mut() {
                    let due = flush_all_progress
                        || l.written.is_none_or(|t| now - t >= PROGRESS_INTERVAL);
                    if l.dirty && due {
                        l.dirty = false;
                        l.written = Some(now);
                    }
                }
                // Progress of operations quiet for a minute is all written:
                // forget it, so the map holds only operations under way.
                self.live
                    .retain(|_, l| l.dirty || l.written.is_none_or(|t| now - t < RETRY_INTERVAL));
            }
            Err(e) => self.failed(dir, owner, "writing the catalog", e),
        }
    }

    /// `entry` as this process knows it: unsaved changes and live progress
    /// applied; `None` if deleted.
    fn overlay(&self, entry: Entry) -> Option<Entry> {
        let key = (entry.record.uuid.clone(), entry.record.kind);
        let mut e = match self.unsaved.get(&key) {
            Some(None) => return None,
            Some(Some(u)) => u.clone(),
            None => entry,
        };
        if let Some(l) = self.live.get(&key) {
            e.record.phase.clone_from(&l.phase);
            e.record.bytes_done = l.done;
            e.record.bytes_total = l.total;
        }
        Some(e)
    }

    /// The records matching `filter` in the database and in memory, newest
    /// first.
    fn query(
        &mut self,
        dir: &Path,
        owner: &str,
        sql_where: &str,
        args: &[&str],
        keep: impl Fn(&OperationRecord) -> bool,
    ) -> Vec<OperationRecord> {
        let sql = format!(
            "SELECT {COLUMNS} FROM operations WHERE {sql_where} ORDER BY sort_at DESC, seen_at DESC, uuid"
        );
        let rows = (|| -> rusqlite::Result<Vec<Entry>> {
            let mut stmt = self.conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(args), row_entry)?;
            rows.collect()
        })();
        let rows = match rows {
            Ok(r) => r,
            Err(e) => {
                self.failed(dir, owner, "reading the catalog", e);
                Vec::new()
            }
        };
        let mut seen: HashSet<Key> = HashSet::new();
        let extra = !self.unsaved.is_empty();
        let mut out: Vec<Entry> = Vec::with_capacity(rows.len());
        for e in rows {
            if extra {
                seen.insert((e.record.uuid.clone(), e.record.kind));
            }
            if let Some(e) = self.overlay(e) {
                out.push(e);
            }
        }
        if extra {
            for (key, e) in &self.unsaved {
                if let Some(e) = e {
                    if !seen.contains(key) && keep(&e.record) {
                        out.push(self.overlay(e.clone()).expect("an unsaved record"));
                    }
                }
            }
            out.retain(|e| keep(&e.record));
            out.sort_by(|a, b| {
                b.sort_at()
                    .cmp(&a.sort_at())
                    .then(b.seen_at.cmp(&a.seen_at))
                    .then(a.record.uuid.cmp(&b.record.uuid))
            });
        }
        out.into_iter().map(|e| e.record).collect()
    }
}

fn degraded_message(why: &str) -> String {
    format!("{why}; operations are recorded in memory only")
}

impl Catalog {
    /// Opens (creating) `<backup_directory>/.wings-backup.db`. Never fails:
    /// a damaged database is moved aside and a new one made; if no file can
    /// be used, the catalog lives in memory and [`Catalog::degraded`] says why.
    pub fn open(backup_directory: &Path) -> Catalog {
        let dir = backup_directory.to_path_buf();
        let owner = crate::safe_fs::nonce();
        let (conn, file, degraded) = match open_file(&dir) {
            Ok((conn, file)) => (conn, Some(file), None),
            Err(why) => (memory_db(), None, Some(degraded_message(&why))),
        };
        let lock = file.as_ref().and_then(|_| take_lock(&dir, &owner));
        let retry_at = degraded.as_ref().map(|_| Instant::now() + RETRY_INTERVAL);
        Catalog {
            dir,
            owner,
            inner: Mutex::new(Inner {
                lock,
                conn,
                file,
                unsaved: HashMap::new(),
                live: HashMap::new(),
                degraded,
                last_error: None,
                retry_at,
            }),
        }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves nothing half-done that
        // matters more than recording the next operation.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why the catalog runs in memory, if it does.
    pub fn degraded(&self) -> Option<String> {
        self.inner().degraded.clone()
    }

    /// The last error of a read or write of the database, if any (writes
    /// that fail are kept in memory and tried again with the next write).
    pub fn last_error(&self) -> Option<String> {
        self.inner().last_error.clone()
    }

    /// The database file in use; `None` in memory.
    pub fn path(&self) -> Option<PathBuf> {
        self.inner().file.as_ref().map(|f| f.path.clone())
    }

    /// Tries the database file again now if the catalog runs in memory
    /// (it does by itself at most once a minute, on a write), carrying
    /// what it holds into the file. Returns whether it is on the file.
    pub fn retry_file(&self) -> bool {
        let mut inner = self.inner();
        if inner.file.is_none() {
            inner.reopen(&self.dir, &self.owner);
        }
        inner.file.is_some()
    }

    /// Records `rec`, replacing the record of the same kind and uuid.
    pub fn upsert(&self, rec: &OperationRecord) {
        let mut inner = self.inner();
        let key = (rec.uuid.clone(), rec.kind);
        inner.live.remove(&key);
        let seen_at = match inner.unsaved.get(&key) {
            Some(Some(e)) => e.seen_at,
            _ => now_ms(),
        };
        inner.unsaved.insert(
            key,
            Some(Entry {
                record: rec.clone(),
                seen_at,
            }),
        );
        inner.save(&self.dir, &self.owner, false);
    }

    /// Records an operation's progress. Cheap: the database is written at
    /// most every [`PROGRESS_INTERVAL`] per operation, and at once when the
    /// phase changes; `get` and `list` in this process show the latest.
    pub fn progress(
        &self,
        kind: OpKind,
        uuid: &str,
        phase: &str,
        bytes_done: u64,
        bytes_total: u64,
    ) {
        let mut inner = self.inner();
        let key = (uuid.to_string(), kind);
        if let Some(Some(e)) = inner.unsaved.get_mut(&key) {
            e.record.phase = phase.to_string();
            e.record.bytes_done = bytes_done;
            e.record.bytes_total = bytes_total;
        }
        let now = Instant::now();
        let l = inner.live.entry(key).or_insert_with(|| Live {
            phase: String::new(),
            done: 0,
            total: 0,
            written: None,
            dirty: false,
        });
        let new_phase = l.phase != phase;
        if new_phase {
            l.phase = phase.to_string();
        }
        l.done = bytes_done;
        l.total = bytes_total;
        l.dirty = true;
        let due = new_phase || l.written.is_none_or(|t| now - t >= PROGRESS_INTERVAL);
        if due {
            if new_phase {
                l.written = None;
            }
            inner.save(&self.dir, &self.owner, false);
        }
    }

    /// The newest record of backup `uuid` (its create or a restore).
    pub fn get(&self, uuid: &str) -> Option<OperationRecord> {
        let uuid_owned = uuid.to_string();
        self.inner()
            .query(&self.dir, &self.owner, "uuid = ?1", &[uuid], |r| {
                r.uuid == uuid_owned
            })
            .into_iter()
            .next()
    }

    /// The record of one operation.
    pub fn get_op(&self, kind: OpKind, uuid: &str) -> Option<OperationRecord> {
        let uuid_owned = uuid.to_string();
        self.inner()
            .query(&self.dir, &self.owner, "uuid = ?1", &[uuid], |r| {
                r.uuid == uuid_owned
            })
            .into_iter()
            .find(|r| r.kind == kind)
    }

    /// The records of `server`, newest first (by start time; an operation
    /// not started yet by the time it was first recorded).
    /// [`UNKNOWN_SERVER`] lists the archives found without a record.
    pub fn list(&self, server: &str) -> Vec<OperationRecord> {
        let server_owned = server.to_string();
        self.inner()
            .query(&self.dir, &self.owner, "server = ?1", &[server], |r| {
                r.server == server_owned
            })
    }

    /// The queued and running operations of every server, newest first.
    pub fn active(&self) -> Vec<OperationRecord> {
        self.inner().query(
            &self.dir,
            &self.owner,
            "state IN ('queued', 'running')",
            &[],
            |r| r.state.is_active(),
        )
    }

    /// Forgets every record of backup `uuid` (its create and restores).
    pub fn delete(&self, uuid: &str) {
        let mut inner = self.inner();
        for kind in [OpKind::Create, OpKind::Restore] {
            let key = (uuid.to_string(), kind);
            inner.live.remove(&key);
            inner.unsaved.insert(key, None);
        }
        inner.save(&self.dir, &self.owner, false);
    }

    /// Brings the catalog in line with the backup directory, at start.
    /// `archives` are the local archives found (`<uuid>.tar.gz`: uuid,
    /// size, modification time; see [`scan_archives`]).
    ///
    /// - queued or running operations of a process that is gone (not this
    ///   catalog, and no other live catalog on this directory) become
    ///   `failed` with [`interrupted_message`];
    /// - an archive without a create record gets one: `succeeded`, server
    ///   [`UNKNOWN_SERVER`], adapter `wings`, phase `done`, size from the
    ///   file, finished at its modification time, no checksum;
    /// - a succeeded `wings` create whose archive is gone (not listed, and
    ///   not on disk now) is kept with `archive_missing`; one whose archive
    ///   is back loses the mark.
    pub fn reconcile(&self, archives: &[(String, u64, SystemTime)]) -> ReconcileReport {
        let mut inner = self.inner();
        inner.save(&self.dir, &self.owner, true);
        let mut report = ReconcileReport::default();
        let owner = self.owner.clone();
        let dir = self.dir.clone();
        let result = (|| -> rusqlite::Result<()> {
            let tx = Transaction::new_unchecked(&inner.conn, TransactionBehavior::Immediate)?;
            let now = now_ms();
            // Operations of processes that are gone.
            let active: Vec<(String, String, String)> = {
                let mut stmt = tx.prepare(
                    "SELECT uuid, kind, owner FROM operations WHERE state IN ('queued', 'running')",
                )?;
                let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            let mut alive: HashMap<String, bool> = HashMap::new();
            for (uuid, kind, op_owner) in active {
                let is_alive = op_owner == owner
                    || *alive.entry(op_owner.clone()).or_insert_with(|| {
                        owner_alive(&dir.join(format!("{DATABASE_NAME}{OWNER_MARK}{op_owner}")))
                    });
                if is_alive {
                    continue;
                }
                let kind = OpKind::parse(&kind).unwrap_or_default();
                tx.execute(
                    "UPDATE operations SET state = 'failed', error = ?3, \
                     finished_at = COALESCE(finished_at, ?4), updated_at = ?4 \
                     WHERE uuid = ?1 AND kind = ?2",
                    params![uuid, kind.as_str(), interrupted_message(kind), now],
                )?;
                report.interrupted.push((kind, uuid));
            }
            // Archives: adopt the unknown, clear the mark of those back.
            let mut present: HashSet<&str> = HashSet::with_capacity(archives.len());
            for (uuid, size, mtime) in archives {
                present.insert(uuid.as_str());
                let t = to_ms(*mtime);
                let added = tx
                    .prepare_cached(
                        "INSERT INTO operations (uuid, kind, server, adapter, state, phase, \
                         bytes_done, bytes_total, files, size, checksum, error, started_at, \
                         finished_at, panel_report, archive_missing, owner, seen_at, sort_at, \
                         updated_at) VALUES (?1, 'create', ?2, 'wings', 'succeeded', 'done', \
                         ?3, ?3, 0, ?3, '', NULL, NULL, ?4, NULL, 0, ?5, ?4, ?4, ?6) \
                         ON CONFLICT (uuid, kind) DO NOTHING",
                    )?
                    .execute(params![uuid, UNKNOWN_SERVER, db_int(*size), t, owner, now])?;
                if added == 1 {
                    report.adopted.push(uuid.clone());
                } else {
                    tx.prepare_cached(
                        "UPDATE operations SET archive_missing = 0, updated_at = ?2 \
                         WHERE uuid = ?1 AND kind = 'create' AND archive_missing = 1",
                    )?
                    .execute(params![uuid, now])?;
                }
            }
            let done: Vec<String> = {
                let mut stmt = tx.prepare(
                    "SELECT uuid FROM operations WHERE kind = 'create' AND adapter = 'wings' \
                     AND state = 'succeeded' AND archive_missing = 0",
                )?;
                let rows = stmt.query_map([], |r| r.get(0))?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            for uuid in done {
                if present.contains(uuid.as_str())
                    || std::fs::symlink_metadata(dir.join(format!("{uuid}.tar.gz"))).is_ok()
                {
                    continue;
                }
                tx.execute(
                    "UPDATE operations SET archive_missing = 1, updated_at = ?2 \
                     WHERE uuid = ?1 AND kind = 'create'",
                    params![uuid, now],
                )?;
                report.missing.push(uuid);
            }
            tx.commit()
        })();
        if let Err(e) = result {
            inner.failed(&self.dir, &self.owner, "reconciling the catalog", e);
        }
        drop(inner);
        self.remove_stale_locks();
        report
    }

    /// Removes the lock files of catalogs that are gone.
    fn remove_stale_locks(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mark = format!("{DATABASE_NAME}{OWNER_MARK}");
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with(&mark) && !owner_alive(&entry.path()) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

// The engine shares one catalog between threads.
const _: fn() = || {
    fn shared<T: Send + Sync>() {}
    shared::<Catalog>();
};

impl Drop for Catalog {
    fn drop(&mut self) {
        // Progress not yet written goes in now.
        let mut inner = self.inner();
        if inner.live.values().any(|l| l.dirty) || !inner.unsaved.is_empty() {
            inner.save(&self.dir, &self.owner, true);
        }
        if let Some((path, _file)) = inner.lock.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The local archives in `backup_directory`: regular files named
/// `<uuid>.tar.gz` (a canonical UUID), with size and modification time.
pub fn scan_archives(backup_directory: &Path) -> Vec<(String, u64, SystemTime)> {
    let Ok(entries) = std::fs::read_dir(backup_directory) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(uuid) = name.to_str().and_then(|n| n.strip_suffix(".tar.gz")) else {
            continue;
        };
        if crate::request::canonical_uuid(uuid).as_deref() != Some(uuid) {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_file() {
            out.push((
                uuid.to_string(),
                meta.len(),
                meta.modified().unwrap_or(UNIX_EPOCH),
            ));
        }
    }
    out
}
