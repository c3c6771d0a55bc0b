//! Stable member boundaries, and the reuse of a previous archive's members.
//!
//! # Layout
//! Where the writer cuts the tar stream into gzip members depends only on
//! the entries, so that two backups of a mostly unchanged tree cut it at the
//! same places:
//! - a *large* file (at least [`LARGE`] bytes of data) starts a new member
//!   at its first header block, is cut every [`BLOCK_SIZE`] tar bytes counted
//!   from that header, and the member after its last byte is a new one;
//! - smaller entries are grouped: a group ends after an entry once it holds
//!   [`MIN_GROUP`] bytes and the entry's path hash is a multiple of
//!   [`CUT_EVERY`], or once it holds [`SOFT_MAX`] bytes, and before an entry
//!   that would take it past [`BLOCK_SIZE`];
//! - the two end-of-archive blocks are a member of their own.
//!
//! The tar stream is the same as with any other cutting; only where the
//! members begin differs.
//!
//! # Reuse
//! A backup given the previous archive of the same server and its index
//! (same index version, compression level and ignore rules) copies an old
//! member run verbatim when the walk's next entries are exactly the entries
//! the run holds (path, type, size, mode, owner, mtime, link target and
//! stat key), the run starts at its first entry and ends where this layout
//! cuts. Every copied member is checked against the old index's checksum
//! (and its gzip framing) before it is written; a mismatch or a short read
//! makes the writer read and compress those entries from the tree instead.

use std::cmp::Ordering;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::archive::gzip::{self, BLOCK_SIZE};
use crate::index::{self, Entry, IndexHeader, IndexReader, Member, StatKey};

/// Files with at least this much data start members of their own.
pub const LARGE: u64 = 1 << 20;
/// A group of small entries ends, at the earliest, once it holds this much.
pub const MIN_GROUP: usize = 768 << 10;
/// ... after an entry whose path hash is a multiple of this ...
pub const CUT_EVERY: u64 = 8;
/// ... and at the latest once it holds this much.
pub const SOFT_MAX: usize = 1 << 20;
/// The most entries a run of one member may hold (1 MiB of 512-byte
/// entries), beyond which an index is not believed.
const MAX_RUN_ENTRIES: usize = BLOCK_SIZE / 512 + 1;

/// Whether an entry with `size` bytes of file data is large.
pub fn is_large(is_file: bool, size: u64) -> bool {
    is_file && size >= LARGE
}

/// Whether a new member starts before an entry of `tar_len` bytes when the
/// current one holds `len`.
pub fn cut_before(len: usize, tar_len: u64, large: bool) -> bool {
    len > 0 && (large || len as u64 + tar_len > BLOCK_SIZE as u64)
}

/// Whether a new member starts after the entry at `path` when the current
/// one then holds `len`.
pub fn cut_after(len: usize, path: &[u8], large: bool) -> bool {
    len > 0
        && (large
            || len >= SOFT_MAX
            || (len >= MIN_GROUP && xxhash_rust::xxh3::xxh3_64(path).is_multiple_of(CUT_EVERY)))
}

/// The order of the walk (depth-first, names sorted bytewise): paths
/// compared component by component, a directory before what it holds.
pub fn walk_order(a: &[u8], b: &[u8]) -> Ordering {
    let key = |c: u8| if c == b'/' { 0 } else { c };
    a.iter().map(|&c| key(c)).cmp(b.iter().map(|&c| key(c)))
}

/// Whether `new` (as the writer would index it) is the same entry as `old`:
/// every field that makes its tar bytes, and the stat key that vouches for
/// its data.
pub fn same_entry(new: &Entry, old: &Entry) -> bool {
    old.stat.is_some()
        && new.stat == old.stat
        && new.path == old.path
        && new.kind == old.kind
        && new.size == old.size
        && new.mode == old.mode
        && new.uid == old.uid
        && new.gid == old.gid
        && new.mtime == old.mtime
        && new.link == old.link
        && new.header_len == old.header_len
}

/// Old members that hold exactly a run of consecutive old entries, the
/// first at the start of the first member.
pub struct Run {
    pub entries: Vec<Entry>,
    pub members: Vec<Member>,
}

/// Old entries per batch from the reading thread.
const AHEAD_BATCH: usize = 256;

/// A previous archive whose index header matched: [`Pending::open`] reads
/// the rest of the index.
pub struct Pending {
    first: IndexReader<File>,
    index_path: std::path::PathBuf,
    header: IndexHeader,
    /// The archive file's length when it was opened.
    len: u64,
}

