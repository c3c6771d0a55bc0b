//! One sequential pass over an archive that keeps track of its gzip
//! members: where each starts and ends, in the file and in the tar stream,
//! and whether it inflates cleanly. The tar parser of the restore
//! (`archive::reader::TarReader`) reads the inflated bytes through it, so
//! that every entry can be placed in its member. Verify and the index build
//! of an archive that has none both use it.
//!
//! Memory stays bounded whatever the archive claims: a member of this
//! engine's making (at most `gzip::MAX_MEMBER` bytes) is read whole, any
//! other gzip member is inflated as a stream one block at a time, and the
//! list of members kept is capped.

use std::io::{BufRead, Read};

use super::{member_checksum, Index, Member};
use crate::archive::gzip::{self, BLOCK_SIZE, HEADER_LEN, MAX_MEMBER};
use crate::archive::lookahead::{Lookahead, Observe};
use crate::archive::reader::{truncated, TarSource};
use crate::archive::sha1::Sha1Stream;
use crate::archive::writer::hex;
use crate::error::{Error, Result, Status};
use crate::progress::{Control, Counters, Phase};

/// The most members one pass keeps track of (an archive of this engine's
/// 1 MiB members would be 2 TiB).
pub const MAX_MEMBERS: usize = 1 << 21;

/// Damage found at the gzip level: which member, where it starts in the
/// file, and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberFault {
    pub member: u64,
    pub offset: u64,
    pub message: String,
    /// What the member inflated to before the damage (members read whole
    /// only), to tell which entry the damage is in.
    pub partial: Option<Vec<u8>>,
    /// Whether the member's deflate data is stored blocks (level `none`,
    /// or incompressible data): then a damaged byte changes one inflated
    /// byte only, and the entry it is in can be told exactly.
    pub stored: bool,
}

/// What the pass keeps of the bytes it has moved past: how many, and their
/// hashes (the member being read, and the whole file).
struct Passed {
    pos: u64,
    member_hash: super::MemberHasher,
    sha1: Sha1Stream,
}

impl Observe for Passed {
    fn consumed(&mut self, bytes: &[u8]) {
        self.member_hash.update(bytes);
        self.sha1.update(bytes);
        self.pos += bytes.len() as u64;
    }
    fn source_error(&self, e: std::io::Error) -> Error {
        Error::io("reading the archive", e)
    }
}

/// The archive file, read through a buffer that counts and hashes what is
/// consumed.
type Counted<'r> = Lookahead<'r, dyn Read + 'r, Passed>;

fn counted(src: &mut dyn Read) -> Counted<'_> {
    let passed = Passed {
        pos: 0,
        member_hash: super::MemberHasher::new(),
        sha1: Sha1Stream::new(),
    };
    Lookahead::new(src, 256 << 10, passed)
}

