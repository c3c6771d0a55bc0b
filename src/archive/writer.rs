//! The archive writer: walks a server directory and writes a `.tar.gz` of it.
//!
//! Five stages run at once: a thread walks the tree (lists directories,
//! opens files); the calling thread lays tar headers and file bytes into
//! 1 MiB blocks; `threads` workers compress the
//! blocks into independent gzip members; one thread puts the members back in
//! order and writes them out, at most at the write limit, and another feeds
//! them to SHA-1. The index's entries are encoded and compressed on a thread
//! of their own.
//! A fixed pool of blocks bounds memory and makes a fast stage wait for a
//! slow one: a block returns to the pool only once its member is written and
//! hashed, so however the threads are scheduled, no more than the pool's
//! blocks and members exist at once.
//!
//! A backup that reuses the previous archive (see `crate::archive::reuse`)
//! walks without opening files, and its blocks keep the places of file bytes
//! instead of holding them: a worker copies the old member a block repeats
//! (checked against the old index), or else reads the block's files, by
//! path beneath the root, and compresses it.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustix::io::Errno;

use crate::archive::gzip::{self, BLOCK_SIZE};
use crate::archive::header::{self, EntryMeta, Kind};
use crate::archive::reuse::{self, OldArchive, Previous, Run};
use crate::archive::sha1::{ArchiveHasher, OldPlace};
use crate::archive::walk::{Skipped, TreeWalker, WalkItem, MAX_LISTED};
use crate::config::CompressionLevel;
use crate::error::{quote, Error, Result};
use crate::ignore::IgnoreRules;
use crate::index::{self, IndexWriter, StatKey};
use crate::progress::{Control, Counters, Phase, Shared};
use crate::rate_limit::RateLimit;
use crate::safe_fs::{self, DirStack, Listing};

#[derive(Clone, Debug)]
pub struct WriteOptions {
    pub level: CompressionLevel,
    /// Compression workers (at least one).
    pub threads: usize,
    /// MiB of archive written per second; 0 = unlimited.
    pub write_limit: u64,
    /// (device, inode) of files never archived (see `output_identities`).
    pub exclude: Vec<(u64, u64)>,
    /// Bytes of file data the walk will find, when a walk before the
    /// backup measured them (the space check): the progress total, so that
    /// no second stat-only pass is made.
    pub known_total: Option<u64>,
    /// A previous archive of the same tree (with its index beside it) whose
    /// unchanged members are copied instead of compressed again; see
    /// `crate::archive::reuse`.
    pub reuse_from: Option<std::path::PathBuf>,
    /// Whether copied members are copied by the kernel (`copy_file_range`).
    pub kernel_copy: KernelCopy,
}

/// Whether members copied from the previous archive go through the kernel
/// (`copy_file_range`) rather than being written from the bytes checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KernelCopy {
    /// Where both archives are on one file system that shares extents
    /// (XFS, btrfs): the blocks copied are shared, not written.
    #[default]
    WhereShared,
    /// On any file system (a kernel copy is then a copy in the kernel).
    Always,
    Never,
}

/// The identities a create must leave out of its own archive: the
/// temporary file being written (`temp`) and the file now at `archive`,
/// which the new archive replaces. Compared by (device, inode), they are
/// found however the paths are spelt (`./`, symlinked directories).
pub fn output_identities(temp: &std::fs::File, archive: &std::path::Path) -> Vec<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut ids = Vec::new();
    if let Ok(m) = temp.metadata() {
        ids.push((m.dev(), m.ino()));
    }
    if let Ok(m) = std::fs::metadata(archive) {
        if m.is_file() {
            ids.push((m.dev(), m.ino()));
        }
    }
    ids
}

/// What was written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArchiveSummary {
    /// SHA-1 of the archive bytes, lower-case hex.
    pub sha1: String,
    /// Archive bytes.
    pub size: u64,
    pub entries: u64,
    pub files: u64,
    /// Bytes of file data read from the tree.
    pub source_bytes: u64,
    /// Files that changed while they were read (the first `MAX_LISTED`).
    pub changed: Vec<Vec<u8>>,
    pub changed_count: u64,
    pub skipped: Vec<Skipped>,
    pub skipped_count: u64,
    /// Members copied from the previous archive, and their bytes.
    pub reused_members: u64,
    pub reused_bytes: u64,
}

/// A block of the tar stream on its way to a compressor.
struct Block {
    seq: u64,
    buf: Vec<u8>,
    len: usize,
    /// File bytes of the block not read yet: the worker reads them into
    /// their places unless it copies `old` instead.
    deferred: Vec<Deferred>,
    /// The old member this block repeats if its files did not change: the
    /// worker copies it, checked, in place of compressing the block.
    old: Option<index::Member>,
}

impl Block {
    fn new(seq: u64, buf: Vec<u8>) -> Block {
        Block {
            seq,
            buf,
            len: 0,
            deferred: Vec::new(),
            old: None,
        }
    }
}

/// A compressed block on its way to the writer.
struct Member {
    seq: u64,
    /// Tar bytes it holds.
    raw_len: usize,
    /// A reused buffer: the member is its first `len` bytes.
    buf: Vec<u8>,
    len: usize,
    /// The block it was made from, back to the pool once this is written.
    block: Vec<u8>,
    /// For a member copied from the previous archive: where it was there
    /// (the hasher takes its checksum, and its SHA-1 state while the new
    /// archive starts as the old one did).
    old: Option<OldPlace>,
}

/// Where the hashing thread returns buffers for reuse.
struct Pools<'a> {
    free_blocks: SyncSender<Vec<u8>>,
    spare_members: &'a Mutex<Vec<Vec<u8>>>,
}

