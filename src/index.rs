//! The index of an archive: a small file beside each local archive
//! (`<uuid>.tar.gz.index`) that says where every gzip member and every
//! entry of the archive is, so that a directory can be listed, one file
//! restored or the archive verified without inflating all of it.
//!
//! The archive never needs its index: it stays a standard `.tar.gz`. An
//! index is only used after it has shown it belongs to the archive (same
//! length; every member read through it is checked against the member's
//! checksum), and any doubt falls back to reading the archive itself.
//!
//! Format (version 2): a gzip stream holding a sequence of records, each a
//! little-endian `u32` length followed by that many bytes of `postcard`
//! encoding of [`Record`]: one `Header`, the entries in archive order, the
//! members in archive order (each followed by a `MemberSha1` record), then
//! one `End`. A file without its `End` record is not an index. Entries come
//! first so the writer can stream them as the archive is made; members are
//! known only once they are compressed. Version 1 is the same without the
//! `MemberSha1` records; it is still read.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use serde::{Deserialize, Serialize};

use crate::archive::header::{EntryMeta, Kind};
use crate::error::{Error, Result};

pub mod browse;
pub mod scan;
pub mod verify;

pub use browse::{build_from_archive, list_dir, FileEntry};
pub use verify::{verify_archive, VerifyError, VerifyReport};

/// What the first record names, so that other files are never mistaken for
/// an index.
pub const MAGIC: &str = "wings-backup-index";
/// The format version this code writes.
pub const VERSION: u32 = 2;
/// The oldest format version this code reads (version 1 has no SHA-1
/// states of members).
pub const OLDEST_READ: u32 = 1;
/// The name of the index of the archive at `<uuid>.tar.gz` is that name
/// followed by this suffix.
pub const SUFFIX: &str = ".index";
/// The first byte of an encoded `Record::Entry` (its variant's index).
const ENTRY_TAG: u8 = 1;
/// Record bytes per gzip member of an index.
const CHUNK: usize = crate::archive::gzip::BLOCK_SIZE;
/// The largest record a reader accepts (a path and a link target of at most
/// 64 KiB each fit many times over).
const MAX_RECORD: u32 = 1 << 20;
/// The most entries an index built from an archive, or loaded whole, may
/// hold, and the most bytes of names and link targets: beyond them the
/// archive is refused, or the index not used (no real backup comes near; a
/// hostile archive or index must not exhaust memory).
pub const MAX_ENTRIES: usize = 4_000_000;
pub const MAX_NAME_BYTES: usize = 512 << 20;

/// The path of the index of the archive at `archive`.
pub fn path_for(archive: &Path) -> PathBuf {
    let mut name = archive.as_os_str().to_owned();
    name.push(SUFFIX);
    PathBuf::from(name)
}

/// What is known before the first entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexHeader {
    pub magic: String,
    pub version: u32,
    /// The compression level the members were made with (its name in the
    /// configuration, e.g. `best_speed`).
    pub level: String,
    /// A digest of the ignore rules the archive was made with (hex), so a
    /// later backup can tell whether its rules differ.
    pub ignore_digest: String,
    /// The most uncompressed bytes one member holds.
    pub block_size: u32,
    /// Seconds since the epoch at which the archive was started.
    pub created: i64,
}

impl IndexHeader {
    pub fn new(level: &str, ignore_digest: u64, block_size: usize) -> IndexHeader {
        IndexHeader {
            magic: MAGIC.to_string(),
            version: VERSION,
            level: level.to_string(),
            ignore_digest: format!("{ignore_digest:016x}"),
            block_size: block_size as u32,
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
        }
    }
}

/// The checksum the index keeps of a member's compressed bytes.
pub fn member_checksum(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// Incremental form of [`member_checksum`], for bytes read in pieces.
pub struct MemberHasher(xxhash_rust::xxh3::Xxh3);

impl MemberHasher {
    pub fn new() -> MemberHasher {
        MemberHasher(xxhash_rust::xxh3::Xxh3::new())
    }
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    pub fn finish(&self) -> u64 {
        self.0.digest()
    }
}

impl Default for MemberHasher {
    fn default() -> Self {
        MemberHasher::new()
    }
}

/// One gzip member of the archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Offset of the member's first byte in the archive file.
    pub offset: u64,
    /// Length of the member (its compressed bytes, header and trailer).
    pub compressed: u64,
    /// Length of the tar bytes it holds.
    pub uncompressed: u64,
    /// Offset of its first tar byte in the whole tar stream.
    pub tar_offset: u64,
    /// [`member_checksum`] of its compressed bytes.
    pub checksum: u64,
    /// The archive's SHA-1 state (`crate::archive::sha1::Sha1Stream::state`)
    /// after its first `(offset + compressed) / 64 * 64` bytes, which a
    /// later archive starting with the same bytes resumes from. Not part of
    /// the member's record: the `MemberSha1` record after it (format version
    /// 2); `None` when there is none.
    #[serde(skip)]
    pub sha1_state: Option<[u32; 5]>,
}

