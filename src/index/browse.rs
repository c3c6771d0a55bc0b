//! Browsing an archive: the entries directly under one directory, from its
//! index; and the index of an archive that has none, built by reading the
//! archive once.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use super::scan::Scanner;
use super::{Entry, EntryKind, Footer, Index, IndexHeader, IndexWriter};
use crate::archive::reader::{TarReader, TarSource};
use crate::error::{Error, Result};
use crate::progress::Control;

pub use super::{MAX_ENTRIES, MAX_NAME_BYTES};

/// The answer of a path the archive does not hold.
pub const MSG_PATH_NOT_FOUND: &str = "The requested path was not found in the backup.";
/// The answer of a path that is not a directory.
pub const MSG_NOT_A_DIRECTORY: &str = "The requested path is not a directory in the backup.";

/// One entry of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    /// The entry's name in its directory (bytes as in the archive).
    pub name: Vec<u8>,
    pub kind: EntryKind,
    /// Bytes of data (0 for all but files).
    pub size: u64,
    /// Permission bits including setuid, setgid and sticky.
    pub mode: u32,
    /// Seconds since the epoch.
    pub mtime: i64,
    /// Target of a symlink or hard link; empty otherwise.
    pub link: Vec<u8>,
}

/// Mode and mtime of a directory the archive holds only implicitly (it has
/// entries under it but no entry of its own).
pub const IMPLICIT_DIR_MODE: u32 = 0o755;

/// A requested directory as a relative path without `.` components or
/// slashes at either end (`""` for the top level). `..` is refused.
pub fn normalize_dir(dir: &str) -> Result<Vec<u8>> {
    if dir.contains('\0') {
        return Err(Error::invalid("the path contains a NUL byte"));
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in dir.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(Error::invalid("the path may not contain `..` components")),
            p => parts.push(p),
        }
    }
    Ok(parts.join("/").into_bytes())
}

/// An archive entry's name as the index keeps it: relative, without `.`
/// components, leading `/` or trailing `/`. `None` for the top directory
/// itself and for names with `..` components (no restore writes those).
pub fn normalize_entry_path(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return None,
            p => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(p);
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

/// The entries directly under `dir` (normalised, see `normalize_dir`), by
/// name. A directory that has entries under it but none of its own lists
/// all the same (mode `IMPLICIT_DIR_MODE`, mtime 0). A name the archive
/// holds twice lists as its last entry (as tar extracts it). `NotFound` for
/// a path the archive does not hold, or holds as something else than a
/// directory.
pub fn list_dir<'e>(
    entries: impl IntoIterator<Item = &'e Entry>,
    dir: &[u8],
) -> Result<Vec<FileEntry>> {
    let mut children: BTreeMap<Vec<u8>, FileEntry> = BTreeMap::new();
    let mut found = dir.is_empty();
    let mut not_dir = false;
    for e in entries {
        let rest: &[u8] = if dir.is_empty() {
            &e.path
        } else if e.path == dir {
            found = e.kind == EntryKind::Dir;
            not_dir = !found;
            continue;
        } else if e.path.len() > dir.len() && e.path.starts_with(dir) && e.path[dir.len()] == b'/' {
            &e.path[dir.len() + 1..]
        } else {
            continue;
        };
        found = true;
        not_dir = false;
        match rest.iter().position(|b| *b == b'/') {
            None => {
                children.insert(
                    rest.to_vec(),
                    FileEntry {
                        name: rest.to_vec(),
                        kind: e.kind,
                        size: e.size,
                        mode: e.mode,
                        mtime: e.mtime,
                        link: e.link.clone(),
                    },
                );
            }
            Some(slash) => {
                let name = &rest[..slash];
                if !children.contains_key(name) {
                    children.insert(
                        name.to_vec(),
                        FileEntry {
                            name: name.to_vec(),
                            kind: EntryKind::Dir,
                            size: 0,
                            mode: IMPLICIT_DIR_MODE,
                            mtime: 0,
                            link: Vec::new(),
                        },
                    );
                }
            }
        }
    }
    if not_dir {
        return Err(Error::not_found(MSG_NOT_A_DIRECTORY));
    }
    if !found {
        return Err(Error::not_found(MSG_PATH_NOT_FOUND));
    }
    Ok(children.into_values().collect())
}

