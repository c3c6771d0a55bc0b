//! The archive reader: turns a `.tar.gz` byte stream (a file or an HTTP body)
//! into tar entries, treating every byte as hostile.
//!
//! A thread reads the source and cuts it into gzip members. Members this
//! engine wrote (recognised by their `WB` extra field, see `gzip`) are inflated
//! by `threads` workers in parallel; any other gzip stream (one member from GNU
//! tar or Python, or pigz's multi-member output) is inflated as a stream by
//! the reading thread itself. The calling thread gets the inflated blocks back
//! in order and parses tar headers from them: ustar, PAX (local and global),
//! GNU long names and links, and old v7 headers.
//!
//! Every buffer that holds a member as read or a block as inflated comes from
//! one `Budget` of `BUDGET` bytes, taken by the reading thread in stream order
//! before it reads the member, for the sizes the member claims. How many
//! members are in flight therefore follows their size, not the thread count,
//! and an archive whose members claim 16 MiB each costs no more memory than
//! one of 1 MiB members.

use std::io::{BufRead, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Condvar, Mutex, MutexGuard};

use crate::archive::gzip::{self, MemberHeader, BLOCK_SIZE};
use crate::archive::header::BLOCK;
use crate::archive::lookahead::{Lookahead, Observe};
use crate::error::{quote, Error, Result};
use crate::progress::{Counters, Shared};

/// The memory budget of one restore: members as read plus blocks as
/// inflated, in flight or kept for reuse. With members of 16 MiB (the most
/// the reader accepts) two fit; with 1 MiB members, about twenty.
pub const BUDGET: usize = 40 << 20;

/// A block of inflated bytes, or the error that ended the stream.
type Inflated<'a> = Result<Buf<'a>>;

/// A buffer lent by a `Budget`; it goes back when dropped. The budget counts
/// its capacity; its user sets its length to the bytes it holds.
pub(crate) struct Buf<'a> {
    data: Vec<u8>,
    kind: Use,
    budget: &'a Budget,
}

impl Drop for Buf<'_> {
    fn drop(&mut self) {
        self.budget
            .give_back(self.kind, std::mem::take(&mut self.data));
    }
}

/// What a buffer holds. Buffers are reused for the same use only: a member
/// as read is mostly far smaller than its buffer, whose pages beyond it then
/// never become resident.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Use {
    Member,
    Block,
}

/// Buffers for members and blocks, within `limit` bytes (counted by
/// capacity): those lent out plus those kept for reuse. Only the reading
/// thread takes buffers, one member's worth at a time and in stream order, so
/// a member the tar parser waits for never waits behind later ones; and when
/// nothing is lent out, a request is granted whatever its size, so the
/// stream always moves on.
pub(crate) struct Budget {
    limit: usize,
    pool: Mutex<Pool>,
    returned: Condvar,
}

#[derive(Default)]
struct Pool {
    lent: usize,
    idle: Vec<(Use, Vec<u8>)>,
    idle_bytes: usize,
}

/// Requests up to one member's worth are served by buffers of one size, so
/// that they can be reused for any such member.
const SMALL: usize = gzip::max_member_len(BLOCK_SIZE);

impl Budget {
    pub(crate) fn new(limit: usize) -> Budget {
        Budget {
            limit,
            pool: Mutex::new(Pool::default()),
            returned: Condvar::new(),
        }
    }