/// What an entry is, as the index records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    HardLink,
    Fifo,
}

impl EntryKind {
    pub fn name(self) -> &'static str {
        match self {
            EntryKind::File => "file",
            EntryKind::Dir => "dir",
            EntryKind::Symlink => "symlink",
            EntryKind::HardLink => "hardlink",
            EntryKind::Fifo => "fifo",
        }
    }

    /// What the index records for a tar entry of kind `kind`, with its link
    /// target; devices and unknown types are not recorded.
    pub fn of_tar(kind: &crate::archive::reader::EntryKind) -> Option<(EntryKind, &[u8])> {
        use crate::archive::reader::EntryKind as Tar;
        Some(match kind {
            Tar::File => (EntryKind::File, b""),
            Tar::Dir => (EntryKind::Dir, b""),
            Tar::Symlink(t) => (EntryKind::Symlink, t),
            Tar::HardLink(t) => (EntryKind::HardLink, t),
            Tar::Fifo => (EntryKind::Fifo, b""),
            Tar::Device | Tar::Unsupported(_) => return None,
        })
    }
}

/// What a later backup compares to tell whether a file changed (the rules
/// of git's index and rsync: a file rewritten with the same size and forged
/// times is not seen).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatKey {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

impl StatKey {
    pub fn of(st: &rustix::fs::Stat) -> StatKey {
        let ns = |s: i64, n: i64| s.saturating_mul(1_000_000_000).saturating_add(n);
        StatKey {
            dev: st.st_dev,
            ino: st.st_ino,
            size: st.st_size as u64,
            mtime_ns: ns(st.st_mtime, st.st_mtime_nsec as i64),
            ctime_ns: ns(st.st_ctime, st.st_ctime_nsec as i64),
        }
    }
}

/// One entry of the archive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Relative, `/`-separated, without a trailing slash (as in the archive,
    /// for directories without their `/`).
    pub path: Vec<u8>,
    pub kind: EntryKind,
    /// Bytes of data in the archive (0 for all but files).
    pub size: u64,
    /// Permission bits including setuid, setgid and sticky.
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Seconds since the epoch.
    pub mtime: i64,
    /// Target of a symlink or hard link; empty otherwise.
    pub link: Vec<u8>,
    /// The member holding the entry's first header block.
    pub member: u32,
    /// Offset of that block in the member's tar bytes.
    pub offset: u32,
    /// Tar bytes of the entry's headers (PAX records included); its data
    /// follows them.
    pub header_len: u32,
    /// The entry's stat key at the time it was archived (absent in an
    /// index built from an archive alone).
    pub stat: Option<StatKey>,
}

impl Entry {
    pub fn from_meta(meta: &EntryMeta, stat: Option<StatKey>) -> Entry {
        let (kind, link) = match &meta.kind {
            Kind::File => (EntryKind::File, Vec::new()),
            Kind::Dir => (EntryKind::Dir, Vec::new()),
            Kind::Symlink(t) => (EntryKind::Symlink, t.clone()),
            Kind::HardLink(t) => (EntryKind::HardLink, t.clone()),
            Kind::Fifo => (EntryKind::Fifo, Vec::new()),
        };
        Entry {
            path: meta.path.clone(),
            kind,
            size: meta.size,
            mode: meta.mode,
            uid: meta.uid,
            gid: meta.gid,
            mtime: meta.mtime,
            link,
            member: 0,
            offset: 0,
            header_len: 0,
            stat,
        }
    }

    /// Tar bytes the entry takes: headers, data and the data's padding.
    /// (Saturating: an index's sizes are not trusted.)
    pub fn tar_len(&self) -> u64 {
        let data = if self.kind == EntryKind::File {
            self.size.div_ceil(512).saturating_mul(512)
        } else {
            0
        };
        (self.header_len as u64).saturating_add(data)
    }
}

