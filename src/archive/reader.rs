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

use std::io::{BufRead, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Mutex;

use crate::archive::gzip::{self, MemberHeader, BLOCK_SIZE};
use crate::archive::header::BLOCK;
use crate::error::{quote, Error, Result};
use crate::progress::{Counters, Shared};

/// A block of inflated bytes, or the error that ended the stream.
type Inflated = Result<Vec<u8>>;

/// The inflated tar stream, read on the calling thread.
pub struct TarStream<'a> {
    blocks: Receiver<Receiver<Inflated>>,
    current: Vec<u8>,
    pos: usize,
    spare: &'a Mutex<Vec<Vec<u8>>>,
    finished: bool,
    /// Set once a member of this engine's making was seen: such an archive
    /// always ends with the end-of-archive blocks, so one cut off at a
    /// member boundary is truncated, not short.
    own_members: &'a AtomicBool,
    /// Called every `WAIT_TICK` while waiting for data, so that the caller
    /// keeps reporting progress and can cancel (an error stops the stream).
    wait: &'a dyn Fn() -> Result<()>,
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
        while self.pos >= self.current.len() {
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
            let old = std::mem::replace(&mut self.current, block);
            if let Ok(mut spare) = self.spare.lock() {
                if spare.len() < 16 {
                    spare.push(old);
                }
            }
            self.pos = 0;
        }
        let n = max.min(self.current.len() - self.pos);
        let slice = &self.current[self.pos..self.pos + n];
        self.pos += n;
        Ok(slice)
    }

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

fn truncated() -> Error {
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
    let spare: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
    let (order_tx, order_rx) = mpsc::sync_channel::<Receiver<Inflated>>(in_flight);
    let (job_tx, job_rx) = mpsc::sync_channel::<Job>(in_flight);
    let job_rx = Mutex::new(job_rx);
    let own_members = AtomicBool::new(false);
    std::thread::scope(|s| {
        let spare = &spare;
        let own_members = &own_members;
        for _ in 0..threads {
            let job_rx = &job_rx;
            s.spawn(move || inflate_worker(job_rx, spare, shared));
        }
        s.spawn(move || {
            let mut input = Input::new(source, counters);
            let split = split_members(&mut input, &order_tx, &job_tx, spare, shared, own_members);
            if let Err(e) = split {
                let (tx, rx) = mpsc::sync_channel(1);
                let _ = tx.send(Err(e));
                let _ = order_tx.send(rx);
            }
        });
        let mut stream = TarStream {
            blocks: order_rx,
            current: Vec::new(),
            pos: 0,
            spare,
            finished: false,
            own_members,
            wait,
        };
        let result = f(&mut stream);
        // Stop the reader and workers whatever happened, then let the scope join them.
        shared.stop();
        drop(stream);
        result
    })
}

struct Job {
    member: Vec<u8>,
    header: MemberHeader,
    done: SyncSender<Inflated>,
}

fn inflate_worker(jobs: &Mutex<Receiver<Job>>, spare: &Mutex<Vec<Vec<u8>>>, shared: &Shared) {
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        if shared.should_stop() {
            return;
        }
        let mut out = spare
            .lock()
            .ok()
            .and_then(|mut v| v.pop())
            .unwrap_or_default();
        let result = gzip::decode_member(&job.member, job.header, &mut out).map(|_| out);
        let _ = job.done.send(result);
    }
}

/// A buffered reader over the source that can look ahead without consuming,
/// and counts what it reads.
struct Input<'a> {
    src: &'a mut (dyn Read + Send),
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    counters: &'a Counters,
}

impl<'a> Input<'a> {
    fn new(src: &'a mut (dyn Read + Send), counters: &'a Counters) -> Input<'a> {
        Input {
            src,
            buf: vec![0; 256 * 1024],
            start: 0,
            end: 0,
            eof: false,
            counters,
        }
    }

    /// Makes at least `n` bytes available if the source has them, and
    /// returns what is available.
    fn peek(&mut self, n: usize) -> Result<&[u8]> {
        while self.end - self.start < n && !self.eof {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.end == self.buf.len() {
                self.buf.resize(self.buf.len().max(n), 0);
            }
            match self.src.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(k) => {
                    self.end += k;
                    self.counters.add_bytes(k as u64);
                    self.counters.add_archive_bytes(k as u64);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(source_error(e)),
            }
        }
        Ok(&self.buf[self.start..self.end])
    }

    /// Reads exactly `n` bytes into `out`.
    fn take(&mut self, n: usize, out: &mut Vec<u8>) -> Result<()> {
        out.clear();
        out.reserve(n);
        while out.len() < n {
            if self.start == self.end {
                self.peek(1)?;
                if self.start == self.end {
                    return Err(truncated());
                }
            }
            let k = (n - out.len()).min(self.end - self.start);
            out.extend_from_slice(&self.buf[self.start..self.start + k]);
            self.start += k;
        }
        Ok(())
    }
}

