//! The engine's reporter: one thread, owned by the engine, that tells the
//! Panel the results of restores in the background, so a restore returns
//! as soon as the files are in place.
//!
//! Each report is tried at once, then retried on its own schedule (the
//! restore policy of `PanelClient`: 5xx and transport errors retried with
//! backoff for 30 s, or `report_retry_s` when shorter; a 4xx is final). A
//! report still unsent when its budget is spent, or when the reporter stops
//! (`Engine::cancel_all`, or the engine dropped), is parked in
//! `<backup_directory>/.pending/<uuid>.restore.json` for `send_pending`.
//! Exactly one of "delivered", "refused for good" or "parked" happens to
//! each report. While the reporter holds a report it is also written ahead
//! (`.pending/.<uuid>.restore.json.sending`), which the next start parks if
//! the process is killed first. Stopping waits for an attempt in flight (at most the 15 s
//! timeout of one Panel call), never for a backoff.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::panel::{Failure, PanelClient, ReportKind, ReportOutcome};
use crate::retry::Backoff;

struct Job {
    backup: String,
    successful: bool,
    backoff: Backoff,
    due: Instant,
}

#[derive(Default)]
struct State {
    queue: Vec<Job>,
    stopping: bool,
}

struct Shared {
    panel: Arc<PanelClient>,
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn park(&self, job: &Job, reason: &str) {
        let outcome = match self.panel.park_restore(&job.backup, job.successful) {
            Ok(()) => ReportOutcome::Pending(reason.to_string()),
            Err(e) => ReportOutcome::Pending(format!("{reason}; parking it failed: {e}")),
        };
        self.panel.settled(ReportKind::Restore, &job.backup);
        self.panel
            .log_parked(ReportKind::Restore, &job.backup, &outcome);
    }
}

pub struct Reporter {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// What became of a report handed to the reporter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Submitted {
    /// Queued: the reporter thread delivers (or parks) it.
    Queued,
    /// The reporter has stopped: parked in `.pending` at once.
    Parked,
}

impl Reporter {
    /// Starts the reporter thread.
    pub fn start(panel: Arc<PanelClient>) -> std::io::Result<Reporter> {
        let shared = Arc::new(Shared {
            panel,
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("wb-reporter".into())
            .spawn(move || run(&worker))?;
        Ok(Reporter {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Hands over the restore report of backup `backup`; returns at once.
    pub fn submit(&self, backup: &str, successful: bool) -> Submitted {
        let job = Job {
            backup: backup.to_string(),
            successful,
            backoff: self.shared.panel.restore_backoff(),
            due: Instant::now(),
        };
        // Kept on disk while the reporter holds it: a process killed before
        // it is settled leaves it for the next start to park.
        self.shared.panel.write_ahead_restore(backup, successful);
        let mut state = self.shared.lock();
        if state.stopping {
            drop(state);
            self.shared.park(&job, "the engine is shutting down");
            return Submitted::Parked;
        }
        state.queue.push(job);
        drop(state);
        self.shared.wake.notify_all();
        Submitted::Queued
    }

    /// Stops the thread and waits for it: every report not yet delivered
    /// is parked. Later submissions are parked at once. Idempotent.
    pub fn stop(&self) {
        self.shared.lock().stopping = true;
        self.shared.wake.notify_all();
        let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(shared: &Shared) {
    let mut state = shared.lock();
    loop {
        if state.stopping {
            let left = std::mem::take(&mut state.queue);
            drop(state);
            for job in &left {
                shared.park(job, "the engine is shutting down");
            }
            return;
        }
        let now = Instant::now();
        let next = state
            .queue
            .iter()
            .enumerate()
            .min_by_key(|(_, j)| j.due)
            .map(|(i, j)| (i, j.due));
        match next {
            None => {
                state = shared.wake.wait(state).unwrap_or_else(|e| e.into_inner());
            }
            Some((_, due)) if due > now => {
                state = shared
                    .wake
                    .wait_timeout(state, due - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            Some((i, _)) => {
                let mut job = state.queue.swap_remove(i);
                drop(state);
                let requeue = attempt(shared, &mut job);
                state = shared.lock();
                if requeue {
                    if state.stopping {
                        drop(state);
                        shared.park(&job, "the engine is shutting down");
                        state = shared.lock();
                    } else {
                        state.queue.push(job);
                    }
                }
            }
        }
    }
}

/// One attempt; true when the job is to be tried again (its `due` set).
fn attempt(shared: &Shared, job: &mut Job) -> bool {
    let panel = &shared.panel;
    let settled = || panel.settled(ReportKind::Restore, &job.backup);
    match panel.restore_once(&job.backup, job.successful) {
        Ok(()) => {
            settled();
            if job.backoff.attempts() > 0 {
                panel.logger().info(&format!(
                    "the restore report of backup {} was delivered at attempt {}",
                    job.backup,
                    job.backoff.attempts() + 1
                ));
            }
            false
        }
        Err(Failure::Final(_, message)) => {
            settled();
            panel.logger().warn(&format!(
                "the Panel refused the restore report of backup {}: {message}",
                job.backup
            ));
            false
        }
        Err(Failure::Retry(reason)) => match job.backoff.next_delay() {
            Some(delay) => {
                panel.log_retry(
                    "POST",
                    &panel.restore_url(&job.backup),
                    job.backoff.attempts(),
                    delay,
                    &reason,
                );
                job.due = Instant::now() + delay;
                true
            }
            None => {
                shared.park(job, &reason);
                false
            }
        },
    }
}