/// What is known once the archive is complete.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Footer {
    pub entries: u64,
    pub members: u64,
    /// Bytes of the archive file.
    pub archive_size: u64,
    /// SHA-1 of the archive file (hex).
    pub archive_sha1: String,
    /// Bytes of the whole tar stream.
    pub tar_size: u64,
    /// Bytes of file data in the archive.
    pub data_bytes: u64,
}

/// postcard encodes a variant by its place: new variants go at the end.
#[derive(Debug, Serialize, Deserialize)]
enum Record {
    Header(IndexHeader),
    Entry(Entry),
    Member(Member),
    End(Footer),
    /// The `sha1_state` of the member before it (version 2).
    MemberSha1([u32; 5]),
}

/// Writes an index, entries first.
pub struct IndexWriter<W: Write> {
    out: W,
    /// Records are gathered and compressed 1 MiB at a time, each piece a
    /// gzip member of its own as the archive's are (the file is one gzip
    /// stream to any reader).
    chunk: Vec<u8>,
    member: Vec<u8>,
    entries: u64,
}

fn failed(e: std::io::Error) -> Error {
    Error::io("writing the archive index", e)
}

impl<W: Write> IndexWriter<W> {
    pub fn new(out: W, header: &IndexHeader) -> Result<IndexWriter<W>> {
        let mut w = IndexWriter {
            out,
            chunk: Vec::with_capacity(CHUNK + (64 << 10)),
            member: Vec::new(),
            entries: 0,
        };
        w.record(&Record::Header(header.clone()))?;
        Ok(w)
    }

    fn record(&mut self, record: &Record) -> Result<()> {
        let at = self.chunk.len();
        self.chunk.extend_from_slice(&[0; 4]);
        let encoded = postcard::to_extend(record, std::mem::take(&mut self.chunk))
            .map_err(|e| Error::internal(format!("encoding an index record: {e}")))?;
        self.chunk = encoded;
        let len = (self.chunk.len() - at - 4) as u32;
        self.chunk[at..at + 4].copy_from_slice(&len.to_le_bytes());
        if self.chunk.len() >= CHUNK {
            self.flush_chunk()?;
        }
        Ok(())
    }

    /// Compresses and writes what was gathered, in members of at most
    /// `CHUNK` bytes.
    fn flush_chunk(&mut self) -> Result<()> {
        for piece in self.chunk.chunks(CHUNK) {
            let level = crate::config::CompressionLevel::BestSpeed;
            let len = crate::archive::gzip::encode_member(level, piece, &mut self.member)?;
            self.out.write_all(&self.member[..len]).map_err(failed)?;
        }
        self.chunk.clear();
        Ok(())
    }

    /// Adds the next entry (in archive order).
    pub fn entry(&mut self, entry: &Entry) -> Result<()> {
        self.entries += 1;
        // `record` takes the enum by reference; the clone is of one entry.
        self.record(&Record::Entry(entry.clone()))
    }

    /// Adds the members and the footer and flushes; returns the output.
    pub fn finish(mut self, members: &[Member], mut footer: Footer) -> Result<W> {
        for m in members {
            self.record(&Record::Member(*m))?;
            if let Some(state) = m.sha1_state {
                self.record(&Record::MemberSha1(state))?;
            }
        }
        footer.entries = self.entries;
        footer.members = members.len() as u64;
        self.record(&Record::End(footer))?;
        self.flush_chunk()?;
        self.out.flush().map_err(failed)?;
        Ok(self.out)
    }
}

/// The bytes a gzip stream holds. Members this library made (see
/// `gzip::parse_member_header`) are inflated whole by its own inflate
/// (ISA-L in the default build); from the first other member on, the rest is
/// read as any gzip stream.
struct GzMembers<R: Read> {
    state: GzState<R>,
    /// Inflated bytes of the current member, and how many were read.
    out: Vec<u8>,
    pos: usize,
    member: Vec<u8>,
}

enum GzState<R: Read> {
    Ours(R),
    Other(Box<MultiGzDecoder<std::io::Chain<std::io::Cursor<Vec<u8>>, R>>>),
    Done,
}

impl<R: Read> GzMembers<R> {
    fn new(input: R) -> GzMembers<R> {
        GzMembers {
            state: GzState::Ours(input),
            out: Vec::new(),
            pos: 0,
            member: Vec::new(),
        }
    }

