//! The node's policy over what runs: one backup or restore per server, a
//! backup uuid taken from acceptance to the end of its call, at most
//! `max_running_backups` backups running at once (more are accepted and wait
//! inside their call, cancellably, for a slot, oldest first), cancelling one
//! backup (a DELETE, running or queued) or every call (shutdown), and the
//! messages the Panel and users see when a request is refused.
//!
//! A server and a backup slot are given back before the Panel is told of the
//! result (`Ticket::release_server`), so that a slow Panel keeps neither busy;
//! the backup uuid is given back when the call returns. A DELETE waits only
//! for a backup's archive work to end, never for its report to the Panel.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use crate::catalog::{to_ms, Catalog};
use crate::error::{Error, Result, Status};
use crate::progress::{CancelToken, Control, Phase, Progress};

/// A second request for a backup uuid that is queued or running.
pub const MSG_UUID_RUNNING: &str = "A backup with this uuid is already running.";
/// A create for a backup uuid whose archive exists.
pub const MSG_UUID_EXISTS: &str = "A backup with this uuid already exists.";
/// A request after `cancel_all`.
pub const MSG_SHUTTING_DOWN: &str = "The node is shutting down.";
/// A DELETE whose backup did not stop within `CANCEL_WAIT`.
pub const MSG_STUCK: &str = "The running backup did not stop in time.";

/// How long a DELETE waits for the backup it cancelled to end.
pub const CANCEL_WAIT: Duration = Duration::from_secs(60);

/// How often a queued backup looks at its cancel token.
const QUEUE_POLL: Duration = Duration::from_millis(50);

/// What holds a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Backup,
    Restore,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Backup => "backup",
            Kind::Restore => "restore",
        }
    }
}

fn busy(kind: Kind) -> Error {
    Error::conflict(format!(
        "Another {} is already running for this server.",
        kind.name()
    ))
}

#[derive(Default)]
struct State {
    /// Server uuid -> what holds it (until `release_server`).
    servers: HashMap<String, Kind>,
    /// Backup uuid -> the token of its call, queued or running.
    backups: HashMap<String, Arc<CancelToken>>,
    /// The backups of `backups` whose call has given back its server: their
    /// archive work is over and only the Panel is being told.
    reporting: HashSet<String>,
    /// Every call in progress, by id: `cancel_all` triggers them.
    calls: HashMap<u64, Arc<CancelToken>>,
    next_id: u64,
    /// Backups holding a slot.
    running: usize,
    /// Backups waiting for a slot, oldest first.
    queue: VecDeque<u64>,
    /// `cancel_all` was called: no new work.
    closing: bool,
}

pub struct Operations {
    max_running_backups: usize,
    state: Mutex<State>,
    /// Signalled whenever a server, a slot or a uuid is given back.
    changed: Condvar,
    /// The record of every operation.
    tracker: Arc<Tracker>,
}

impl Operations {
    pub fn new(max_running_backups: usize) -> Operations {
        Operations::with_catalog(max_running_backups, None)
    }

    /// Operations whose records are also written to `catalog`.
    pub fn with_catalog(max_running_backups: usize, catalog: Option<Arc<Catalog>>) -> Operations {
        Operations {
            max_running_backups: max_running_backups.max(1),
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            tracker: Arc::new(Tracker {
                catalog,
                ..Tracker::default()
            }),
        }
    }

    /// The records of the operations.
    pub fn tracker(&self) -> &Tracker {
        &self.tracker
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update keeps the state consistent at each step, so a panic
        // elsewhere while holding the lock leaves nothing half done.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn refusal(state: &State, server: &str, backup: Option<&str>) -> Option<Error> {
        if state.closing {
            return Some(Error::new(crate::Status::Cancelled, MSG_SHUTTING_DOWN));
        }
        if backup.is_some_and(|b| state.backups.contains_key(b)) {
            return Some(Error::conflict(MSG_UUID_RUNNING));
        }
        state.servers.get(server).map(|kind| busy(*kind))
    }