/// An index built from an archive alone.
pub struct Built {
    pub index: Index,
    /// Whether the index can be written: its format places an entry at most
    /// 4 GiB into its member, which a single-member archive of another
    /// tool's making may exceed (the index then serves this call only).
    pub storable: bool,
}

/// Builds the index of the archive `src` (`len` bytes) by reading it once:
/// gzip members (this engine's are read whole, anything else inflated as a
/// stream) and tar headers (PAX and GNU long names included), each entry
/// placed in its member. Device nodes and types no restore writes are left
/// out. Fails on a damaged or hostile archive.
pub fn build_from_archive(src: &mut dyn Read, len: u64, ctl: &mut Control<'_>) -> Result<Built> {
    let mut scanner = Scanner::new(src, len, None, false, ctl);
    let mut entries = Vec::new();
    let mut storable = true;
    let mut name_bytes = 0usize;
    let mut data_bytes = 0u64;
    let mut reader = TarReader::new(&mut scanner);
    while let Some(te) = reader.next_entry()? {
        let start = reader.entry_start();
        let header_len = reader.header_len();
        let Some((kind, link)) = EntryKind::of_tar(&te.kind) else {
            continue;
        };
        let link = link.to_vec();
        let Some(path) = normalize_entry_path(&te.path) else {
            continue;
        };
        if entries.len() >= MAX_ENTRIES {
            return Err(Error::corrupt(format!(
                "the archive holds more than {MAX_ENTRIES} entries, too many to index"
            )));
        }
        name_bytes += path.len() + link.len();
        if name_bytes > MAX_NAME_BYTES {
            return Err(Error::corrupt(
                "the archive's names take too much memory to index",
            ));
        }
        let (member, offset) = reader.source().locate(start);
        storable &= offset <= u32::MAX as u64 && header_len <= u32::MAX as u64;
        if kind == EntryKind::File {
            data_bytes += te.size;
        }
        reader.source().add_entry();
        entries.push(Entry {
            path,
            kind,
            size: te.size,
            mode: te.mode,
            uid: te.uid,
            gid: te.gid,
            mtime: te.mtime,
            link,
            member: member as u32,
            offset: offset.min(u32::MAX as u64) as u32,
            header_len: header_len.min(u32::MAX as u64) as u32,
            stat: None,
        });
    }
    reader.finish()?;
    let tar_size = scanner.position();
    let archive_size = scanner.archive_pos();
    let archive_sha1 = scanner.sha1_hex();
    let members = std::mem::take(&mut scanner.members);
    let block_size = members.iter().map(|m| m.uncompressed).max().unwrap_or(0);
    let footer = Footer {
        entries: entries.len() as u64,
        members: members.len() as u64,
        archive_size,
        archive_sha1,
        tar_size,
        data_bytes,
    };
    let mut header = IndexHeader::new("", 0, 0);
    header.ignore_digest = String::new();
    header.block_size = block_size.min(u32::MAX as u64) as u32;
    let index = Index {
        header,
        entries,
        members,
        footer,
    };
    storable &= index.check_consistent().is_ok();
    Ok(Built { index, storable })
}

/// Writes `index` beside the archive at `archive`: under a temporary name
/// in the same directory, then renamed over any older one.
pub fn write_beside(index: &Index, archive: &Path) -> Result<()> {
    let dir = archive
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = archive
        .file_name()
        .ok_or_else(|| Error::invalid("the archive path has no file name"))?;
    let store = crate::backup_store::BackupStore::open(dir)?;
    let temp = store.create_temp_for(&format!("{}{}", name.to_string_lossy(), super::SUFFIX))?;
    let out = temp
        .file
        .try_clone()
        .map_err(|e| Error::io("writing the archive index", e))?;
    let mut w = IndexWriter::new(out, &index.header)?;
    for e in &index.entries {
        w.entry(e)?;
    }
    w.finish(&index.members, index.footer.clone())?;
    temp.publish_replacing(&super::path_for(archive))
}

