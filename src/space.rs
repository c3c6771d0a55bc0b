//! Space before work: what a backup of a tree would hold (the dry run and
//! the estimate of its archive's size), and what a restore would need,
//! measured before anything is read or written so that a call that cannot
//! fit fails at once with `Quota` (see docs/design.md, "Space checks").

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::time::Duration;

use crate::archive::gzip::{self, BLOCK_SIZE, HEADER_LEN};
use crate::archive::header::{self, Kind};
use crate::archive::walk::{Ignored, Skipped, TreeWalker};
use crate::error::{Error, Result, Status};
use crate::ignore::IgnoreRules;
use crate::progress::{Control, Shared};

/// Ignored paths a dry run lists by name (all are counted).
pub const MAX_IGNORED_LISTED: usize = 1000;

/// What a backup of a tree would hold, from a walk that reads no file data
/// (the walk of a backup: same rules, same order, same exclusions).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TreeMeasure {
    /// Entries the archive would hold (files, directories, links, FIFOs).
    pub entries: u64,
    /// Regular files whose data the archive would hold (a second hard link
    /// to a file is an entry, not a file).
    pub files: u64,
    /// Bytes of file data.
    pub bytes: u64,
    /// Length of the uncompressed tar stream: headers, data, padding and
    /// the end-of-archive blocks.
    pub tar_bytes: u64,
    pub skipped: Vec<Skipped>,
    pub skipped_count: u64,
    /// The ignored paths, when asked for.
    pub ignored: Option<Ignored>,
}

/// The answer of a dry run (`Engine::dry_run_backup`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DryRunReport {
    pub entries: u64,
    pub files: u64,
    pub bytes: u64,
    /// Paths the ignore rules leave out (an ignored directory is one path:
    /// what it holds is never walked).
    pub ignored_count: u64,
    /// The first `MAX_IGNORED_LISTED` of them, in walk order.
    pub ignored: Vec<Vec<u8>>,
    /// What a backup would leave out for another reason (the first
    /// `walk::MAX_LISTED`), as a backup's `skipped`.
    pub skipped: Vec<Skipped>,
    pub skipped_count: u64,
    /// The archive's estimated size (the estimate of the space check).
    pub estimated_size: u64,
}

impl DryRunReport {
    /// The report of a walk, its size estimated from `last` (see
    /// `estimate_archive`).
    pub fn from_measure(measure: TreeMeasure, last: Option<(u64, u64)>) -> DryRunReport {
        let estimated_size = estimate_archive(&measure, last);
        let ignored = measure.ignored.unwrap_or_default();
        DryRunReport {
            entries: measure.entries,
            files: measure.files,
            bytes: measure.bytes,
            ignored_count: ignored.count,
            ignored: ignored.paths,
            skipped: measure.skipped,
            skipped_count: measure.skipped_count,
            estimated_size,
        }
    }
}

/// How a measuring walk looks at the tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Walk {
    /// The backup's walk exactly: files opened (and stated through their
    /// handle, never read), so that a file a backup could not open is
    /// listed as skipped; ignored paths collected.
    DryRun,
    /// For the space check: files stated by name (one call each instead
    /// of three); a file a backup could not open is counted.
    SpaceCheck,
}

