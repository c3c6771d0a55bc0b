//! The archive writer: walks a server directory and writes a `.tar.gz` of it.
//!
//! Five stages run at once: a thread walks the tree (lists directories,
//! opens files); the calling thread lays tar headers and file bytes into
//! 1 MiB blocks; `threads` workers compress the
//! blocks into independent gzip members; one thread puts the members back in
//! order, feeds them to SHA-1 and writes them out, at most at the write limit.
//! A fixed pool of blocks bounds memory and makes a fast stage wait for a
//! slow one: a block returns to the pool only once its member is written and
//! hashed, so however the threads are scheduled, no more than the pool's
//! blocks and members exist at once.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Mutex;
use std::time::Duration;

use crate::archive::gzip::{self, BLOCK_SIZE};
use crate::archive::header::{self, EntryMeta, Kind};
use crate::archive::reuse::{self, Previous, Run};
use crate::archive::sha1::{ArchiveHasher, OldPlace};
use crate::archive::walk::{Skipped, TreeWalker, WalkItem, MAX_LISTED};
use crate::config::CompressionLevel;
use crate::error::{quote, Error, Result};
use crate::ignore::IgnoreRules;
use crate::index::{self, IndexWriter};
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
    out: &mut (dyn Write + Send),
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
    out: &mut (dyn Write + Send),
    index: Option<IndexWriter<std::fs::File>>,
    opts: &WriteOptions,
    ctl: &mut Control<'_>,
) -> Result<(ArchiveSummary, IndexOutcome)> {
    let threads = opts.threads.max(1);
    let pool_size = 2 * threads + 4;
    let shared = Shared::default();
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
    let previous = opts.reuse_from.as_deref().and_then(|archive| {
        let expected = index::IndexHeader::new(opts.level.name(), ignore.digest(), BLOCK_SIZE);
        Previous::open(archive, &expected)
    });

    std::thread::scope(|s| {
        let shared = &shared;
        let counters = &counters;
        let spare_members = &spare_members;
        let (walked_tx, walked_rx) = mpsc::sync_channel::<Walked>(WALK_BATCHES);
        s.spawn(move || walk_ahead(walker, walked_tx, shared));
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
            s.spawn(move || compress_worker(level, job_rx, member_tx, spare_members, shared));
        }
        let reused_tx = previous.as_ref().map(|_| member_tx.clone());
        drop(member_tx);
        let (finished_tx, finished_rx) = mpsc::channel::<()>();
        let pools = Pools {
            free_blocks: free_tx,
            spare_members,
        };
        let writer = s.spawn(move || {
            let written = write_members(member_rx, out, opts.write_limit, pools, shared, counters);
            let _ = finished_tx.send(());
            written
        });

        let mut producer = Producer {
            walked: walked_rx,
            pending: Vec::new(),
            block: Block {
                seq: 0,
                buf: Vec::new(),
                len: 0,
            },
            job_tx: Some(job_tx),
            free_rx,
            shared,
            counters,
            summary: ArchiveSummary::default(),
            index: index.map(Ok),
            previous,
            reused_tx,
            spare_members,
            tentative: None,
            deferred: Vec::new(),
        };
        let produced = producer.run(ctl);
        if let Err(e) = &produced {
            shared.fail(e.clone());
        }
        // Closing the job channel lets the workers and then the writer finish;
        // a write limit can make that take a while, so keep reporting (and
        // let a cancel stop the writer) meanwhile.
        producer.job_tx = None;
        producer.reused_tx = None;
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
        let index = match producer.index.take() {
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
    Items(Vec<WalkItem>),
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

/// Runs the walk on its own thread, so that listing directories and opening
/// files overlaps reading them. The channel's bound also bounds the open
/// files waiting to be read.
fn walk_ahead(mut walker: TreeWalker<'_>, tx: SyncSender<Walked>, shared: &Shared) {
    let mut batch = Vec::with_capacity(WALK_BATCH);
    let mut batch_bytes = 0u64;
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
                batch.push(item);
                if batch.len() < WALK_BATCH && batch_bytes < WALK_BATCH_BYTES {
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
            batch_bytes = 0;
            if tx.send(Walked::Items(items)).is_err() {
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
    /// The rest of the last batch from the walk, in reverse order.
    pending: Vec<WalkItem>,
    block: Block,
    job_tx: Option<SyncSender<Block>>,
    free_rx: Receiver<Vec<u8>>,
    shared: &'a Shared,
    counters: &'a Counters,
    summary: ArchiveSummary,
    /// The index being written, or why it stopped (the archive goes on).
    index: Option<Result<IndexWriter<std::fs::File>>>,
    /// The archive whose members may be reused, and where its index is.
    previous: Option<Previous>,
    /// Where reused members go (straight to the writer, in sequence).
    reused_tx: Option<SyncSender<Member>>,
    spare_members: &'a Mutex<Vec<Vec<u8>>>,
    /// The old member the current block may turn out to repeat.
    tentative: Option<Tentative>,
    /// Files of the current block not read yet: while it may repeat an old
    /// member, their bytes are read only if it turns out not to.
    deferred: Vec<Deferred>,
}

/// A small file whose place in the block is kept but whose bytes are not
/// read yet.
struct Deferred {
    path: Vec<u8>,
    fd: OwnedFd,
    before: safe_fs::Stat,
    /// Where its data starts in the block, and its length.
    at: usize,
    size: usize,
}

/// Files deferred at once in one block (each holds an open descriptor).
const MAX_DEFERRED: usize = 128;

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

impl Producer<'_> {
    /// The next walked entry (`None` at the end), reporting progress while
    /// waiting for the walk.
    fn next_item(&mut self, ctl: &mut Control<'_>) -> Result<Option<WalkItem>> {
        loop {
            if let Some(item) = self.pending.pop() {
                return Ok(Some(item));
            }
            match self.walked.recv_timeout(Duration::from_millis(100)) {
                Ok(Walked::Items(mut items)) => {
                    items.reverse();
                    self.pending = items;
                }
                Ok(Walked::End(skipped, count)) => {
                    self.summary.skipped = skipped;
                    self.summary.skipped_count = count;
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
            self.index_entry(entry);
            if let Some((fd, before)) = item.file {
                let changed = match large_run {
                    Some(run) => {
                        self.reuse_large(&item.meta, &run, &header_buf, fd, before, ctl)?
                    }
                    None => {
                        self.put(&header_buf, ctl)?;
                        let may_defer = !large
                            && self.deferred.len() < MAX_DEFERRED
                            && self.block.len as u64 + data <= BLOCK_SIZE as u64
                            && self.tentative.as_ref().is_some_and(|t| t.ok);
                        if may_defer {
                            self.defer_file(&item.meta, fd, before);
                            false
                        } else {
                            self.copy_file(&item.meta, fd, before, 0, ctl)?
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
            self.ship(ctl, false)?;
        }
        ctl.tick(Phase::Archive, self.counters)?;
        Ok(std::mem::take(&mut self.summary))
    }

    /// Records `entry` (its headers are put next) in the index.
    fn index_entry(&mut self, mut entry: index::Entry) {
        let Some(Ok(writer)) = &mut self.index else {
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
        if let Err(e) = writer.entry(&entry) {
            self.index = Some(Err(e));
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
    /// fit: a small entry never crosses a block), to be read by
    /// `read_deferred` unless the block repeats an old member.
    fn defer_file(&mut self, meta: &EntryMeta, fd: OwnedFd, before: safe_fs::Stat) {
        let size = meta.size as usize;
        self.deferred.push(Deferred {
            path: meta.path.clone(),
            fd,
            before,
            at: self.block.len,
            size,
        });
        self.block.len += size + header::padding(meta.size);
    }

    /// Reads the deferred files into their places (a file that shrank is
    /// padded with zeros, one that grew is cut, as `copy_file` does).
    fn read_deferred(&mut self) -> Result<()> {
        for d in std::mem::take(&mut self.deferred) {
            let end = d.at + d.size;
            let mut pos = d.at;
            let mut changed = false;
            while pos < end {
                match rustix::io::read(&d.fd, &mut self.block.buf[pos..end]) {
                    Ok(0) => {
                        changed = true;
                        break;
                    }
                    Ok(n) => pos += n,
                    Err(rustix::io::Errno::INTR) | Err(rustix::io::Errno::AGAIN) => {}
                    Err(e) => return Err(Error::os(format!("reading {}", quote(&d.path)), e)),
                }
            }
            self.counters.add_bytes((pos - d.at) as u64);
            let pad_end = end + header::padding(d.size as u64);
            self.block.buf[pos..pad_end].fill(0);
            if !changed {
                if let Ok(after) = rustix::fs::fstat(d.fd.as_fd()) {
                    changed = after.st_size != d.before.st_size
                        || after.st_mtime != d.before.st_mtime
                        || after.st_mtime_nsec != d.before.st_mtime_nsec;
                }
            }
            if changed {
                self.summary.changed_count += 1;
                if self.summary.changed.len() < MAX_LISTED {
                    self.summary.changed.push(d.path);
                }
            }
        }
        Ok(())
    }

    /// Ends the current member, if it holds anything.
    fn cut(&mut self, ctl: &mut Control<'_>) -> Result<()> {
        if self.block.len > 0 {
            self.ship(ctl, true)?;
        }
        Ok(())
    }

    /// The old member `m`, read and checked, in a spare member buffer;
    /// `None` if it cannot be used as it is.
    fn read_old(&mut self, m: &index::Member) -> Option<(Vec<u8>, usize)> {
        let previous = self.previous.as_ref()?;
        let mut buf = self
            .spare_members
            .lock()
            .ok()
            .and_then(|mut v| v.pop())
            .unwrap_or_default();
        if previous.read_member(m, &mut buf) {
            return Some((buf, m.compressed as usize));
        }
        if let Ok(mut spare) = self.spare_members.lock() {
            spare.push(buf);
        }
        None
    }

    /// Hands a reused member, in sequence, to the writer; `block` returns
    /// to the pool once it is written, which bounds memory as for others.
    fn send_reused(
        &mut self,
        seq: u64,
        raw_len: usize,
        member: (Vec<u8>, usize),
        block: Vec<u8>,
    ) -> Result<()> {
        let (buf, len) = member;
        self.summary.reused_members += 1;
        self.summary.reused_bytes += len as u64;
        let sent = self.reused_tx.as_ref().map(|tx| {
            tx.send(Member {
                seq,
                raw_len,
                buf,
                len,
                block,
                old: None,
            })
        });
        match sent {
            Some(Ok(())) => Ok(()),
            _ => Err(self
                .shared
                .take_error()
                .unwrap_or_else(|| Error::internal("the archive writer stopped"))),
        }
    }

    /// Copies the old members of a large file's run in place of reading it;
    /// from the first that cannot be used, reads the rest of the file from
    /// `fd`. Returns whether the file changed while it was read.
    fn reuse_large(
        &mut self,
        meta: &EntryMeta,
        run: &Run,
        header_buf: &[u8],
        fd: OwnedFd,
        before: safe_fs::Stat,
        ctl: &mut Control<'_>,
    ) -> Result<bool> {
        for (k, m) in run.members.iter().enumerate() {
            let Some(old) = self.read_old(m) else {
                // Member k starts k blocks past the entry's header.
                if k == 0 {
                    self.put(header_buf, ctl)?;
                    return self.copy_file(meta, fd, before, 0, ctl);
                }
                let from = (k * BLOCK_SIZE).saturating_sub(header_buf.len()) as u64;
                return self.copy_file(meta, fd, before, from, ctl);
            };
            let seq = self.block.seq;
            let block = std::mem::take(&mut self.block.buf);
            self.send_reused(seq, m.uncompressed as usize, old, block)?;
            self.block.seq += 1;
            self.block.buf = self.take_buffer(ctl)?;
            ctl.tick(Phase::Archive, self.counters)?;
        }
        self.counters.add_bytes(meta.size);
        Ok(false)
    }

    /// Sends the current block to the compressors (or, when it repeats an
    /// old member, that member to the writer) and starts a new one.
    fn ship(&mut self, ctl: &mut Control<'_>, need_next: bool) -> Result<()> {
        let reused = match self.tentative.take() {
            Some(t)
                if t.ok
                    && t.next == t.run.entries.len()
                    && t.run.members[0].uncompressed == self.block.len as u64 =>
            {
                self.read_old(&t.run.members[0])
            }
            _ => None,
        };
        if reused.is_some() {
            // The old member holds their bytes.
            let bytes: usize = self.deferred.drain(..).map(|d| d.size).sum();
            self.counters.add_bytes(bytes as u64);
        } else {
            self.read_deferred()?;
        }
        let next = if need_next {
            self.take_buffer(ctl)?
        } else {
            Vec::new()
        };
        let seq = self.block.seq;
        let block = std::mem::replace(
            &mut self.block,
            Block {
                seq: seq + 1,
                buf: next,
                len: 0,
            },
        );
        if let Some(old) = reused {
            return self.send_reused(block.seq, block.len, old, block.buf);
        }
        let sent = self.job_tx.as_ref().map(|tx| tx.send(block));
        match sent {
            Some(Ok(())) => Ok(()),
            _ => Err(self
                .shared
                .take_error()
                .unwrap_or_else(|| Error::internal("compression workers stopped"))),
        }
    }

    fn put(&mut self, mut bytes: &[u8], ctl: &mut Control<'_>) -> Result<()> {
        while !bytes.is_empty() {
            if self.block.len == BLOCK_SIZE {
                self.ship(ctl, true)?;
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
                self.ship(ctl, true)?;
            }
            let k = (n as usize).min(BLOCK_SIZE - self.block.len);
            self.block.buf[self.block.len..self.block.len + k].fill(0);
            self.block.len += k;
            n -= k as u64;
        }
        Ok(())
    }

    /// Copies exactly `meta.size` bytes of an open file (from byte `start`
    /// on) into the stream: a file that shrank is padded with zeros, one
    /// that grew is cut, and both are noted as changed (and `true` returned).
    fn copy_file(
        &mut self,
        meta: &EntryMeta,
        fd: OwnedFd,
        before: safe_fs::Stat,
        start: u64,
        ctl: &mut Control<'_>,
    ) -> Result<bool> {
        let mut remaining = meta.size.saturating_sub(start);
        let mut changed = false;
        if start > 0 {
            self.counters.add_bytes(start);
            if rustix::fs::seek(&fd, rustix::fs::SeekFrom::Start(start)).is_err() {
                changed = true;
                self.put_zeros(remaining, ctl)?;
                remaining = 0;
            }
        }
        let mut since_tick = 0u64;
        while remaining > 0 {
            if self.block.len == BLOCK_SIZE {
                self.ship(ctl, true)?;
            }
            let room = ((BLOCK_SIZE - self.block.len) as u64).min(remaining) as usize;
            let start = self.block.len;
            let n = match rustix::io::read(&fd, &mut self.block.buf[start..start + room]) {
                Ok(n) => n,
                Err(rustix::io::Errno::INTR) | Err(rustix::io::Errno::AGAIN) => continue,
                Err(e) => {
                    return Err(Error::os(format!("reading {}", quote(&meta.path)), e));
                }
            };
            if n == 0 {
                changed = true;
                self.put_zeros(remaining, ctl)?;
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
        self.put_zeros(header::padding(meta.size) as u64, ctl)?;
        if !changed {
            if let Ok(after) = rustix::fs::fstat(fd.as_fd()) {
                changed = after.st_size != before.st_size
                    || after.st_mtime != before.st_mtime
                    || after.st_mtime_nsec != before.st_mtime_nsec;
            }
        }
        if changed {
            self.summary.changed_count += 1;
            if self.summary.changed.len() < MAX_LISTED {
                self.summary.changed.push(meta.path.clone());
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
) {
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(block) = job else { return };
        if shared.should_stop() {
            return;
        }
        let mut out = spare_members
            .lock()
            .ok()
            .and_then(|mut v| v.pop())
            .unwrap_or_default();
        let len = match gzip::encode_member(level, &block.buf[..block.len], &mut out) {
            Ok(len) => len,
            Err(e) => {
                shared.fail(e);
                return;
            }
        };
        if members
            .send(Member {
                seq: block.seq,
                raw_len: block.len,
                buf: out,
                len,
                block: block.buf,
                old: None,
            })
            .is_err()
        {
            return;
        }
    }
}

/// Puts members in order and writes them, while a second thread hashes
/// them (SHA-1 of the archive, computed as it is written, never re-read)
/// and records where each is for the index; returns (sha1 hex, size,
/// members).
fn write_members(
    members: Receiver<Member>,
    out: &mut (dyn Write + Send),
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
    out: &mut (dyn Write + Send),
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
            out.write_all(member.bytes())
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
    out.flush()
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