/// The index of the archive at `archive`: the one beside it when it
/// matches, else one built by reading the archive (then written beside it
/// for next time; a failure to write it is not an error).
pub fn index_of(archive: &Path, ctl: &mut Control<'_>) -> Result<Index> {
    let mut file = match crate::safe_fs::open_for_reading(archive) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::not_found("the archive does not exist"))
        }
        Err(e) => return Err(Error::io("opening the archive", e)),
    };
    let meta = file
        .metadata()
        .map_err(|e| Error::io("opening the archive", e))?;
    if !meta.is_file() {
        return Err(Error::invalid("the archive is not a regular file"));
    }
    if let Some(index) = super::load_for(archive, meta.len()) {
        return Ok(index);
    }
    let built = build_from_archive(&mut file, meta.len(), ctl)?;
    if built.storable
        && built.index.footer.archive_size == meta.len()
        && write_beside(&built.index, archive).is_ok()
    {
        // The archive was deleted or replaced meanwhile: the index written
        // is of a file that is gone, and must not outlive it.
        use std::os::unix::fs::MetadataExt;
        let same = std::fs::metadata(archive)
            .is_ok_and(|now| (now.dev(), now.ino()) == (meta.dev(), meta.ino()));
        if !same {
            let _ = std::fs::remove_file(super::path_for(archive));
        }
    }
    Ok(built.index)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(path: &str, kind: EntryKind) -> Entry {
        Entry {
            path: path.as_bytes().to_vec(),
            kind,
            size: 1,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 5,
            link: Vec::new(),
            member: 0,
            offset: 0,
            header_len: 512,
            stat: None,
        }
    }

    fn names(list: &[FileEntry]) -> Vec<String> {
        list.iter()
            .map(|f| format!("{}:{}", String::from_utf8_lossy(&f.name), f.kind.name()))
            .collect()
    }

    #[test]
    fn lists_direct_children_explicit_and_implicit() {
        let entries = vec![
            e("a/b/c.txt", EntryKind::File),
            e("top.txt", EntryKind::File),
            e("d", EntryKind::Dir),
            e("d/x", EntryKind::File),
            e("dd", EntryKind::File),
        ];
        assert_eq!(
            names(&list_dir(&entries, b"").unwrap()),
            ["a:dir", "d:dir", "dd:file", "top.txt:file"]
        );
        let a = list_dir(&entries, b"a").unwrap();
        assert_eq!(names(&a), ["b:dir"]);
        assert_eq!((a[0].mode, a[0].mtime), (IMPLICIT_DIR_MODE, 0));
        assert_eq!(names(&list_dir(&entries, b"a/b").unwrap()), ["c.txt:file"]);
        assert_eq!(names(&list_dir(&entries, b"d").unwrap()), ["x:file"]);
        let missing = list_dir(&entries, b"nope").unwrap_err();
        assert_eq!(missing.message, MSG_PATH_NOT_FOUND);
        let file = list_dir(&entries, b"dd").unwrap_err();
        assert_eq!(file.status, crate::Status::NotFound);
        assert_eq!(file.message, MSG_NOT_A_DIRECTORY);
        // "d" is a prefix of "dd" but not its directory.
        assert_eq!(list_dir(&entries, b"d").unwrap().len(), 1);
    }

    #[test]
    fn requested_paths_are_normalised_and_dotdot_refused() {
        for p in ["world", "world/", "/world", "./world//", "/./world/."] {
            assert_eq!(normalize_dir(p).unwrap(), b"world", "{p}");
        }
        for p in ["", "/", ".", "./"] {
            assert_eq!(normalize_dir(p).unwrap(), b"", "{p}");
        }
        for p in ["..", "a/../b", "/../etc"] {
            let err = normalize_dir(p).unwrap_err();
            assert_eq!(err.status, crate::Status::InvalidArgument, "{p}");
        }
        assert_eq!(normalize_entry_path(b"./a//b/"), Some(b"a/b".to_vec()));
        assert_eq!(normalize_entry_path(b"./"), None);
        assert_eq!(normalize_entry_path(b"a/../../x"), None);
    }
}