    fn pool(&self) -> MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Buffers of at least `sizes[i]` bytes, granted together once the budget
    /// has room for all of them; `None` if the restore stops meanwhile. A new
    /// buffer is allocated zeroed, which for a large one is memory the kernel
    /// hands over only as it is written: a claim the data does not bear out
    /// costs the pages actually written, not the claim.
    fn take<const N: usize>(
        &self,
        wants: [(Use, usize); N],
        shared: &Shared,
    ) -> Option<[Buf<'_>; N]> {
        let wanted = wants.map(|(_, n)| n.max(SMALL));
        let mut pool = self.pool();
        loop {
            if shared.should_stop() {
                return None;
            }
            // An idle buffer serves a request of its use that it fits, if it
            // is not more than twice the size (it is counted whole while lent).
            let mut chosen = [None; N];
            for (i, want) in wanted.iter().enumerate() {
                chosen[i] = pool
                    .idle
                    .iter()
                    .enumerate()
                    .filter(|(k, (kind, v))| {
                        *kind == wants[i].0
                            && v.capacity() >= *want
                            && v.capacity() <= 2 * *want
                            && !chosen.contains(&Some(*k))
                    })
                    .min_by_key(|(_, (_, v))| v.capacity())
                    .map(|(k, _)| k);
            }
            let need: usize = (0..N)
                .map(|i| chosen[i].map_or(wanted[i], |k| pool.idle[k].1.capacity()))
                .sum();
            if pool.lent + need <= self.limit || pool.lent == 0 {
                let mut reused: [Option<Vec<u8>>; N] = [const { None }; N];
                let mut order: Vec<(usize, usize)> =
                    (0..N).filter_map(|i| chosen[i].map(|k| (k, i))).collect();
                order.sort_unstable_by(|a, b| b.cmp(a));
                for (k, i) in order {
                    let (_, v) = pool.idle.swap_remove(k);
                    pool.idle_bytes -= v.capacity();
                    reused[i] = Some(v);
                }
                pool.lent += need;
                // Idle buffers give way to the new ones, largest first.
                let mut evicted = Vec::new();
                while pool.lent + pool.idle_bytes > self.limit && !pool.idle.is_empty() {
                    let largest = (0..pool.idle.len())
                        .max_by_key(|k| pool.idle[*k].1.capacity())
                        .unwrap_or(0);
                    let (_, v) = pool.idle.swap_remove(largest);
                    pool.idle_bytes -= v.capacity();
                    evicted.push(v);
                }
                drop(pool);
                drop(evicted);
                // A reused buffer keeps the length it had (its users set
                // theirs): what it held is overwritten, not zeroed first.
                return Some(std::array::from_fn(|i| Buf {
                    data: reused[i].take().unwrap_or_else(|| vec![0; wanted[i]]),
                    kind: wants[i].0,
                    budget: self,
                }));
            }
            pool = self
                .returned
                .wait_timeout(pool, WAIT_TICK)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn give_back(&self, kind: Use, data: Vec<u8>) {
        let cap = data.capacity();
        if cap == 0 {
            return;
        }
        let mut pool = self.pool();
        pool.lent = pool.lent.saturating_sub(cap);
        let spare = if pool.lent + pool.idle_bytes + cap <= self.limit {
            pool.idle_bytes += cap;
            pool.idle.push((kind, data));
            None
        } else {
            Some(data)
        };
        drop(pool);
        self.returned.notify_one();
        drop(spare);
    }
}

/// The inflated tar stream, read on the calling thread.
pub struct TarStream<'a> {
    blocks: Receiver<Receiver<Inflated<'a>>>,
    /// The block being read; dropped (its memory back in the budget) as
    /// soon as it is used up, before the next one is waited for.
    current: Option<Buf<'a>>,
    pos: usize,
    finished: bool,
    /// Set once a member of this engine's making was seen: such an archive
    /// always ends with the end-of-archive blocks, so one cut off at a
    /// member boundary is truncated, not short.
    own_members: &'a AtomicBool,
    /// Called every `WAIT_TICK` while waiting for data, so that the caller
    /// keeps reporting progress and can cancel (an error stops the stream).
    wait: &'a dyn Fn() -> Result<()>,
    /// Tar bytes handed out so far.
    consumed: u64,
}

/// An inflated tar stream as the tar parser reads it: `TarStream` (the
/// parallel reader of restores) or a sequential reader that also tracks
/// gzip members (`crate::index::scan`, for verify and index builds).
pub trait TarSource {
    /// The next bytes of the stream (at most `max`), or an empty slice at the end.
    fn next_slice(&mut self, max: usize) -> Result<&[u8]>;
    /// Whether a member of this engine's making was seen (see `TarStream`).
    fn own_members(&self) -> bool;
    /// Tar bytes handed out so far.
    fn position(&self) -> u64;

    /// Fills `buf` completely; `Ok(false)` if the stream ended first
    /// (`Err` if it ended part way).
    fn read_full(&mut self, buf: &mut [u8]) -> Result<bool> {
        let mut filled = 0;
        while filled < buf.len() {
            let slice = self.next_slice(buf.len() - filled)?;
            if slice.is_empty() {
                if filled == 0 {
                    return Ok(false);
                }
                return Err(truncated());
            }
            buf[filled..filled + slice.len()].copy_from_slice(slice);
            filled += slice.len();
        }
        Ok(true)
    }

    fn skip(&mut self, mut n: u64) -> Result<()> {
        while n > 0 {
            let slice = self.next_slice(n.min(BLOCK_SIZE as u64) as usize)?;
            if slice.is_empty() {
                return Err(truncated());
            }
            n -= slice.len() as u64;
        }
        Ok(())
    }
}

impl TarSource for TarStream<'_> {
    fn next_slice(&mut self, max: usize) -> Result<&[u8]> {
        TarStream::next_slice(self, max)
    }
    fn own_members(&self) -> bool {
        self.own_members.load(Ordering::Relaxed)
    }
    fn position(&self) -> u64 {
        self.consumed
    }
}

const WAIT_TICK: std::time::Duration = std::time::Duration::from_millis(100);

/// Receives from `rx`, calling `wait` every `WAIT_TICK` until something
/// arrives; `None` when the sender is gone.
fn recv_ticking<T>(rx: &Receiver<T>, wait: &dyn Fn() -> Result<()>) -> Result<Option<T>> {
    loop {
        match rx.recv_timeout(WAIT_TICK) {
            Ok(v) => return Ok(Some(v)),
            Err(mpsc::RecvTimeoutError::Timeout) => wait()?,
            Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(None),
        }
    }
}

