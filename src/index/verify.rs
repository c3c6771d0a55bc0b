//! Verifying an archive: one pass that checks every gzip member (CRC and
//! length, and with an index its offset, lengths and checksum), the tar
//! structure (header checksums, sizes, the end-of-archive blocks and what
//! follows them), and with an index every entry against it. Damage is named
//! by member (its number and where it starts in the file) and by entry.

use std::collections::HashSet;
use std::io::Read;

use super::scan::{MemberFault, Scanner};
use super::{Entry, EntryKind, Index};
use crate::archive::header::BLOCK;
use crate::archive::reader::{EntryKind as TarKind, TarReader, TarSource};
use crate::error::{Error, Result, Status};
use crate::progress::Control;

/// The most errors a report lists (all are counted).
pub const MAX_ERRORS: usize = 100;

/// One problem found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyError {
    /// The gzip member it is in (0-based), when it is in one.
    pub member: Option<u64>,
    /// Where that member starts in the archive file.
    pub offset: Option<u64>,
    /// The entry whose bytes it is in, when that is known.
    pub path: Option<Vec<u8>>,
    pub message: String,
}

/// What a verify found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// No problem found.
    pub ok: bool,
    /// Gzip members read.
    pub members: u64,
    /// Regular files in the archive.
    pub files: u64,
    /// Bytes of file data.
    pub bytes: u64,
    /// Whether the archive was checked against an index.
    pub indexed: bool,
    /// Problems found (at most `MAX_ERRORS`) and how many there were.
    pub errors: Vec<VerifyError>,
    pub error_count: u64,
}

impl VerifyReport {
    fn push(&mut self, e: VerifyError) {
        self.error_count += 1;
        if self.errors.len() < MAX_ERRORS {
            self.errors.push(e);
        }
    }
}

/// Verifies the archive `src` (`len` bytes), against `index` if given.
/// Damage is reported in the result; `Err` only for what stops the reading
/// itself (an I/O error, a cancel).
pub fn verify_archive(
    src: &mut dyn Read,
    len: u64,
    index: Option<&Index>,
    ctl: &mut Control<'_>,
) -> Result<VerifyReport> {
    let mut report = VerifyReport {
        indexed: index.is_some(),
        ..VerifyReport::default()
    };
    let mut tar_errors: Vec<(u64, Option<Vec<u8>>, String)> = Vec::new();
    let mut scanner = Scanner::new(src, len, index, true, ctl);
    let mut seen = 0usize;
    {
        let mut reader = TarReader::new(&mut scanner);
        let mut current: Option<Vec<u8>> = None;
        // The archive's symlinks so far (normalised): an entry below one is
        // refused by a restore.
        let mut symlinks: HashSet<Vec<u8>> = HashSet::new();
        let outcome = (|| -> Result<()> {
            while let Some(te) = reader.next_entry()? {
                let start = reader.entry_start();
                let header_len = reader.header_len();
                current = Some(te.path.clone());
                reader.source().add_entry();
                if let Some(e) = refused(&te.path, &te.kind, &mut symlinks) {
                    tar_errors.push((start, Some(te.path.clone()), e.message));
                }
                if te.kind == TarKind::File {
                    report.files += 1;
                    report.bytes += te.size;
                }
                if let Some(index) = index {
                    if !matches!(te.kind, TarKind::Device | TarKind::Unsupported(_))
                        && super::browse::normalize_entry_path(&te.path).is_some()
                    {
                        {
                            let (member, offset) = reader.source().locate(start);
                            match index.entries.get(seen) {
                                Some(want) => {
                                    let diffs = compare(want, &te, member, offset, header_len);
                                    if !diffs.is_empty() {
                                        tar_errors.push((
                                            start,
                                            Some(want.path.clone()),
                                            format!(
                                                "the entry differs from the index: {}",
                                                diffs.join(", ")
                                            ),
                                        ));
                                    }
                                }
                                None => tar_errors.push((
                                    start,
                                    Some(te.path.clone()),
                                    "the entry is not in the index".into(),
                                )),
                            }
                            seen += 1;
                        }
                    }
                }
                while !reader.read_data()?.is_empty() {}
            }
            // What follows the end-of-archive blocks: zeros only.
            let source = reader.source();
            loop {
                let at = source.position();
                let rest = source.next_slice(BLOCK)?;
                if rest.is_empty() {
                    return Ok(());
                }
                if rest.iter().any(|b| *b != 0) {
                    current = None;
                    return Err(Error::new(
                        Status::CorruptArchive,
                        format!("data after the end of the tar archive (tar byte {at})"),
                    ));
                }
            }
        })();
        if let Err(e) = outcome {
            match e.status {
                Status::CorruptArchive | Status::UnsafeEntry if !reader.source().broken => {
                    // Where the tar stream went wrong: the entry being read,
                    // or else the one the index places there.
                    let at = reader.entry_start();
                    let path = match (&current, index) {
                        (_, Some(index)) => entry_at(index, at).map(|e| e.path.clone()),
                        (Some(p), None) => Some(p.clone()),
                        _ => None,
                    };
                    tar_errors.push((at, path.or(current.clone()), e.message));
                }
                Status::CorruptArchive => {}
                _ => return Err(e),
            }
        }
    }
    if let Some(index) = index {
        if tar_errors.is_empty() && scanner.faults.is_empty() && seen != index.entries.len() {
            let at = scanner.position();
            tar_errors.push((
                at,
                None,
                format!(
                    "the archive holds {seen} entries; its index lists {}",
                    index.entries.len()
                ),
            ));
        }
    }
    // The members after damage are still checked, one by one.
    scanner.check_rest()?;
    scanner.report_progress()?;
    for (at, path, message) in tar_errors {
        let (member, _) = scanner.locate(at);
        let offset = scanner.members.get(member as usize).map(|m| m.offset);
        report.push(VerifyError {
            member: offset.map(|_| member),
            offset,
            path,
            message,
        });
    }
    let faults = std::mem::take(&mut scanner.faults);
    for fault in faults {
        let (path, detail) = name_damage(index, &fault);
        let message = match detail {
            Some(d) => format!("{} ({d})", fault.message),
            None => fault.message.clone(),
        };
        report.push(VerifyError {
            member: Some(fault.member),
            offset: Some(fault.offset),
            path,
            message,
        });
    }
    report.errors.sort_by_key(|e| (e.member, e.offset));
    report.members = scanner.members.len() as u64;
    report.ok = report.error_count == 0;
    Ok(report)
}

