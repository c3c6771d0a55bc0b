//! Selective restore: the paths a restore request names, what of the
//! archive holds them, and the stream of just those entries.
//!
//! With the archive's index, only the gzip members holding the selected
//! entries are read (checked against the index's checksums) and inflated;
//! the entries' tar bytes (headers and data, cut at the places the index
//! records) are put in a stream of their own, followed by the end of the
//! archive, and that stream goes through the restore like any archive, with
//! the selection as its scope. Without an index the whole archive is read
//! and the restore keeps only the selected entries: same result, slower.
//!
//! A hard link in the selection whose target is outside it is restored as a
//! file of its own with the data the target had in the archive (linked to the
//! other selected names of that target): the target itself is staged only
//! to make the link and is dropped before the commit, so nothing outside the
//! selection changes, and the link never joins a file of the server's that
//! may have changed since the backup. (GNU tar instead fails such a link, or
//! links it to whatever file has the target's name on disk.)

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::archive::gzip::{decode_member, encode_member, parse_member_header, MAX_MEMBER};
use crate::config::{AllowEntry, CompressionLevel};
use crate::download::{open_range, Download, Ranged};
use crate::error::{quote, Error, Result};
use crate::index::{member_checksum, EntryKind, Index, Member};
use crate::restore::normalize;

/// The most paths one request may name.
pub const MAX_PATHS: usize = 1000;
/// The longest path a request may name, in bytes.
pub const MAX_PATH_LEN: usize = 4096;

/// The normalised paths a restore is limited to: relative, `a/b` form,
/// none of them below another (a path below a named directory adds nothing).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    paths: Vec<Vec<u8>>,
    set: HashSet<Vec<u8>>,
    /// Every directory above a named path.
    above: HashSet<Vec<u8>>,
}

fn under(path: &[u8], prefix: &[u8]) -> bool {
    path == prefix || (path.starts_with(prefix) && path.get(prefix.len()) == Some(&b'/'))
}

