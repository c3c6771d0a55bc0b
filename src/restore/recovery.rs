//! Stages an interrupted restore left in a server root: finished when
//! their commit had started, removed otherwise.

use std::os::fd::{AsFd, BorrowedFd};

use super::journal::{self, CommitMode, Journal, COMMIT_MARKER};
use super::staging::STAGE_PREFIX;
use crate::error::{Error, Result};
use crate::safe_fs::{self, Beneath, Dir, FileType, Listing};

/// What [`recover`] did in one server root.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Stages whose commit had started, carried through: every file they
    /// held is in place (their removal may still have failed: `error`).
    pub finished: usize,
    /// Stages whose commit had not started, removed: the server's files
    /// are as they were.
    pub removed: usize,
    /// Stages locked by a restore still running (in this or another
    /// process), left alone.
    pub live: usize,
    /// The first error; a stage that could not be finished or removed is
    /// kept, with what it holds, for the next try.
    pub error: Option<Error>,
}

impl Recovery {
    /// Whether there was anything to do (or leave alone).
    pub fn is_empty(&self) -> bool {
        self.finished == 0 && self.removed == 0 && self.live == 0 && self.error.is_none()
    }

    /// How many stages were dealt with, or the first error.
    pub fn result(self) -> Result<usize> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.finished + self.removed),
        }
    }
}

/// Finishes or removes what an interrupted restore left in `root`: a stage
/// with a `commit` marker is carried through (every file ends up new), one
/// without is deleted (every file stays old). Stages locked by a running
/// restore are left alone. Says what it did with each.
pub fn recover(root: BorrowedFd<'_>) -> Recovery {
    let mut done = Recovery::default();
    let opened = Listing::read(root)
        .map_err(|e| Error::os("reading the server directory", e))
        .and_then(|listing| {
            Beneath::dup(root)
                .map(|live| (listing, live))
                .map_err(|e| Error::os("opening the server directory", e))
        });
    let (listing, live) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            done.error = Some(e);
            return done;
        }
    };
    let euid = safe_fs::euid();
    for i in 0..listing.len() {
        let (name, ty) = listing.get(i);
        if !name.to_bytes().starts_with(STAGE_PREFIX.as_bytes())
            || !matches!(ty, FileType::Directory | FileType::Unknown)
        {
            continue;
        }
        let Ok(stage) = live.dir().open_dir(name) else {
            continue;
        };
        let stage = Dir::of(stage.as_fd());
        // Only a stage this engine could have made (`begin`): ours, 0700.
        // The server's user may plant anything under this name; it is left
        // alone, neither obeyed nor deleted.
        match stage.stat() {
            // (A setgid root passes its bit on; only the permissions count.)
            Ok(st) if st.st_uid == euid && st.st_mode & 0o777 == 0o700 => {}
            _ => continue,
        }
        // Held until this stage is dealt with; a restore still running (in
        // this or another process) holds it, and its stage is left alone.
        let _lock = match stage.open_regular(c"lock", true) {
            Some(lock) => {
                if lock.try_lock().is_err() {
                    done.live += 1;
                    continue;
                }
                Some(lock)
            }
            None => None,
        };
        let marker = stage.open_regular(COMMIT_MARKER, false);
        let committed = marker.is_some();
        let finished = match marker {
            Some(file) => {
                let mut buf = [0u8; 16];
                let n = file.read(&mut buf).unwrap_or(0);
                let mode = CommitMode::from_marker(&buf[..n]);
                let named = match mode {
                    CommitMode::ScopedTruncate => journal::recorded_scope(stage),
                    _ => Ok(Vec::new()),
                };
                match (named, stage.open_dir(c"tree")) {
                    (Err(e), _) => Err(e),
                    (Ok(named), Ok(tree)) => journal::commit(
                        &live,
                        stage,
                        &Beneath::new(tree),
                        mode,
                        true,
                        &named,
                        None,
                        &mut Journal::default(),
                    ),
                    (_, Err(e)) => Err(Error::os("reading a stale restore", e)),
                }
            }
            None => Ok(()),
        };
        // A stage that cannot be finished is kept (it may hold the server's
        // files), and the others are still dealt with.
        let result = finished.and_then(|()| {
            if committed {
                done.finished += 1;
            }
            live.dir()
                .remove_tree(name)
                .map_err(|e| Error::os("removing a stale restore", e))
        });
        match result {
            Ok(()) if !committed => done.removed += 1,
            Ok(()) => {}
            Err(e) => {
                done.error.get_or_insert(e);
            }
        }
    }
    done
}