impl Member {
    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Writes the archive of the tree under `root` into `out`.
pub fn write_archive(
    root: OwnedFd,
    ignore: &IgnoreRules,
    out: &mut std::fs::File,
    opts: &WriteOptions,
    ctl: &mut Control<'_>,
) -> Result<ArchiveSummary> {
    write_archive_indexed(root, ignore, out, None, opts, ctl).map(|(summary, _)| summary)
}

/// What became of the index written beside an archive.
pub enum IndexOutcome {
    /// Complete: the writer's output, flushed (not synced).
    Written(std::fs::File),
    /// Writing it failed; the archive does not need it.
    Failed(Error),
    NotAsked,
}

/// Like [`write_archive`], and writes the archive's index to `index` as it
/// goes (see `crate::index`).
pub fn write_archive_indexed(
    root: OwnedFd,
    ignore: &IgnoreRules,
    out: &mut std::fs::File,
    index: Option<IndexWriter<std::fs::File>>,
    opts: &WriteOptions,
    ctl: &mut Control<'_>,
) -> Result<(ArchiveSummary, IndexOutcome)> {
    let threads = opts.threads.max(1);
    let pool_size = 2 * threads + 4;
    let shared = Shared::default();
    let budget = PathBudget::default();
    let counters = Counters::default();
    // The total only serves progress reports: without a listener, the
    // stat-only pass (3-7% of a backup's CPU time) is not made.
    if let Some(total) = opts.known_total {
        counters.set_total(total);
    }
    let scan_root = if ctl.has_listener() && opts.known_total.is_none() {
        Some(
            safe_fs::open_dir(root.as_fd(), c".")
                .map_err(|e| Error::os("opening the server directory", e))?,
        )
    } else {
        None
    };
    let (old_archive, pending) = match opts.reuse_from.as_deref().and_then(|archive| {
        let expected = index::IndexHeader::new(opts.level.name(), ignore.digest(), BLOCK_SIZE);
        Previous::probe(archive, &expected)
    }) {
        Some((archive, pending)) => (Some(archive), Some(pending)),
        None => (None, None),
    };
    // A reusing backup's walk only stats files: a file whose bytes turn out
    // to be needed is opened by its path, beneath the root, when it is read.
    let beneath = match pending {
        Some(_) => Some(
            safe_fs::Beneath::dup(root.as_fd())
                .map_err(|e| Error::os("opening the server directory", e))?,
        ),
        None => None,
    };
    let mut walker = TreeWalker::new(root, ignore)?;
    walker.stop_when(&shared);
    walker.exclude(&opts.exclude);

    let (free_tx, free_rx) = mpsc::sync_channel::<Vec<u8>>(pool_size);
    for _ in 0..pool_size {
        let _ = free_tx.send(vec![0u8; BLOCK_SIZE]);
    }
    let (job_tx, job_rx) = mpsc::sync_channel::<Block>(pool_size);
    let job_rx = Mutex::new(job_rx);
    let (member_tx, member_rx) = mpsc::sync_channel::<Member>(pool_size);
    let spare_members: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
    if beneath.is_some() {
        walker.stat_only_but_links();
    }
    let reading = Reading {
        beneath: beneath.as_ref(),
        old: old_archive.as_ref(),
        counters: &counters,
        changed: Mutex::new(Changed::default()),
        open_fds: AtomicUsize::new(0),
        reused: [AtomicU64::new(0), AtomicU64::new(0)],
    };

    std::thread::scope(|s| {
        let shared = &shared;
        let budget = &budget;
        let counters = &counters;
        let spare_members = &spare_members;
        let reading = &reading;
        // A walk that only stats holds no open files: it may run further ahead.
        let ahead = if pending.is_some() {
            STAT_WALK_BATCHES
        } else {
            WALK_BATCHES
        };
        let (walked_tx, walked_rx) = mpsc::sync_channel::<Walked>(ahead);
        s.spawn(move || walk_ahead(walker, walked_tx, shared, budget));
        // The rest of the old index is read while the walk starts.
        let opening = pending.map(|pending| s.spawn(move || pending.open(s)));
        if let Some(scan_root) = scan_root {
            s.spawn(move || {
                // Only for the progress total, at the lowest priority, so
                // that it takes what the backup leaves of the cores.
                let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 19);
                if let Some(total) = scan_total(scan_root, ignore, &opts.exclude, shared) {
                    counters.set_total(total);
                }
            });
        }
        for _ in 0..threads {
            let job_rx = &job_rx;
            let member_tx = member_tx.clone();
            let level = opts.level;
            s.spawn(move || {
                compress_worker(level, job_rx, member_tx, spare_members, shared, reading)
            });
        }
        drop(member_tx);
        let (finished_tx, finished_rx) = mpsc::channel::<()>();
        let pools = Pools {
            free_blocks: free_tx,
            spare_members,
        };
        let kernel = reading
            .old
            .filter(|old| match opts.kernel_copy {
                KernelCopy::WhereShared => old.shares_extents_with(out),
                KernelCopy::Always => true,
                KernelCopy::Never => false,
            })
            .map(|old| (old, reuse::fs_block_size(out)));
        let writer = s.spawn(move || {
            let output = Output { file: out, kernel };
            let written =
                write_members(member_rx, output, opts.write_limit, pools, shared, counters);
            let _ = finished_tx.send(());
            written
        });

        // The index is encoded and compressed on a thread of its own.
        let (index_tx, index_thread) = match index {
            Some(writer) => {
                let (tx, rx) = mpsc::sync_channel::<Vec<index::Entry>>(INDEX_BATCHES);
                (
                    Some(tx),
                    Some(s.spawn(move || write_index_entries(writer, rx))),
                )
            }
            None => (None, None),
        };
        let previous = opening.and_then(|t| t.join().ok().flatten());
        let mut producer = Producer {
            walked: walked_rx,
            budget,
            pending: Vec::new(),
            block: Block::new(0, Vec::new()),
            job_tx: Some(job_tx),
            free_rx,
            shared,
            counters,
            summary: ArchiveSummary::default(),
            index: index_tx.map(|tx| IndexBatches {
                tx,
                batch: Vec::with_capacity(INDEX_BATCH),
                path_bytes: 0,
            }),
            previous,
            reading,
            tentative: None,
        };
        let produced = producer.run(ctl);
        if let Err(e) = &produced {
            shared.fail(e.clone());
        }
        // Ends the thread reading the old index, if it is still at it.
        producer.previous = None;
        if let Some(mut batches) = producer.index.take() {
            let rest = std::mem::take(&mut batches.batch);
            let _ = batches.tx.send(rest);
        }
        let index = index_thread.map(|t| {
            t.join()
                .unwrap_or_else(|_| Err(Error::internal("archive index thread panicked")))
        });
        // Closing the job channel lets the workers and then the writer finish;
        // a write limit can make that take a while, so keep reporting (and
        // let a cancel stop the writer) meanwhile.
        producer.job_tx = None;
        while let Err(RecvTimeoutError::Timeout) =
            finished_rx.recv_timeout(Duration::from_millis(100))
        {
            if let Err(e) = ctl.tick(Phase::Archive, counters) {
                shared.fail(e);
            }
        }
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(Error::internal("archive writer thread panicked")));
        shared.stop();
        let mut summary = produced?;
        if let Some(e) = shared.take_error() {
            return Err(e);
        }
        let (sha1, size, members) = written?;
        let index = match index {
            None => IndexOutcome::NotAsked,
            Some(Err(e)) => IndexOutcome::Failed(e),
            Some(Ok(writer)) => {
                let footer = index::Footer {
                    archive_size: size,
                    archive_sha1: sha1.clone(),
                    tar_size: members.iter().map(|m| m.uncompressed).sum(),
                    data_bytes: counters
                        .bytes_done
                        .load(std::sync::atomic::Ordering::Relaxed),
                    ..Default::default()
                };
                match writer.finish(&members, footer) {
                    Ok(file) => IndexOutcome::Written(file),
                    Err(e) => IndexOutcome::Failed(e),
                }
            }
        };
        summary.sha1 = sha1;
        summary.size = size;
        if let Ok(changed) = reading.changed.lock() {
            summary.changed = changed.paths.clone();
            summary.changed_count = changed.count;
        }
        summary.reused_members = reading.reused[0].load(Ordering::Relaxed);
        summary.reused_bytes = reading.reused[1].load(Ordering::Relaxed);
        summary.source_bytes = counters
            .bytes_done
            .load(std::sync::atomic::Ordering::Relaxed);
        // The phase's last report gives where it ended (the ticks before it
        // are at most one per REPORT_INTERVAL, so the last of them is stale).
        let mut last = crate::progress::snapshot(Phase::Archive, counters);
        last.archive_bytes = size;
        if last.bytes_total < last.bytes_done {
            last.bytes_total = last.bytes_done;
        }
        ctl.report(last)?;
        Ok((summary, index))
    })
}