/// The index entry whose bytes hold tar byte `at`.
fn entry_at(index: &Index, at: u64) -> Option<&Entry> {
    let k = index.entries.partition_point(|e| index.tar_offset(e) <= at);
    let e = index.entries.get(k.checked_sub(1)?)?;
    (at < index.tar_offset(e) + e.tar_len()).then_some(e)
}

/// Which entry damage in a member is in: with an index, the entries whose
/// bytes the member holds; of those, the first whose header no longer
/// reads as the index says (when the member could be partly inflated), or
/// the only one. Otherwise the candidates are named in the detail.
fn name_damage(index: Option<&Index>, fault: &MemberFault) -> (Option<Vec<u8>>, Option<String>) {
    let Some(index) = index else {
        return (None, None);
    };
    let Some(m) = index.members.get(fault.member as usize) else {
        return (None, None);
    };
    let (start, end) = (m.tar_offset, m.tar_offset + m.uncompressed);
    let first = index
        .entries
        .partition_point(|e| index.tar_offset(e) + e.tar_len() <= start);
    let candidates: Vec<&Entry> = index.entries[first..]
        .iter()
        .take_while(|e| index.tar_offset(e) < end)
        .collect();
    if let Some(partial) = &fault.partial {
        for (i, e) in candidates.iter().enumerate() {
            if e.member as u64 != fault.member {
                continue;
            }
            // Every header block of the entry that lies in this member.
            let from = e.offset as usize;
            let to = (from + e.header_len as usize).min(m.uncompressed as usize);
            let intact = (from..to)
                .step_by(BLOCK)
                .all(|b| partial.get(b..b + BLOCK).is_some_and(header_checksum_ok));
            if !intact {
                if fault.stored || i == 0 {
                    return (Some(e.path.clone()), Some("a damaged tar header".into()));
                }
                // Deflate data inflates wrongly from the damage on: the
                // damage is in this header or in what precedes it.
                return suspects(&candidates[..=i], "a damaged tar header, or data before it");
            }
        }
    }
    // No header is damaged: the damage is in file data, so only entries
    // with data in this member can hold it.
    let candidates: Vec<&Entry> = if fault.partial.is_some() {
        let with_data: Vec<&Entry> = candidates
            .iter()
            .copied()
            .filter(|e| {
                let data = index.tar_offset(e) + e.header_len as u64;
                e.kind == EntryKind::File && e.size > 0 && data < end && data + e.size > start
            })
            .collect();
        if with_data.is_empty() {
            candidates
        } else {
            with_data
        }
    } else {
        candidates
    };
    suspects(&candidates, "")
}