    /// Whether a call on `server` (a backup: of uuid `backup`) would be
    /// refused now: shutting down, duplicate uuid, busy server.
    pub fn check(&self, server: &str, backup: Option<&str>) -> Result<()> {
        match Self::refusal(&self.lock(), server, backup) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Takes `server` (and, for a backup, its uuid and a slot, or a place in
    /// the queue) for a call, or refuses as `check` does.
    pub fn admit(&self, server: &str, kind: Kind, backup: Option<&str>) -> Result<Ticket<'_>> {
        let mut state = self.lock();
        if let Some(e) = Self::refusal(&state, server, backup) {
            return Err(e);
        }
        let id = state.next_id;
        state.next_id += 1;
        let token = Arc::new(CancelToken::new());
        state.calls.insert(id, Arc::clone(&token));
        state.servers.insert(server.to_string(), kind);
        if let Some(b) = backup {
            state.backups.insert(b.to_string(), Arc::clone(&token));
        }
        let mut ticket = Ticket {
            ops: self,
            id,
            token,
            server: Some(server.to_string()),
            backup: backup.map(str::to_string),
            slot: false,
            queued: false,
            server_name: server.to_string(),
            tracked: false,
        };
        if kind == Kind::Backup {
            if state.queue.is_empty() && state.running < self.max_running_backups {
                state.running += 1;
                ticket.slot = true;
            } else {
                state.queue.push_back(id);
                ticket.queued = true;
            }
        }
        Ok(ticket)
    }

    /// Cancels the queued or running backup `backup` and waits until its
    /// archive work has ended (its partial archive is removed by then; its
    /// report to the Panel may still be going out). False if there is none,
    /// or if its archive work is already over (a finished backup whose
    /// result the Panel is being told: there is nothing left to cancel).
    /// Called from the backup's own progress callback, it cancels it and
    /// answers at once: the backup stops (and removes its partial archive)
    /// when the callback returns, which waiting here would never let it do.
    pub fn cancel_backup(&self, backup: &str) -> Result<bool> {
        let mut state = self.lock();
        let Some(token) = state.backups.get(backup).cloned() else {
            return Ok(false);
        };
        if state.reporting.contains(backup) {
            return Ok(false);
        }
        token.trigger();
        if crate::progress::in_callback_of(&token) {
            return Ok(true);
        }
        let deadline = Instant::now() + CANCEL_WAIT;
        while state.backups.contains_key(backup) && !state.reporting.contains(backup) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::internal(MSG_STUCK));
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .map(|(s, _)| s)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        Ok(true)
    }

    /// Whether backup `backup`'s archive work is over and only the Panel is
    /// still being told of it (nothing is left to cancel).
    pub fn reporting(&self, backup: &str) -> bool {
        self.lock().reporting.contains(backup)
    }

    /// `err`, or, when it is a cancellation and the engine is shutting down
    /// (`cancel_all`), the shutdown's own error ("The node is shutting
    /// down."): a restore or create the node's stop interrupted says so.
    pub fn explain(&self, err: Error) -> Error {
        if err.status == Status::Cancelled && self.lock().closing {
            return Error::new(Status::Cancelled, MSG_SHUTTING_DOWN);
        }
        err
    }

    /// Refuses new calls from now on (`WB_CANCELLED`, "The node is shutting
    /// down.") and cancels every call in progress: queued, running, or
    /// telling the Panel (whose report is then parked for the next start).
    pub fn cancel_all(&self) {
        let tokens: Vec<_> = {
            let mut state = self.lock();
            state.closing = true;
            state.calls.values().cloned().collect()
        };
        for token in tokens {
            token.trigger();
        }
        self.changed.notify_all();
    }
}

/// A call's place in the table. Dropping it gives everything back.
pub struct Ticket<'o> {
    ops: &'o Operations,
    id: u64,
    token: Arc<CancelToken>,
    server: Option<String>,
    backup: Option<String>,
    slot: bool,
    queued: bool,
    server_name: String,
    /// Whether the call has a record (`track`), not yet finished.
    tracked: bool,
}