/// Walks the tree under `root` as a backup would (the same walker, rules,
/// order and exclusions), reading no file data. Cancellable through `ctl`
/// within one entry, even inside a large ignored directory.
pub fn measure_tree(
    root: OwnedFd,
    ignore: &IgnoreRules,
    exclude: &[(u64, u64)],
    how: Walk,
    ctl: &Control<'_>,
) -> Result<TreeMeasure> {
    let shared = Shared::default();
    let done = std::sync::atomic::AtomicBool::new(false);
    let token = ctl.cancel_token();
    std::thread::scope(|s| {
        if let Some(token) = token {
            // The walk's stop flag follows the cancel token (the walk may
            // spend a while inside one directory of ignored names).
            let (shared, done) = (&shared, &done);
            s.spawn(move || {
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    if token.is_triggered() {
                        shared.stop();
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            });
        }
        let result = walk(root, ignore, exclude, how, &shared, ctl);
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        result
    })
}

fn walk(
    root: OwnedFd,
    ignore: &IgnoreRules,
    exclude: &[(u64, u64)],
    how: Walk,
    shared: &Shared,
    ctl: &Control<'_>,
) -> Result<TreeMeasure> {
    let mut walker = TreeWalker::new(root, ignore)?;
    walker.stop_when(shared);
    walker.exclude(exclude);
    match how {
        Walk::DryRun => walker.collect_ignored(MAX_IGNORED_LISTED),
        Walk::SpaceCheck => walker.stat_only(),
    }
    let mut m = TreeMeasure::default();
    let mut header_buf = Vec::with_capacity(3 * header::BLOCK);
    loop {
        ctl.check()?;
        let item = match walker.next_item() {
            Ok(Some(item)) => item,
            Ok(None) => break,
            Err(e) => {
                ctl.check()?;
                return Err(e);
            }
        };
        header_buf.clear();
        header::encode(&item.meta, &mut header_buf);
        m.tar_bytes += header_buf.len() as u64;
        if item.meta.kind == Kind::File {
            m.files += 1;
            m.bytes += item.meta.size;
            m.tar_bytes += item.meta.size + header::padding(item.meta.size) as u64;
        }
        m.entries += 1;
    }
    header_buf.clear();
    header::end_of_archive(&mut header_buf);
    m.tar_bytes += header_buf.len() as u64;
    m.skipped = std::mem::take(&mut walker.skipped);
    m.skipped_count = walker.skipped_count;
    m.ignored = walker.take_ignored();
    Ok(m)
}

/// The most an archive of a tar stream of `tar_bytes` can take: every
/// 1 MiB block stored, with its gzip framing (the writer never exceeds it).
pub fn worst_case_archive(tar_bytes: u64) -> u64 {
    let full = tar_bytes / BLOCK_SIZE as u64;
    let rest = (tar_bytes % BLOCK_SIZE as u64) as usize;
    let mut total = full * gzip::max_member_len(BLOCK_SIZE) as u64;
    if rest > 0 {
        total += gzip::max_member_len(rest) as u64;
    }
    total
}

/// The estimate of an archive's size: the tree's bytes of file data times
/// the server's last compression ratio (`last` = (archive size, bytes of
/// file data) of its last successful backup), never more than the worst
/// case; without a usable ratio, the worst case (the tar stream, headers
/// and padding included, stored uncompressed).
pub fn estimate_archive(m: &TreeMeasure, last: Option<(u64, u64)>) -> u64 {
    let worst = worst_case_archive(m.tar_bytes);
    match last {
        Some((size, bytes)) if size > 0 && bytes > 0 => {
            let scaled = (m.bytes as u128 * size as u128).div_ceil(bytes as u128);
            worst.min(u64::try_from(scaled).unwrap_or(u64::MAX))
        }
        _ => worst,
    }
}

/// Bytes an unprivileged writer may still use on the filesystem of `dir`
/// (`f_bavail * f_frsize`).
pub fn free_bytes(dir: BorrowedFd<'_>) -> Result<u64> {
    let st = rustix::fs::fstatvfs(dir).map_err(|e| Error::os("measuring free space", e))?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// The error of a call that would not fit.
pub fn no_room(what: &str, needed: u64, free: u64) -> Error {
    Error::new(
        Status::Quota,
        format!(
            "insufficient disk space for {what}: it needs about {needed} bytes \
             and {free} bytes are free"
        ),
    )
}

/// What a restore of an archive will write, as far as it can be known
/// without reading the archive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RestoreSize {
    /// Length of the uncompressed tar stream, when known.
    pub stream_bytes: Option<u64>,
    /// Bytes of file data the restore writes at least, when known.
    pub data_bytes: Option<u64>,
}

impl RestoreSize {
    /// Bytes the restored files will need on disk, by the estimate the
    /// free-space check uses: the file data when known, else the tar
    /// stream's length.
    pub fn needed(&self) -> Option<u64> {
        self.data_bytes.or(self.stream_bytes)
    }
}

/// The length of the tar stream inside a local archive of ours, from its
/// gzip member headers alone: each carries its uncompressed length, and its
/// own length leads to the next. Reads 24 bytes per member (one per MiB
/// of tar stream). `None` for an archive not entirely made of our members
/// (another tool's) or whose members do not end exactly at its end.
pub fn stream_bytes_of_file(file: &std::fs::File, len: u64) -> Option<u64> {
    let mut offset = 0u64;
    let mut total = 0u64;
    let mut head = [0u8; HEADER_LEN];
    while offset < len {
        file.read_exact_at(&mut head, offset).ok()?;
        let member = gzip::parse_member_header(&head)?;
        offset = offset.checked_add(member.member_len as u64)?;
        total += member.data_len as u64;
    }
    (offset == len && len > 0).then_some(total)
}

/// What a restore of a backup needs, before anything is touched. `archive`
/// is the local archive (with its length) when there is one; `recorded` is
/// (archive size, bytes of file data) of the successful create this node
/// recorded for the backup, if any: its file data is used only when the
/// recorded size matches the archive's (or, for a download, when the
/// length is unknown or matches). `None` when nothing can be known cheaply
/// (another tool's archive, a download of one).
///
/// The place to consult an archive's index first, when it has one.
pub fn restore_size_estimate(
    archive: Option<(&std::fs::File, u64)>,
    download_len: Option<u64>,
    recorded: Option<(u64, u64)>,
) -> Option<RestoreSize> {
    let stream_bytes = archive.and_then(|(file, len)| stream_bytes_of_file(file, len));
    let actual_len = archive.map(|(_, len)| len).or(download_len);
    let data_bytes = recorded
        .filter(|(size, _)| actual_len.is_none_or(|len| len == *size))
        .map(|(_, bytes)| bytes);
    let size = RestoreSize {
        stream_bytes,
        data_bytes,
    };
    size.needed().map(|_| size)
}

/// Fails with `Quota` when a restore of `size` cannot fit: its estimate of
/// what it needs against the free space of the server root's filesystem,
/// and its bytes of file data (when known) against `disk_limit` (0 = no
/// limit), the bound the restore itself enforces while writing.
pub fn check_restore_room(root: &OwnedFd, size: &RestoreSize, disk_limit: u64) -> Result<()> {
    if let (Some(data), true) = (size.data_bytes, disk_limit > 0) {
        if data > disk_limit {
            return Err(Error::new(
                Status::Quota,
                format!(
                    "the restore would exceed the server's disk limit of {disk_limit} bytes: \
                     the backup holds {data} bytes of files"
                ),
            ));
        }
    }
    if let Some(needed) = size.needed() {
        let free = free_bytes(root.as_fd())?;
        if needed > free {
            return Err(no_room("the restore", needed, free));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_case_is_a_bound_of_the_writer() {
        assert_eq!(worst_case_archive(0), 0);
        let one = worst_case_archive(1024);
        assert!(one > 1024 && one < 1024 + 64, "{one}");
        let data: Vec<u8> = (0..BLOCK_SIZE as u32 + 777)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let mut total = 0;
        let mut out = Vec::new();
        for chunk in data.chunks(BLOCK_SIZE) {
            total += gzip::encode_member(crate::config::CompressionLevel::None, chunk, &mut out)
                .unwrap() as u64;
        }
        assert_eq!(total, worst_case_archive(data.len() as u64));
    }

    #[test]
    fn estimate_uses_the_ratio_under_the_worst_case() {
        let m = TreeMeasure {
            bytes: 10 << 20,
            tar_bytes: (10 << 20) + 4096,
            ..TreeMeasure::default()
        };
        assert_eq!(estimate_archive(&m, None), worst_case_archive(m.tar_bytes));
        assert_eq!(estimate_archive(&m, Some((1, 4))), (10 << 20) / 4);
        assert_eq!(
            estimate_archive(&m, Some((0, 4))),
            worst_case_archive(m.tar_bytes)
        );
        assert_eq!(
            estimate_archive(&m, Some((8, 1))),
            worst_case_archive(m.tar_bytes)
        );
    }

    #[test]
    fn member_headers_give_the_stream_length_only_for_our_archives() {
        let dir = std::env::temp_dir().join(format!("wb-space-{}", crate::safe_fs::nonce()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.gz");
        let mut bytes = Vec::new();
        let mut out = Vec::new();
        for len in [BLOCK_SIZE, 1000, 0] {
            let input = vec![7u8; len];
            let n =
                gzip::encode_member(crate::config::CompressionLevel::BestSpeed, &input, &mut out)
                    .unwrap();
            bytes.extend_from_slice(&out[..n]);
        }
        std::fs::write(&path, &bytes).unwrap();
        let f = std::fs::File::open(&path).unwrap();
        let len = bytes.len() as u64;
        assert_eq!(
            stream_bytes_of_file(&f, len),
            Some(BLOCK_SIZE as u64 + 1000)
        );
        // Trailing bytes, a cut member, another tool's gzip: unknown.
        std::fs::write(&path, [&bytes[..], b"x"].concat()).unwrap();
        let f = std::fs::File::open(&path).unwrap();
        assert_eq!(stream_bytes_of_file(&f, len + 1), None);
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        let f = std::fs::File::open(&path).unwrap();
        assert_eq!(stream_bytes_of_file(&f, len - 3), None);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, b"hello").unwrap();
        let other = gz.finish().unwrap();
        std::fs::write(&path, &other).unwrap();
        let f = std::fs::File::open(&path).unwrap();
        assert_eq!(stream_bytes_of_file(&f, other.len() as u64), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