/// The entry among `candidates` the damage is in: the only one, or none
/// with all of them named in the detail.
fn suspects(candidates: &[&Entry], why: &str) -> (Option<Vec<u8>>, Option<String>) {
    let why = (!why.is_empty()).then(|| why.to_string());
    match candidates.len() {
        0 => (None, why),
        1 => (Some(candidates[0].path.clone()), why),
        n => {
            let names: Vec<String> = candidates
                .iter()
                .take(10)
                .map(|e| String::from_utf8_lossy(&e.path).into_owned())
                .collect();
            let more = if n > 10 { ", ..." } else { "" };
            let list = format!("in one of {n} entries: {}{more}", names.join(", "));
            (
                None,
                Some(match why {
                    Some(w) => format!("{w}; {list}"),
                    None => list,
                }),
            )
        }
    }
}

fn header_checksum_ok(block: &[u8]) -> bool {
    let stored: Option<u32> = std::str::from_utf8(&block[148..156])
        .ok()
        .map(|s| s.trim_matches(|c: char| c == '\0' || c == ' '))
        .and_then(|s| u32::from_str_radix(s, 8).ok());
    let sum: u32 = block
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                *b as u32
            }
        })
        .sum();
    stored == Some(sum)
}

/// How an entry read from the archive differs from the index's record.
fn compare(
    want: &Entry,
    got: &crate::archive::reader::TarEntry,
    member: u64,
    offset: u64,
    header_len: u64,
) -> Vec<String> {
    let mut d = Vec::new();
    let path = super::browse::normalize_entry_path(&got.path).unwrap_or_default();
    if path != want.path {
        d.push(format!(
            "path {} (index: {})",
            String::from_utf8_lossy(&path),
            String::from_utf8_lossy(&want.path)
        ));
    }
    let (kind, link) = EntryKind::of_tar(&got.kind).unwrap_or((EntryKind::File, b""));
    if kind != want.kind {
        d.push(format!(
            "type {} (index: {})",
            kind.name(),
            want.kind.name()
        ));
    }
    if got.size != want.size {
        d.push(format!("size {} (index: {})", got.size, want.size));
    }
    if got.mode != want.mode {
        d.push(format!("mode {:o} (index: {:o})", got.mode, want.mode));
    }
    if (got.uid, got.gid) != (want.uid, want.gid) {
        d.push(format!(
            "owner {}:{} (index: {}:{})",
            got.uid, got.gid, want.uid, want.gid
        ));
    }
    if got.mtime != want.mtime {
        d.push(format!("mtime {} (index: {})", got.mtime, want.mtime));
    }
    if link != want.link.as_slice() {
        d.push(format!(
            "link {} (index: {})",
            String::from_utf8_lossy(link),
            String::from_utf8_lossy(&want.link)
        ));
    }
    if (member, offset) != (want.member as u64, want.offset as u64) {
        d.push(format!(
            "starts in member {member} at {offset} (index: member {} at {})",
            want.member, want.offset
        ));
    }
    if header_len != want.header_len as u64 {
        d.push(format!(
            "headers of {header_len} bytes (index: {})",
            want.header_len
        ));
    }
    d
}

/// The most symlinks of an archive a verify keeps in mind.
const MAX_SYMLINKS: usize = 1 << 20;

/// The error a restore refuses the entry `raw` of type `kind` with for its
/// names alone, before it touches a file: a path or hard link target that
/// leaves the server directory, an entry that would replace the server
/// directory, one below a symlink the archive made (`symlinks`, which it
/// keeps up to date). Names the engine reserves are skipped by a restore,
/// as are the types it does not write.
fn refused(raw: &[u8], kind: &TarKind, symlinks: &mut HashSet<Vec<u8>>) -> Option<Error> {
    use crate::restore::paths;
    let path = match paths::entry_path(raw) {
        Ok(path) => path,
        Err(e) => return Some(e),
    };
    let written = !matches!(
        kind,
        TarKind::Fifo | TarKind::Device | TarKind::Unsupported(_)
    );
    if path.is_empty() {
        return (written && *kind != TarKind::Dir).then(|| paths::replaces_root(raw));
    }
    if path.starts_with(crate::safe_fs::RESERVED_PREFIX) || !written {
        return None;
    }
    if let TarKind::HardLink(target) = kind {
        if let Err(e) = paths::link_target(raw, target) {
            return Some(e);
        }
    }
    let below_link = path
        .iter()
        .enumerate()
        .any(|(i, b)| *b == b'/' && symlinks.contains(&path[..i]));
    if below_link {
        return Some(paths::through_symlink(raw));
    }
    if matches!(kind, TarKind::Symlink(_)) {
        // Bounded: a hostile archive of millions of symlinks is not kept
        // whole (entries below the ones not kept are then not named).
        if symlinks.len() < MAX_SYMLINKS {
            symlinks.insert(path);
        }
    } else if !symlinks.is_empty() {
        symlinks.remove(&path);
    }
    None
}