impl Ticket<'_> {
    /// The engine's token for this call (a DELETE or `cancel_all` triggers it).
    pub fn token(&self) -> Arc<CancelToken> {
        Arc::clone(&self.token)
    }

    /// Gives the call a record (queued or running), which progress reports
    /// (`observer`) and `finish` update.
    pub fn track(&mut self, kind: OpKind, uuid: &str, adapter: &str) {
        let now = SystemTime::now();
        let state = if self.queued {
            OpState::Queued
        } else {
            OpState::Running
        };
        self.ops.tracker.insert(Tracked {
            id: self.id,
            record: OperationRecord {
                state,
                phase: Phase::Started.name().to_string(),
                started_at: Some(to_ms(now)),
                ..OperationRecord::new(kind, uuid, &self.server_name, adapter)
            },
            token: Arc::clone(&self.token),
            last_wake: Instant::now(),
        });
        self.tracked = true;
    }

    /// What the call's `Control` hands each progress report.
    pub fn observer(&self) -> crate::progress::Observer {
        let tracker = Arc::clone(&self.ops.tracker);
        let id = self.id;
        Box::new(move |p: &Progress| tracker.progress(id, p))
    }

    /// Ends the call's record: succeeded, failed or cancelled.
    pub fn finish(&mut self, outcome: Outcome<'_>) {
        if !std::mem::take(&mut self.tracked) {
            return;
        }
        self.ops.tracker.update(self.id, true, true, |r| {
            r.state = match outcome.error {
                None => OpState::Succeeded,
                Some(e) if e.status == Status::Cancelled => OpState::Cancelled,
                Some(_) => OpState::Failed,
            };
            if outcome.error.is_none() {
                r.phase = Phase::Done.name().to_string();
                r.bytes_done = outcome.bytes;
                r.bytes_total = outcome.bytes;
                r.files = outcome.files;
                r.size = outcome.size;
                r.checksum = outcome.checksum;
            } else {
                // No archive (or no restored data) to measure: the bytes
                // written before the end are not its size.
                r.size = 0;
            }
            r.error = outcome.error.map(|e| e.message.clone());
            r.error_status = outcome.error.map(|e| e.status);
            r.panel_report = outcome.panel_report;
            r.finished_at = Some(to_ms(SystemTime::now()));
        });
    }

    /// Waits, if the backup was queued, until a slot is free and it is the
    /// oldest waiting; fails with `WB_CANCELLED` once `ctl` is cancelled.
    pub fn wait_for_slot(&mut self, ctl: &Control<'_>) -> Result<()> {
        let ops = self.ops;
        let mut state = ops.lock();
        while self.queued {
            if ctl.is_cancelled() {
                state.queue.retain(|id| *id != self.id);
                self.queued = false;
                ops.changed.notify_all();
                return Err(Error::cancelled());
            }
            if state.running < ops.max_running_backups && state.queue.front() == Some(&self.id) {
                state.queue.pop_front();
                state.running += 1;
                self.queued = false;
                self.slot = true;
                // The next in line may fit too.
                ops.changed.notify_all();
                drop(state);
                if self.tracked {
                    ops.tracker
                        .update(self.id, true, true, |r| r.state = OpState::Running);
                }
                return Ok(());
            }
            state = ops
                .changed
                .wait_timeout(state, QUEUE_POLL)
                .map(|(s, _)| s)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        Ok(())
    }

    /// Gives back the server and the backup slot (before the Panel is
    /// told); the uuid stays taken until the ticket is dropped.
    pub fn release_server(&mut self) {
        let mut state = self.ops.lock();
        self.release_locked(&mut state);
        self.ops.changed.notify_all();
    }

    fn release_locked(&mut self, state: &mut State) {
        if let Some(server) = self.server.take() {
            state.servers.remove(&server);
            if let Some(b) = &self.backup {
                state.reporting.insert(b.clone());
            }
        }
        if std::mem::take(&mut self.slot) {
            state.running -= 1;
        }
        if std::mem::take(&mut self.queued) {
            state.queue.retain(|id| *id != self.id);
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let ops = self.ops;
        if self.tracked {
            // Every path finishes its record; this is the backstop.
            let e = Error::internal("the operation ended without a result");
            self.finish(Outcome {
                error: Some(&e),
                bytes: 0,
                files: 0,
                size: 0,
                checksum: String::new(),
                panel_report: None,
            });
        }
        let mut state = ops.lock();
        self.release_locked(&mut state);
        if let Some(b) = &self.backup {
            state.backups.remove(b);
            state.reporting.remove(b);
        }
        state.calls.remove(&self.id);
        drop(state);
        ops.changed.notify_all();
    }
}

// ---------------------------------------------------------------------------
// The record of every operation: what a status, list, cancel or wait sees.

pub use crate::catalog::{OpKind, OpState, OperationRecord};

impl OpState {
    /// The state's name in records (`queued`, ..., `cancelled`).
    pub fn name(self) -> &'static str {
        self.as_str()
    }

    /// Whether the operation has ended.
    pub fn finished(self) -> bool {
        !self.is_active()
    }
}