    /// Inflates the next member into `out`, or switches to reading the rest
    /// as a plain gzip stream.
    fn next_member(&mut self) -> std::io::Result<()> {
        let GzState::Ours(mut input) = std::mem::replace(&mut self.state, GzState::Done) else {
            return Ok(());
        };
        // The header, or what is left of the stream if that is shorter.
        let mut head = Vec::with_capacity(crate::archive::gzip::HEADER_LEN);
        (&mut input)
            .take(crate::archive::gzip::HEADER_LEN as u64)
            .read_to_end(&mut head)?;
        if head.is_empty() {
            return Ok(());
        }
        let Some(header) = crate::archive::gzip::parse_member_header(&head) else {
            let rest = std::io::Cursor::new(head).chain(input);
            self.state = GzState::Other(Box::new(MultiGzDecoder::new(rest)));
            return Ok(());
        };
        self.member.resize(header.member_len, 0);
        self.member[..head.len()].copy_from_slice(&head);
        input.read_exact(&mut self.member[head.len()..])?;
        crate::archive::gzip::decode_member(&self.member, header, &mut self.out)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.message))?;
        self.pos = 0;
        self.state = GzState::Ours(input);
        Ok(())
    }
}

impl<R: Read> Read for GzMembers<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if self.pos < self.out.len() {
                let n = buf.len().min(self.out.len() - self.pos);
                buf[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            match &mut self.state {
                GzState::Other(rest) => return rest.read(buf),
                GzState::Done => return Ok(0),
                GzState::Ours(_) => {
                    self.out.clear();
                    self.pos = 0;
                    self.next_member()?;
                }
            }
        }
    }
}

/// Reads an index as a stream: header, then entries one at a time, then
/// the members and the footer.
pub struct IndexReader<R: Read> {
    /// Inflated in large pieces, read record by record from the buffer.
    input: BufReader<GzMembers<BufReader<R>>>,
    header: IndexHeader,
    /// A record read past the entries (the first member or the end).
    peeked: Option<Record>,
    buf: Vec<u8>,
}

fn corrupt(what: impl std::fmt::Display) -> Error {
    Error::invalid(format!("the archive index is unreadable: {what}"))
}

impl IndexReader<File> {
    /// Opens the index at `path`; `Ok(None)` if there is none.
    pub fn open(path: &Path) -> Result<Option<IndexReader<File>>> {
        match crate::safe_fs::open_for_reading(path) {
            Ok(f) if !f.metadata().is_ok_and(|m| m.is_file()) => {
                Err(corrupt("it is not a regular file"))
            }
            Ok(f) => IndexReader::new(f).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("opening the archive index", e)),
        }
    }
}

impl<R: Read> IndexReader<R> {
    pub fn new(input: R) -> Result<IndexReader<R>> {
        let mut r = IndexReader {
            input: BufReader::with_capacity(
                64 << 10,
                GzMembers::new(BufReader::with_capacity(64 << 10, input)),
            ),
            header: IndexHeader::new("", 0, 0),
            peeked: None,
            buf: Vec::with_capacity(256),
        };
        match r.read_record()? {
            Some(Record::Header(h)) if h.magic == MAGIC => {
                if !reads_version(h.version) {
                    return Err(corrupt(format!(
                        "format version {} (this build reads {OLDEST_READ} to {VERSION})",
                        h.version
                    )));
                }
                r.header = h;
                Ok(r)
            }
            _ => Err(corrupt("not an index")),
        }
    }

    pub fn header(&self) -> &IndexHeader {
        &self.header
    }

    fn read_record(&mut self) -> Result<Option<Record>> {
        if !self.read_record_bytes()? {
            return Ok(None);
        }
        postcard::from_bytes(&self.buf).map(Some).map_err(corrupt)
    }

