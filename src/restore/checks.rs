//! What is checked against the server's files before the commit touches
//! any of them, and the side-by-side walk of the staged and the server's
//! trees that the checks and the merge share.

use std::collections::HashSet;
use std::ffi::CStr;
use std::os::fd::AsFd;

use super::RestoreOptions;
use crate::error::{quote, Error, Result};
use crate::safe_fs::{
    self, Beneath, Dir, DirStack, Errno, FileType, Listing, Stat, RESERVED_PREFIX,
};

/// Checks the staged tree against the server's current files: no staged
/// directory may land where the server has a symlink pointing outside its
/// root, and (merging) the result must fit the disk limit.
pub(super) fn plan(root: &Beneath, tree: &Beneath, opts: &RestoreOptions) -> Result<()> {
    let mut replaced: u64 = 0;
    walk_pair(
        tree,
        root,
        &mut |staged, live, name, path| {
            let staged_ty = staged
                .lstat(name)
                .map(|st| safe_fs::file_type(&st))
                .map_err(|e| Error::os("reading the staging tree", e))?;
            let live_st = match live.lstat(name) {
                Ok(st) => st,
                Err(Errno::NOENT) => return Ok(false),
                Err(e) => return Err(Error::os("reading the server directory", e)),
            };
            match (staged_ty, safe_fs::file_type(&live_st)) {
                (FileType::Directory, FileType::Directory) => return Ok(true),
                (FileType::Directory, FileType::Symlink) if root.resolves_outside(path) => {
                    let mut entry = path.to_vec();
                    if let Some(below) = first_child(staged, name) {
                        entry.push(b'/');
                        entry.extend_from_slice(&below);
                    }
                    return Err(Error::unsafe_entry(
                        &entry,
                        &format!(
                            "{} in the server directory is a symlink pointing outside it",
                            quote(path)
                        ),
                    ));
                }
                // A server file the staged entry displaces, whatever it
                // is; one with other hard links keeps its bytes.
                (_, FileType::RegularFile) if live_st.st_nlink <= 1 => {
                    replaced += live_st.st_size as u64
                }
                _ => {}
            }
            Ok(false)
        },
        &mut |_, _, _, _| Ok(()),
    )?;
    let scoped = opts.scope.as_ref().map(|s| s.selection.paths());
    if opts.disk_limit > 0 && (!opts.truncate || scoped.is_some()) {
        // What the server holds, less what the merge replaces, plus what
        // is staged (not the bytes written: an archive may write one
        // file several times). A selective truncate replaces its named
        // paths whole instead.
        if let (true, Some(named)) = (opts.truncate, scoped) {
            replaced = 0;
            for path in named {
                replaced += path_usage(root, path)?;
            }
        }
        let usage = tree_usage(root.dir())?;
        let staged = tree_usage(tree.dir())?;

        let after = usage.saturating_sub(replaced) + staged;
        if after > opts.disk_limit {
            return Err(quota_error(opts.disk_limit));
        }
    }
    Ok(())
}

pub(super) fn quota_error(limit: u64) -> Error {
    Error::new(
        crate::Status::Quota,
        format!("the restore would exceed the server's disk limit of {limit} bytes"),
    )
}

/// Bytes in regular files at or under the server's `path` (no symlink
/// followed; 0 if there is nothing).
fn path_usage(root: &Beneath, path: &[u8]) -> Result<u64> {
    let (dir, last) = super::paths::split_last(path);
    let Ok(parent) = root.open_dir(dir) else {
        return Ok(0);
    };
    let parent = Dir::of(parent.as_fd());
    let name = super::paths::cstring(last)?;
    match parent.lstat(name.as_c_str()) {
        Ok(st) if safe_fs::file_type(&st) == FileType::RegularFile => Ok(st.st_size as u64),
        Ok(st) if safe_fs::file_type(&st) == FileType::Directory => {
            match parent.open_dir(name.as_c_str()) {
                Ok(fd) => tree_usage(Dir::of(fd.as_fd())),
                Err(_) => Ok(0),
            }
        }
        _ => Ok(0),
    }
}

fn first_child(dir: Dir<'_>, name: &CStr) -> Option<Vec<u8>> {
    let fd = dir.open_dir(name).ok()?;
    let listing = Listing::read(fd.as_fd()).ok()?;
    if listing.is_empty() {
        return None;
    }
    Some(listing.get(0).0.to_bytes().to_vec())
}