/// What a cancel found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The operation was queued or running; it stops.
    Cancelled,
    /// It had ended.
    Finished,
    /// A restore putting its files in place, which is not undone.
    Committing,
}

/// How an operation ended, for its record.
pub struct Outcome<'e> {
    pub error: Option<&'e Error>,
    /// A create: source bytes read; a restore: bytes of file data written
    /// (the record's progress showed archive bytes while it ran).
    pub bytes: u64,
    pub files: u64,
    pub size: u64,
    pub checksum: String,
    pub panel_report: Option<String>,
}

/// Finished records kept in memory (the oldest go first).
const KEEP_FINISHED: usize = 4096;
/// Progress reports a waiter is woken for, at most this often.
pub const WAIT_INTERVAL: Duration = Duration::from_millis(250);

struct Tracked {
    id: u64,
    record: OperationRecord,
    token: Arc<CancelToken>,
    last_wake: Instant,
}

#[derive(Default)]
struct Tracks {
    /// Oldest first.
    ops: Vec<Tracked>,
    seq: u64,
}

/// Every operation's record, and a condition variable waiters sleep on.
/// With a catalog, every record is also written there (the states at once,
/// progress rate-limited by the catalog), so that it outlives the process.
#[derive(Default)]
pub struct Tracker {
    tracks: Mutex<Tracks>,
    changed: Condvar,
    catalog: Option<Arc<Catalog>>,
}

impl Tracker {
    fn lock(&self) -> MutexGuard<'_, Tracks> {
        self.tracks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Updates record `id`; `persist` writes a change of state to the
    /// catalog (under the lock, so that a waiter woken by the change finds
    /// it written).
    fn update(&self, id: u64, wake: bool, persist: bool, f: impl FnOnce(&mut OperationRecord)) {
        let mut tracks = self.lock();
        tracks.seq += 1;
        let seq = tracks.seq;
        if let Some(t) = tracks.ops.iter_mut().find(|t| t.id == id) {
            if t.record.state.finished() {
                // Reports after the end (the final `Done`) change nothing.
                return;
            }
            f(&mut t.record);
            if persist {
                if let Some(catalog) = &self.catalog {
                    catalog.upsert(&t.record);
                }
            }
            if wake || t.last_wake.elapsed() >= WAIT_INTERVAL {
                t.record.seq = seq;
                t.last_wake = Instant::now();
                drop(tracks);
                self.changed.notify_all();
            }
        }
    }

    fn progress(&self, id: u64, p: &Progress) {
        let phase = p.phase.name();
        let mut written = None;
        self.update(id, false, false, |r| {
            let changed = r.phase != phase;
            r.phase = phase.to_string();
            if changed || p.bytes_done >= r.bytes_done || p.phase == Phase::Done {
                r.bytes_done = p.bytes_done;
                r.bytes_total = p.bytes_total;
            }
            r.files = r.files.max(p.entries_done);
            if p.archive_bytes > 0 {
                r.size = p.archive_bytes;
            }
            written = Some((r.kind, r.uuid.clone(), r.bytes_done, r.bytes_total));
        });
        if let (Some(catalog), Some((kind, uuid, done, total))) = (&self.catalog, written) {
            catalog.progress(kind, &uuid, phase, done, total);
        }
    }

    /// The newest record of operation `uuid` (a backup's uuid: its create
    /// or a restore of it).
    pub fn get(&self, uuid: &str) -> Option<OperationRecord> {
        let tracks = self.lock();
        tracks
            .ops
            .iter()
            .rev()
            .find(|t| t.record.uuid == uuid)
            .map(|t| t.record.clone())
    }

    /// The server of the create of backup `uuid` this run tracks, if any.
    pub fn create_server(&self, uuid: &str) -> Option<String> {
        let tracks = self.lock();
        tracks
            .ops
            .iter()
            .rev()
            .find(|t| t.record.uuid == uuid && t.record.kind == OpKind::Create)
            .map(|t| t.record.server.clone())
    }

    /// The records of server `server`, newest first, one per uuid.
    pub fn list(&self, server: &str) -> Vec<OperationRecord> {
        let tracks = self.lock();
        let mut seen = std::collections::HashSet::new();
        tracks
            .ops
            .iter()
            .rev()
            .filter(|t| t.record.server == server && seen.insert(t.record.uuid.clone()))
            .map(|t| t.record.clone())
            .collect()
    }

