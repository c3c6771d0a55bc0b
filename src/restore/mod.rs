//! Restoring an archive into a server directory without losing any file.
//!
//! Entries are first written into a staging directory inside the server
//! root (`.wings-backup-restore-<nonce>/tree`), so that the final moves are
//! renames on one filesystem. Only when the whole archive has been read and
//! checked is anything of the server's touched, and a commit that fails is
//! undone. The parts:
//!
//! * `paths`: archive names normalised, names for the syscalls;
//! * `staging`: the staging directory and the entries written into it;
//! * `checks`: what is verified against the server's files before the
//!   commit (symlinks pointing outside, the disk limit);
//! * `journal`: the commit, its phases (recorded on disk for crash
//!   recovery) and the moves it made (undone if it fails);
//! * `recovery`: stages a crash left behind, finished or removed.
//!
//! The server's tree is reached only through `safe_fs::Beneath` handles
//! and the single-name, no-follow operations of the `safe_fs::Dir`s they
//! give out: this module makes no system call of its own.

use std::cell::RefCell;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use crate::archive::reader::{with_tar_stream, EntryKind as TarKind, TarReader};
use crate::error::Result;
use crate::index::EntryKind as IndexKind;
use crate::progress::{snapshot, Control, Counters, Phase, Shared};
use crate::rate_limit::{LimitedReader, RateLimit};
use crate::selection::{Admit, Scope};

mod checks;
pub mod journal;
pub mod paths;
mod recovery;
mod staging;

pub use journal::CommitPhase;
pub use paths::normalize;
pub use recovery::{recover, Recovery};
pub use staging::RestoreTarget;

use crate::config::Owner;

#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    /// Replace the server's files (true) or merge into them (false).
    pub truncate: bool,
    /// Chown everything restored to this owner.
    pub owner: Option<Owner>,
    /// Bytes the server's files may take afterwards; 0 = no limit.
    pub disk_limit: u64,
    /// Restore only these paths (see `crate::selection`); with `truncate`,
    /// each named path is replaced whole and nothing else is touched.
    pub scope: Option<Arc<Scope>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreSummary {
    pub entries: u64,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hard_links: u64,
    /// Bytes of file data written.
    pub bytes: u64,
    /// FIFOs, devices, unsupported types and reserved names left out.
    pub skipped: u64,
}

/// The data of the entry being restored, piece by piece (empty at its end).
pub trait EntryData {
    fn next_data(&mut self) -> Result<&[u8]>;
}

/// A restored entry, as the archive reader hands it over.
pub struct Entry<'a> {
    /// The raw name from the archive.
    pub path: &'a [u8],
    pub kind: EntryKind<'a>,
    pub mode: u32,
    pub mtime: i64,
    /// Nanoseconds past `mtime`.
    pub mtime_nsec: u32,
}

pub enum EntryKind<'a> {
    File,
    Dir,
    Symlink(&'a [u8]),
    HardLink(&'a [u8]),
    /// Not restored (FIFO, device, unknown type): counted as skipped.
    Skipped,
}

/// Restores the `.tar.gz` read from `source` (of `source_len` bytes, 0 if
/// unknown) into the directory `root`. Nothing of `root` changes unless the
/// whole archive was read and checked.
pub fn restore_stream(
    source: &mut (dyn Read + Send),
    source_len: u64,
    root: OwnedFd,
    opts: RestoreOptions,
    threads: usize,
    read_limit_mib: u64,
    ctl: &mut Control<'_>,
) -> Result<RestoreSummary> {
    let counters = Counters::default();
    counters.set_total(source_len);
    let shared = Shared::default();
    let scope = opts.scope.clone();
    let mut target = RestoreTarget::begin(root, opts)?;
    ctl.tick(Phase::Extract, &counters)?;
    // The stream waits for data on this thread and ticks through the same
    // control the entry loop uses (never both at once).
    let ctl = RefCell::new(ctl);
    {
        let mut limited = LimitedReader {
            inner: source,
            limit: RateLimit::new(read_limit_mib),
            shared: &shared,
        };
        let wait = || ctl.borrow_mut().tick(Phase::Extract, &counters);
        with_tar_stream(&mut limited, threads, &counters, &shared, &wait, |stream| {
            let mut reader = TarReader::new(stream);
            while let Some(entry) = reader.next_entry()? {
                ctl.borrow_mut().tick(Phase::Extract, &counters)?;
                let admit = match &scope {
                    Some(scope) => match IndexKind::of_tar(&entry.kind) {
                        Some((kind, link)) => scope.admit(&entry.path, link, kind)?,
                        // Not restorable and not in an index: a path that
                        // names only such an entry is not in the backup,
                        // with the index or without.
                        None => Admit::No,
                    },
                    None => Admit::Yes,
                };
                if admit == Admit::No {
                    // Its data is skipped by the next `next_entry`.
                    continue;
                }
                let kind = match &entry.kind {
                    TarKind::File => EntryKind::File,
                    TarKind::Dir => EntryKind::Dir,
                    TarKind::Symlink(t) => EntryKind::Symlink(t),
                    TarKind::HardLink(t) => EntryKind::HardLink(t),
                    TarKind::Fifo | TarKind::Device | TarKind::Unsupported(_) => EntryKind::Skipped,
                };
                let e = Entry {
                    path: &entry.path,
                    kind,
                    mode: entry.mode,
                    mtime: entry.mtime,
                    mtime_nsec: entry.mtime_nsec,
                };
                let mut data = TickingData {
                    reader: &mut reader,
                    ctl: &ctl,
                    counters: &counters,
                };
                if admit == Admit::Source {
                    target.apply_link_source(&e, &mut data)?;
                } else {
                    target.apply(&e, &mut data)?;
                }
                counters.add_entries(1);
            }
            reader.finish()
        })?;
    }
    let ctl = ctl.into_inner();
    let mut done = snapshot(Phase::Extract, &counters);
    if done.bytes_total == 0 {
        done.bytes_total = done.bytes_done;
    }
    done.bytes_done = done.bytes_total;
    ctl.report(done)?;
    ctl.report(snapshot(Phase::Commit, &counters))?;
    target.commit()
}

/// Entry data that keeps progress and cancellation going through big files.
struct TickingData<'r, 's, 'a, 'c, 'k, 'm> {
    reader: &'r mut TarReader<'s, 'a>,
    ctl: &'c RefCell<&'m mut Control<'k>>,
    counters: &'c Counters,
}

impl EntryData for TickingData<'_, '_, '_, '_, '_, '_> {
    fn next_data(&mut self) -> Result<&[u8]> {
        self.ctl.borrow_mut().tick(Phase::Extract, self.counters)?;
        self.reader.read_data()
    }
}