impl TarStream<'_> {
    /// The next bytes of the stream (at most `max`), or an empty slice at the end.
    pub fn next_slice(&mut self, max: usize) -> Result<&[u8]> {
        while self.pos >= self.current.as_ref().map_or(0, |b| b.data.len()) {
            self.current = None;
            if self.finished {
                return Ok(&[]);
            }
            let next = match recv_ticking(&self.blocks, self.wait)? {
                Some(slot) => recv_ticking(&slot, self.wait)?
                    .unwrap_or_else(|| Err(Error::internal("inflate worker stopped"))),
                None => {
                    self.finished = true;
                    return Ok(&[]);
                }
            };
            let block = match next {
                Ok(block) => block,
                Err(e) => {
                    self.finished = true;
                    return Err(e);
                }
            };
            self.current = Some(block);
            self.pos = 0;
        }
        let Some(current) = &self.current else {
            return Ok(&[]);
        };
        let n = max.min(current.data.len() - self.pos);
        let slice = &current.data[self.pos..self.pos + n];
        self.pos += n;
        self.consumed += n as u64;
        Ok(slice)
    }
}

pub(crate) fn truncated() -> Error {
    Error::corrupt("unexpected end of archive data (the archive is truncated)")
}

/// Runs `f` with the inflated stream of `source`; reading and inflating
/// happen on helper threads that end before this returns. `counters` get the
/// archive bytes read; `wait` runs on the calling thread whenever it waits
/// for data (see `TarStream`).
pub fn with_tar_stream<T>(
    source: &mut (dyn Read + Send),
    threads: usize,
    counters: &Counters,
    shared: &Shared,
    wait: &dyn Fn() -> Result<()>,
    f: impl FnOnce(&mut TarStream<'_>) -> Result<T>,
) -> Result<T> {
    let threads = threads.max(1);
    let in_flight = 2 * threads + 2;
    // Declared before the channels, which hold buffers borrowed from them.
    let own_members = AtomicBool::new(false);
    let budget = Budget::new(BUDGET);
    let (order_tx, order_rx) = mpsc::sync_channel::<Receiver<Inflated>>(in_flight);
    let (job_tx, job_rx) = mpsc::sync_channel::<Job>(in_flight);
    let job_rx = Mutex::new(job_rx);
    std::thread::scope(|s| {
        let budget = &budget;
        let own_members = &own_members;
        for _ in 0..threads {
            let job_rx = &job_rx;
            s.spawn(move || inflate_worker(job_rx, shared));
        }
        s.spawn(move || {
            let mut input = Lookahead::new(source, 256 * 1024, Arrivals { counters });
            let split = split_members(&mut input, &order_tx, &job_tx, budget, shared, own_members);
            if let Err(e) = split {
                let (tx, rx) = mpsc::sync_channel(1);
                let _ = tx.send(Err(e));
                let _ = order_tx.send(rx);
            }
        });
        let mut stream = TarStream {
            blocks: order_rx,
            current: None,
            pos: 0,
            finished: false,
            own_members,
            wait,
            consumed: 0,
        };
        let result = f(&mut stream);
        // Stop the reader and workers whatever happened, then let the scope join them.
        shared.stop();
        drop(stream);
        result
    })
}

struct Job<'a> {
    member: Buf<'a>,
    /// Room for the inflated data, taken with the member.
    out: Buf<'a>,
    header: MemberHeader,
    done: SyncSender<Inflated<'a>>,
}

fn inflate_worker<'a>(jobs: &Mutex<Receiver<Job<'a>>>, shared: &Shared) {
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        if shared.should_stop() {
            return;
        }
        let Job {
            member,
            mut out,
            header,
            done,
        } = job;
        let result = gzip::decode_member(&member.data, header, &mut out.data);
        // The member's bytes go back before its block is handed on.
        drop(member);
        let _ = done.send(result.map(|()| out));
    }
}

/// A buffered reader over the source that can look ahead without consuming,
/// and counts what it reads.
/// The archive's bytes as they come from the source, counted as they
/// arrive.
type Input<'a, 'c> = Lookahead<'a, dyn Read + Send + 'a, Arrivals<'c>>;

struct Arrivals<'c> {
    counters: &'c Counters,
}

impl Observe for Arrivals<'_> {
    fn arrived(&mut self, bytes: &[u8]) {
        self.counters.add_bytes(bytes.len() as u64);
        self.counters.add_archive_bytes(bytes.len() as u64);
    }
    fn source_error(&self, e: std::io::Error) -> Error {
        source_error(e)
    }
}

/// Reads exactly `n` bytes of `input` into `out`, which ends up `n` bytes
/// long; the archive is truncated if it ends first.
fn take_exact(input: &mut Input<'_, '_>, n: usize, out: &mut Vec<u8>) -> Result<()> {
    out.clear();
    if input.take_into(n, out)? < n {
        return Err(truncated());
    }
    Ok(())
}

/// Errors from the source keep their kind: a download that breaks off is a
/// remote failure, a local read error an I/O one.
fn source_error(e: std::io::Error) -> Error {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) {
        Some(err) => err.clone(),
        None => Error::io("reading the archive", e),
    }
}