/// What the walking thread hands the producer.
enum Walked {
    /// The next entries, in order (never empty).
    /// Items and the bytes of their paths (taken from the [`PathBudget`]).
    Items(Vec<WalkItem>, u64),
    /// The walk is over: what it left out.
    End(Vec<Skipped>, u64),
    Failed(Error),
}

/// Entries per message from the walk (a handoff between threads costs a
/// wake-up; one per entry was several percent of a backup of small files),
/// and the file bytes after which a batch goes anyway, so that the reading
/// is never kept waiting behind a batch of big files.
const WALK_BATCH: usize = 32;
const WALK_BATCH_BYTES: u64 = 4 << 20;
/// Batches in flight; with `WALK_BATCH`, the bound on open files waiting.
const WALK_BATCHES: usize = 3;
/// Batches in flight from a walk that opens nothing (a reusing backup's):
/// the walk is then the longest thread, and letting it run up to 8,192
/// entries ahead keeps it from waiting on the others (corpus (b)'s second
/// backup: 0.56 s instead of 0.62 s with 32; peak RSS 4 MiB more).
const STAT_WALK_BATCHES: usize = 256;
/// Bytes of paths after which a batch of walked entries, of old or of new
/// index entries goes anyway, and the most the walk's batches in flight
/// hold: one path of a deep tree can be hundreds of kilobytes, and 8,192 of
/// them would be gigabytes.
pub(crate) const BATCH_PATH_BYTES: usize = 1 << 20;
const WALK_PATH_BYTES: u64 = 8 << 20;

/// The bytes of paths the walk has sent and the writer not yet taken.
#[derive(Default)]
struct PathBudget {
    used: Mutex<u64>,
    freed: std::sync::Condvar,
}

impl PathBudget {
    /// Waits until `n` more bytes fit in [`WALK_PATH_BYTES`] (a batch always
    /// goes when nothing else is in flight); false once the backup stops.
    fn take(&self, n: u64, shared: &Shared) -> bool {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        while *used > 0 && *used + n > WALK_PATH_BYTES {
            if shared.should_stop() {
                return false;
            }
            used = self
                .freed
                .wait_timeout(used, Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        *used += n;
        true
    }

    fn give(&self, n: u64) {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        *used = used.saturating_sub(n);
        self.freed.notify_all();
    }
}

/// Runs the walk on its own thread, so that listing directories and opening
/// files overlaps reading them. The channel's bound also bounds the open
/// files waiting to be read.
fn walk_ahead(
    mut walker: TreeWalker<'_>,
    tx: SyncSender<Walked>,
    shared: &Shared,
    budget: &PathBudget,
) {
    let mut batch = Vec::with_capacity(WALK_BATCH);
    let (mut batch_bytes, mut path_bytes) = (0u64, 0usize);
    loop {
        if shared.should_stop() {
            return;
        }
        let last = match walker.next_item() {
            Ok(Some(item)) => {
                batch_bytes += item
                    .file
                    .as_ref()
                    .map_or(0, |(_, st)| st.st_size.max(0) as u64);
                path_bytes += item.meta.path.len() + item.meta.kind.link_len();
                batch.push(item);
                if batch.len() < WALK_BATCH
                    && batch_bytes < WALK_BATCH_BYTES
                    && path_bytes < BATCH_PATH_BYTES
                {
                    continue;
                }
                None
            }
            Ok(None) => {
                let skipped = std::mem::take(&mut walker.skipped);
                Some(Walked::End(skipped, walker.skipped_count))
            }
            // Stopped by a cancel or an error elsewhere: that is the error.
            Err(_) if shared.should_stop() => return,
            Err(e) => Some(Walked::Failed(e)),
        };
        if !batch.is_empty() {
            let items = std::mem::replace(&mut batch, Vec::with_capacity(WALK_BATCH));
            let paths = std::mem::take(&mut path_bytes) as u64;
            batch_bytes = 0;
            if !budget.take(paths, shared) || tx.send(Walked::Items(items, paths)).is_err() {
                return;
            }
        }
        if let Some(msg) = last {
            let _ = tx.send(msg);
            return;
        }
    }
}

struct Producer<'a> {
    walked: Receiver<Walked>,
    budget: &'a PathBudget,
    /// The rest of the last batch from the walk, in reverse order.
    pending: Vec<WalkItem>,
    block: Block,
    job_tx: Option<SyncSender<Block>>,
    free_rx: Receiver<Vec<u8>>,
    shared: &'a Shared,
    counters: &'a Counters,
    summary: ArchiveSummary,
    /// Where the index's entries go (`None` once its thread stopped: the
    /// archive goes on without it).
    index: Option<IndexBatches>,
    /// The previous archive's index, when its members may be reused.
    previous: Option<Previous>,
    reading: &'a Reading<'a>,
    /// The old member the current block may turn out to repeat.
    tentative: Option<Tentative>,
}

/// The index's entries on their way to its thread, in batches.
struct IndexBatches {
    tx: SyncSender<Vec<index::Entry>>,
    batch: Vec<index::Entry>,
    /// Bytes of the batch's paths.
    path_bytes: usize,
}

/// Entries per batch for the index's thread, and batches in flight.
const INDEX_BATCH: usize = 256;
const INDEX_BATCHES: usize = 8;

/// The index's thread: writes the entries it is sent, in order, and
/// returns the writer (or why it stopped, after which it only drains).
fn write_index_entries(
    mut writer: IndexWriter<std::fs::File>,
    batches: Receiver<Vec<index::Entry>>,
) -> Result<IndexWriter<std::fs::File>> {
    let mut failed = None;
    for batch in batches.iter() {
        if failed.is_none() {
            failed = batch.iter().find_map(|e| writer.entry(e).err());
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(writer),
    }
}

/// What the workers share to fill blocks: how to open and read files the
/// walk did not open, the previous archive, and what they found.
struct Reading<'a> {
    /// The server directory, for files opened by path (a reusing backup).
    beneath: Option<&'a safe_fs::Beneath>,
    /// The previous archive, whose members a block may repeat.
    old: Option<&'a OldArchive>,
    counters: &'a Counters,
    changed: Mutex<Changed>,
    /// Deferred files holding an open handle, across all blocks in flight.
    open_fds: AtomicUsize,
    /// Members copied from the previous archive, and their bytes.
    reused: [AtomicU64; 2],
}

/// Files that changed while they were read: the first `MAX_LISTED` paths,
/// and how many.
#[derive(Default)]
struct Changed {
    paths: Vec<Vec<u8>>,
    count: u64,
    /// Large files read in pieces, each noted once.
    pieces: std::collections::HashSet<Vec<u8>>,
}

impl Changed {
    fn note(&mut self, path: &[u8], piece: bool) {
        if piece && !self.pieces.insert(path.to_vec()) {
            return;
        }
        self.count += 1;
        if self.paths.len() < MAX_LISTED {
            self.paths.push(path.to_vec());
        }
    }
}

/// File bytes whose place in a block is kept but which are not read yet:
/// `size` bytes from byte `offset` of the file at `at` in the block, then
/// `zeros` bytes of padding.
struct Deferred {
    path: Vec<u8>,
    /// The file, when it was opened already (a large file's pieces share
    /// it); otherwise it is opened by path.
    fd: Option<Arc<OwnedFd>>,
    /// Whether it counts in `Reading::open_fds` (a small file's handle).
    counted: bool,
    /// What it was when walked: a file that differs once read has changed.
    before: StatKey,
    at: usize,
    offset: u64,
    size: usize,
    zeros: usize,
    /// Part of a large file (read in several pieces).
    piece: bool,
}

/// Deferred files holding an open handle at once (in all blocks in
/// flight); beyond it, files are read as they come.
const MAX_OPEN_DEFERRED: usize = 128;

/// An old one-member run that the block being filled may repeat: it does if
/// the block ends up holding exactly the run's entries.
struct Tentative {
    run: Run,
    /// Entries of the block so far.
    next: usize,
    /// Whether each of them was the run's entry at its place and was read
    /// without changing.
    ok: bool,
}

/// Whether the file read through `fd` (from `before`'s walk) changed: its
/// size or modification time differ, or it is another file.
fn differs(fd: &OwnedFd, before: &StatKey) -> bool {
    match rustix::fs::fstat(fd.as_fd()) {
        Ok(after) => {
            let after = StatKey::of(&after);
            after.size != before.size
                || after.mtime_ns != before.mtime_ns
                || (after.dev, after.ino) != (before.dev, before.ino)
        }
        Err(_) => false,
    }
}

impl Reading<'_> {
    /// Reads a block's deferred file bytes into their places (a file that
    /// shrank is padded with zeros, one that grew is cut, and both are
    /// noted as changed).
    fn fill(&self, block: &mut Block) -> Result<()> {
        for mut d in std::mem::take(&mut block.deferred) {
            if d.size == 0 && d.fd.is_none() {
                // Nothing of it to read (an empty file): not opened again.
                block.buf[d.at..d.at + d.zeros].fill(0);
                continue;
            }
            if d.counted {
                self.open_fds.fetch_sub(1, Ordering::Relaxed);
            }
            let fd = match d.fd.take() {
                Some(fd) => Some(fd),
                // Gone, unreadable or replaced since the walk: its place
                // stays zeros.
                None => self
                    .beneath
                    .and_then(|b| open_walked(b, &d.path).ok().flatten())
                    .map(Arc::new),
            };
            let place = &mut block.buf[d.at..d.at + d.size + d.zeros];
            let (read, changed) = match fd {
                Some(fd) => read_at(&fd, &d, &mut place[..d.size])?,
                None => (0, true),
            };
            place[read..].fill(0);
            self.counters.add_bytes(read as u64);
            if changed {
                if let Ok(mut log) = self.changed.lock() {
                    log.note(&d.path, d.piece);
                }
            }
        }
        Ok(())
    }

