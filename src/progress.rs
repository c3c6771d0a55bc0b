//! Progress reports, cancellation, and the stop/error state the threads of one
//! long operation share.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// A cancel token: any thread may trigger it, at any time. A token may be
/// linked to others (`link`): triggering it triggers them too.
#[derive(Debug, Default)]
pub struct CancelToken {
    flag: AtomicBool,
    linked: Mutex<Vec<Weak<CancelToken>>>,
}

impl CancelToken {
    pub fn new() -> CancelToken {
        CancelToken::default()
    }
    pub fn trigger(&self) {
        self.flag.store(true, Ordering::SeqCst);
        let linked = std::mem::take(&mut *self.linked.lock().unwrap_or_else(|p| p.into_inner()));
        for token in linked.iter().filter_map(Weak::upgrade) {
            token.trigger();
        }
    }
    pub fn is_triggered(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }
    /// Makes a trigger of this token trigger `other` too (at once if this
    /// one is triggered already). Only a weak reference is kept.
    pub fn link(&self, other: &Arc<CancelToken>) {
        let mut linked = self.linked.lock().unwrap_or_else(|p| p.into_inner());
        if self.is_triggered() {
            drop(linked);
            other.trigger();
            return;
        }
        linked.retain(|w| w.strong_count() > 0);
        linked.push(Arc::downgrade(other));
    }
}

/// What a long call is doing (`wb_progress.phase`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// The request was accepted: validated, and the server is held by this call.
    Started = 0,
    /// Reading the server's files into the archive (bytes: source bytes).
    Archive = 1,
    /// Uploading the archive to S3 (bytes: archive bytes).
    Upload = 2,
    /// Reading and unpacking the archive (bytes: archive bytes).
    Extract = 3,
    /// Putting the restored files in place.
    Commit = 4,
    /// Telling the Panel the result.
    Report = 5,
    /// Finished; the last report of a successful call.
    Done = 6,
}

impl Phase {
    /// The phase's name in status records (`started`, `archive`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Phase::Started => "started",
            Phase::Archive => "archive",
            Phase::Upload => "upload",
            Phase::Extract => "extract",
            Phase::Commit => "commit",
            Phase::Report => "report",
            Phase::Done => "done",
        }
    }
}

/// One progress report. `bytes_total` 0 means unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub phase: Phase,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub entries_done: u64,
    /// Archive bytes: compressed bytes written so far by a create,
    /// compressed bytes read so far by a restore.
    pub archive_bytes: u64,
}

impl Progress {
    /// A report of `phase` without counts.
    pub fn at(phase: Phase) -> Progress {
        Progress {
            phase,
            bytes_done: 0,
            bytes_total: 0,
            entries_done: 0,
            archive_bytes: 0,
        }
    }

    /// The last report of a successful call: all of `bytes` done.
    pub fn done(bytes: u64, entries: u64) -> Progress {
        Progress {
            phase: Phase::Done,
            bytes_done: bytes,
            bytes_total: bytes,
            entries_done: entries,
            archive_bytes: 0,
        }
    }

    /// The same report with `archive_bytes` set.
    pub fn with_archive_bytes(self, archive_bytes: u64) -> Progress {
        Progress {
            archive_bytes,
            ..self
        }
    }
}

/// Counters worker threads update and the calling thread reports.
#[derive(Debug, Default)]
pub struct Counters {
    pub bytes_done: AtomicU64,
    pub bytes_total: AtomicU64,
    pub entries_done: AtomicU64,
    /// Compressed bytes written (create) or read (restore).
    pub archive_bytes: AtomicU64,
}

impl Counters {
    pub fn add_bytes(&self, n: u64) {
        self.bytes_done.fetch_add(n, Ordering::Relaxed);
    }
    pub fn add_archive_bytes(&self, n: u64) {
        self.archive_bytes.fetch_add(n, Ordering::Relaxed);
    }
    pub fn add_entries(&self, n: u64) {
        self.entries_done.fetch_add(n, Ordering::Relaxed);
    }
    pub fn set_total(&self, n: u64) {
        self.bytes_total.store(n, Ordering::Relaxed);
    }
}

pub type ProgressFn<'a> = dyn FnMut(&Progress) -> bool + 'a;

thread_local! {
    /// The engine tokens of the calls whose progress callback this thread
    /// is in (innermost last: a callback may make a call of its own).
    static IN_CALLBACK: std::cell::RefCell<Vec<Arc<CancelToken>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Whether this thread is in the progress callback of the call whose
/// engine token is `token`: that call cannot end until the callback
/// returns, so whoever cancels it there must not wait for it.
pub fn in_callback_of(token: &Arc<CancelToken>) -> bool {
    IN_CALLBACK.with(|c| c.borrow().iter().any(|t| Arc::ptr_eq(t, token)))
}

/// Takes the token off the thread's list when the callback returns (or
/// unwinds).
struct InCallback(bool);

impl InCallback {
    fn enter(token: Option<&Arc<CancelToken>>) -> InCallback {
        match token {
            Some(t) => {
                IN_CALLBACK.with(|c| c.borrow_mut().push(Arc::clone(t)));
                InCallback(true)
            }
            None => InCallback(false),
        }
    }
}

impl Drop for InCallback {
    fn drop(&mut self) {
        if self.0 {
            IN_CALLBACK.with(|c| {
                c.borrow_mut().pop();
            });
        }
    }
}

/// What the engine's record of a call is told of each report.
pub type Observer = Box<dyn FnMut(&Progress) + Send>;

/// How a caller watches and stops a long call. The callback runs only on the
/// calling thread; returning false stops the call with `Cancelled`.
pub struct Control<'a> {
    cancel: Option<&'a CancelToken>,
    /// The engine's own token for this call (a DELETE of a running backup).
    internal: Option<std::sync::Arc<CancelToken>>,
    callback: Option<&'a mut ProgressFn<'a>>,
    /// The engine's record of the call, told every report.
    observer: Option<Observer>,
    stopped_by_callback: bool,
    last_report: Option<Instant>,
    last: Option<Progress>,
}