impl Selection {
    /// Checks and normalises the paths of a request: a leading `/` is
    /// dropped (paths are always relative to the server directory); `..`,
    /// NUL bytes, empty paths and more than `MAX_PATHS` paths or
    /// `MAX_PATH_LEN` bytes are refused.
    pub fn parse(raw: &[String]) -> Result<Selection> {
        if raw.len() > MAX_PATHS {
            return Err(Error::invalid(format!(
                "the field `paths` names {} paths; at most {MAX_PATHS} are allowed",
                raw.len()
            )));
        }
        let mut paths: Vec<Vec<u8>> = Vec::with_capacity(raw.len());
        for p in raw {
            let bad = |why: &str| {
                Error::invalid(format!("the path {} in `paths` {why}", quote(p.as_bytes())))
            };
            if p.len() > MAX_PATH_LEN {
                return Err(bad(&format!("is longer than {MAX_PATH_LEN} bytes")));
            }
            if p.contains('\0') {
                return Err(bad("contains a NUL byte"));
            }
            let relative = p.trim_start_matches('/');
            if relative.split('/').any(|part| part == "..") {
                return Err(bad("may not contain `..`"));
            }
            let norm = normalize(relative.as_bytes()).map_err(&bad)?;
            if norm.is_empty() {
                return Err(bad(
                    "names the whole server directory (leave `paths` out for that)",
                ));
            }
            paths.push(norm);
        }
        paths.sort();
        paths.dedup();
        // Sorted, a path below another comes right after it or after
        // other paths below it.
        let mut kept: Vec<Vec<u8>> = Vec::with_capacity(paths.len());
        for p in paths {
            if !kept.last().is_some_and(|k| under(&p, k)) {
                kept.push(p);
            }
        }
        let set = kept.iter().cloned().collect();
        let mut above = HashSet::new();
        for p in &kept {
            for (i, b) in p.iter().enumerate() {
                if *b == b'/' {
                    above.insert(p[..i].to_vec());
                }
            }
        }
        Ok(Selection {
            paths: kept,
            set,
            above,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// The named paths, normalised, none below another.
    pub fn paths(&self) -> &[Vec<u8>] {
        &self.paths
    }

    /// The named path that `path` (normalised) is, or is below.
    pub fn named(&self, path: &[u8]) -> Option<&[u8]> {
        let mut end = 0;
        loop {
            let next = path[end..]
                .iter()
                .position(|b| *b == b'/')
                .map_or(path.len(), |i| end + i);
            if let Some(p) = self.set.get(&path[..next]) {
                return Some(p);
            }
            if next >= path.len() {
                return None;
            }
            end = next + 1;
        }
    }

    pub fn covers(&self, path: &[u8]) -> bool {
        !path.is_empty() && self.named(path).is_some()
    }

    /// Checks the archive's entry `path` (normalised), which is not a
    /// directory, against the named paths: one below it would be written
    /// through a symlink (`symlink`) or below a file, which a whole restore
    /// refuses, and so does a selective one, whichever comes first.
    pub fn check_not_above(&self, path: &[u8], symlink: bool) -> Result<()> {
        if !self.above.contains(path) {
            return Ok(());
        }
        let below = self
            .paths
            .iter()
            .find(|p| under(p, path))
            .map_or(path, |p| p.as_slice());
        Err(if symlink {
            crate::restore::paths::through_symlink(below)
        } else {
            Error::corrupt(format!(
                "cannot restore {}: a parent of it is not a directory",
                quote(below)
            ))
        })
    }
}

/// What a restore limited to a selection needs while it runs.
#[derive(Debug, Default)]
pub struct Scope {
    pub selection: Selection,
    /// Files outside the selection that hard links in it point to: staged
    /// so that the links can be made, then dropped before the commit.
    pub link_sources: HashSet<Vec<u8>>,
    /// The named paths the archive was seen to hold.
    seen: Mutex<HashSet<Vec<u8>>>,
    /// Link targets outside the selection that were not staged.
    missing: Mutex<HashSet<Vec<u8>>>,
}

/// What the restore does with an entry of the archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Restored.
    Yes,
    /// Left out.
    No,
    /// Staged as a hard link source, then dropped.
    Source,
}

impl Scope {
    pub fn new(selection: Selection, link_sources: HashSet<Vec<u8>>) -> Scope {
        Scope {
            selection,
            link_sources,
            ..Default::default()
        }
    }

    /// Decides for the entry `raw` (its name as in the archive) of type
    /// `kind`; `link` is a hard link's target. An entry that is not a
    /// directory above a named path is an error (see
    /// [`Selection::check_not_above`]).
    pub fn admit(&self, raw: &[u8], link: &[u8], kind: EntryKind) -> Result<Admit> {
        let Ok(path) = normalize(raw) else {
            // Not restorable anyway; outside the selection it is left
            // out, inside the restore refuses it.
            return Ok(if self.selection.covers(raw) {
                Admit::Yes
            } else {
                Admit::No
            });
        };
        if matches!(
            kind,
            EntryKind::File | EntryKind::Symlink | EntryKind::HardLink
        ) {
            self.selection
                .check_not_above(&path, kind == EntryKind::Symlink)?;
        }
        let file = kind == EntryKind::File;
        match self.selection.named(&path) {
            Some(named) if !path.is_empty() => {
                lock(&self.seen).insert(named.to_vec());
                let target = match kind {
                    EntryKind::HardLink => normalize(link).ok(),
                    _ => None,
                };
                if let Some(target) = target {
                    if !self.selection.covers(&target) && !self.link_sources.contains(&target) {
                        lock(&self.missing).insert(target);
                        return Ok(Admit::No);
                    }
                }
                Ok(Admit::Yes)
            }
            _ if file && self.link_sources.contains(&path) => Ok(Admit::Source),
            _ => Ok(Admit::No),
        }
    }

    /// The named paths the archive did not hold (so far).
    pub fn not_seen(&self) -> Vec<Vec<u8>> {
        let seen = lock(&self.seen);
        self.selection
            .paths()
            .iter()
            .filter(|p| !seen.contains(*p))
            .cloned()
            .collect()
    }

    /// Link targets the restore needed but did not have.
    pub fn missing_sources(&self) -> HashSet<Vec<u8>> {
        lock(&self.missing).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The error of a named path the archive does not hold.
pub fn not_in_backup(paths: &[Vec<u8>]) -> Error {
    let names: Vec<String> = paths.iter().take(10).map(|p| quote(p)).collect();
    Error::not_found(format!(
        "The backup does not hold {}{}.",
        names.join(", "),
        if paths.len() > 10 { ", ..." } else { "" }
    ))
}

/// What of an archive a selection needs, from its index.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Ranges `[start, end)` of the tar stream, in order, not touching.
    pub ranges: Vec<(u64, u64)>,
    /// See `Scope::link_sources`.
    pub link_sources: HashSet<Vec<u8>>,
    /// Indices of the members holding the ranges, in order.
    pub members: Vec<usize>,
}

impl Plan {
    /// Compressed bytes of the members the plan reads.
    pub fn compressed_bytes(&self, index: &Index) -> u64 {
        self.members
            .iter()
            .map(|i| index.members[*i].compressed)
            .sum()
    }
}

/// Whether an archive of `members` can be read member by member: every
/// member no larger than this engine's (an archive made elsewhere is often
/// one gzip member, which is then read as a stream instead).
pub fn by_members(members: &[Member]) -> bool {
    members
        .iter()
        .all(|m| m.compressed <= MAX_MEMBER as u64 && m.uncompressed <= MAX_MEMBER as u64)
}

/// The plan for `selection` from `index`; a named path the archive does not
/// hold is a not-found error.
pub fn plan(index: &Index, selection: &Selection) -> Result<Plan> {
    let mut ranges = Vec::new();
    let mut seen: HashSet<&[u8]> = HashSet::new();
    let mut files: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut link_sources = HashSet::new();
    for (i, e) in index.entries.iter().enumerate() {
        let Ok(path) = normalize(&e.path) else {
            continue;
        };
        if path.is_empty() {
            continue;
        }
        if matches!(
            e.kind,
            EntryKind::File | EntryKind::Symlink | EntryKind::HardLink
        ) {
            selection.check_not_above(&path, e.kind == EntryKind::Symlink)?;
        }
        let named = selection.named(&path);
        if let Some(named) = named {
            seen.insert(named);
            let start = index.tar_offset(e);
            ranges.push((start, start + e.tar_len()));
            if e.kind == EntryKind::HardLink {
                if let Ok(target) = normalize(&e.link) {
                    if !selection.covers(&target) {
                        // A target the index cannot place is left to the
                        // restore, which then reads the whole archive.
                        if let Some(&j) = files.get(&target) {
                            let t = &index.entries[j];
                            let start = index.tar_offset(t);
                            ranges.push((start, start + t.tar_len()));
                            link_sources.insert(target);
                        }
                    }
                }
            }
        }
        if e.kind == EntryKind::File && named.is_none() {
            files.insert(path, i);
        }
    }
    let missing: Vec<Vec<u8>> = selection
        .paths()
        .iter()
        .filter(|p| !seen.contains(p.as_slice()))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(not_in_backup(&missing));
    }
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (s, e) in ranges {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    let mut members: Vec<usize> = Vec::new();
    for (s, e) in &merged {
        for m in index.members_for(*s, *e) {
            if members.last() != Some(&m) {
                members.push(m);
            }
        }
    }
    Ok(Plan {
        ranges: merged,
        link_sources,
        members,
    })
}

/// Where the members are read from: the archive's bytes
/// `[offset, offset + len)`, as one reader.
pub trait MemberSource: Send {
    fn open(&mut self, offset: u64, len: u64) -> Result<Box<dyn Read + Send>>;
}

/// A local archive file.
pub struct FileSource(pub std::fs::File);

impl MemberSource for FileSource {
    fn open(&mut self, offset: u64, len: u64) -> Result<Box<dyn Read + Send>> {
        use std::io::{Seek, SeekFrom};
        let mut f = self
            .0
            .try_clone()
            .map_err(|e| Error::io("reading the backup", e))?;
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| Error::io("reading the backup", e))?;
        Ok(Box::new(f.take(len)))
    }
}

/// The message of the internal signal that a read would block.
const WOULD_BLOCK: &str = "(the download has nothing yet)";

/// The most compressed bytes one request for a run of members covers.
const MAX_RUN: u64 = 64 << 20;

/// The runs of adjacent members a plan reads (first, last inclusive), each
/// at most `MAX_RUN` bytes: one read (or HTTP request) each.
pub fn runs(index: &Index, plan: &Plan) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for &m in &plan.members {
        match runs.last_mut() {
            Some(run)
                if run.1 + 1 == m
                    && index.members[m].offset + index.members[m].compressed
                        - index.members[run.0].offset
                        <= MAX_RUN =>
            {
                run.1 = m
            }
            _ => runs.push((m, m)),
        }
    }
    runs
}

/// An archive in an object store, read through HTTP `Range` requests on
/// its download URL, one request per run of members (in order, one at a
/// time). Each answer must be a 206 naming exactly the range asked for.
pub struct HttpSource {
    url: String,
    allow: Vec<AllowEntry>,
    total: u64,
    first: Option<Box<dyn Read + Send>>,
}

impl HttpSource {
    pub fn new(url: &str, allow: &[AllowEntry], total: u64) -> HttpSource {
        HttpSource {
            url: url.to_string(),
            allow: allow.to_vec(),
            total,
            first: None,
        }
    }