    /// The handles of deferred files not read after all are closed.
    fn skip(&self, block: &mut Block) -> u64 {
        let mut bytes = 0;
        for d in block.deferred.drain(..) {
            if d.counted {
                self.open_fds.fetch_sub(1, Ordering::Relaxed);
            }
            bytes += d.size as u64;
        }
        bytes
    }
}

/// Opens the file the walk only stat'ed at `path`, beneath the root:
/// `Ok(None)` if it is now anything but a regular file (it was replaced).
fn open_walked(
    beneath: &safe_fs::Beneath,
    path: &[u8],
) -> std::result::Result<Option<OwnedFd>, Errno> {
    let fd = beneath.open_file(path)?;
    let st = rustix::fs::fstat(fd.as_fd())?;
    Ok((safe_fs::file_type(&st) == rustix::fs::FileType::RegularFile).then_some(fd))
}

/// Reads `d.size` bytes of `fd` from `d.offset` into `buf`; returns how
/// many were read and whether the file changed.
fn read_at(fd: &OwnedFd, d: &Deferred, buf: &mut [u8]) -> Result<(usize, bool)> {
    let mut pos = 0;
    while pos < buf.len() {
        match rustix::io::pread(fd, &mut buf[pos..], d.offset + pos as u64) {
            Ok(0) => return Ok((pos, true)),
            Ok(n) => pos += n,
            Err(Errno::INTR) | Err(Errno::AGAIN) => {}
            Err(e) => return Err(Error::os(format!("reading {}", quote(&d.path)), e)),
        }
    }
    Ok((pos, differs(fd, &d.before)))
}