fn split_members<'a>(
    input: &mut Input<'_, '_>,
    order: &SyncSender<Receiver<Inflated<'a>>>,
    jobs: &SyncSender<Job<'a>>,
    budget: &'a Budget,
    shared: &Shared,
    own_members: &AtomicBool,
) -> Result<()> {
    let mut first = true;
    loop {
        if shared.should_stop() {
            return Ok(());
        }
        let head = input.peek(gzip::HEADER_LEN)?;
        if head.is_empty() {
            if first {
                return Err(Error::corrupt("the archive is empty"));
            }
            return Ok(());
        }
        if head.len() < 2 || head[0] != 0x1f || head[1] != 0x8b {
            if first {
                return Err(Error::corrupt("the archive is not gzip data"));
            }
            return check_trailing(input);
        }
        first = false;
        if let Some(header) = gzip::parse_member_header(head) {
            own_members.store(true, Ordering::Relaxed);
            // The memory for this member and what it inflates to, before
            // anything of it is read.
            let Some([mut member, out]) = budget.take(
                [
                    (Use::Member, header.member_len),
                    (Use::Block, header.data_len),
                ],
                shared,
            ) else {
                return Ok(());
            };
            take_exact(input, header.member_len, &mut member.data)?;
            let (done, slot) = mpsc::sync_channel(1);
            if order.send(slot).is_err() {
                return Ok(());
            }
            let job = Job {
                member,
                out,
                header,
                done,
            };
            if jobs.send(job).is_err() {
                return Ok(());
            }
        } else {
            inflate_foreign_member(input, order, budget, shared)?;
        }
    }
}

/// Inflates one gzip member of another tool's making, as a stream.
fn inflate_foreign_member<'a>(
    input: &mut Input<'_, '_>,
    order: &SyncSender<Receiver<Inflated<'a>>>,
    budget: &'a Budget,
    shared: &Shared,
) -> Result<()> {
    let mut decoder = flate2::bufread::GzDecoder::new(input);
    loop {
        let Some([mut block]) = budget.take([(Use::Block, BLOCK_SIZE)], shared) else {
            return Ok(());
        };
        block.data.resize(BLOCK_SIZE, 0);
        let mut filled = 0;
        while filled < BLOCK_SIZE {
            match decoder.read(&mut block.data[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(inflate_error(e)),
            }
        }
        block.data.truncate(filled);
        if filled == 0 {
            return Ok(());
        }
        let (tx, rx) = mpsc::sync_channel(1);
        let _ = tx.send(Ok(block));
        if order.send(rx).is_err() {
            return Ok(());
        }
        if filled < BLOCK_SIZE {
            return Ok(());
        }
    }
}

fn inflate_error(e: std::io::Error) -> Error {
    if let Some(err) = e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) {
        // The source failed under the decoder (a download that broke off).
        return err.clone();
    }
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => truncated(),
        std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData => {
            Error::corrupt(format!("invalid gzip data: {e}"))
        }
        _ => source_error(e),
    }
}

/// Bytes after the last gzip member: zero padding is accepted, anything else
/// means the archive is damaged.
fn check_trailing(input: &mut Input<'_, '_>) -> Result<()> {
    loop {
        let avail = input.peek(1)?;
        if avail.is_empty() {
            return Ok(());
        }
        if avail.iter().any(|b| *b != 0) {
            return Err(Error::corrupt(
                "unexpected data after the end of the gzip stream",
            ));
        }
        let n = avail.len();
        input.consume(n);
    }
}

/// What a tar entry is, as far as restoring goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink(Vec<u8>),
    HardLink(Vec<u8>),
    Fifo,
    Device,
    /// A type this engine does not restore (multi-volume, vendor
    /// extensions); its data is skipped.
    Unsupported(u8),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TarEntry {
    /// The raw name as stored (not yet checked or normalised).
    pub path: Vec<u8>,
    pub kind: EntryKind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    /// Nanoseconds past `mtime` (0 to 999999999): from a PAX `mtime`
    /// record's fraction, else 0.
    pub mtime_nsec: u32,
    /// Bytes of data that follow.
    pub size: u64,
}

/// Longest GNU long name or PAX header accepted.
const MAX_META: u64 = 1 << 20;
/// Largest entry size believed (64 PiB); anything above is a corrupt header.
const MAX_ENTRY_SIZE: u64 = 1 << 56;

/// The tar parser over an inflated stream.
pub struct TarReader<'s, 'a, S: TarSource + ?Sized = TarStream<'a>> {
    stream: &'s mut S,
    /// Data bytes of the current entry not read yet, and its padding.
    remaining: u64,
    padding: u64,
    ended: bool,
    /// Tar offset of the current entry's first header block, and the
    /// length of its headers (PAX and GNU records included).
    entry_start: u64,
    header_len: u64,
    _stream: std::marker::PhantomData<&'a ()>,
}

impl<'s, 'a, S: TarSource + ?Sized> TarReader<'s, 'a, S> {
    pub fn new(stream: &'s mut S) -> TarReader<'s, 'a, S> {
        TarReader {
            stream,
            remaining: 0,
            padding: 0,
            ended: false,
            entry_start: 0,
            header_len: 0,
            _stream: std::marker::PhantomData,
        }
    }

    /// Tar offset of the first header block of the entry `next_entry`
    /// returned last (or of the header it failed on).
    pub fn entry_start(&self) -> u64 {
        self.entry_start
    }

    /// Tar bytes of that entry's headers; its data follows them.
    pub fn header_len(&self) -> u64 {
        self.header_len
    }