impl Pending {
    /// Reads the index's members and checks that they tile the archive
    /// exactly, then opens the index again to stream its entries, read on a
    /// thread of the scope `s` (inflated and decoded off the thread that
    /// walks with them); `None` if the index does not belong to the archive.
    pub fn open<'scope>(self, s: &'scope std::thread::Scope<'scope, '_>) -> Option<Previous> {
        // Read so that the members tile the archive file (offsets checked
        // there); here, the tar stream and the sizes this layout makes.
        let (members, footer) = self.first.finish_for_archive(self.len).ok()?;
        let (mut offset, mut tar) = (0u64, 0u64);
        for m in &members {
            if m.tar_offset != tar
                || m.uncompressed > BLOCK_SIZE as u64
                || m.compressed > gzip::max_member_len(BLOCK_SIZE) as u64
            {
                return None;
            }
            offset += m.compressed;
            tar += m.uncompressed;
        }
        if offset != self.len || footer.archive_size != self.len || tar != footer.tar_size {
            return None;
        }
        let mut entries = IndexReader::open(&self.index_path).ok()??;
        if *entries.header() != self.header {
            return None;
        }
        let cur = entries.next_entry().ok()?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Entry>>(4);
        s.spawn(move || loop {
            let mut batch = Vec::with_capacity(AHEAD_BATCH);
            let mut path_bytes = 0;
            while batch.len() < AHEAD_BATCH && path_bytes < crate::archive::writer::BATCH_PATH_BYTES
            {
                match entries.next_entry() {
                    Ok(Some(e)) => {
                        path_bytes += e.path.len() + e.link.len();
                        batch.push(e)
                    }
                    // The end, or an unreadable index: the reuse ends there.
                    _ => {
                        let _ = tx.send(batch);
                        return;
                    }
                }
            }
            if tx.send(batch).is_err() {
                return;
            }
        });
        Some(Previous {
            members,
            entries: rx,
            batch: Vec::new().into_iter(),
            cur,
            tar_pos: 0,
        })
    }
}

/// The previous archive, open for reading its members (from any thread).
pub struct OldArchive {
    file: File,
    /// Its stat key (device, inode, size, mtime and ctime) when opened: a
    /// member the kernel copied is trusted only while it has not moved.
    opened: Option<StatKey>,
}

/// File systems whose `copy_file_range` shares the source's blocks instead
/// of writing them again (`statfs` magic numbers): XFS and btrfs. OpenZFS's
/// block cloning is left out (releases 2.2.0 and 2.2.1 could corrupt data
/// through it), as is bcachefs (experimental).
const SHARING_FILE_SYSTEMS: [u64; 2] = [0x5846_5342, 0x9123_683e];

/// The block size of `file`'s file system: the unit in which extents are
/// shared (4096 when it cannot be read).
pub fn fs_block_size(file: &File) -> u64 {
    rustix::fs::fstatfs(file)
        .ok()
        .map(|fs| fs.f_bsize as u64)
        .filter(|b| b.is_power_of_two() && *b >= 512)
        .unwrap_or(4096)
}

/// The stat key of the open `file`.
fn stamp(file: &File) -> Option<StatKey> {
    rustix::fs::fstat(file).ok().map(|st| StatKey::of(&st))
}

/// The previous archive's index, read as a stream alongside the walk.
pub struct Previous {
    members: Vec<Member>,
    /// The old entries, in batches from the thread reading them, and the
    /// rest of the current batch.
    entries: std::sync::mpsc::Receiver<Vec<Entry>>,
    batch: std::vec::IntoIter<Entry>,
    /// The next old entry not yet passed.
    cur: Option<Entry>,
    /// Where `cur` starts in the old tar stream: the tar lengths of every
    /// entry before it. An entry the index places elsewhere (its member and
    /// offset disagree with the entries before it) ends the reuse.
    tar_pos: u64,
}

impl Previous {
    /// Opens the archive at `archive` and reads the header of its index:
    /// `None` unless the index was made as `expected` says (a version this
    /// build reads, the level, ignore rules and block size). Cheap: the
    /// rest, which reads the whole index, is [`Pending::open`].
    pub fn probe(archive: &Path, expected: &IndexHeader) -> Option<(OldArchive, Pending)> {
        let file = crate::safe_fs::open_for_reading(archive).ok()?;
        let meta = file.metadata().ok()?;
        if !meta.is_file() {
            return None;
        }
        let index_path = index::path_for(archive);
        let first = IndexReader::open(&index_path).ok()??;
        let header = first.header().clone();
        if !index::reads_version(header.version)
            || header.level != expected.level
            || header.ignore_digest != expected.ignore_digest
            || header.block_size != expected.block_size
        {
            return None;
        }
        Some((
            OldArchive::from_file(file),
            Pending {
                first,
                index_path,
                header,
                len: meta.len(),
            },
        ))
    }

    fn advance(&mut self) {
        // An unreadable index ends the reuse, never the backup.
        self.cur = self.batch.next().or_else(|| {
            self.batch = self.entries.recv().ok()?.into_iter();
            self.batch.next()
        });
    }

    /// Leaves `e`, the current entry, behind: false (and no more reuse)
    /// if the index did not place it where the entries before it end, or
    /// its size cannot be true.
    fn pass(&mut self, e: &Entry) -> bool {
        let placed = self
            .members
            .get(e.member as usize)
            .and_then(|m| m.tar_offset.checked_add(e.offset as u64));
        if e.size > 1 << 60 || placed != Some(self.tar_pos) {
            self.cur = None;
            return false;
        }
        self.tar_pos += e.tar_len();
        true
    }