    /// Asks for the plan's first run. `Err(Some(whole))`: the server
    /// ignored the range and answered with the whole object;
    /// `Err(None)`: the request failed (the caller streams the object).
    pub fn first(
        &mut self,
        index: &Index,
        plan: &Plan,
    ) -> std::result::Result<(), Option<Download>> {
        let Some(&(first, last)) = runs(index, plan).first() else {
            return Ok(());
        };
        let start = index.members[first].offset;
        let end = index.members[last].offset + index.members[last].compressed;
        match open_range(&self.url, &self.allow, start, end - start, self.total) {
            Ok(Ranged::Partial(r)) => {
                self.first = Some(r);
                Ok(())
            }
            Ok(Ranged::Whole(d)) => Err(Some(d)),
            Err(_) => Err(None),
        }
    }
}

impl MemberSource for HttpSource {
    fn open(&mut self, offset: u64, len: u64) -> Result<Box<dyn Read + Send>> {
        if let Some(r) = self.first.take() {
            return Ok(r);
        }
        match open_range(&self.url, &self.allow, offset, len, self.total)? {
            Ranged::Partial(r) => Ok(r),
            Ranged::Whole(_) => Err(Error::remote(
                "the backup link stopped answering range requests",
            )),
        }
    }
}

/// A `.tar.gz` stream of just the planned entries (see the module's
/// documentation), made as it is read: one member of the archive at a
/// time is read, checked and inflated.
pub struct SelectedArchive<S: MemberSource> {
    source: S,
    members: Vec<Member>,
    ranges: Vec<(u64, u64)>,
    /// Runs of adjacent members (first, last inclusive), in order.
    runs: Vec<(usize, usize)>,
    run: usize,
    next_member: usize,
    reader: Option<Box<dyn Read + Send>>,
    member_buf: Vec<u8>,
    /// Bytes of the current member read so far.
    filled: usize,
    tar: Vec<u8>,
    piece: Vec<u8>,
    out: Vec<u8>,
    out_len: usize,
    out_pos: usize,
    ended: bool,
    read: Arc<AtomicU64>,
}

impl<S: MemberSource> SelectedArchive<S> {
    pub fn new(index: &Index, plan: &Plan, source: S) -> SelectedArchive<S> {
        let runs = runs(index, plan);
        SelectedArchive {
            source,
            members: index.members.clone(),
            ranges: plan.ranges.clone(),
            runs,
            run: 0,
            next_member: usize::MAX,
            reader: None,
            member_buf: Vec::new(),
            filled: 0,
            tar: Vec::new(),
            piece: Vec::new(),
            out: Vec::new(),
            out_len: 0,
            out_pos: 0,
            ended: false,
            read: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Counts the archive bytes read (compressed), shared with the caller.
    pub fn bytes_read(&self) -> Arc<AtomicU64> {
        self.read.clone()
    }

    /// Makes the next output member; false at the end.
    fn produce(&mut self) -> Result<bool> {
        if self.ended {
            return Ok(false);
        }
        if self.run >= self.runs.len() {
            // The end of the archive: two zero blocks.
            self.out_len = encode_member(CompressionLevel::None, &[0u8; 1024], &mut self.out)?;
            self.out_pos = 0;
            self.ended = true;
            return Ok(true);
        }
        let (first, last) = self.runs[self.run];
        if self.reader.is_none() {
            let start = self.members[first].offset;
            let end = self.members[last].offset + self.members[last].compressed;
            self.reader = Some(self.source.open(start, end - start)?);
            self.next_member = first;
        }
        let i = self.next_member;
        let m = self.members[i];
        // The index is checked against each member, not trusted for sizes:
        // no member of ours is larger than this.
        if m.compressed > MAX_MEMBER as u64 || m.uncompressed > MAX_MEMBER as u64 {
            return Err(Error::corrupt(format!(
                "member {i} of the backup is larger than any member this engine writes"
            )));
        }
        let reader = self
            .reader
            .as_mut()
            .ok_or_else(|| Error::internal("no reader"))?;
        // Read in pieces that survive a `WouldBlock` (a download with
        // nothing yet): the caller asks again and the member goes on.
        self.member_buf.resize(m.compressed as usize, 0);
        while self.filled < self.member_buf.len() {
            match reader.read(&mut self.member_buf[self.filled..]) {
                Ok(0) => return Err(Error::corrupt("the backup ends before its index says")),
                Ok(n) => self.filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    return Err(Error::new(crate::Status::Internal, WOULD_BLOCK))
                }
                Err(e) => {
                    return Err(
                        match e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) {
                            Some(inner) => Error::new(inner.status, inner.message.clone()),
                            None => Error::io("reading the backup", e),
                        },
                    )
                }
            }
        }
        self.filled = 0;
        self.read.fetch_add(m.compressed, Ordering::Relaxed);
        let damaged = || {
            Error::corrupt(format!(
                "member {i} of the backup (at byte {}) does not match its index",
                m.offset
            ))
        };
        if member_checksum(&self.member_buf) != m.checksum {
            return Err(damaged());
        }
        match parse_member_header(&self.member_buf) {
            Some(header) => decode_member(&self.member_buf, header, &mut self.tar)?,
            // Another writer's member (the index of an archive made
            // elsewhere, written by a browse): any gzip member, at most as
            // long as the index says.
            None => {
                self.tar.clear();
                let mut gz = flate2::read::GzDecoder::new(&self.member_buf[..]);
                (&mut gz)
                    .take(m.uncompressed + 1)
                    .read_to_end(&mut self.tar)
                    .map_err(|_| damaged())?;
            }
        }
        if self.tar.len() as u64 != m.uncompressed {
            return Err(damaged());
        }
        // The parts of the planned ranges this member holds.
        self.piece.clear();
        let (lo, hi) = (m.tar_offset, m.tar_offset + m.uncompressed);
        let from = self.ranges.partition_point(|r| r.1 <= lo);
        for &(s, e) in self.ranges[from..].iter().take_while(|r| r.0 < hi) {
            let (s, e) = (s.max(lo) - lo, e.min(hi) - lo);
            self.piece
                .extend_from_slice(&self.tar[s as usize..e as usize]);
        }
        self.out_len = encode_member(CompressionLevel::None, &self.piece, &mut self.out)?;
        self.out_pos = 0;
        if i == last {
            self.reader = None;
            self.run += 1;
        } else {
            self.next_member = i + 1;
        }
        Ok(true)
    }
}

impl<S: MemberSource> Read for SelectedArchive<S> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.out_pos >= self.out_len {
            match self.produce() {
                Ok(true) => {}
                Ok(false) => return Ok(0),
                Err(e) if e.message == WOULD_BLOCK => {
                    return Err(std::io::ErrorKind::WouldBlock.into())
                }
                Err(e) => return Err(std::io::Error::other(e)),
            }
        }
        let n = buf.len().min(self.out_len - self.out_pos);
        buf[..n].copy_from_slice(&self.out[self.out_pos..self.out_pos + n]);
        self.out_pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(paths: &[&str]) -> Result<Selection> {
        Selection::parse(&paths.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn paths_are_checked_and_normalised() {
        let s = sel(&["/world/", "ops.json", "world/region/r.0.mca", "./a//b"]).unwrap();
        assert_eq!(
            s.paths(),
            &[b"a/b".to_vec(), b"ops.json".to_vec(), b"world".to_vec()]
        );
        assert!(s.covers(b"world"));
        assert!(s.covers(b"world/level.dat"));
        assert!(!s.covers(b"worlds"));
        assert!(!s.covers(b"a"));
        assert!(s.covers(b"a/b/c"));
        for bad in ["../x", "a/../../x", "a/..", "", "/", ".", "a\0b"] {
            let e = sel(&[bad]).unwrap_err();
            assert_eq!(e.status, crate::Status::InvalidArgument, "{bad:?}");
        }
        let long = "x".repeat(MAX_PATH_LEN + 1);
        assert!(sel(&[&long]).is_err());
        let many: Vec<String> = (0..=MAX_PATHS).map(|i| i.to_string()).collect();
        assert!(Selection::parse(&many).is_err());
    }
}