    /// Data bytes of the current entry not read yet.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// The source under the parser.
    pub fn source(&mut self) -> &mut S {
        self.stream
    }

    /// The next piece of the current entry's data; empty at its end.
    pub fn read_data(&mut self) -> Result<&[u8]> {
        if self.remaining == 0 {
            return Ok(&[]);
        }
        let max = self.remaining.min(BLOCK_SIZE as u64) as usize;
        let slice = self.stream.next_slice(max)?;
        if slice.is_empty() {
            return Err(truncated());
        }
        self.remaining -= slice.len() as u64;
        Ok(slice)
    }

    fn skip_rest(&mut self) -> Result<()> {
        self.stream
            .skip(self.remaining.saturating_add(self.padding))?;
        self.remaining = 0;
        self.padding = 0;
        Ok(())
    }

    fn read_meta(&mut self, size: u64, what: &str) -> Result<Vec<u8>> {
        if size > MAX_META {
            return Err(Error::corrupt(format!(
                "{what} of {size} bytes is too large"
            )));
        }
        let mut data = vec![0u8; size as usize];
        if !self.stream.read_full(&mut data)? {
            return Err(truncated());
        }
        self.stream
            .skip(crate::archive::header::padding(size) as u64)?;
        Ok(data)
    }

    /// The next entry, or `None` at the end of the archive. Unread data of the
    /// previous entry is skipped.
    pub fn next_entry(&mut self) -> Result<Option<TarEntry>> {
        if self.ended {
            return Ok(None);
        }
        self.skip_rest()?;
        self.entry_start = self.stream.position();
        self.header_len = 0;
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut pax = PaxOverrides::default();
        let mut block = [0u8; BLOCK];
        // Extension headers (PAX, GNU long names) are bounded in number.
        for _ in 0..64 {
            if !self.stream.read_full(&mut block)? {
                // The stream ended at a header boundary without the end
                // blocks; GNU tar, Python and Go accept that from other
                // tools. This engine always writes them: its archive cut off
                // after a whole member is truncated.
                if long_name.is_some()
                    || long_link.is_some()
                    || !pax.is_empty()
                    || self.stream.own_members()
                {
                    return Err(truncated());
                }
                self.ended = true;
                return Ok(None);
            }
            if block.iter().all(|b| *b == 0) {
                self.ended = true;
                return Ok(None);
            }
            verify_checksum(&block)?;
            let h = tar::Header::from_byte_slice(&block);
            let typeflag = block[156];
            let field_err = |what: &str, e: std::io::Error| {
                Error::corrupt(format!("bad {what} field in a tar header: {e}"))
            };
            let size = match pax.size {
                Some(s) if !matches!(typeflag, b'x' | b'g' | b'L' | b'K') => s,
                _ => match unsigned_base256(&block, 124..136, "size")? {
                    Some(s) => s,
                    None => h.entry_size().map_err(|e| field_err("size", e))?,
                },
            };
            // A negative base-256 size reads as a huge one; no real entry is
            // anywhere near this.
            if size > MAX_ENTRY_SIZE {
                return Err(Error::corrupt(format!(
                    "an entry claims {size} bytes, which no archive holds"
                )));
            }
            match typeflag {
                b'x' => {
                    let data = self.read_meta(size, "a PAX header")?;
                    pax.parse(&data)?;
                    continue;
                }
                b'g' => {
                    // Global PAX headers carry nothing a restore uses.
                    self.read_meta(size, "a global PAX header")?;
                    continue;
                }
                b'L' => {
                    long_name = Some(trim_nul(self.read_meta(size, "a GNU long name")?));
                    continue;
                }
                b'K' => {
                    long_link = Some(trim_nul(self.read_meta(size, "a GNU long link name")?));
                    continue;
                }
                _ => {}
            }
            let path = pax
                .path
                .take()
                .or(long_name.take())
                .unwrap_or_else(|| h.path_bytes().into_owned());
            let link = pax.linkpath.take().or(long_link.take()).unwrap_or_else(|| {
                h.link_name_bytes()
                    .map(|c| c.into_owned())
                    .unwrap_or_default()
            });
            // GNU sparse entries (old GNU 'S' headers, PAX GNU.sparse 0.0,
            // 0.1 and 1.0) hold a sparse map this reader does not apply:
            // taken as they are they would restore a wrong file (or none),
            // so every reader of the archive refuses them.
            if typeflag == b'S' || pax.sparse {
                let name = pax.sparse_name.take().unwrap_or_else(|| path.clone());
                return Err(Error::corrupt(format!(
                    "the archive holds the sparse file {} in a format this engine does not \
                     restore (GNU tar's sparse entries, written by `tar -S` and by bsdtar); \
                     extract it with GNU tar, or archive it without --sparse",
                    quote(&name)
                )));
            }
            let kind = match typeflag {
                b'0' | b'\0' | b'7' if path.ends_with(b"/") && typeflag == b'\0' => EntryKind::Dir,
                b'0' | b'\0' | b'7' => EntryKind::File,
                b'1' => EntryKind::HardLink(link),
                b'2' => EntryKind::Symlink(link),
                b'3' | b'4' => EntryKind::Device,
                b'5' | b'D' => EntryKind::Dir,
                b'6' => EntryKind::Fifo,
                other => EntryKind::Unsupported(other),
            };
            // Header-only types carry no data whatever their size field says
            // (as Go and Python read them); GNU dumpdirs and unknown types do.
            let data_len = match kind {
                EntryKind::File | EntryKind::Unsupported(_) => size,
                EntryKind::Dir if typeflag == b'D' => size,
                _ => 0,
            };
            let mode = h.mode().map_err(|e| field_err("mode", e))? & 0o7777;
            let uid = match pax.uid {
                Some(u) => u,
                None => match unsigned_base256(&block, 108..116, "uid")? {
                    Some(u) => u,
                    None => h.uid().map_err(|e| field_err("uid", e))?,
                },
            };
            let gid = match pax.gid {
                Some(g) => g,
                None => match unsigned_base256(&block, 116..124, "gid")? {
                    Some(g) => g,
                    None => h.gid().map_err(|e| field_err("gid", e))?,
                },
            };
            let (mtime, mtime_nsec) = match pax.mtime {
                Some(t) => t,
                None => match base256(&block, 136..148, "mtime")? {
                    Some(t) => (t, 0),
                    None => (
                        i64::try_from(h.mtime().map_err(|e| field_err("mtime", e))?).unwrap_or(0),
                        0,
                    ),
                },
            };
            self.remaining = data_len;
            self.padding = crate::archive::header::padding(data_len) as u64;
            self.header_len = self.stream.position() - self.entry_start;
            if typeflag == b'D' {
                // A GNU dumpdir's listing is not file data.
                self.skip_rest()?;
            }
            let size = match kind {
                EntryKind::File | EntryKind::Unsupported(_) => data_len,
                _ => 0,
            };
            return Ok(Some(TarEntry {
                path,
                kind,
                mode,
                uid,
                gid,
                mtime,
                mtime_nsec,
                size,
            }));
        }
        Err(Error::corrupt("too many extension headers in a row"))
    }