impl Producer<'_> {
    /// The next walked entry (`None` at the end), reporting progress while
    /// waiting for the walk.
    fn next_item(&mut self, ctl: &mut Control<'_>) -> Result<Option<WalkItem>> {
        loop {
            if let Some(item) = self.pending.pop() {
                return Ok(Some(item));
            }
            match self.walked.recv_timeout(Duration::from_millis(100)) {
                Ok(Walked::Items(mut items, paths)) => {
                    self.budget.give(paths);
                    items.reverse();
                    self.pending = items;
                }
                Ok(Walked::End(skipped, count)) => {
                    self.summary.skipped.extend(skipped);
                    self.summary.skipped.truncate(MAX_LISTED);
                    self.summary.skipped_count += count;
                    return Ok(None);
                }
                Ok(Walked::Failed(e)) => return Err(e),
                Err(RecvTimeoutError::Timeout) => ctl.tick(Phase::Archive, self.counters)?,
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(self
                        .shared
                        .take_error()
                        .unwrap_or_else(|| Error::internal("the tree walk stopped")))
                }
            }
        }
    }

    /// Opens a file the walk only stat'ed, as the walk would have: one that
    /// vanished or was replaced is left out, one that cannot be opened is
    /// left out and listed as skipped.
    fn open_walked(&mut self, path: &[u8]) -> Option<OwnedFd> {
        match open_walked(self.reading.beneath?, path) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => None,
            Err(e) => {
                self.summary.skipped_count += 1;
                if self.summary.skipped.len() < MAX_LISTED {
                    self.summary.skipped.push(Skipped {
                        path: path.to_vec(),
                        reason: format!("cannot read: {}", std::io::Error::from(e)),
                    });
                }
                None
            }
        }
    }

    fn run(&mut self, ctl: &mut Control<'_>) -> Result<ArchiveSummary> {
        self.block.buf = self.take_buffer(ctl)?;
        let mut header_buf = Vec::with_capacity(3 * header::BLOCK);
        while let Some(item) = self.next_item(ctl)? {
            ctl.tick(Phase::Archive, self.counters)?;
            if self.shared.should_stop() {
                return Err(self.shared.take_error().unwrap_or_else(Error::cancelled));
            }
            header_buf.clear();
            header::encode(&item.meta, &mut header_buf);
            let is_file = item.meta.kind == Kind::File;
            let large = reuse::is_large(is_file, item.meta.size);
            let data = if is_file {
                item.meta.size + header::padding(item.meta.size) as u64
            } else {
                0
            };
            if reuse::cut_before(self.block.len, header_buf.len() as u64 + data, large) {
                self.cut(ctl)?;
            }
            let mut entry = index::Entry::from_meta(&item.meta, Some(item.stat));
            entry.header_len = header_buf.len() as u32;
            let mut large_run = None;
            if self.block.len == 0 {
                if let Some(run) = self.previous.as_mut().and_then(|p| p.run_at(&entry.path)) {
                    if large {
                        large_run = Some(run).filter(|r| large_run_fits(r, &entry));
                    } else if run.members.len() == 1 {
                        self.tentative = Some(Tentative {
                            run,
                            next: 0,
                            ok: true,
                        });
                    }
                }
            }
            if let Some(t) = &mut self.tentative {
                t.ok = t.ok
                    && t.run
                        .entries
                        .get(t.next)
                        .is_some_and(|old| reuse::same_entry(&entry, old));
                t.next += 1;
            }
            // A file the walk only stat'ed: unless its bytes may come from
            // the previous archive, it is opened now, so that one that
            // cannot be read is left out as any backup leaves it out.
            let mut file = item.file.map(|(fd, st)| (Some(fd), StatKey::of(&st)));
            if is_file && file.is_none() {
                let may_reuse = if large {
                    large_run.is_some()
                } else {
                    self.tentative.as_ref().is_some_and(|t| t.ok)
                };
                if may_reuse {
                    file = Some((None, item.stat));
                } else {
                    match self.open_walked(&item.meta.path) {
                        Some(fd) => file = Some((Some(fd), item.stat)),
                        None => {
                            if let Some(t) = &mut self.tentative {
                                t.ok = false;
                            }
                            continue;
                        }
                    }
                }
            }
            self.index_entry(entry);
            if let Some((fd, before)) = file {
                let changed = match large_run {
                    Some(run) => {
                        let old = Some(run.members.as_slice());
                        self.ship_large(&item.meta, &header_buf, None, before, old, ctl)?;
                        false
                    }
                    // A reusing backup's walk opened nothing: its large
                    // files are read by the workers, piece by piece.
                    None if large && self.reading.beneath.is_some() => {
                        let fd = fd.map(Arc::new);
                        self.ship_large(&item.meta, &header_buf, fd, before, None, ctl)?;
                        false
                    }
                    None => {
                        self.put(&header_buf, ctl)?;
                        // A first backup reads as it goes (handing files to
                        // the workers measured no faster, and cost about
                        // 0.1 CPU s more system time on corpus (a)); a
                        // reusing one lets the workers read what a block
                        // turns out to need.
                        let may_defer = self.reading.beneath.is_some()
                            && !large
                            && self.reading.open_fds.load(Ordering::Relaxed) < MAX_OPEN_DEFERRED;
                        match fd {
                            // Not opened: a small file whose bytes the old
                            // member may hold.
                            None => {
                                self.defer_file(&item.meta, None, before);
                                false
                            }
                            Some(fd) if may_defer => {
                                self.defer_file(&item.meta, Some(fd), before);
                                false
                            }
                            Some(fd) => self.copy_file(&item.meta, fd, before, ctl)?,
                        }
                    }
                };
                if changed {
                    if let Some(t) = &mut self.tentative {
                        t.ok = false;
                    }
                }
                self.summary.files += 1;
            } else {
                self.put(&header_buf, ctl)?;
            }
            self.summary.entries += 1;
            self.counters.add_entries(1);
            if reuse::cut_after(self.block.len, &item.meta.path, large) {
                self.cut(ctl)?;
            }
        }
        self.cut(ctl)?;
        header_buf.clear();
        header::end_of_archive(&mut header_buf);
        self.put(&header_buf, ctl)?;
        if self.block.len > 0 {
            self.ship(ctl, false, None)?;
        }
        ctl.tick(Phase::Archive, self.counters)?;
        Ok(std::mem::take(&mut self.summary))
    }

    /// Records `entry` (its headers are put next) in the index.
    fn index_entry(&mut self, mut entry: index::Entry) {
        let Some(batches) = &mut self.index else {
            return;
        };
        // A full block is shipped before the next byte goes in.
        let (member, offset) = if self.block.len == BLOCK_SIZE {
            (self.block.seq + 1, 0)
        } else {
            (self.block.seq, self.block.len)
        };
        entry.member = member as u32;
        entry.offset = offset as u32;
        batches.path_bytes += entry.path.len() + entry.link.len();
        batches.batch.push(entry);
        if batches.batch.len() == INDEX_BATCH || batches.path_bytes >= BATCH_PATH_BYTES {
            batches.path_bytes = 0;
            let full = std::mem::replace(&mut batches.batch, Vec::with_capacity(INDEX_BATCH));
            if batches.tx.send(full).is_err() {
                self.index = None;
            }
        }
    }

    /// A free block buffer, waiting for one while checking for stops.
    fn take_buffer(&mut self, ctl: &mut Control<'_>) -> Result<Vec<u8>> {
        loop {
            match self.free_rx.recv_timeout(Duration::from_millis(50)) {
                Ok(buf) => return Ok(buf),
                Err(RecvTimeoutError::Timeout) => {
                    ctl.tick(Phase::Archive, self.counters)?;
                    if self.shared.should_stop() {
                        return Err(self.shared.take_error().unwrap_or_else(Error::cancelled));
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(self
                        .shared
                        .take_error()
                        .unwrap_or_else(|| Error::internal("compression workers stopped")))
                }
            }
        }
    }

    /// Keeps room in the block for a small file's data and padding (which
    /// fit: a small entry never crosses a block), to be read by a worker
    /// unless the block repeats an old member.
    fn defer_file(&mut self, meta: &EntryMeta, fd: Option<OwnedFd>, before: StatKey) {
        let counted = fd.is_some();
        if counted {
            self.reading.open_fds.fetch_add(1, Ordering::Relaxed);
        }
        let size = meta.size as usize;
        let zeros = header::padding(meta.size);
        self.block.deferred.push(Deferred {
            path: meta.path.clone(),
            fd: fd.map(Arc::new),
            counted,
            before,
            at: self.block.len,
            offset: 0,
            size,
            zeros,
            piece: false,
        });
        self.block.len += size + zeros;
    }

    /// Ends the current member, if it holds anything.
    fn cut(&mut self, ctl: &mut Control<'_>) -> Result<()> {
        if self.block.len > 0 {
            self.ship(ctl, true, None)?;
        }
        Ok(())
    }

    /// Ships a large file as the blocks this layout cuts it into (1 MiB of
    /// tar each, counted from its first header byte; the block is empty when
    /// it starts). Each block holds the file's headers (the first) and keeps
    /// the places of its bytes, which a worker reads (through `fd`, or by
    /// path) unless the block repeats an old member: with `old`, the run of
    /// old members that held the same file, the worker copies each one
    /// (checked) instead, and reads only for a member that fails the check.
    fn ship_large(
        &mut self,
        meta: &EntryMeta,
        header: &[u8],
        fd: Option<Arc<OwnedFd>>,
        before: StatKey,
        old: Option<&[index::Member]>,
        ctl: &mut Control<'_>,
    ) -> Result<()> {
        let h = header.len() as u64;
        let data_end = h + meta.size;
        let total = data_end + header::padding(meta.size) as u64;
        let pieces = total.div_ceil(BLOCK_SIZE as u64);
        for k in 0..pieces {
            // Tar bytes [start, end) of the entry: headers, data, padding.
            let start = k * BLOCK_SIZE as u64;
            let end = total.min(start + BLOCK_SIZE as u64);
            if start < h {
                let upto = h.min(end);
                self.block.buf[..(upto - start) as usize]
                    .copy_from_slice(&header[start as usize..upto as usize]);
            }
            let from = start.max(h);
            let size = end.min(data_end).saturating_sub(from);
            self.block.deferred.push(Deferred {
                path: meta.path.clone(),
                fd: fd.clone(),
                counted: false,
                before,
                at: (from - start) as usize,
                offset: from - h,
                size: size as usize,
                zeros: (end - from - size) as usize,
                piece: true,
            });
            self.block.len = (end - start) as usize;
            self.tentative = None;
            let member = old.and_then(|members| members.get(k as usize)).copied();
            self.ship(ctl, true, member)?;
            ctl.tick(Phase::Archive, self.counters)?;
        }
        Ok(())
    }

    /// Sends the current block to the compressors and starts a new one. The
    /// block carries the old member it repeats, if it does: `old`, or the
    /// tentative run's member when the block holds exactly its entries.
    fn ship(
        &mut self,
        ctl: &mut Control<'_>,
        need_next: bool,
        old: Option<index::Member>,
    ) -> Result<()> {
        let old = old.or(match self.tentative.take() {
            Some(t)
                if t.ok
                    && t.next == t.run.entries.len()
                    && t.run.members[0].uncompressed == self.block.len as u64 =>
            {
                Some(t.run.members[0])
            }
            _ => None,
        });
        let next = if need_next {
            self.take_buffer(ctl)?
        } else {
            Vec::new()
        };
        let seq = self.block.seq;
        let mut block = std::mem::replace(&mut self.block, Block::new(seq + 1, next));
        block.old = old;
        let sent = self
            .job_tx
            .as_ref()
            .is_some_and(|tx| tx.send(block).is_ok());
        match sent {
            true => Ok(()),
            false => Err(self
                .shared
                .take_error()
                .unwrap_or_else(|| Error::internal("compression workers stopped"))),
        }
    }

    fn put(&mut self, mut bytes: &[u8], ctl: &mut Control<'_>) -> Result<()> {
        while !bytes.is_empty() {
            if self.block.len == BLOCK_SIZE {
                self.ship(ctl, true, None)?;
            }
            let n = bytes.len().min(BLOCK_SIZE - self.block.len);
            self.block.buf[self.block.len..self.block.len + n].copy_from_slice(&bytes[..n]);
            self.block.len += n;
            bytes = &bytes[n..];
        }
        Ok(())
    }

    fn put_zeros(&mut self, mut n: u64, ctl: &mut Control<'_>) -> Result<()> {
        while n > 0 {
            if self.block.len == BLOCK_SIZE {
                self.ship(ctl, true, None)?;
            }
            let k = (n as usize).min(BLOCK_SIZE - self.block.len);
            self.block.buf[self.block.len..self.block.len + k].fill(0);
            self.block.len += k;
            n -= k as u64;
        }
        Ok(())
    }

    /// Copies exactly `meta.size` bytes of an open file into the stream: a
    /// file that shrank is padded with zeros, one that grew is cut, and
    /// both are noted as changed (and `true` returned).
    fn copy_file(
        &mut self,
        meta: &EntryMeta,
        fd: OwnedFd,
        before: StatKey,
        ctl: &mut Control<'_>,
    ) -> Result<bool> {
        let mut remaining = meta.size;
        let mut changed = false;
        let mut since_tick = 0u64;
        while remaining > 0 {
            if self.block.len == BLOCK_SIZE {
                self.ship(ctl, true, None)?;
            }
            let room = ((BLOCK_SIZE - self.block.len) as u64).min(remaining) as usize;
            let start = self.block.len;
            let n = match rustix::io::read(&fd, &mut self.block.buf[start..start + room]) {
                Ok(n) => n,
                Err(Errno::INTR) | Err(Errno::AGAIN) => continue,
                Err(e) => {
                    return Err(Error::os(format!("reading {}", quote(&meta.path)), e));
                }
            };
            if n == 0 {
                changed = true;
                break;
            }
            self.block.len += n;
            remaining -= n as u64;
            self.counters.add_bytes(n as u64);
            since_tick += n as u64;
            if since_tick >= 8 << 20 {
                since_tick = 0;
                ctl.tick(Phase::Archive, self.counters)?;
            }
        }
        self.put_zeros(remaining + header::padding(meta.size) as u64, ctl)?;
        if !changed {
            changed = differs(&fd, &before);
        }
        if changed {
            if let Ok(mut log) = self.reading.changed.lock() {
                log.note(&meta.path, false);
            }
        }
        Ok(changed)
    }
}