    /// Reads the next record's bytes into `buf`; `false` at the end.
    fn read_record_bytes(&mut self) -> Result<bool> {
        let mut len = [0u8; 4];
        match self.input.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
            Err(e) => return Err(corrupt(e)),
        }
        let len = u32::from_le_bytes(len);
        if len > MAX_RECORD {
            return Err(corrupt(format!("a record of {len} bytes")));
        }
        self.buf.resize(len as usize, 0);
        self.input.read_exact(&mut self.buf).map_err(corrupt)?;
        Ok(true)
    }

    /// The next entry, or `None` after the last.
    pub fn next_entry(&mut self) -> Result<Option<Entry>> {
        if self.peeked.is_some() {
            return Ok(None);
        }
        match self.read_record()? {
            Some(Record::Entry(e)) => Ok(Some(e)),
            other => self.end_of_entries(other).map(|()| None),
        }
    }

    /// The first record after the entries: a member or the end is kept for
    /// `finish`; anything else is out of place.
    fn end_of_entries(&mut self, record: Option<Record>) -> Result<()> {
        match record {
            Some(r @ (Record::Member(_) | Record::End(_))) => {
                self.peeked = Some(r);
                Ok(())
            }
            Some(Record::Header(_)) => Err(corrupt("a second header")),
            Some(_) => Err(corrupt("records out of order")),
            None => Err(corrupt("it ends early")),
        }
    }

    /// Skips any entries left and reads the members and the footer.
    pub fn finish(self) -> Result<(Vec<Member>, Footer)> {
        self.finish_within(None)
    }

    /// [`finish`](Self::finish) for an archive of `archive_len` bytes: each
    /// member must begin where the one before it ended, hold at least a
    /// gzip member's smallest length, and end within the archive, checked
    /// as the members are read, so that an index cannot make its reader
    /// hold more members than such an archive has room for.
    pub fn finish_for_archive(self, archive_len: u64) -> Result<(Vec<Member>, Footer)> {
        self.finish_within(Some(archive_len))
    }

    fn finish_within(mut self, archive_len: Option<u64>) -> Result<(Vec<Member>, Footer)> {
        // Entries left are passed over undecoded: postcard writes the
        // variant's index first, and an entry's is 1.
        while self.peeked.is_none() {
            let record = if !self.read_record_bytes()? {
                None
            } else if self.buf.first() == Some(&ENTRY_TAG) {
                continue;
            } else {
                Some(postcard::from_bytes(&self.buf).map_err(corrupt)?)
            };
            self.end_of_entries(record)?;
        }
        let mut members = Vec::new();
        let mut next = self.peeked.take();
        // The smallest gzip member: a 10-byte header, an empty stored
        // block's 2 bytes (a fixed-Huffman end of block) and the trailer.
        const SMALLEST_MEMBER: u64 = 20;
        let mut end = 0u64;
        loop {
            match next {
                Some(Record::Member(m)) => {
                    if let Some(len) = archive_len {
                        if m.offset != end || m.compressed < SMALLEST_MEMBER {
                            return Err(corrupt("its members do not tile the archive"));
                        }
                        end = end.saturating_add(m.compressed);
                        if end > len {
                            return Err(corrupt("its members go past the archive's end"));
                        }
                    }
                    members.push(m)
                }
                Some(Record::MemberSha1(state)) if self.header.version >= 2 => {
                    match members.last_mut() {
                        Some(m) if m.sha1_state.is_none() => m.sha1_state = Some(state),
                        _ => return Err(corrupt("records out of order")),
                    }
                }
                Some(Record::End(footer)) => {
                    if footer.members != members.len() as u64 {
                        return Err(corrupt("its member count does not match"));
                    }
                    // Reading to the end checks the gzip trailer (CRC, length).
                    let mut rest = [0u8; 1];
                    return match self.input.read(&mut rest) {
                        Ok(0) => Ok((members, footer)),
                        Ok(_) => Err(corrupt("bytes after its end")),
                        Err(e) => Err(corrupt(e)),
                    };
                }
                Some(_) => return Err(corrupt("records out of order")),
                None => return Err(corrupt("it ends early")),
            }
            next = self.read_record()?;
        }
    }
}

/// Whether this code reads index format `version`.
pub fn reads_version(version: u32) -> bool {
    (OLDEST_READ..=VERSION).contains(&version)
}

/// The index beside the archive at `archive`, if there is one and it is the
/// index of this archive (its recorded length is the archive's `len`, and
/// its records agree). `Ok(None)` when there is none or it does not match;
/// an unreadable index counts as none (the archive does not need it).
pub fn load_for(archive: &Path, len: u64) -> Option<Index> {
    match Index::load(&path_for(archive)) {
        Ok(Some(index)) if index.footer.archive_size == len => Some(index),
        _ => None,
    }
}

/// A whole index in memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Index {
    pub header: IndexHeader,
    pub entries: Vec<Entry>,
    pub members: Vec<Member>,
    pub footer: Footer,
}

impl Index {
    /// Reads the whole index at `path`; `Ok(None)` if there is none.
    pub fn load(path: &Path) -> Result<Option<Index>> {
        Index::load_within(path, MAX_ENTRIES, MAX_NAME_BYTES)
    }

