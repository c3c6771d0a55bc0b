//! The node's policy over what runs: one backup or restore per server, a
//! backup uuid taken from acceptance to the end of its call, at most
//! `max_running_backups` backups running at once (more are accepted and wait
//! inside their call, cancellably, for a slot, oldest first), cancelling one
//! backup (a DELETE, running or queued) or every call (shutdown), and the
//! messages the Panel and users see when a request is refused.
//!
//! A server and a backup slot are given back before the Panel is told of the
//! result (`Ticket::release_server`), so that a slow Panel keeps neither busy;
//! the backup uuid is given back when the call returns.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::progress::{CancelToken, Control};

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
}

impl Operations {
    pub fn new(max_running_backups: usize) -> Operations {
        Operations {
            max_running_backups: max_running_backups.max(1),
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        }
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

    /// Cancels the queued or running backup `backup` and waits for its call
    /// to end (its partial archive is removed by then). False if there is
    /// none.
    pub fn cancel_backup(&self, backup: &str) -> Result<bool> {
        let mut state = self.lock();
        let Some(token) = state.backups.get(backup).cloned() else {
            return Ok(false);
        };
        token.trigger();
        let deadline = Instant::now() + CANCEL_WAIT;
        while state.backups.contains_key(backup) {
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
}

impl Ticket<'_> {
    /// The engine's token for this call (a DELETE or `cancel_all` triggers it).
    pub fn token(&self) -> Arc<CancelToken> {
        Arc::clone(&self.token)
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
                break;
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
        let mut state = ops.lock();
        self.release_locked(&mut state);
        if let Some(b) = &self.backup {
            state.backups.remove(b);
        }
        state.calls.remove(&self.id);
        drop(state);
        ops.changed.notify_all();
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
}