    /// Reads the rest of the stream so that damage after the end of the tar
    /// data (a bad CRC in the last member, say) is still an error.
    pub fn finish(&mut self) -> Result<()> {
        self.skip_rest()?;
        loop {
            if self.stream.next_slice(BLOCK_SIZE)?.is_empty() {
                return Ok(());
            }
        }
    }
}

/// The value of a base-256 numeric header field (GNU's encoding of what
/// octal cannot hold: the first byte's top bit set, then a big-endian two's
/// complement number whose sign is the next bit), or `None` for an octal
/// field (which the `tar` crate reads). A value beyond `i64` is corrupt.
fn base256(block: &[u8; BLOCK], at: std::ops::Range<usize>, what: &str) -> Result<Option<i64>> {
    let field = &block[at];
    if field[0] & 0x80 == 0 {
        return Ok(None);
    }
    let out_of_range =
        || Error::corrupt(format!("the {what} field of a tar header is out of range"));
    let inv = if field[0] & 0x40 != 0 { 0xff } else { 0 };
    let mut x: u64 = 0;
    for (i, b) in field.iter().enumerate() {
        let c = if i == 0 { (b ^ inv) & 0x7f } else { b ^ inv };
        if x >> 56 != 0 {
            return Err(out_of_range());
        }
        x = (x << 8) | c as u64;
    }
    if x >> 63 != 0 {
        return Err(out_of_range());
    }
    // Negative values are stored inverted: -1 is all ones, read as 0.
    Ok(Some(if inv == 0xff { !(x as i64) } else { x as i64 }))
}

/// `base256` for a field that cannot be negative (a size or an id).
fn unsigned_base256(
    block: &[u8; BLOCK],
    at: std::ops::Range<usize>,
    what: &str,
) -> Result<Option<u64>> {
    match base256(block, at, what)? {
        Some(v) if v < 0 => Err(Error::corrupt(format!(
            "a tar header has a negative {what} ({v})"
        ))),
        v => Ok(v.map(|v| v as u64)),
    }
}

/// A PAX time, `[-]<seconds>[.<fraction>]`, as seconds and nanoseconds
/// (0 to 999999999, counted forward: -1.25 is -2 s and 750000000 ns).
/// Digits past the nanosecond are dropped, as GNU tar does.
fn pax_time(value: &[u8]) -> Option<(i64, u32)> {
    let text = std::str::from_utf8(value).ok()?;
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = whole.parse().ok()?;
    let mut nanos: u32 = 0;
    for (i, b) in fraction.bytes().take(9).enumerate() {
        nanos += (b - b'0') as u32 * 10u32.pow(8 - i as u32);
    }
    if whole.starts_with('-') && nanos > 0 {
        Some((secs.checked_sub(1)?, 1_000_000_000 - nanos))
    } else {
        Some((secs, nanos))
    }
}

fn trim_nul(mut v: Vec<u8>) -> Vec<u8> {
    if let Some(nul) = v.iter().position(|b| *b == 0) {
        v.truncate(nul);
    }
    v
}