    fn load_within(
        path: &Path,
        max_entries: usize,
        max_name_bytes: usize,
    ) -> Result<Option<Index>> {
        let Some(mut r) = IndexReader::open(path)? else {
            return Ok(None);
        };
        let mut entries = Vec::new();
        let mut name_bytes = 0usize;
        while let Some(e) = r.next_entry()? {
            name_bytes += e.path.len() + e.link.len();
            if entries.len() >= max_entries || name_bytes > max_name_bytes {
                return Err(corrupt(format!(
                    "it holds more than {max_entries} entries or {max_name_bytes} bytes of names"
                )));
            }
            entries.push(e);
        }
        let header = r.header().clone();
        let (members, footer) = r.finish()?;
        let index = Index {
            header,
            entries,
            members,
            footer,
        };
        index.check_consistent()?;
        Ok(Some(index))
    }

    /// Checks what the records say of each other: members tile the archive
    /// and the tar stream, and every entry points into a member and ends
    /// within the tar stream.
    pub fn check_consistent(&self) -> Result<()> {
        let mut offset = 0u64;
        let mut tar = 0u64;
        for (i, m) in self.members.iter().enumerate() {
            if m.offset != offset || m.tar_offset != tar {
                return Err(corrupt(format!(
                    "member {i} is not where the last one ends"
                )));
            }
            offset += m.compressed;
            tar += m.uncompressed;
        }
        if offset != self.footer.archive_size || tar != self.footer.tar_size {
            return Err(corrupt("its members do not add up to the archive"));
        }
        if self.footer.entries != self.entries.len() as u64 {
            return Err(corrupt("its entry count does not match"));
        }
        for e in &self.entries {
            match self.members.get(e.member as usize) {
                Some(m)
                    if (e.offset as u64) < m.uncompressed
                        && (m.tar_offset + e.offset as u64)
                            .checked_add(e.tar_len())
                            .is_some_and(|end| end <= tar) => {}
                _ => return Err(corrupt("an entry points outside the archive")),
            }
        }
        Ok(())
    }

    /// Offset of `entry`'s first tar byte in the whole tar stream.
    pub fn tar_offset(&self, entry: &Entry) -> u64 {
        self.members[entry.member as usize].tar_offset + entry.offset as u64
    }