/// Whether an old large file's run has the members this layout makes of
/// `entry`: full blocks counted from its header, then the rest.
fn large_run_fits(run: &Run, entry: &index::Entry) -> bool {
    let [old] = run.entries.as_slice() else {
        return false;
    };
    let total = old.tar_len();
    reuse::same_entry(entry, old)
        && run.members.len() as u64 == total.div_ceil(BLOCK_SIZE as u64)
        && run.members.iter().enumerate().all(|(k, m)| {
            m.uncompressed == (total - k as u64 * BLOCK_SIZE as u64).min(BLOCK_SIZE as u64)
        })
}

fn compress_worker(
    level: CompressionLevel,
    jobs: &Mutex<Receiver<Block>>,
    members: SyncSender<Member>,
    spare_members: &Mutex<Vec<Vec<u8>>>,
    shared: &Shared,
    reading: &Reading<'_>,
) {
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(mut block) = job else { return };
        if shared.should_stop() {
            reading.skip(&mut block);
            return;
        }
        let mut out = spare_members
            .lock()
            .ok()
            .and_then(|mut v| v.pop())
            .unwrap_or_default();
        // A block that repeats an old member: the member, read and checked,
        // or (any doubt) the block's own bytes, read and compressed.
        let copied = match (block.old.take(), reading.old) {
            (Some(m), Some(old)) if old.read_member(&m, &mut out) => Some(m),
            _ => None,
        };
        let place = copied.map(|m| OldPlace {
            offset: m.offset,
            sha1_state: m.sha1_state,
            checksum: m.checksum,
        });
        let len = match copied {
            Some(m) => {
                let bytes = reading.skip(&mut block);
                reading.counters.add_bytes(bytes);
                reading.reused[0].fetch_add(1, Ordering::Relaxed);
                reading.reused[1].fetch_add(m.compressed, Ordering::Relaxed);
                m.compressed as usize
            }
            None => {
                let encoded = reading
                    .fill(&mut block)
                    .and_then(|()| gzip::encode_member(level, &block.buf[..block.len], &mut out));
                match encoded {
                    Ok(len) => len,
                    Err(e) => {
                        shared.fail(e);
                        return;
                    }
                }
            }
        };
        if members
            .send(Member {
                seq: block.seq,
                raw_len: block.len,
                buf: out,
                len,
                block: block.buf,
                old: place,
            })
            .is_err()
        {
            return;
        }
    }
}

