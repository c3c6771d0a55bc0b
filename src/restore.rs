//! Restoring an archive stream into a directory: the archive reader feeding
//! the restore target, with progress and cancellation.

use std::cell::RefCell;
use std::io::Read;
use std::os::fd::OwnedFd;

use crate::archive::reader::{with_tar_stream, EntryKind as TarKind, TarReader};
use crate::error::Result;
use crate::progress::{snapshot, Control, Counters, Phase, Shared};
use crate::rate_limit::{LimitedReader, RateLimit};
use crate::restore_target::{
    Entry, EntryData, EntryKind, RestoreOptions, RestoreSummary, RestoreTarget,
};

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
                };
                let mut data = TickingData {
                    reader: &mut reader,
                    ctl: &ctl,
                    counters: &counters,
                };
                target.apply(&e, &mut data)?;
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