    /// The range of members holding tar bytes `[start, end)`.
    pub fn members_for(&self, start: u64, end: u64) -> std::ops::Range<usize> {
        let first = self
            .members
            .partition_point(|m| m.tar_offset + m.uncompressed <= start);
        let last = self.members.partition_point(|m| m.tar_offset < end);
        first..last.max(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;

    fn entry(path: &str, kind: EntryKind, member: u32, offset: u32) -> Entry {
        Entry {
            path: path.as_bytes().to_vec(),
            kind,
            size: 10,
            mode: 0o644,
            uid: 1000,
            gid: 1000,
            mtime: 1_700_000_000,
            link: Vec::new(),
            member,
            offset,
            header_len: 512,
            stat: Some(StatKey {
                dev: 1,
                ino: 2,
                size: 10,
                mtime_ns: 3,
                ctime_ns: 4,
            }),
        }
    }

    fn sample() -> (IndexHeader, Vec<Entry>, Vec<Member>, Footer) {
        let header = IndexHeader::new("best_speed", 42, 1 << 20);
        let entries = vec![
            entry("a", EntryKind::Dir, 0, 0),
            entry("a/b.txt", EntryKind::File, 0, 512),
            entry("c\u{e9}", EntryKind::File, 1, 0),
        ];
        let members = vec![
            Member {
                offset: 0,
                compressed: 100,
                uncompressed: 1536,
                tar_offset: 0,
                checksum: 7,
                sha1_state: Some([1, 2, 3, 4, 0xffff_ffff]),
            },
            Member {
                offset: 100,
                compressed: 50,
                uncompressed: 2048,
                tar_offset: 1536,
                checksum: 8,
                sha1_state: None,
            },
        ];
        let footer = Footer {
            entries: 0,
            members: 0,
            archive_size: 150,
            archive_sha1: "ab".into(),
            tar_size: 3584,
            data_bytes: 20,
        };
        (header, entries, members, footer)
    }

    fn write_sample() -> Vec<u8> {
        let (header, entries, members, footer) = sample();
        let mut w = IndexWriter::new(Vec::new(), &header).unwrap();
        for e in &entries {
            w.entry(e).unwrap();
        }
        w.finish(&members, footer).unwrap()
    }

    #[test]
    fn members_that_do_not_tile_the_archive_are_refused_as_they_are_read() {
        let (header, entries, members, footer) = sample();
        let write = |members: &[Member]| {
            let mut w = IndexWriter::new(Vec::new(), &header).unwrap();
            for e in &entries {
                w.entry(e).unwrap();
            }
            w.finish(members, footer.clone()).unwrap()
        };
        let read = |bytes: &[u8], len: u64| {
            let mut r = IndexReader::new(bytes).unwrap();
            while r.next_entry().unwrap().is_some() {}
            r.finish_for_archive(len)
        };
        assert_eq!(read(&write(&members), 150).unwrap().0, members);
        assert!(read(&write(&members), 149).is_err(), "past the end");
        let mut gap = members.clone();
        gap[1].offset = 101;
        assert!(read(&write(&gap), 151).is_err(), "a gap");
        // A million empty members (a few kilobytes of index) are refused at
        // the first, not gathered.
        let empty = vec![
            Member {
                offset: 0,
                compressed: 0,
                ..members[0]
            };
            1_000_000
        ];
        let bytes = write(&empty);
        assert!(bytes.len() < 1 << 20);
        assert!(read(&bytes, 150).is_err());
    }

    #[test]
    fn round_trips() {
        let bytes = write_sample();
        let dir = std::env::temp_dir().join(format!("wb-index-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.tar.gz.index");
        std::fs::write(&path, &bytes).unwrap();
        let index = Index::load(&path).unwrap().unwrap();
        let (header, entries, members, _) = sample();
        assert_eq!(index.header, header);
        assert_eq!(index.entries, entries);
        assert_eq!(index.members, members);
        assert_eq!(index.footer.entries, 3);
        assert_eq!(index.footer.members, 2);
        assert_eq!(index.tar_offset(&index.entries[2]), 1536);
        assert_eq!(index.members_for(0, 1), 0..1);
        assert_eq!(index.members_for(1000, 2000), 0..2);
        assert_eq!(index.members_for(1536, 1600), 1..2);
        assert!(Index::load(&dir.join("none")).unwrap().is_none());
        // More entries, or more bytes of names, than a load takes: the
        // index is refused, not gathered (the sample has 3 entries and
        // 11 bytes of names).
        assert!(Index::load_within(&path, 3, 11).unwrap().is_some());
        assert!(Index::load_within(&path, 2, 11).is_err());
        assert!(Index::load_within(&path, 3, 10).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn entries_are_passed_over_by_their_tag() {
        let (_, entries, members, _) = sample();
        let encoded = postcard::to_allocvec(&Record::Entry(entries[0].clone())).unwrap();
        assert_eq!(encoded[0], ENTRY_TAG);
        let encoded = postcard::to_allocvec(&Record::Member(members[0])).unwrap();
        assert_ne!(encoded[0], ENTRY_TAG);
        // finish() without reading the entries gets the same members.
        let bytes = write_sample();
        let r = IndexReader::new(&bytes[..]).unwrap();
        let (got, footer) = r.finish().unwrap();
        assert_eq!(got, members);
        assert_eq!(footer.entries, 3);
    }

    #[test]
    fn a_cut_or_foreign_file_is_refused() {
        let bytes = write_sample();
        // Cut anywhere in the compressed stream: never accepted.
        for cut in [10, bytes.len() / 2, bytes.len() - 9] {
            let r = IndexReader::new(&bytes[..cut]).and_then(|mut r| {
                while r.next_entry()?.is_some() {}
                r.finish()
            });
            assert!(r.is_err(), "cut at {cut} accepted");
        }
        // A byte changed anywhere in the compressed stream: never accepted.
        for at in [30, bytes.len() / 2, bytes.len() - 6] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            let r = IndexReader::new(&bad[..]).and_then(|mut r| {
                while r.next_entry()?.is_some() {}
                r.finish()
            });
            assert!(r.is_err(), "a flipped byte at {at} accepted");
        }
        // A gzip file that is not an index.
        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"hello world, not an index").unwrap();
        assert!(IndexReader::new(&gz.finish().unwrap()[..]).is_err());
    }

    #[test]
    fn a_newer_version_is_refused_by_name() {
        assert_eq!(VERSION, 2);
        let mut header = sample().0;
        header.version = VERSION + 1;
        let w = IndexWriter::new(Vec::new(), &header).unwrap();
        let bytes = w.finish(&[], Footer::default()).unwrap();
        let err = IndexReader::new(&bytes[..]).err().unwrap();
        assert!(
            err.message
                .contains("format version 3 (this build reads 1 to 2)"),
            "{}",
            err.message
        );
        for version in [0, 1, 2] {
            header.version = version;
            let w = IndexWriter::new(Vec::new(), &header).unwrap();
            let bytes = w.finish(&[], Footer::default()).unwrap();
            assert_eq!(IndexReader::new(&bytes[..]).is_ok(), version > 0);
        }
    }

    /// The records of a version-1 index as the code before version 2 wrote
    /// them (a header, two entries, two members, the end), uncompressed.
    const VERSION_1_RECORDS: &str = "39000000001277696e67732d6261636b75702d696e646578010a626573745f7370656564103030303030303030303030303030326180804080c49fd50c220000000107612f622e747874000aa403e807e80780c49fd50c0000800480040101020a060816000000010163000aa403e807e80780c49fd50c00010080040007000000020064800c0007080000000264328010800c080b0000000302029601026162801c14";

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(bytes).unwrap();
        gz.finish().unwrap()
    }

    fn unhex(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn a_version_1_index_still_reads_without_states() {
        let bytes = gzip(&unhex(VERSION_1_RECORDS));
        let mut r = IndexReader::new(&bytes[..]).unwrap();
        assert_eq!(r.header().version, 1);
        assert_eq!(r.header().level, "best_speed");
        assert_eq!(r.next_entry().unwrap().unwrap().path, b"a/b.txt");
        assert_eq!(r.next_entry().unwrap().unwrap().path, b"c");
        assert!(r.next_entry().unwrap().is_none());
        let (members, footer) = r.finish().unwrap();
        let (_, _, mut expected, _) = sample();
        for m in &mut expected {
            m.sha1_state = None;
        }
        assert_eq!(members, expected);
        assert_eq!(
            (footer.entries, footer.members, footer.archive_size),
            (2, 2, 150)
        );

        // The same index written by this code with version 1 in its header
        // and no states is byte for byte the old one: the records that were
        // there keep their encoding.
        let mut header = sample().0;
        header.version = 1;
        header.created = 1_700_000_000;
        let mut w = IndexWriter::new(Vec::new(), &header).unwrap();
        let mut e = entry("a/b.txt", EntryKind::File, 0, 512);
        w.entry(&e).unwrap();
        (e.path, e.member, e.offset, e.stat) = (b"c".to_vec(), 1, 0, None);
        w.entry(&e).unwrap();
        let footer = Footer {
            archive_size: 150,
            archive_sha1: "ab".into(),
            tar_size: 3584,
            data_bytes: 20,
            ..Default::default()
        };
        let written = w.finish(&expected, footer).unwrap();
        let mut raw = Vec::new();
        MultiGzDecoder::new(&written[..])
            .read_to_end(&mut raw)
            .unwrap();
        assert_eq!(raw, unhex(VERSION_1_RECORDS));
    }

    #[test]
    fn a_state_record_out_of_place_is_refused() {
        let (mut header, _, members, footer) = sample();
        let refused = |bytes: Vec<u8>| {
            let err = IndexReader::new(&bytes[..])
                .and_then(|r| r.finish())
                .err()
                .unwrap();
            assert!(
                err.message.contains("records out of order"),
                "{}",
                err.message
            );
        };
        // In a version-1 index.
        header.version = 1;
        let w = IndexWriter::new(Vec::new(), &header).unwrap();
        refused(w.finish(&members, footer.clone()).unwrap());
        // Before the first member.
        header.version = VERSION;
        let mut w = IndexWriter::new(Vec::new(), &header).unwrap();
        w.record(&Record::MemberSha1([9; 5])).unwrap();
        refused(w.finish(&members, footer.clone()).unwrap());
        // Twice after one member.
        let mut w = IndexWriter::new(Vec::new(), &header).unwrap();
        w.record(&Record::Member(members[0])).unwrap();
        w.record(&Record::MemberSha1([9; 5])).unwrap();
        w.record(&Record::MemberSha1([9; 5])).unwrap();
        refused(w.finish(&members[1..], footer.clone()).unwrap());
        // In place, it reads.
        let w = IndexWriter::new(Vec::new(), &header).unwrap();
        let bytes = w.finish(&members, footer).unwrap();
        let (read, _) = IndexReader::new(&bytes[..]).unwrap().finish().unwrap();
        assert_eq!(read, members);
        assert_eq!(read[0].sha1_state, Some([1, 2, 3, 4, 0xffff_ffff]));
    }
}