/// Where the writer puts the archive: the file, and the previous archive
/// when copied members are copied by the kernel (with the block size in
/// which the file system shares extents).
struct Output<'a> {
    file: &'a mut std::fs::File,
    kernel: Option<(&'a OldArchive, u64)>,
}

impl Output<'_> {
    /// Appends `member`. A member copied from the previous archive is, where
    /// it may be, copied by the kernel: the whole blocks it spans when it
    /// starts at the same offset within a block as it did there (the only
    /// ranges whose extents can be shared), the rest from its bytes, which
    /// the workers checked. The kernel copies the old file as it is then,
    /// so its copy is kept only if the old archive has not changed since it
    /// was opened; otherwise the checked bytes are written over it.
    fn append(&mut self, member: &Member) -> std::io::Result<()> {
        use std::io::{Seek, SeekFrom};
        use std::os::unix::fs::FileExt;
        let bytes = member.bytes();
        let (Some((old, block)), Some(place)) = (self.kernel, &member.old) else {
            return self.file.write_all(bytes);
        };
        let at = self.file.stream_position()?;
        let len = bytes.len() as u64;
        // [start, start + body): the member's whole blocks, in both files.
        let start = (block - at % block) % block;
        let body = if at % block == place.offset % block && start < len {
            (len - start) / block * block
        } else {
            0
        };
        let (start, body) = (start as usize, body as usize);
        if body == 0 {
            self.file.write_all_at(bytes, at)?;
        } else {
            self.file.write_all_at(&bytes[..start], at)?;
            let from = place.offset + start as u64;
            let copied = old.copy_range(self.file, from, at + start as u64, body);
            let done = start + copied;
            self.file.write_all_at(&bytes[done..], at + done as u64)?;
            if copied > 0 && !old.unchanged() {
                self.file
                    .write_all_at(&bytes[start..done], at + start as u64)?;
            }
        }
        self.file.seek(SeekFrom::Start(at + len))?;
        Ok(())
    }
}

/// Puts members in order and writes them, while a second thread hashes
/// them (SHA-1 of the archive, computed as it is written, never re-read)
/// and records where each is for the index; returns (sha1 hex, size,
/// members).
fn write_members(
    members: Receiver<Member>,
    out: Output<'_>,
    limit: u64,
    pools: Pools<'_>,
    shared: &Shared,
    counters: &Counters,
) -> Result<(String, u64, Vec<index::Member>)> {
    let (hash_tx, hash_rx) = mpsc::sync_channel::<Member>(4);
    std::thread::scope(|s| {
        let hasher = s.spawn(move || {
            let mut sha = ArchiveHasher::new();
            let mut placed: Vec<index::Member> = Vec::new();
            let (mut offset, mut tar_offset) = (0u64, 0u64);
            for member in hash_rx.iter() {
                let hashed = sha.add(member.bytes(), member.old.as_ref());
                placed.push(index::Member {
                    offset,
                    compressed: member.len as u64,
                    uncompressed: member.raw_len as u64,
                    tar_offset,
                    checksum: hashed.checksum,
                    sha1_state: Some(hashed.sha1_state),
                });
                offset += member.len as u64;
                tar_offset += member.raw_len as u64;
                let _ = pools.free_blocks.try_send(member.block);
                if let Ok(mut spare) = pools.spare_members.lock() {
                    spare.push(member.buf);
                }
            }
            (hex(&sha.finish()), placed)
        });
        let written = write_in_order(members, out, limit, hash_tx, shared, counters);
        let (sha1, placed) = hasher
            .join()
            .map_err(|_| Error::internal("archive hashing thread panicked"))?;
        Ok((sha1, written?, placed))
    })
}