fn verify_checksum(block: &[u8; BLOCK]) -> Result<()> {
    let field = &block[148..156];
    let text: Vec<u8> = field
        .iter()
        .copied()
        .take_while(|b| *b != 0)
        .filter(|b| *b != b' ')
        .collect();
    let stored = std::str::from_utf8(&text)
        .ok()
        .and_then(|s| u32::from_str_radix(s, 8).ok());
    let mut unsigned: u32 = 0;
    let mut signed: i32 = 0;
    for (i, b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { *b };
        unsigned += b as u32;
        signed += b as i8 as i32;
    }
    match stored {
        Some(s) if s == unsigned || s as i32 == signed => Ok(()),
        _ => Err(Error::corrupt(
            "bad tar header checksum (the archive is damaged or not a tar archive)",
        )),
    }
}

/// The PAX records that change the next entry.
#[derive(Default)]
struct PaxOverrides {
    path: Option<Vec<u8>>,
    linkpath: Option<Vec<u8>>,
    size: Option<u64>,
    uid: Option<u64>,
    gid: Option<u64>,
    /// Seconds and nanoseconds.
    mtime: Option<(i64, u32)>,
    /// A `GNU.sparse.*` record was seen, and the file's real name if one
    /// (`GNU.sparse.name`) was given.
    sparse: bool,
    sparse_name: Option<Vec<u8>>,
}

impl PaxOverrides {
    fn is_empty(&self) -> bool {
        self.path.is_none()
            && self.linkpath.is_none()
            && self.size.is_none()
            && self.uid.is_none()
            && self.gid.is_none()
            && self.mtime.is_none()
            && !self.sparse
    }

    fn parse(&mut self, mut data: &[u8]) -> Result<()> {
        let bad = || Error::corrupt("malformed PAX header");
        while !data.is_empty() {
            if data.iter().all(|b| *b == 0) {
                break;
            }
            let space = data.iter().position(|b| *b == b' ').ok_or_else(bad)?;
            let len: usize = std::str::from_utf8(&data[..space])
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(bad)?;
            if len <= space + 1 || len > data.len() || data[len - 1] != b'\n' {
                return Err(bad());
            }
            let record = &data[space + 1..len - 1];
            let eq = record.iter().position(|b| *b == b'=').ok_or_else(bad)?;
            let (key, value) = (&record[..eq], &record[eq + 1..]);
            let number = |v: &[u8]| -> Result<u64> {
                std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| {
                        Error::corrupt(format!("bad PAX {} value", String::from_utf8_lossy(key)))
                    })
            };
            match key {
                b"path" => {
                    if value.contains(&0) {
                        return Err(Error::unsafe_entry(value, "the name contains a NUL byte"));
                    }
                    self.path = Some(value.to_vec());
                }
                b"linkpath" => {
                    if value.contains(&0) {
                        return Err(Error::unsafe_entry(
                            value,
                            "the link target contains a NUL byte",
                        ));
                    }
                    self.linkpath = Some(value.to_vec());
                }
                b"GNU.sparse.name" => {
                    self.sparse = true;
                    self.sparse_name = Some(value.to_vec());
                }
                _ if key.starts_with(b"GNU.sparse.") => self.sparse = true,
                b"size" => self.size = Some(number(value)?),
                b"uid" => self.uid = Some(number(value)?),
                b"gid" => self.gid = Some(number(value)?),
                b"mtime" => {
                    self.mtime = Some(pax_time(value).ok_or_else(|| {
                        Error::corrupt(format!("bad PAX mtime value {}", quote(value)))
                    })?);
                }
                _ => {}
            }
            data = &data[len..];
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar stream held in memory.
    struct Bytes<'b>(&'b [u8], usize);