/// Bytes in regular files under `root` (its own reserved entries excluded),
/// a file with several hard links counted once. A file's size is what the
/// archive said it holds, sparse or not.
fn tree_usage(root: Dir<'_>) -> Result<u64> {
    let mut total = 0u64;
    let mut linked: HashSet<(u64, u64)> = HashSet::new();
    let mut stack: DirStack<(Listing, usize)> = DirStack::default();
    let listing =
        Listing::read(root.fd()).map_err(|e| Error::os("measuring the server directory", e))?;
    let dup = root
        .dup()
        .map_err(|e| Error::os("measuring the server directory", e))?;
    stack.push(c".".to_owned(), dup, (listing, 0));
    while !stack.is_empty() {
        let depth = stack.len();
        let Some(frame) = stack.top_mut() else { break };
        let (listing, next) = &mut frame.data;
        if *next >= listing.len() {
            stack.pop();
            continue;
        }
        let (name, _) = listing.get(*next);
        *next += 1;
        let name = name.to_owned();
        if depth == 1 && name.to_bytes().starts_with(RESERVED_PREFIX) {
            continue;
        }
        let dir = stack
            .take_top_fd(root.fd())
            .map_err(|e| Error::os("measuring the server directory", e))?;
        let mut descend = None;
        if let Ok(st) = Dir::of(dir.as_fd()).lstat(&name) {
            match safe_fs::file_type(&st) {
                FileType::RegularFile
                    if st.st_nlink <= 1 || linked.insert((st.st_dev, st.st_ino)) =>
                {
                    total += st.st_size as u64;
                }
                FileType::Directory => {
                    if let Ok(fd) = Dir::of(dir.as_fd()).open_dir(&name) {
                        if let Ok(l) = Listing::read(fd.as_fd()) {
                            descend = Some((fd, l));
                        }
                    }
                }
                _ => {}
            }
        }
        stack.put_top_fd(dir);
        if let Some((fd, l)) = descend {
            stack.push(name, fd, (l, 0));
        }
    }
    Ok(total)
}

/// `visit(staged_dir, live_dir, name, relative_path) -> descend?`
pub(super) type VisitFn<'a> = dyn FnMut(Dir<'_>, Dir<'_>, &CStr, &[u8]) -> Result<bool> + 'a;
/// `leave(staged_dir, live_dir, relative_path, staged_stat)`: the path is
/// empty for the root; `staged_stat` was taken when the walk entered the
/// staged directory, before its children moved.
pub(super) type LeaveFn<'a> = dyn FnMut(Dir<'_>, Dir<'_>, &[u8], &Stat) -> Result<()> + 'a;

/// Walks the staged tree and the server's tree side by side. `visit` sees
/// each staged name with both parent handles and its relative path, and says
/// whether to descend (both sides must then be directories); `leave` runs
/// after a directory's children, with both handles and its relative path.
/// At most a bounded number of handles are open, whatever the depth.
pub(super) fn walk_pair(
    tree: &Beneath,
    root: &Beneath,
    visit: &mut VisitFn<'_>,
    leave: &mut LeaveFn<'_>,
) -> Result<()> {
    struct Level {
        listing: Listing,
        next: usize,
        /// Relative path of this directory with its trailing `/`.
        prefix: Vec<u8>,
        /// The staged directory as it was when entered.
        stat: Stat,
    }
    let err = |e: Errno| Error::os("walking the restored files", e);
    let mut staged: DirStack<Level> = DirStack::default();
    let mut live: DirStack<()> = DirStack::default();
    let first = Listing::read(tree.fd()).map_err(err)?;
    staged.push(
        c".".to_owned(),
        tree.dir().dup().map_err(err)?,
        Level {
            listing: first,
            next: 0,
            prefix: Vec::new(),
            stat: tree.dir().stat().map_err(err)?,
        },
    );
    live.push(c".".to_owned(), root.dir().dup().map_err(err)?, ());
    while let Some(frame) = staged.top_mut() {
        if frame.data.next >= frame.data.listing.len() {
            let stat = frame.data.stat;
            let path = std::mem::take(&mut frame.data.prefix);
            let path = path.strip_suffix(b"/").unwrap_or(&path);
            let s = staged.take_top_fd(tree.fd()).map_err(err)?;
            let l = live.take_top_fd(root.fd()).map_err(err)?;
            leave(Dir::of(s.as_fd()), Dir::of(l.as_fd()), path, &stat)?;
            staged.pop();
            live.pop();
            continue;
        }
        let (name, _) = frame.data.listing.get(frame.data.next);
        let name = name.to_owned();
        frame.data.next += 1;
        let mut path = frame.data.prefix.clone();
        path.extend_from_slice(name.to_bytes());
        let s = staged.take_top_fd(tree.fd()).map_err(err)?;
        let l = live.take_top_fd(root.fd()).map_err(err)?;
        let (sd, ld) = (Dir::of(s.as_fd()), Dir::of(l.as_fd()));
        let descend = match visit(sd, ld, &name, &path) {
            Ok(true) => Some((
                sd.open_dir(&name).map_err(err),
                ld.open_dir(&name).map_err(err),
            )),
            Ok(false) => None,
            Err(e) => return Err(e),
        };
        staged.put_top_fd(s);
        live.put_top_fd(l);
        if let Some((s, l)) = descend {
            let (s, l) = (s?, l?);
            let listing = Listing::read(s.as_fd()).map_err(err)?;
            let stat = Dir::of(s.as_fd()).stat().map_err(err)?;
            path.push(b'/');
            staged.push(
                name.clone(),
                s,
                Level {
                    listing,
                    next: 0,
                    prefix: path,
                    stat,
                },
            );
            live.push(name, l, ());
        }
    }
    Ok(())
}