/// Where the input is: between members, or inside a member of another
/// tool's making that is inflated as a stream.
enum Input<'r> {
    Raw(Box<Counted<'r>>),
    Foreign(Box<flate2::bufread::GzDecoder<Counted<'r>>>),
    Gone,
}

/// The sequential reader (see the module's documentation).
pub struct Scanner<'r, 'i, 'c, 'k> {
    input: Input<'r>,
    /// The index's members, when the archive is checked against one.
    expected: Option<&'i [Member]>,
    /// The members read so far; the last may still be being read.
    pub members: Vec<Member>,
    /// Gzip-level damage found.
    pub faults: Vec<MemberFault>,
    /// Set once the tar stream is broken by damage (then it reads as ended
    /// with an error); members are still checked by `check_rest`.
    pub broken: bool,
    /// Keep going after damage (verify) or stop at the first (index build).
    tolerant: bool,
    block: Vec<u8>,
    pos: usize,
    tar_pos: u64,
    own: bool,
    done: bool,
    member_bytes: Vec<u8>,
    ctl: &'c mut Control<'k>,
    counters: Counters,
}

impl<'r, 'i, 'c, 'k> Scanner<'r, 'i, 'c, 'k> {
    /// A pass over `src` (`len` bytes, 0 if unknown). With `index`, each
    /// member is checked against it and read whole where it says so (which
    /// keeps the pass in step after a damaged member header).
    pub fn new(
        src: &'r mut dyn Read,
        len: u64,
        index: Option<&'i Index>,
        tolerant: bool,
        ctl: &'c mut Control<'k>,
    ) -> Scanner<'r, 'i, 'c, 'k> {
        let counters = Counters::default();
        counters.set_total(len);
        Scanner {
            input: Input::Raw(Box::new(counted(src))),
            expected: index.map(|i| &i.members[..]),
            members: Vec::new(),
            faults: Vec::new(),
            broken: false,
            tolerant,
            block: Vec::new(),
            pos: 0,
            tar_pos: 0,
            own: false,
            done: false,
            member_bytes: Vec::new(),
            ctl,
            counters,
        }
    }

    /// Bytes of the archive read so far.
    pub fn archive_pos(&self) -> u64 {
        match &self.input {
            Input::Raw(c) => c.observer.pos,
            Input::Foreign(d) => d.get_ref().observer.pos,
            Input::Gone => 0,
        }
    }

    /// SHA-1 of the archive bytes read so far (hex).
    pub fn sha1_hex(&self) -> String {
        match &self.input {
            Input::Raw(c) => hex(&c.observer.sha1.clone().finish()),
            _ => String::new(),
        }
    }

    pub fn add_entry(&mut self) {
        self.counters.add_entries(1);
    }

    /// The member holding tar byte `at`, and `at`'s offset in it.
    pub fn locate(&self, at: u64) -> (u64, u64) {
        let k = self
            .members
            .partition_point(|m| m.tar_offset + m.uncompressed <= at);
        match self.members.get(k) {
            Some(m) => (k as u64, at - m.tar_offset),
            None => (k as u64, 0),
        }
    }

    fn fault(&mut self, member: usize, offset: u64, message: String, partial: Option<Vec<u8>>) {
        self.faults.push(MemberFault {
            member: member as u64,
            offset,
            message,
            partial,
            stored: false,
        });
    }

    /// Records damage in the current member and breaks the tar stream.
    fn damaged(&mut self, member: usize, offset: u64, message: String) -> Error {
        let err = Error::corrupt(format!("gzip member {member} at byte {offset}: {message}"));
        self.fault(member, offset, message, None);
        self.broken = true;
        // The pass cannot keep in step after this.
        self.input = Input::Gone;
        err
    }

    fn progress(&mut self) -> Result<()> {
        let at = self.archive_pos();
        self.counters
            .bytes_done
            .store(at, std::sync::atomic::Ordering::Relaxed);
        self.counters
            .archive_bytes
            .store(at, std::sync::atomic::Ordering::Relaxed);
        self.ctl.tick(Phase::Extract, &self.counters)
    }

    /// Reports where the pass got to, whatever the time since the last
    /// report (at its end).
    pub fn report_progress(&mut self) -> Result<()> {
        let at = self.archive_pos();
        self.counters
            .bytes_done
            .store(at, std::sync::atomic::Ordering::Relaxed);
        self.counters
            .archive_bytes
            .store(at, std::sync::atomic::Ordering::Relaxed);
        self.ctl
            .report(crate::progress::snapshot(Phase::Extract, &self.counters))
    }

    /// Compares the member just read with the index's record of it.
    fn check_expected(&mut self, k: usize) {
        let Some(expected) = self.expected else {
            return;
        };
        let got = self.members[k];
        let Some(want) = expected.get(k).copied() else {
            let msg = format!(
                "the archive has more gzip members than the {} its index lists",
                expected.len()
            );
            self.fault(k, got.offset, msg, None);
            self.expected = None;
            return;
        };
        let mut wrong = Vec::new();
        if want.offset != got.offset {
            wrong.push(format!(
                "starts at byte {} (index: {})",
                got.offset, want.offset
            ));
        }
        if want.compressed != got.compressed {
            wrong.push(format!(
                "is {} bytes (index: {})",
                got.compressed, want.compressed
            ));
        }
        if want.uncompressed != got.uncompressed {
            wrong.push(format!(
                "holds {} tar bytes (index: {})",
                got.uncompressed, want.uncompressed
            ));
        }
        if want.checksum != got.checksum {
            wrong.push("its checksum differs from the index's".to_string());
        }
        if !wrong.is_empty() {
            // Already reported as damaged: the checksum says nothing new.
            if self.faults.iter().any(|f| f.member == k as u64) {
                return;
            }
            let msg = format!("the member {}", wrong.join(", "));
            self.fault(k, got.offset, msg, None);
        }
    }

    /// Reads the next member (or the next block of a streamed one) into
    /// `block`; false at the end of the archive.
    fn load(&mut self) -> Result<bool> {
        self.progress()?;
        if let Input::Foreign(_) = self.input {
            return self.load_foreign();
        }
        let Input::Raw(input) = &mut self.input else {
            return Ok(false);
        };
        let k = self.members.len();
        let offset = input.observer.pos;
        let head = input.peek(HEADER_LEN)?;
        if head.is_empty() {
            if k == 0 {
                return Err(self.damaged(0, 0, "the archive is empty".into()));
            }
            if let Some(expected) = self.expected {
                if expected.len() > k {
                    let msg = format!(
                        "the archive ends after {k} gzip members (byte {offset}); its index lists {}",
                        expected.len()
                    );
                    return Err(self.damaged(k, offset, msg));
                }
            }
            return Ok(false);
        }
        if head.len() < 2 || head[0] != 0x1f || head[1] != 0x8b {
            if k == 0 {
                return Err(self.damaged(0, 0, "the archive is not gzip data".into()));
            }
            // Zero padding after the last member is accepted.
            loop {
                let avail = input.peek(1)?;
                if avail.is_empty() {
                    break;
                }
                if avail.iter().any(|b| *b != 0) {
                    let msg = "unexpected data after the last gzip member".to_string();
                    return Err(self.damaged(k, offset, msg));
                }
                let n = avail.len();
                input.consume(n);
            }
            return Ok(false);
        }
        if self.members.len() >= MAX_MEMBERS {
            return Err(Error::corrupt(format!(
                "the archive has more than {MAX_MEMBERS} gzip members"
            )));
        }
        let ours = gzip::parse_member_header(head);
        // With an index, a member it says is of this engine's size is read
        // whole at the length it gives, so that a damaged header does not
        // lose track of the members after it.
        let whole = match (self.expected.and_then(|e| e.get(k)), ours) {
            (Some(m), _)
                if m.offset == offset
                    && m.compressed <= MAX_MEMBER as u64
                    && m.uncompressed <= MAX_MEMBER as u64 =>
            {
                Some((m.compressed as usize, Some(m.uncompressed as usize)))
            }
            (_, Some(h)) => Some((h.member_len, None)),
            _ => None,
        };
        input.observer.member_hash = super::MemberHasher::new();
        let tar_offset = self.tar_pos;
        self.members.push(Member {
            offset,
            compressed: 0,
            uncompressed: 0,
            tar_offset,
            checksum: 0,
            sha1_state: None,
        });
        let Some((len, expected_len)) = whole else {
            let Input::Raw(input) = std::mem::replace(&mut self.input, Input::Gone) else {
                return Ok(false);
            };
            self.input = Input::Foreign(Box::new(flate2::bufread::GzDecoder::new(*input)));
            return self.load_foreign();
        };
        self.own = self.own || ours.is_some();
        let mut bytes = std::mem::take(&mut self.member_bytes);
        bytes.clear();
        input.take_into(len, &mut bytes)?;
        let checksum = member_checksum(&bytes);
        let m = &mut self.members[k];
        m.compressed = bytes.len() as u64;
        m.checksum = checksum;
        let decoded = if bytes.len() < len {
            Err((truncated().message, None))
        } else {
            decode_whole(&bytes, expected_len, &mut self.block)
        };
        self.member_bytes = bytes;
        self.members[k].uncompressed = self.block.len() as u64;
        match decoded {
            Ok(()) => {
                self.pos = 0;
                self.tar_pos += self.block.len() as u64;
                self.check_expected(k);
                Ok(true)
            }
            Err((message, partial)) => {
                self.block.clear();
                self.members[k].uncompressed = expected_len.unwrap_or(0) as u64;
                self.tar_pos += self.members[k].uncompressed;
                self.fault(k, offset, message.clone(), partial);
                // The first deflate block's type (BTYPE 00: stored); our
                // writer stores a member whole or not at all.
                let stored = ours.is_some()
                    && self
                        .member_bytes
                        .get(HEADER_LEN)
                        .is_some_and(|b| b & 0b110 == 0);
                if let Some(f) = self.faults.last_mut() {
                    f.stored = stored;
                }
                self.broken = true;
                Err(Error::corrupt(format!(
                    "gzip member {k} at byte {offset}: {message}"
                )))
            }
        }
    }

    /// The next block of a member inflated as a stream.
    fn load_foreign(&mut self) -> Result<bool> {
        let k = self.members.len() - 1;
        let offset = self.members[k].offset;
        let Input::Foreign(decoder) = &mut self.input else {
            return Ok(false);
        };
        self.block.resize(BLOCK_SIZE, 0);
        let mut filled = 0;
        let mut failed = None;
        while filled < BLOCK_SIZE {
            match decoder.read(&mut self.block[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        self.block.truncate(filled);
        self.pos = 0;
        self.tar_pos += filled as u64;
        self.members[k].uncompressed += filled as u64;
        if let Some(e) = failed {
            if let Some(err) = e.get_ref().and_then(|i| i.downcast_ref::<Error>()) {
                if err.status != Status::CorruptArchive {
                    return Err(err.clone());
                }
            }
            let message = match e.kind() {
                std::io::ErrorKind::UnexpectedEof => truncated().message,
                _ => format!("invalid gzip data: {e}"),
            };
            self.block.clear();
            self.input = Input::Gone;
            return Err(self.damaged(k, offset, message));
        }
        if filled > 0 {
            return Ok(true);
        }
        // The member is complete: back between members.
        let Input::Foreign(decoder) = std::mem::replace(&mut self.input, Input::Gone) else {
            return Ok(false);
        };
        let input = decoder.into_inner();
        self.members[k].compressed = input.observer.pos - offset;
        self.members[k].checksum = input.observer.member_hash.finish();
        self.input = Input::Raw(Box::new(input));
        self.check_expected(k);
        self.load()
    }

    /// Reads the members after damage, checking each at the gzip level
    /// (while the archive lets the pass keep in step); the tar stream is
    /// not parsed any further.
    pub fn check_rest(&mut self) -> Result<()> {
        self.broken = false;
        loop {
            self.pos = self.block.len();
            match self.load() {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                Err(e) if e.status == Status::CorruptArchive => {
                    if matches!(self.input, Input::Gone) {
                        return Ok(());
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl TarSource for Scanner<'_, '_, '_, '_> {
    fn next_slice(&mut self, max: usize) -> Result<&[u8]> {
        while self.pos >= self.block.len() {
            if self.done {
                return Ok(&[]);
            }
            if self.broken {
                return Err(Error::corrupt("the archive is damaged"));
            }
            match self.load() {
                Ok(true) => {}
                Ok(false) => {
                    self.done = true;
                    return Ok(&[]);
                }
                Err(e) => {
                    if !self.tolerant || e.status != Status::CorruptArchive {
                        self.done = true;
                    }
                    return Err(e);
                }
            }
        }
        let n = max.min(self.block.len() - self.pos);
        let slice = &self.block[self.pos..self.pos + n];
        self.pos += n;
        Ok(slice)
    }

    fn own_members(&self) -> bool {
        self.own
    }

    fn position(&self) -> u64 {
        self.tar_pos - (self.block.len() - self.pos) as u64
    }
}

/// Inflates one member held whole into `out`. On damage, the message and
/// what could be inflated before it.
fn decode_whole(
    bytes: &[u8],
    expected_len: Option<usize>,
    out: &mut Vec<u8>,
) -> std::result::Result<(), (String, Option<Vec<u8>>)> {
    out.clear();
    if let Some(h) = gzip::parse_member_header(bytes) {
        if h.member_len == bytes.len() && expected_len.is_none_or(|n| n == h.data_len) {
            return match gzip::decode_member(bytes, h, out) {
                Ok(()) => Ok(()),
                Err(e) => {
                    let partial = best_effort(&bytes[HEADER_LEN.min(bytes.len())..], h.data_len);
                    out.clear();
                    Err((e.message, Some(partial)))
                }
            };
        }
    }
    // Another tool's member, or ours with a damaged header: inflate it as
    // gzip, at most the length the index gives (or `MAX_MEMBER`).
    let limit = expected_len.unwrap_or(MAX_MEMBER).min(MAX_MEMBER);
    let mut decoder = flate2::bufread::GzDecoder::new(bytes);
    let read = (&mut decoder)
        .take(limit as u64 + 1)
        .read_to_end(out)
        .map_err(|e| e.to_string());
    let rest = decoder.into_inner().len();
    let fail = |msg: String, out: &mut Vec<u8>| {
        let partial = std::mem::take(out);
        Err((msg, Some(partial)))
    };
    match read {
        Err(e) => {
            // A damaged header: what the body holds, for naming the entry.
            let mut partial = Vec::new();
            if bytes.len() > HEADER_LEN {
                partial = best_effort(&bytes[HEADER_LEN..], limit);
            }
            out.clear();
            Err((format!("invalid gzip data: {e}"), Some(partial)))
        }
        Ok(_) if out.len() > limit => {
            fail("the member inflates to more than it should".into(), out)
        }
        Ok(_) if rest != 0 => fail("the member is longer than its gzip data".into(), out),
        Ok(_) if expected_len.is_some_and(|n| n != out.len()) => {
            fail("gzip member length mismatch".into(), out)
        }
        Ok(_) => Ok(()),
    }
}

/// What raw deflate `body` inflates to before it fails (at most `limit`
/// bytes).
fn best_effort(body: &[u8], limit: usize) -> Vec<u8> {
    let mut out = vec![0; limit.min(MAX_MEMBER)];
    let mut z = flate2::Decompress::new(false);
    let _ = z.decompress(body, &mut out, flate2::FlushDecompress::Finish);
    out.truncate(z.total_out() as usize);
    out
}