fn write_in_order(
    members: Receiver<Member>,
    mut out: Output<'_>,
    limit: u64,
    hash_tx: SyncSender<Member>,
    shared: &Shared,
    counters: &Counters,
) -> Result<u64> {
    let mut pending: BTreeMap<u64, Member> = BTreeMap::new();
    let mut next = 0u64;
    let mut size = 0u64;
    let mut rate = RateLimit::new(limit);
    let fail = |e: Error| {
        shared.fail(e.clone());
        e
    };
    for member in members.iter() {
        pending.insert(member.seq, member);
        while let Some(member) = pending.remove(&next) {
            if shared.should_stop() {
                return Err(shared.take_error().unwrap_or_else(Error::cancelled));
            }
            out.append(&member)
                .map_err(|e| fail(Error::io("writing the archive", e)))?;
            size += member.len as u64;
            counters.add_archive_bytes(member.len as u64);
            next += 1;
            rate.consume(member.len as u64, shared);
            if hash_tx.send(member).is_err() {
                return Err(fail(Error::internal("archive hashing thread stopped")));
            }
        }
    }
    if !pending.is_empty() {
        return Err(shared
            .take_error()
            .unwrap_or_else(|| Error::internal("archive blocks went missing")));
    }
    out.file
        .flush()
        .map_err(|e| fail(Error::io("writing the archive", e)))?;
    Ok(size)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Total size of the files a walk will archive, from a stat-only pass, for
/// progress. `None` if the pass was stopped or failed.
fn scan_total(
    root: OwnedFd,
    ignore: &IgnoreRules,
    exclude: &[(u64, u64)],
    shared: &Shared,
) -> Option<u64> {
    use rustix::fs::FileType;
    let mut total = 0u64;
    let mut stack: DirStack<(Listing, usize, Vec<u8>)> = DirStack::default();
    let listing = Listing::read(root.as_fd()).ok()?;
    stack.push(
        c".".to_owned(),
        safe_fs::open_dir(root.as_fd(), c".").ok()?,
        (listing, 0, Vec::new()),
    );
    while !stack.is_empty() {
        if shared.should_stop() {
            return None;
        }
        let depth = stack.len();
        let frame = stack.top_mut()?;
        let (listing, next, prefix) = &mut frame.data;
        if *next >= listing.len() {
            stack.pop();
            continue;
        }
        let (name, ty) = listing.get(*next);
        *next += 1;
        let name = name.to_owned();
        if depth == 1 && name.to_bytes().starts_with(safe_fs::RESERVED_PREFIX) {
            continue;
        }
        let mut rel = prefix.clone();
        rel.extend_from_slice(name.to_bytes());
        let dir = stack.take_top_fd(root.as_fd()).ok()?;
        let ty = match ty {
            FileType::Unknown => safe_fs::lstat_at(dir.as_fd(), name.as_c_str())
                .map(|st| safe_fs::file_type(&st))
                .unwrap_or(FileType::Unknown),
            ty => ty,
        };
        let mut descend = None;
        match ty {
            FileType::RegularFile if !ignore.matches(&rel, false) => {
                if let Ok(st) = safe_fs::lstat_at(dir.as_fd(), name.as_c_str()) {
                    if !exclude.contains(&(st.st_dev, st.st_ino)) {
                        total += st.st_size as u64;
                    }
                }
            }
            FileType::Directory if !ignore.matches(&rel, true) => {
                if let Ok(fd) = safe_fs::open_dir(dir.as_fd(), name.as_c_str()) {
                    if let Ok(listing) = Listing::read(fd.as_fd()) {
                        rel.push(b'/');
                        descend = Some((fd, listing, rel));
                    }
                }
            }
            _ => {}
        }
        stack.put_top_fd(dir);
        if let Some((fd, listing, rel)) = descend {
            stack.push(name, fd, (listing, 0, rel));
        }
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A block of 1 KiB (filled with 0xAA) whose first 512 bytes wait for
    /// the 8 bytes of `path` and their padding.
    fn block_for(path: &[u8], before: StatKey) -> Block {
        let mut block = Block::new(0, vec![0xAA; 1024]);
        block.len = 1024;
        block.deferred.push(Deferred {
            path: path.to_vec(),
            fd: None,
            counted: false,
            before,
            at: 0,
            offset: 0,
            size: 8,
            zeros: 504,
            piece: false,
        });
        block
    }

    #[test]
    fn a_kernel_copy_is_kept_only_while_the_old_archive_is_unchanged() {
        use std::io::{Read, Seek};
        use std::os::unix::fs::FileExt;
        let base = std::env::temp_dir().join(format!("wb-kcopy-{}", safe_fs::nonce()));
        std::fs::create_dir_all(&base).unwrap();
        let old_path = base.join("old");
        let checked: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let prefix = vec![b'p'; 100];
        std::fs::write(&old_path, [&prefix[..], &checked].concat()).unwrap();
        let old = OldArchive::from_file(std::fs::File::open(&old_path).unwrap());
        let member = Member {
            seq: 0,
            raw_len: 0,
            buf: checked.clone(),
            len: checked.len(),
            block: Vec::new(),
            old: Some(OldPlace {
                offset: 100,
                sha1_state: None,
                checksum: 0,
            }),
        };
        let read_all = |f: &mut std::fs::File| {
            let mut v = Vec::new();
            f.rewind().unwrap();
            f.read_to_end(&mut v).unwrap();
            v
        };
        let mut out = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(base.join("new"))
            .unwrap();
        let append = |out: &mut std::fs::File, block: u64| {
            Output {
                file: out,
                kernel: Some((&old, block)),
            }
            .append(&member)
            .unwrap()
        };

        // At the same offset within a block as in the old archive: the
        // kernel copies the whole blocks, the rest is written.
        out.write_all(&prefix).unwrap();
        assert!(old.unchanged());
        append(&mut out, 4096);
        assert_eq!(read_all(&mut out), [&prefix[..], &checked].concat());
        // Not at the same offset within a block: written.
        out.seek(std::io::SeekFrom::End(0)).unwrap();
        out.write_all(b"x").unwrap();
        append(&mut out, 4096);
        let mut want = [&prefix[..], &checked, b"x", &checked].concat();
        assert_eq!(read_all(&mut out), want);

        // The old archive is written to after its bytes were checked: what
        // the kernel copies then is not kept, the checked bytes are.
        let writer = std::fs::OpenOptions::new()
            .write(true)
            .open(&old_path)
            .unwrap();
        writer.write_all_at(b"CHANGED", 5000).unwrap();
        assert!(!old.unchanged());
        out.seek(std::io::SeekFrom::End(0)).unwrap();
        out.write_all(&[b'y'; 99]).unwrap();
        let at = out.stream_position().unwrap();
        assert_eq!(at % 4, 100 % 4);
        append(&mut out, 4);
        want.extend_from_slice(&[b'y'; 99]);
        want.extend_from_slice(&checked);
        assert_eq!(read_all(&mut out), want);
        assert_eq!(out.stream_position().unwrap(), want.len() as u64);
        std::fs::remove_dir_all(&base).unwrap();
    }

    fn key(path: &std::path::Path) -> StatKey {
        StatKey::of(&rustix::fs::lstat(path).unwrap())
    }

    #[test]
    fn a_file_read_by_path_is_read_beneath_the_root_only() {
        let base = std::env::temp_dir().join(format!("wb-lazy-{}", safe_fs::nonce()));
        let root = base.join("root");
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::fs::create_dir_all(base.join("outside")).unwrap();
        std::fs::write(base.join("outside/f"), b"secret!!").unwrap();
        std::fs::write(root.join("d/f"), b"original").unwrap();
        std::fs::write(root.join("same"), b"unchangd").unwrap();
        std::fs::write(root.join("fifo-later"), b"12345678").unwrap();
        let (walked, same, fifo) = (
            key(&root.join("d/f")),
            key(&root.join("same")),
            key(&root.join("fifo-later")),
        );
        let beneath = safe_fs::Beneath::new(safe_fs::open_trusted_dir(&root).unwrap());
        let counters = Counters::default();
        let reading = Reading {
            beneath: Some(&beneath),
            old: None,
            counters: &counters,
            changed: Mutex::default(),
            open_fds: AtomicUsize::new(0),
            reused: [AtomicU64::new(0), AtomicU64::new(0)],
        };

        // Unchanged since the walk: read, not noted.
        let mut block = block_for(b"same", same);
        reading.fill(&mut block).unwrap();
        assert_eq!(&block.buf[..8], b"unchangd");
        assert!(block.buf[8..512].iter().all(|&b| b == 0));
        assert!(block.buf[512..].iter().all(|&b| b == 0xAA));

        // After the walk, the directory became a link to outside the root:
        // nothing outside is read; the place is zeros and the file changed.
        std::fs::rename(root.join("d"), root.join("d-old")).unwrap();
        symlink("../outside", root.join("d")).unwrap();
        let mut block = block_for(b"d/f", walked);
        reading.fill(&mut block).unwrap();
        assert!(block.buf[..512].iter().all(|&b| b == 0));

        // A file that became a FIFO is not waited on, nor read.
        std::fs::remove_file(root.join("fifo-later")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.join("fifo-later").as_path(),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let mut block = block_for(b"fifo-later", fifo);
        reading.fill(&mut block).unwrap();
        assert!(block.buf[..512].iter().all(|&b| b == 0));

        // Another file of the same size in its place: read, and noted.
        std::fs::write(root.join("new"), b"replaced").unwrap();
        std::fs::rename(root.join("new"), root.join("same")).unwrap();
        let mut block = block_for(b"same", same);
        reading.fill(&mut block).unwrap();
        assert_eq!(&block.buf[..8], b"replaced");

        let changed = reading.changed.lock().unwrap();
        assert_eq!(changed.count, 3);
        assert_eq!(
            changed.paths,
            [b"d/f".to_vec(), b"fifo-later".to_vec(), b"same".to_vec()]
        );
        drop(changed);
        std::fs::remove_dir_all(&base).unwrap();
    }
}
