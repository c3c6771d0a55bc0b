//! Archive names, normalised and made into names for the syscalls.

use std::ffi::CString;

use crate::safe_fs::{Timespec, Timestamps};

use crate::error::{Error, Result};

/// Normalises an archive name to `a/b/c` (empty for the root itself):
/// leading `./`, empty and `.` components go, `..` pops one. Absolute names
/// and names that climb out of the root are refused.
pub fn normalize(raw: &[u8]) -> std::result::Result<Vec<u8>, &'static str> {
    if raw.first() == Some(&b'/') {
        return Err("absolute paths are not allowed");
    }
    if raw.contains(&0) {
        return Err("the name contains a NUL byte");
    }
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                if parts.pop().is_none() {
                    return Err("the path leaves the server directory");
                }
            }
            _ => parts.push(part),
        }
    }
    Ok(parts.join(&b'/'))
}

/// The normalised path of the entry named `raw`, or the unsafe-entry error
/// a restore refuses it with.
pub fn entry_path(raw: &[u8]) -> Result<Vec<u8>> {
    normalize(raw).map_err(|why| Error::unsafe_entry(raw, why))
}

/// The normalised target of the hard link `entry` to `target`: a file below
/// the root, not a name the engine reserves; else the unsafe-entry error a
/// restore refuses it with.
pub fn link_target(entry: &[u8], target: &[u8]) -> Result<Vec<u8>> {
    let target = normalize(target).map_err(|_| {
        Error::unsafe_entry(entry, "its hard link target leaves the server directory")
    })?;
    if target.is_empty() || target.starts_with(crate::safe_fs::RESERVED_PREFIX) {
        return Err(Error::unsafe_entry(
            entry,
            "its hard link target is not a file",
        ));
    }
    Ok(target)
}

/// The error of an entry that would replace the server directory itself.
pub fn replaces_root(raw: &[u8]) -> Error {
    Error::unsafe_entry(raw, "the entry would replace the server directory itself")
}

/// The error of an entry below a symlink the archive made.
pub fn through_symlink(raw: &[u8]) -> Error {
    Error::unsafe_entry(
        raw,
        "it would be written through a symlink from the archive",
    )
}

/// `(parent, last)` of a normalised path; the parent is empty at the top.
pub(crate) fn split_last(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|b| *b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

pub(crate) fn cstring(bytes: &[u8]) -> Result<CString> {
    CString::new(bytes).map_err(|_| Error::unsafe_entry(bytes, "the name contains a NUL byte"))
}

/// Access and modification times both `mtime` seconds and `nsec`
/// nanoseconds.
pub(crate) fn times(mtime: i64, nsec: u32) -> Timestamps {
    let t = Timespec {
        tv_sec: mtime,
        tv_nsec: nsec.min(999_999_999) as _,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization() {
        assert_eq!(normalize(b"./a//b/./c").unwrap(), b"a/b/c");
        assert_eq!(normalize(b"a/../b").unwrap(), b"b");
        assert_eq!(normalize(b"./").unwrap(), b"");
        assert!(normalize(b"../x").is_err());
        assert!(normalize(b"a/../../x").is_err());
        assert!(normalize(b"/etc/passwd").is_err());
    }

    #[test]
    fn parents_and_names() {
        assert_eq!(split_last(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(split_last(b"c"), (&b""[..], &b"c"[..]));
    }
}