    impl TarSource for Bytes<'_> {
        fn next_slice(&mut self, max: usize) -> Result<&[u8]> {
            let n = max.min(self.0.len() - self.1);
            self.1 += n;
            Ok(&self.0[self.1 - n..self.1])
        }
        fn own_members(&self) -> bool {
            false
        }
        fn position(&self) -> u64 {
            self.1 as u64
        }
    }

    /// One GNU header for `f` (size 0) with `field` (offset, bytes)
    /// overwritten, then the end blocks.
    fn gnu_header_with(field: (usize, &[u8])) -> Vec<u8> {
        let mut h = tar::Header::new_gnu();
        h.set_path("f").unwrap();
        h.set_size(0);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        let mut block = h.as_bytes().to_vec();
        block[field.0..field.0 + field.1.len()].copy_from_slice(field.1);
        let h = tar::Header::from_byte_slice(&block);
        let mut h = h.clone();
        h.set_cksum();
        let mut out = h.as_bytes().to_vec();
        out.resize(3 * BLOCK, 0);
        out
    }

    fn read_one(tar: &[u8]) -> Result<TarEntry> {
        let mut src = Bytes(tar, 0);
        let mut r: TarReader<'_, '_, Bytes<'_>> = TarReader::new(&mut src);
        r.next_entry().map(|e| e.unwrap())
    }

    #[test]
    fn base_256_numbers_are_twos_complement() {
        let mtime = |bytes: [u8; 12]| read_one(&gnu_header_with((136, &bytes))).map(|e| e.mtime);
        let mut minus_one = [0xff; 12];
        assert_eq!(mtime(minus_one).unwrap(), -1);
        minus_one[11] = 0xfe;
        assert_eq!(mtime(minus_one).unwrap(), -2);
        // -315619200 (1960-01-01), as GNU tar writes it.
        let mut t = [0xff; 12];
        t[8..].copy_from_slice(&(-315_619_200i32).to_be_bytes());
        assert_eq!(mtime(t).unwrap(), -315_619_200);
        let mut t = [0u8; 12];
        t[0] = 0x80;
        t[8..].copy_from_slice(&0x1_0000_0000u64.to_be_bytes()[4..]);
        t[7] = 1;
        assert_eq!(mtime(t).unwrap(), 1 << 32);
        // Beyond i64, either way: refused, not wrapped.
        let mut big = [0u8; 12];
        big[0] = 0x80;
        big[3] = 1;
        assert_eq!(
            mtime(big).unwrap_err().status,
            crate::Status::CorruptArchive
        );
        let mut small = [0xff; 12];
        small[3] = 0xfe;
        assert_eq!(
            mtime(small).unwrap_err().status,
            crate::Status::CorruptArchive
        );
    }

    #[test]
    fn pax_times_keep_their_nanoseconds() {
        assert_eq!(pax_time(b"1600000000"), Some((1_600_000_000, 0)));
        assert_eq!(
            pax_time(b"1600000000.5"),
            Some((1_600_000_000, 500_000_000))
        );
        assert_eq!(
            pax_time(b"1600000000.1234567891"),
            Some((1_600_000_000, 123_456_789))
        );
        assert_eq!(pax_time(b"-1.25"), Some((-2, 750_000_000)));
        assert_eq!(pax_time(b"-0.5"), Some((-1, 500_000_000)));
        assert_eq!(pax_time(b"-3"), Some((-3, 0)));
        assert_eq!(pax_time(b"12."), Some((12, 0)));
        for bad in [&b""[..], b"x", b"1.x", b"1.2.3", b"1e3", b"1. 5"] {
            assert_eq!(pax_time(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn negative_sizes_and_ids_are_corrupt() {
        for (at, len, what) in [(124, 12, "size"), (108, 8, "uid"), (116, 8, "gid")] {
            let mut minus = vec![0xff; len];
            minus[len - 1] = 0xf0;
            let e = read_one(&gnu_header_with((at, &minus))).unwrap_err();
            assert_eq!(e.status, crate::Status::CorruptArchive, "{what}: {e}");
            assert!(e.message.contains(what), "{e}");
            // A positive base-256 value reads whole.
            let mut plus = vec![0u8; len];
            plus[0] = 0x80;
            plus[len - 3] = 0x01;
            let got = read_one(&gnu_header_with((at, &plus))).unwrap();
            let value = match what {
                "size" => got.size,
                "uid" => got.uid,
                _ => got.gid,
            };
            assert_eq!(value, 0x10000, "{what}");
        }
    }

    #[test]
    fn the_budget_lends_no_more_than_its_limit_and_reuses_what_comes_back() {
        let budget = Budget::new(4 * SMALL);
        let shared = Shared::default();
        let [a, b] = budget
            .take([(Use::Member, 100), (Use::Block, BLOCK_SIZE)], &shared)
            .unwrap();
        assert_eq!((a.data.capacity(), b.data.capacity()), (SMALL, SMALL));
        let [c, d] = budget
            .take([(Use::Block, 1), (Use::Block, 1)], &shared)
            .unwrap();
        assert_eq!(budget.pool().lent, 4 * SMALL);
        // Full: a further request waits until a buffer comes back.
        let ptr = c.data.as_ptr() as usize;
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                budget
                    .take([(Use::Block, SMALL)], &shared)
                    .map(|[e]| e.data.as_ptr() as usize)
            });
            std::thread::sleep(WAIT_TICK);
            assert!(!waiter.is_finished());
            drop(c);
            assert_eq!(waiter.join().unwrap(), Some(ptr), "the buffer is reused");
        });
        drop((a, b, d));
        let pool = budget.pool();
        assert_eq!((pool.lent, pool.idle_bytes), (0, 4 * SMALL));
    }

    #[test]
    fn one_request_larger_than_the_budget_is_granted_when_nothing_is_lent() {
        let budget = Budget::new(2 * SMALL);
        let shared = Shared::default();
        let [small] = budget.take([(Use::Block, 1)], &shared).unwrap();
        drop(small);
        let [big] = budget
            .take([(Use::Block, gzip::MAX_MEMBER)], &shared)
            .unwrap();
        assert_eq!(big.data.len(), gzip::MAX_MEMBER);
        // The idle buffer made way for it.
        assert_eq!(budget.pool().idle_bytes, 0);
        drop(big);
        // Too large to keep for reuse.
        assert_eq!(budget.pool().idle_bytes, 0);
        // While it is lent, nothing more is; a stop ends the wait.
        let [_big] = budget
            .take([(Use::Block, gzip::MAX_MEMBER)], &shared)
            .unwrap();
        shared.stop();
        assert!(budget.take([(Use::Block, 1)], &shared).is_none());
    }
}