/// Reports are at most this frequent (and at least this frequent while work
/// is being done, since every loop calls `tick`).
pub const REPORT_INTERVAL: Duration = Duration::from_millis(100);

impl<'a> Control<'a> {
    pub fn new(
        cancel: Option<&'a CancelToken>,
        callback: Option<&'a mut ProgressFn<'a>>,
    ) -> Control<'a> {
        Control {
            cancel,
            internal: None,
            callback,
            observer: None,
            stopped_by_callback: false,
            last_report: None,
            last: None,
        }
    }

    pub fn none() -> Control<'static> {
        Control::new(None, None)
    }

    /// Whether anybody receives progress reports (else totals that only
    /// serve them need not be computed).
    pub fn has_listener(&self) -> bool {
        self.callback.is_some() || self.observer.is_some()
    }

    /// Hands every report from now on to `observer` too (the engine's
    /// record of the call).
    pub fn observe(&mut self, observer: Observer) {
        self.observer = Some(observer);
    }

    /// Adds the engine's own token for this call (what a DELETE or
    /// `wb_engine_cancel_all` triggers); the caller's token is linked to it,
    /// so that it alone says whether the call is cancelled.
    pub fn also_cancelled_by(&mut self, token: Arc<CancelToken>) {
        if let Some(caller) = self.cancel {
            caller.link(&token);
        }
        self.internal = Some(token);
    }

    /// Whether the caller asked to stop.
    pub fn is_cancelled(&self) -> bool {
        self.stopped_by_callback
            || self.cancel.is_some_and(|c| c.is_triggered())
            || self.internal.as_ref().is_some_and(|c| c.is_triggered())
    }

    pub fn check(&self) -> Result<()> {
        if self.is_cancelled() {
            return Err(Error::cancelled());
        }
        Ok(())
    }

    /// Reports now, whatever the time since the last report.
    pub fn report(&mut self, progress: Progress) -> Result<()> {
        // Keep reports monotonic within a phase even if counters race.
        let mut progress = progress;
        if let Some(last) = self.last {
            if last.phase == progress.phase {
                progress.bytes_done = progress.bytes_done.max(last.bytes_done);
                progress.entries_done = progress.entries_done.max(last.entries_done);
                progress.archive_bytes = progress.archive_bytes.max(last.archive_bytes);
                if progress.bytes_total != 0 && progress.bytes_total < last.bytes_total {
                    progress.bytes_total = last.bytes_total;
                }
            }
        }
        self.last = Some(progress);
        self.last_report = Some(Instant::now());
        if let Some(observe) = self.observer.as_mut() {
            observe(&progress);
        }
        if let Some(cb) = self.callback.as_mut() {
            let _inside = InCallback::enter(self.internal.as_ref());
            if !cb(&progress) {
                self.stopped_by_callback = true;
            }
        }
        self.check()
    }

    /// Reports once the work is done and can no longer be undone: the
    /// callback's answer and the cancel token are ignored from here on.
    pub fn report_final(&mut self, progress: Progress) {
        self.last = Some(progress);
        if let Some(observe) = self.observer.as_mut() {
            observe(&progress);
        }
        if let Some(cb) = self.callback.as_mut() {
            let _inside = InCallback::enter(self.internal.as_ref());
            let _ = cb(&progress);
        }
    }

    /// The token that cancels this call, for work that must watch it
    /// directly (network retries): the engine's own when it has one (the
    /// caller's is linked to it), else the caller's.
    pub fn cancel_token(&self) -> Option<&CancelToken> {
        self.internal.as_deref().or(self.cancel)
    }

    /// Reports if enough time has passed since the last report, and checks
    /// for cancellation either way.
    pub fn tick(&mut self, phase: Phase, counters: &Counters) -> Result<()> {
        let due = match self.last_report {
            None => true,
            Some(t) => t.elapsed() >= REPORT_INTERVAL,
        };
        let phase_changed = self.last.is_none_or(|l| l.phase != phase);
        if due || phase_changed {
            return self.report(snapshot(phase, counters));
        }
        self.check()
    }
}

pub fn snapshot(phase: Phase, counters: &Counters) -> Progress {
    Progress {
        phase,
        bytes_done: counters.bytes_done.load(Ordering::Relaxed),
        bytes_total: counters.bytes_total.load(Ordering::Relaxed),
        entries_done: counters.entries_done.load(Ordering::Relaxed),
        archive_bytes: counters.archive_bytes.load(Ordering::Relaxed),
    }
}

/// Stop flag and first error, shared by the threads of one operation.
#[derive(Debug, Default)]
pub struct Shared {
    stop: AtomicBool,
    error: Mutex<Option<Error>>,
}

impl Shared {
    pub fn should_stop(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Records the first error and tells every thread to stop.
    pub fn fail(&self, err: Error) {
        if let Ok(mut slot) = self.error.lock() {
            if slot.is_none() {
                *slot = Some(err);
            }
        }
        self.stop();
    }

    pub fn take_error(&self) -> Option<Error> {
        self.error.lock().ok().and_then(|mut e| e.take())
    }
}