/// Errors from the source keep their kind: a download that breaks off is a
/// remote failure, a local read error an I/O one.
fn source_error(e: std::io::Error) -> Error {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) {
        Some(err) => err.clone(),
        None => Error::io("reading the archive", e),
    }
}

impl Read for Input<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(out.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Input<'_> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        if self.start == self.end {
            self.peek(1).map_err(std::io::Error::other)?;
        }
        Ok(&self.buf[self.start..self.end])
    }
    fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
    }
}

fn split_members(
    input: &mut Input<'_>,
    order: &SyncSender<Receiver<Inflated>>,
    jobs: &SyncSender<Job>,
    spare: &Mutex<Vec<Vec<u8>>>,
    shared: &Shared,
    own_members: &AtomicBool,
) -> Result<()> {
    let mut first = true;
    let mut member_bufs: Vec<Vec<u8>> = Vec::new();
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
            let mut member = member_bufs.pop().unwrap_or_default();
            input.take(header.member_len, &mut member)?;
            let (done, slot) = mpsc::sync_channel(1);
            if order.send(slot).is_err() {
                return Ok(());
            }
            let job = Job {
                member,
                header,
                done,
            };
            if jobs.send(job).is_err() {
                return Ok(());
            }
        } else {
            inflate_foreign_member(input, order, spare, shared)?;
        }
    }
}

/// Inflates one gzip member of another tool's making, as a stream.
fn inflate_foreign_member(
    input: &mut Input<'_>,
    order: &SyncSender<Receiver<Inflated>>,
    spare: &Mutex<Vec<Vec<u8>>>,
    shared: &Shared,
) -> Result<()> {
    let mut decoder = flate2::bufread::GzDecoder::new(input);
    loop {
        if shared.should_stop() {
            return Ok(());
        }
        let mut block = spare
            .lock()
            .ok()
            .and_then(|mut v| v.pop())
            .unwrap_or_default();
        block.clear();
        block.resize(BLOCK_SIZE, 0);
        let mut filled = 0;
        while filled < BLOCK_SIZE {
            match decoder.read(&mut block[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(inflate_error(e)),
            }
        }
        block.truncate(filled);
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
fn check_trailing(input: &mut Input<'_>) -> Result<()> {
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
    /// A type this engine does not restore (sparse, multi-volume, vendor
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
    /// Bytes of data that follow.
    pub size: u64,
}

/// Longest GNU long name or PAX header accepted.
const MAX_META: u64 = 1 << 20;
/// Largest entry size believed (64 PiB); anything above is a corrupt header.
const MAX_ENTRY_SIZE: u64 = 1 << 56;

/// The tar parser over an inflated stream.
pub struct TarReader<'s, 'a> {
    stream: &'s mut TarStream<'a>,
    /// Data bytes of the current entry not read yet, and its padding.
    remaining: u64,
    padding: u64,
    ended: bool,
}

impl<'s, 'a> TarReader<'s, 'a> {
    pub fn new(stream: &'s mut TarStream<'a>) -> TarReader<'s, 'a> {
        TarReader {
            stream,
            remaining: 0,
            padding: 0,
            ended: false,
        }
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
                    || self.stream.own_members.load(Ordering::Relaxed)
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
                _ => h.entry_size().map_err(|e| field_err("size", e))?,
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
            let uid = pax
                .uid
                .map_or_else(|| h.uid().map_err(|e| field_err("uid", e)), Ok)?;
            let gid = pax
                .gid
                .map_or_else(|| h.gid().map_err(|e| field_err("gid", e)), Ok)?;
            let mtime = match pax.mtime {
                Some(t) => t,
                None => i64::try_from(h.mtime().map_err(|e| field_err("mtime", e))?).unwrap_or(0),
            };
            self.remaining = data_len;
            self.padding = crate::archive::header::padding(data_len) as u64;
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
    mtime: Option<i64>,
}

impl PaxOverrides {
    fn is_empty(&self) -> bool {
        self.path.is_none()
            && self.linkpath.is_none()
            && self.size.is_none()
            && self.uid.is_none()
            && self.gid.is_none()
            && self.mtime.is_none()
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
                b"size" => self.size = Some(number(value)?),
                b"uid" => self.uid = Some(number(value)?),
                b"gid" => self.gid = Some(number(value)?),
                b"mtime" => {
                    let text = std::str::from_utf8(value).unwrap_or("");
                    let whole = text.split('.').next().unwrap_or("");
                    self.mtime = Some(whole.parse().map_err(|_| {
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