    /// Cancels the queued or running operation of `uuid` on `server`, if
    /// it can still be; None if there is none.
    pub fn cancel(&self, server: &str, uuid: &str) -> Option<CancelOutcome> {
        let tracks = self.lock();
        let mut found = None;
        for t in tracks.ops.iter().rev() {
            if t.record.uuid != uuid || t.record.server != server {
                continue;
            }
            if !t.record.state.finished() {
                // A restore reports its commit before it begins it, under
                // this lock, and checks its token right after: cancelled
                // before that report it stops, after it it carries on.
                if t.record.kind == OpKind::Restore && t.record.phase == Phase::Commit.name() {
                    return Some(CancelOutcome::Committing);
                }
                t.token.trigger();
                return Some(CancelOutcome::Cancelled);
            }
            found.get_or_insert(CancelOutcome::Finished);
        }
        found
    }

    /// Waits until the newest record of `uuid` has a sequence number above
    /// `after_seq` or has ended, or `timeout` passes; returns it then.
    pub fn wait(&self, uuid: &str, after_seq: u64, timeout: Duration) -> Option<OperationRecord> {
        let deadline = Instant::now() + timeout;
        let mut tracks = self.lock();
        loop {
            let rec = tracks
                .ops
                .iter()
                .rev()
                .find(|t| t.record.uuid == uuid)
                .map(|t| &t.record)?;
            let left = deadline.saturating_duration_since(Instant::now());
            if rec.seq > after_seq || rec.state.finished() || left.is_zero() {
                return Some(rec.clone());
            }
            tracks = self
                .changed
                .wait_timeout(tracks, left)
                .map(|(s, _)| s)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// Forgets the records of backup `uuid` (its archive was deleted): all
    /// but a running restore's. A create whose archive work is over but
    /// whose result the Panel is still being told is forgotten too; its end
    /// then writes nothing (`update` finds no record).
    pub fn forget(&self, uuid: &str) {
        self.lock().ops.retain(|t| {
            t.record.uuid != uuid
                || (t.record.kind == OpKind::Restore && !t.record.state.finished())
        });
        if let Some(catalog) = &self.catalog {
            catalog.delete(uuid);
        }
        // A waiter on a forgotten record answers now.
        self.changed.notify_all();
    }

    /// The catalog the records are written to, if any.
    pub fn catalog(&self) -> Option<&Catalog> {
        self.catalog.as_deref()
    }

    fn insert(&self, tracked: Tracked) {
        let mut tracks = self.lock();
        tracks.seq += 1;
        let mut tracked = tracked;
        tracked.record.seq = tracks.seq;
        if let Some(catalog) = &self.catalog {
            catalog.upsert(&tracked.record);
        }
        tracks.ops.push(tracked);
        let finished = tracks
            .ops
            .iter()
            .filter(|t| t.record.state.finished())
            .count();
        if finished > KEEP_FINISHED {
            if let Some(i) = tracks.ops.iter().position(|t| t.record.state.finished()) {
                tracks.ops.remove(i);
            }
        }
        drop(tracks);
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_queue_and_refusals() {
        let ops = Operations::new(1);
        let mut a = ops.admit("s1", Kind::Backup, Some("a")).unwrap();
        let b = ops.admit("s2", Kind::Backup, Some("b")).unwrap();
        assert!(a.slot && b.queued);
        assert_eq!(
            ops.check("s3", Some("b")).unwrap_err().message,
            MSG_UUID_RUNNING
        );
        let e = ops.check("s2", None).unwrap_err();
        assert_eq!(
            e.message,
            "Another backup is already running for this server."
        );
        a.release_server();
        let mut b = b;
        b.wait_for_slot(&Control::none()).unwrap();
        assert!(b.slot);
        ops.cancel_all();
        assert_eq!(
            ops.check("s9", None).unwrap_err().status,
            crate::Status::Cancelled
        );
        assert!(b.token().is_triggered());
    }

    #[test]
    fn a_cancellation_by_the_shutdown_says_so() {
        let ops = Operations::new(1);
        let other = Error::invalid("x");
        assert_eq!(ops.explain(Error::cancelled()), Error::cancelled());
        ops.cancel_all();
        let e = ops.explain(Error::cancelled());
        assert_eq!(
            (e.status, e.message.as_str()),
            (Status::Cancelled, MSG_SHUTTING_DOWN)
        );
        assert_eq!(ops.explain(other.clone()), other);
    }
}