    /// The old run that starts with the entry at `path`, if there is one
    /// (entries before it in walk order are passed for good).
    pub fn run_at(&mut self, path: &[u8]) -> Option<Run> {
        while let Some(cur) = &self.cur {
            match walk_order(&cur.path, path) {
                Ordering::Less => {
                    let e = self.cur.take()?;
                    if !self.pass(&e) {
                        return None;
                    }
                    self.advance();
                }
                Ordering::Greater => return None,
                Ordering::Equal => break,
            }
        }
        let first = self.cur.as_ref()?;
        if first.offset != 0 || first.member as usize >= self.members.len() {
            return None;
        }
        let start_member = first.member as usize;
        let mut run = Run {
            entries: Vec::new(),
            members: Vec::new(),
        };
        let (mut cum, mut covered) = (0u64, 0u64);
        let mut next_member = start_member;
        loop {
            let e = self.cur.take()?;
            // The index is untrusted: an entry placed elsewhere than where
            // the entries before it end, or a size that could overflow, ends
            // the reuse.
            if !self.pass(&e) {
                return None;
            }
            cum += e.tar_len();
            run.entries.push(e);
            self.advance();
            while covered < cum {
                let m = self.members.get(next_member)?;
                covered += m.uncompressed;
                run.members.push(*m);
                next_member += 1;
            }
            if covered == cum {
                return Some(run);
            }
            if run.entries.len() > MAX_RUN_ENTRIES {
                return None;
            }
        }
    }
}

impl OldArchive {
    /// The archive open as `file`, as it is now.
    pub fn from_file(file: File) -> OldArchive {
        let opened = stamp(&file);
        OldArchive { file, opened }
    }

    /// Whether members copied into `out` are better copied by the kernel:
    /// both files are on one file system that shares extents, where the
    /// copy takes no writing of data at all.
    pub fn shares_extents_with(&self, out: &File) -> bool {
        let same_device = match (self.opened, stamp(out)) {
            (Some(a), Some(b)) => a.dev == b.dev,
            _ => false,
        };
        same_device
            && rustix::fs::fstatfs(out)
                .is_ok_and(|fs| SHARING_FILE_SYSTEMS.contains(&((fs.f_type as u64) & 0xffff_ffff)))
    }

    /// Copies `len` bytes at `from` in this archive to `to` in `out` with
    /// `copy_file_range` (neither file's position moves); returns how many
    /// were copied before the first error or short copy.
    pub fn copy_range(&self, out: &File, from: u64, to: u64, len: usize) -> usize {
        let mut done = 0;
        while done < len {
            let (mut src, mut dst) = (from + done as u64, to + done as u64);
            match rustix::fs::copy_file_range(
                &self.file,
                Some(&mut src),
                out,
                Some(&mut dst),
                len - done,
            ) {
                Ok(0) | Err(_) => break,
                Ok(n) => done += n,
            }
        }
        done
    }

    /// Whether the archive's size, mtime and ctime are still those seen
    /// when it was opened: nothing has written to it since.
    pub fn unchanged(&self) -> bool {
        self.opened.is_some() && stamp(&self.file) == self.opened
    }

    /// Reads old member `m` into `buf` (its first `m.compressed` bytes) and
    /// checks it: checksum, gzip framing and the lengths it declares.
    pub fn read_member(&self, m: &Member, buf: &mut Vec<u8>) -> bool {
        let len = m.compressed as usize;
        if buf.len() < len {
            buf.resize(len, 0);
        }
        if self.file.read_exact_at(&mut buf[..len], m.offset).is_err() {
            return false;
        }
        let bytes = &buf[..len];
        if index::member_checksum(bytes) != m.checksum || len < gzip::HEADER_LEN + 8 {
            return false;
        }
        let le = |at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        bytes[..4] == [0x1f, 0x8b, 8, 4]
            && bytes[12..14] == *b"WB"
            && le(16) as u64 == m.compressed
            && le(20) as u64 == m.uncompressed
            && le(len - 4) as u64 == m.uncompressed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk_order_puts_a_directory_before_its_neighbours() {
        assert_eq!(walk_order(b"a/b", b"a.txt"), Ordering::Less);
        assert_eq!(walk_order(b"a", b"a/b"), Ordering::Less);
        assert_eq!(walk_order(b"a/b", b"a/b"), Ordering::Equal);
        assert_eq!(walk_order(b"b", b"a/z"), Ordering::Greater);
    }

    #[test]
    fn cuts_depend_on_the_entry_and_the_fill() {
        assert!(!cut_before(0, 10 << 20, true));
        assert!(cut_before(1, 10 << 20, true));
        assert!(cut_before(BLOCK_SIZE - 100, 512, false));
        assert!(!cut_before(1000, 512, false));
        assert!(cut_after(SOFT_MAX, b"x", false));
        assert!(!cut_after(MIN_GROUP - 1, b"x", false));
    }
}
