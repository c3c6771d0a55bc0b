//! The safe restore target (CONTRACT section 6): where restored entries are
//! written, and how they replace the server's files without losing any.
//!
//! Entries are first written into a staging directory inside the server
//! root (`.wings-backup-restore-<nonce>/tree`), so the final moves are renames
//! on one filesystem. Every lookup goes one component at a time from a handle
//! we hold, with `O_NOFOLLOW`: a symlink from the archive is stored, never
//! followed, and an entry below one is refused. Only when the whole archive
//! has been read and checked is anything of the server's touched:
//!
//! * `truncate`: every top-level entry of the server moves into the staging
//!   directory's `old/`, then every staged entry moves into the root;
//! * merge: staged entries are renamed over the server's one by one.
//!
//! A `commit` marker written before the first move lets `recover` finish the
//! job after a crash (each move is an atomic rename, so every file is either
//! the old or the new one); without the marker a leftover stage is simply
//! deleted. A failed or cancelled restore removes the stage and leaves the
//! server's files as they were.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::Timespec;
use rustix::fs::{
    self as rfs, AtFlags, FileType, FlockOperation, Gid, Mode, OFlags, RenameFlags, ResolveFlags,
    Timestamps, Uid,
};
use rustix::io::Errno;

use crate::config::Owner;
use crate::error::{quote, Error, Result};
use crate::safe_fs::{self, DirStack, Listing, Stat, RESERVED_PREFIX};

/// Staging directories are named `<STAGE_PREFIX><nonce>`.
const STAGE_PREFIX: &str = ".wings-backup-restore-";

#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    /// Replace the server's files (true) or merge into them (false).
    pub truncate: bool,
    /// Chown everything restored to this owner.
    pub owner: Option<Owner>,
    /// Bytes the server's files may take afterwards; 0 = no limit.
    pub disk_limit: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreSummary {
    pub entries: u64,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hard_links: u64,
    /// Bytes of file data written.
    pub bytes: u64,
    /// FIFOs, devices, unsupported types and reserved names left out.
    pub skipped: u64,
}

/// The data of the entry being restored, piece by piece (empty at its end).
pub trait EntryData {
    fn next_data(&mut self) -> Result<&[u8]>;
}

/// A restored entry, as the archive reader hands it over.
pub struct Entry<'a> {
    /// The raw name from the archive.
    pub path: &'a [u8],
    pub kind: EntryKind<'a>,
    pub mode: u32,
    pub mtime: i64,
}

pub enum EntryKind<'a> {
    File,
    Dir,
    Symlink(&'a [u8]),
    HardLink(&'a [u8]),
    /// Not restored (FIFO, device, unknown type): counted as skipped.
    Skipped,
}

/// Explicit directory entries, whose mode and time are applied at the end
/// (applying them earlier would fail for read-only modes, and creating
/// children changes a directory's mtime). One item per path, the last
/// listed wins: an archive that lists one directory a million times costs
/// one item, so memory follows the directories actually made.
#[derive(Default)]
struct DirList {
    items: HashMap<Vec<u8>, (u32, i64)>,
}

impl DirList {
    fn push(&mut self, path: &[u8], mode: u32, mtime: i64) {
        match self.items.get_mut(path) {
            Some(item) => *item = (mode, mtime),
            None => {
                self.items.insert(path.to_vec(), (mode, mtime));
            }
        }
    }

    fn contains(&self, path: &[u8]) -> bool {
        self.items.contains_key(path)
    }
}

pub struct RestoreTarget {
    root: OwnedFd,
    stage_name: CString,
    stage: OwnedFd,
    tree: OwnedFd,
    _lock: OwnedFd,
    /// The staged directories of the last entry's parent path: the next
    /// entry most likely shares most of them, whatever the depth.
    cursor: DirStack<()>,
    state: State,
    done: bool,
}

/// What the entries change besides the staged files.
struct State {
    opts: RestoreOptions,
    dirs: DirList,
    summary: RestoreSummary,
    root_mtime: Option<i64>,
}

fn times(mtime: i64) -> Timestamps {
    let t = Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

fn cstring(bytes: &[u8]) -> Result<CString> {
    CString::new(bytes).map_err(|_| Error::unsafe_entry(bytes, "the name contains a NUL byte"))
}

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

fn split_last(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|b| *b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) -> std::result::Result<(), Errno> {
    while !data.is_empty() {
        match rustix::io::write(fd, data) {
            Ok(0) => return Err(Errno::IO),
            Ok(n) => data = &data[n..],
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn chown(fd: BorrowedFd<'_>, owner: Option<Owner>) -> std::result::Result<(), Errno> {
    match owner {
        Some(o) => rfs::fchown(fd, Some(Uid::from_raw(o.uid)), Some(Gid::from_raw(o.gid))),
        None => Ok(()),
    }
}

impl RestoreTarget {
    /// Prepares a restore into the directory `root`.
    pub fn begin(root: OwnedFd, opts: RestoreOptions) -> Result<RestoreTarget> {
        let stage_name = cstring(format!("{STAGE_PREFIX}{}", safe_fs::nonce()).as_bytes())?;
        let io = |what: &str, e: Errno| Error::os(format!("preparing the restore: {what}"), e);
        rfs::mkdirat(
            root.as_fd(),
            stage_name.as_c_str(),
            Mode::from_raw_mode(0o700),
        )
        .map_err(|e| io("creating the staging directory", e))?;
        let stage = safe_fs::open_dir(root.as_fd(), stage_name.as_c_str())
            .map_err(|e| io("opening the staging directory", e))?;
        let lock = rfs::openat(
            stage.as_fd(),
            c"lock",
            OFlags::CREATE | OFlags::EXCL | OFlags::RDWR | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| io("creating the lock file", e))?;
        rfs::flock(&lock, FlockOperation::NonBlockingLockExclusive)
            .map_err(|e| io("locking the staging directory", e))?;
        rfs::mkdirat(stage.as_fd(), c"tree", Mode::from_raw_mode(0o755))
            .map_err(|e| io("creating the staging tree", e))?;
        let tree = safe_fs::open_dir(stage.as_fd(), c"tree")
            .map_err(|e| io("opening the staging tree", e))?;
        Ok(RestoreTarget {
            root,
            stage_name,
            stage,
            tree,
            _lock: lock,
            cursor: DirStack::default(),
            state: State {
                opts,
                dirs: DirList::default(),
                summary: RestoreSummary::default(),
                root_mtime: None,
            },
            done: false,
        })
    }

    pub fn summary(&self) -> &RestoreSummary {
        &self.state.summary
    }

    /// Restores one entry into the staging tree.
    pub fn apply(&mut self, entry: &Entry<'_>, data: &mut dyn EntryData) -> Result<()> {
        let state = &mut self.state;
        state.summary.entries += 1;
        let path = normalize(entry.path).map_err(|why| Error::unsafe_entry(entry.path, why))?;
        if path.is_empty() {
            return match entry.kind {
                EntryKind::Dir => {
                    state.root_mtime = Some(entry.mtime);
                    Ok(())
                }
                EntryKind::Skipped => {
                    state.summary.skipped += 1;
                    Ok(())
                }
                _ => Err(Error::unsafe_entry(
                    entry.path,
                    "the entry would replace the server directory itself",
                )),
            };
        }
        if path.starts_with(RESERVED_PREFIX) {
            state.summary.skipped += 1;
            return Ok(());
        }
        if let EntryKind::Skipped = entry.kind {
            state.summary.skipped += 1;
            return Ok(());
        }
        let parts: Vec<&[u8]> = path.split(|b| *b == b'/').collect();
        let Some((last, parents)) = parts.split_last() else {
            return Ok(());
        };
        let name = cstring(last)?;
        let owner = state.opts.owner;
        let tree = self.tree.as_fd();
        let parent = self
            .cursor
            .goto(tree, parents, &mut |dir, part| {
                open_or_make_dir(dir, part, owner, entry.path)
            })?
            .unwrap_or(tree);
        match entry.kind {
            EntryKind::Dir => make_dir(parent, &name, &path, entry, state),
            EntryKind::File => write_file(parent, &name, entry, data, state),
            EntryKind::Symlink(target) => make_symlink(parent, &name, target, entry, state),
            EntryKind::HardLink(target) => {
                make_hard_link(tree, parent, &name, &path, target, entry, state)
            }
            EntryKind::Skipped => Ok(()),
        }
    }

    /// Applies the explicit directories' modes and times, deepest first (a
    /// read-only directory is made so after its children); for a directory
    /// listed twice the later entry wins.
    fn finish_dirs(&mut self) -> Result<()> {
        let mut order: Vec<(&Vec<u8>, &(u32, i64))> = self.state.dirs.items.iter().collect();
        let depth = |p: &[u8]| p.iter().filter(|b| **b == b'/').count();
        order.sort_unstable_by(|a, b| depth(b.0).cmp(&depth(a.0)).then_with(|| a.0.cmp(b.0)));
        let tree = self.tree.as_fd();
        for (path, (mode, mtime)) in order {
            let path = path.as_slice();
            let parts: Vec<&[u8]> = path.split(|b| *b == b'/').collect();
            let Some(fd) = self.cursor.goto(tree, &parts, &mut |dir, part| {
                safe_fs::open_dir(dir, part).map_err(|e| lookup_error(dir, part, path, e))
            })?
            else {
                continue;
            };
            let err = |e: Errno| entry_error(path, e);
            rfs::fchmod(fd, Mode::from_raw_mode(mode & 0o1777)).map_err(err)?;
            rfs::futimens(fd, &times(*mtime)).map_err(err)?;
        }
        Ok(())
    }

    /// Checks the staged tree against the server's current files before
    /// anything of theirs is touched: no staged directory may land where the
    /// server has a symlink pointing outside its root, and (merging) the
    /// result must fit the disk limit.
    fn plan(&self) -> Result<()> {
        let mut replaced: u64 = 0;
        walk_pair(
            self.tree.as_fd(),
            self.root.as_fd(),
            &mut |staged, live, name, path| {
                let staged_ty = safe_fs::lstat_at(staged, name)
                    .map(|st| safe_fs::file_type(&st))
                    .map_err(|e| Error::os("reading the staging tree", e))?;
                let live_st = match safe_fs::lstat_at(live, name) {
                    Ok(st) => st,
                    Err(Errno::NOENT) => return Ok(false),
                    Err(e) => return Err(Error::os("reading the server directory", e)),
                };
                match (staged_ty, safe_fs::file_type(&live_st)) {
                    (FileType::Directory, FileType::Directory) => return Ok(true),
                    (FileType::Directory, FileType::Symlink) if self.points_outside(path) => {
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
        if self.state.opts.disk_limit > 0 && !self.state.opts.truncate {
            // What the server holds, less what the merge replaces, plus what
            // is staged (not the bytes written: an archive may write one
            // file several times).
            let usage = tree_usage(self.root.as_fd())?;
            let staged = tree_usage(self.tree.as_fd())?;
            let after = usage.saturating_sub(replaced) + staged;
            if after > self.state.opts.disk_limit {
                return Err(quota_error(self.state.opts.disk_limit));
            }
        }
        Ok(())
    }

    /// Whether the server's symlink at `path` resolves outside the root.
    fn points_outside(&self, path: &[u8]) -> bool {
        match rfs::openat2(
            self.root.as_fd(),
            path,
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH,
        ) {
            Ok(_) | Err(Errno::NOENT) => false,
            Err(Errno::NOSYS) => {
                // Without openat2, judge the link's text: absolute or
                // climbing above the root counts as outside.
                let (dir, last) = split_last(path);
                let Ok(dir_fd) = self.open_live_dir(dir) else {
                    return true;
                };
                match rfs::readlinkat(dir_fd.as_fd(), last, Vec::new()) {
                    Ok(target) => {
                        let mut joined = dir.to_vec();
                        joined.push(b'/');
                        joined.extend_from_slice(target.as_bytes());
                        normalize(&joined).is_err()
                    }
                    Err(_) => true,
                }
            }
            Err(_) => true,
        }
    }

    fn open_live_dir(&self, dir: &[u8]) -> std::result::Result<OwnedFd, Errno> {
        let mut current = safe_fs::open_dir(self.root.as_fd(), c".")?;
        for part in dir.split(|b| *b == b'/').filter(|p| !p.is_empty()) {
            current = safe_fs::open_dir(current.as_fd(), part)?;
        }
        Ok(current)
    }

    /// Finishes the restore: checks, then puts the staged files in place.
    pub fn commit(mut self) -> Result<RestoreSummary> {
        self.finish_dirs()?;
        self.plan()?;
        let _ = rfs::syncfs(&self.stage);
        let marker: &[u8] = if self.state.opts.truncate {
            b"truncate\n"
        } else {
            b"merge\n"
        };
        write_marker(self.stage.as_fd(), c"commit", marker)?;
        // From here on the stage may hold the server's files (in `old/`):
        // whatever happens, it is not deleted unless they are back.
        self.done = true;
        let committed = if self.state.opts.truncate {
            let mut moves = Moves::default();
            commit_truncate(
                self.root.as_fd(),
                self.stage.as_fd(),
                self.tree.as_fd(),
                false,
                &mut moves,
            )
            .map_err(|e| {
                match roll_back_truncate(
                    self.root.as_fd(),
                    self.stage.as_fd(),
                    self.tree.as_fd(),
                    &moves,
                ) {
                    Ok(()) => {
                        let _ = safe_fs::remove_tree(self.root.as_fd(), self.stage_name.as_c_str());
                        e
                    }
                    Err(_) => unfinished(e),
                }
            })
        } else {
            commit_merge(
                self.root.as_fd(),
                self.stage.as_fd(),
                self.tree.as_fd(),
                self.state.opts.owner,
                Some(&self.state.dirs),
            )
            .map_err(unfinished)
        };
        committed?;
        if let Some(mtime) = self.state.root_mtime {
            let _ = rfs::futimens(&self.root, &times(mtime));
        }
        let _ = safe_fs::remove_tree(self.root.as_fd(), self.stage_name.as_c_str());
        Ok(self.state.summary.clone())
    }
}

/// An error of the filesystem while restoring `entry`. A name longer than
/// the filesystem allows is the archive's fault.
fn entry_error(entry: &[u8], e: Errno) -> Error {
    match e {
        Errno::NAMETOOLONG => Error::corrupt(format!(
            "cannot restore {}: a name in it is longer than the filesystem allows",
            quote(entry)
        )),
        e => Error::os(format!("restoring {}", quote(entry)), e),
    }
}

/// Why `name` in `dir` could not be opened as a directory, for `entry`.
fn lookup_error(dir: BorrowedFd<'_>, name: &CStr, entry: &[u8], e: Errno) -> Error {
    match e {
        Errno::LOOP | Errno::NOTDIR => match safe_fs::lstat_at(dir, name) {
            Ok(st) if safe_fs::file_type(&st) == FileType::Symlink => Error::unsafe_entry(
                entry,
                "it would be written through a symlink from the archive",
            ),
            _ => Error::corrupt(format!(
                "cannot restore {}: a parent of it is not a directory",
                quote(entry)
            )),
        },
        Errno::NOENT => Error::corrupt(format!(
            "cannot restore {}: its target is not in the archive before it",
            quote(entry)
        )),
        e => entry_error(entry, e),
    }
}

/// Opens the staged directory `name` in `dir`, creating it (owned by
/// `owner`) when the archive did not list it before the entries below it.
fn open_or_make_dir(
    dir: BorrowedFd<'_>,
    name: &CStr,
    owner: Option<Owner>,
    entry: &[u8],
) -> Result<OwnedFd> {
    match safe_fs::open_dir(dir, name) {
        Ok(fd) => Ok(fd),
        Err(Errno::NOENT) => {
            match rfs::mkdirat(dir, name, Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(entry_error(entry, e)),
            }
            let fd = safe_fs::open_dir(dir, name).map_err(|e| lookup_error(dir, name, entry, e))?;
            chown(fd.as_fd(), owner).map_err(|e| entry_error(entry, e))?;
            Ok(fd)
        }
        Err(e) => Err(lookup_error(dir, name, entry, e)),
    }
}

/// Opens the staged directory `dir` (a normalised path) without creating
/// anything, for hard link targets.
fn open_staged_dir(tree: BorrowedFd<'_>, dir: &[u8], entry: &[u8]) -> Result<OwnedFd> {
    let mut current = safe_fs::open_dir(tree, c".").map_err(|e| entry_error(entry, e))?;
    for part in dir.split(|b| *b == b'/').filter(|p| !p.is_empty()) {
        let name = cstring(part)?;
        current = safe_fs::open_dir(current.as_fd(), name.as_c_str())
            .map_err(|e| lookup_error(current.as_fd(), &name, entry, e))?;
    }
    Ok(current)
}

/// Makes room for a new entry called `name`: an earlier entry of the same
/// name goes, unless it is a directory (which would drop what was restored
/// into it: duplicated entries may not do that).
fn clear_name(dir: BorrowedFd<'_>, name: &CStr, entry: &[u8]) -> Result<()> {
    match safe_fs::lstat_at(dir, name) {
        Err(Errno::NOENT) => Ok(()),
        Ok(st) if safe_fs::file_type(&st) == FileType::Directory => Err(Error::unsafe_entry(
            entry,
            "it would replace a directory restored earlier",
        )),
        Ok(_) => rfs::unlinkat(dir, name, AtFlags::empty()).map_err(|e| entry_error(entry, e)),
        Err(e) => Err(entry_error(entry, e)),
    }
}

/// Creates a new entry called `name` with `create`, which fails with
/// `EEXIST` if the name is taken; then the earlier entry is cleared (see
/// `clear_name`) and `create` runs once more. Names are rarely taken (only
/// by duplicated entries), so the usual cost is the one call.
fn create_new<T>(
    dir: BorrowedFd<'_>,
    name: &CStr,
    entry: &[u8],
    mut create: impl FnMut() -> std::result::Result<T, Errno>,
) -> Result<std::result::Result<T, Errno>> {
    match create() {
        Err(Errno::EXIST) => {
            clear_name(dir, name, entry)?;
            Ok(create())
        }
        other => Ok(other),
    }
}

fn make_dir(
    dir: BorrowedFd<'_>,
    name: &CStr,
    path: &[u8],
    entry: &Entry<'_>,
    state: &mut State,
) -> Result<()> {
    let err = |e: Errno| entry_error(entry.path, e);
    match rfs::mkdirat(dir, name, Mode::from_raw_mode(0o755)) {
        Ok(()) => {}
        Err(Errno::EXIST) => {
            let st = safe_fs::lstat_at(dir, name).map_err(err)?;
            if safe_fs::file_type(&st) != FileType::Directory {
                clear_name(dir, name, entry.path)?;
                rfs::mkdirat(dir, name, Mode::from_raw_mode(0o755)).map_err(err)?;
            }
        }
        Err(e) => return Err(err(e)),
    }
    let fd = safe_fs::open_dir(dir, name).map_err(|e| lookup_error(dir, name, entry.path, e))?;
    chown(fd.as_fd(), state.opts.owner).map_err(err)?;
    state.dirs.push(path, entry.mode, entry.mtime);
    state.summary.dirs += 1;
    Ok(())
}

fn write_file(
    dir: BorrowedFd<'_>,
    name: &CStr,
    entry: &Entry<'_>,
    data: &mut dyn EntryData,
    state: &mut State,
) -> Result<()> {
    let err = |e: Errno| entry_error(entry.path, e);
    let fd = create_new(dir, name, entry.path, || {
        rfs::openat(
            dir,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
    })?
    .map_err(err)?;
    loop {
        let chunk = data.next_data()?;
        if chunk.is_empty() {
            break;
        }
        let after = state.summary.bytes + chunk.len() as u64;
        if state.opts.disk_limit > 0 && after > state.opts.disk_limit {
            return Err(quota_error(state.opts.disk_limit));
        }
        write_all(fd.as_fd(), chunk).map_err(err)?;
        state.summary.bytes = after;
    }
    chown(fd.as_fd(), state.opts.owner).map_err(err)?;
    // setuid and setgid bits are never restored.
    rfs::fchmod(&fd, Mode::from_raw_mode(entry.mode & 0o1777)).map_err(err)?;
    rfs::futimens(&fd, &times(entry.mtime)).map_err(err)?;
    state.summary.files += 1;
    Ok(())
}

fn make_symlink(
    dir: BorrowedFd<'_>,
    name: &CStr,
    target: &[u8],
    entry: &Entry<'_>,
    state: &mut State,
) -> Result<()> {
    if target.is_empty() {
        return Err(Error::corrupt(format!(
            "the symlink {} has an empty target",
            quote(entry.path)
        )));
    }
    let target = cstring(target)?;
    let err = |e: Errno| entry_error(entry.path, e);
    create_new(dir, name, entry.path, || {
        rfs::symlinkat(target.as_c_str(), dir, name)
    })?
    .map_err(err)?;
    if let Some(o) = state.opts.owner {
        rfs::chownat(
            dir,
            name,
            Some(Uid::from_raw(o.uid)),
            Some(Gid::from_raw(o.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(err)?;
    }
    rfs::utimensat(dir, name, &times(entry.mtime), AtFlags::SYMLINK_NOFOLLOW).map_err(err)?;
    state.summary.symlinks += 1;
    Ok(())
}

fn make_hard_link(
    tree: BorrowedFd<'_>,
    dir: BorrowedFd<'_>,
    name: &CStr,
    path: &[u8],
    target: &[u8],
    entry: &Entry<'_>,
    state: &mut State,
) -> Result<()> {
    let target = normalize(target).map_err(|_| {
        Error::unsafe_entry(
            entry.path,
            "its hard link target leaves the server directory",
        )
    })?;
    if target.is_empty() || target.starts_with(RESERVED_PREFIX) {
        return Err(Error::unsafe_entry(
            entry.path,
            "its hard link target is not a file",
        ));
    }
    if target == path {
        return Ok(());
    }
    let (target_dir, target_last) = split_last(&target);
    let target_parent = open_staged_dir(tree, target_dir, entry.path)?;
    let target_name = cstring(target_last)?;
    create_new(dir, name, entry.path, || {
        rfs::linkat(
            target_parent.as_fd(),
            target_name.as_c_str(),
            dir,
            name,
            AtFlags::empty(),
        )
    })?
    .map_err(|e| match e {
        Errno::NOENT => Error::corrupt(format!(
            "cannot restore {}: its hard link target is not in the archive before it",
            quote(entry.path)
        )),
        Errno::PERM => Error::unsafe_entry(entry.path, "its hard link target is a directory"),
        e => entry_error(entry.path, e),
    })?;
    state.summary.hard_links += 1;
    Ok(())
}

impl Drop for RestoreTarget {
    fn drop(&mut self) {
        if !self.done {
            // Not committed: the server's files were never touched.
            let _ = safe_fs::remove_tree(self.root.as_fd(), self.stage_name.as_c_str());
        }
    }
}

fn quota_error(limit: u64) -> Error {
    Error::new(
        crate::Status::Quota,
        format!("the restore would exceed the server's disk limit of {limit} bytes"),
    )
}

fn first_child(dir: BorrowedFd<'_>, name: &CStr) -> Option<Vec<u8>> {
    let fd = safe_fs::open_dir(dir, name).ok()?;
    let listing = Listing::read(fd.as_fd()).ok()?;
    if listing.is_empty() {
        return None;
    }
    Some(listing.get(0).0.to_bytes().to_vec())
}

/// Bytes in regular files under `root` (its own reserved entries excluded),
/// a file with several hard links counted once.
fn tree_usage(root: BorrowedFd<'_>) -> Result<u64> {
    let mut total = 0u64;
    let mut linked: std::collections::HashSet<(u64, u64)> = std::collections::HashSet::new();
    let mut stack: DirStack<(Listing, usize)> = DirStack::default();
    let listing =
        Listing::read(root).map_err(|e| Error::os("measuring the server directory", e))?;
    let dup = safe_fs::open_dir(root, c".")
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
            .take_top_fd(root)
            .map_err(|e| Error::os("measuring the server directory", e))?;
        let mut descend = None;
        if let Ok(st) = safe_fs::lstat_at(dir.as_fd(), name.as_c_str()) {
            match safe_fs::file_type(&st) {
                FileType::RegularFile
                    if st.st_nlink <= 1 || linked.insert((st.st_dev, st.st_ino)) =>
                {
                    total += st.st_size as u64;
                }
                FileType::Directory => {
                    if let Ok(fd) = safe_fs::open_dir(dir.as_fd(), name.as_c_str()) {
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

/// Writes a small marker file durably (written, synced, renamed into place).
fn write_marker(dir: BorrowedFd<'_>, name: &CStr, content: &[u8]) -> Result<()> {
    let err = |e: Errno| Error::os("recording the restore's progress", e);
    let tmp = format!("{}.tmp", name.to_string_lossy());
    // A stale name there is removed first: the file is always new (and
    // never something planted, such as a FIFO, opened for writing).
    match rfs::unlinkat(dir, tmp.as_str(), AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => {}
        Err(e) => return Err(err(e)),
    }
    let fd = rfs::openat(
        dir,
        tmp.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(err)?;
    write_all(fd.as_fd(), content).map_err(err)?;
    rfs::fsync(&fd).map_err(err)?;
    rfs::renameat(dir, tmp.as_str(), dir, name).map_err(err)?;
    rfs::fsync(dir).map_err(err)?;
    Ok(())
}

fn has_marker(dir: BorrowedFd<'_>, name: &CStr) -> bool {
    safe_fs::lstat_at(dir, name).is_ok()
}

/// A name in the stage's `displaced/` for something the server created in
/// the way of a staged entry. (Not in `old/`: there the server's own
/// top-level entries keep their names, whatever they are.)
fn displaced_name(counter: &mut u64) -> String {
    *counter += 1;
    // Unique across runs too: a commit resumed after a crash adds to what
    // the interrupted one displaced.
    format!("{counter}-{}", safe_fs::nonce())
}

/// The stage's directory `name` (`old`, `displaced`), made if need be.
fn stage_dir(stage: BorrowedFd<'_>, name: &CStr) -> Result<OwnedFd> {
    match rfs::mkdirat(stage, name, Mode::from_raw_mode(0o700)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(Error::os("preparing the restore", e)),
    }
    safe_fs::open_dir(stage, name).map_err(|e| Error::os("preparing the restore", e))
}

/// Renames without replacing anything. On a filesystem without
/// `RENAME_NOREPLACE`, a plain rename after checking that the target is
/// free (nothing else writes into the stage).
fn rename_noreplace(
    from_dir: BorrowedFd<'_>,
    from: &CStr,
    to_dir: BorrowedFd<'_>,
    to: &CStr,
) -> std::result::Result<(), Errno> {
    match rfs::renameat_with(from_dir, from, to_dir, to, RenameFlags::NOREPLACE) {
        Err(Errno::INVAL) | Err(Errno::NOSYS) => match safe_fs::lstat_at(to_dir, to) {
            Err(Errno::NOENT) => rfs::renameat(from_dir, from, to_dir, to),
            Ok(_) => Err(Errno::EXIST),
            Err(e) => Err(e),
        },
        result => result,
    }
}

fn live_names(root: BorrowedFd<'_>) -> Result<Vec<CString>> {
    let listing = Listing::read(root).map_err(|e| Error::os("reading the server directory", e))?;
    Ok((0..listing.len())
        .map(|i| listing.get(i).0.to_owned())
        .filter(|n| !n.to_bytes().starts_with(RESERVED_PREFIX))
        .collect())
}

/// A commit that failed and could not be undone: the stage keeps what it
/// holds, and `recover` (at the next restore of the server, or the next
/// start) carries the commit through.
fn unfinished(e: Error) -> Error {
    Error::new(
        e.status,
        format!(
            "{}; the restore is finished at the next restore of this server or the next start, nothing is lost",
            e.message
        ),
    )
}

#[cfg(test)]
thread_local! {
    /// A point of the commit made to fail, for the tests of its undoing.
    static FAULT: std::cell::Cell<Option<&'static str>> = const { std::cell::Cell::new(None) };
}

/// Fails at `point` when a test asked for it; nothing outside tests.
fn fault(point: &'static str) -> Result<()> {
    #[cfg(test)]
    if FAULT.with(|f| f.get()) == Some(point) {
        return Err(Error::os(
            format!("injected fault at {point}"),
            Errno::NOSPC,
        ));
    }
    let _ = point;
    Ok(())
}

/// The renames a truncating commit made, so that a failure can undo them.
#[derive(Default)]
struct Moves {
    /// Server entries moved from the root into `old/`.
    out: Vec<CString>,
    /// Staged entries moved from `tree/` into the root.
    r#in: Vec<CString>,
    /// `(name in displaced/, live name)` of entries the server created in
    /// the way.
    displaced: Vec<(CString, CString)>,
}

/// Replaces the server's top-level entries with the staged ones. `resume`
/// continues after a crash (some entries may already have moved).
fn commit_truncate(
    root: BorrowedFd<'_>,
    stage: BorrowedFd<'_>,
    tree: BorrowedFd<'_>,
    resume: bool,
    moves: &mut Moves,
) -> Result<()> {
    let old = stage_dir(stage, c"old")?;
    let displaced = stage_dir(stage, c"displaced")?;
    let moving_in = resume && has_marker(stage, c"phase-b");
    if !moving_in {
        for name in live_names(root)? {
            match rfs::renameat(root, name.as_c_str(), old.as_fd(), name.as_c_str()) {
                Ok(()) => moves.out.push(name),
                Err(Errno::NOENT) => {}
                Err(e) => return Err(Error::os("moving the server's files aside", e)),
            }
        }
        fault("phase-b")?;
        write_marker(stage, c"phase-b", b"")?;
    }
    let mut counter = 0u64;
    let listing = Listing::read(tree).map_err(|e| Error::os("reading the staging tree", e))?;
    for i in 0..listing.len() {
        let (name, _) = listing.get(i);
        if i > 0 {
            fault("move-in")?;
        }
        move_into(tree, name, root, displaced.as_fd(), &mut counter, moves)?;
        moves.r#in.push(name.to_owned());
    }
    Ok(())
}

/// Undoes what a failed truncating commit did, newest first: staged entries
/// go back to `tree/`, what the server made in their way goes back to its
/// name, and the server's own entries come back from `old/`. Then the
/// `commit` marker goes, so that nothing finishes the commit later. An
/// error leaves the stage as it is (for `recover`).
fn roll_back_truncate(
    root: BorrowedFd<'_>,
    stage: BorrowedFd<'_>,
    tree: BorrowedFd<'_>,
    moves: &Moves,
) -> std::result::Result<(), Errno> {
    for name in moves.r#in.iter().rev() {
        rename_noreplace(root, name, tree, name)?;
    }
    if !moves.displaced.is_empty() {
        let displaced = safe_fs::open_dir(stage, c"displaced")?;
        for (aside, name) in moves.displaced.iter().rev() {
            rename_noreplace(displaced.as_fd(), aside, root, name)?;
        }
    }
    if !moves.out.is_empty() {
        let old = safe_fs::open_dir(stage, c"old")?;
        for name in moves.out.iter().rev() {
            rename_noreplace(old.as_fd(), name, root, name)?;
        }
    }
    rfs::unlinkat(stage, c"commit", AtFlags::empty())?;
    rfs::fsync(stage)
}

/// Renames `dir/name` to `live/name`; whatever is in the way (something the
/// server created meanwhile) is moved to `displaced` first, and noted in
/// `moves`.
fn move_into(
    dir: BorrowedFd<'_>,
    name: &CStr,
    live: BorrowedFd<'_>,
    displaced: BorrowedFd<'_>,
    counter: &mut u64,
    moves: &mut Moves,
) -> Result<()> {
    for _ in 0..3 {
        match rfs::renameat_with(dir, name, live, name, RenameFlags::NOREPLACE) {
            Ok(()) => return Ok(()),
            Err(Errno::EXIST) => {
                let aside = cstring(displaced_name(counter).as_bytes())?;
                match rename_noreplace(live, name, displaced, &aside) {
                    Ok(()) => moves.displaced.push((aside, name.to_owned())),
                    Err(Errno::NOENT) => {}
                    Err(e) => return Err(Error::os("moving the server's files aside", e)),
                }
            }
            Err(Errno::INVAL) | Err(Errno::NOSYS) => {
                // No RENAME_NOREPLACE on this filesystem: plain rename.
                return rfs::renameat(dir, name, live, name)
                    .map_err(|e| Error::os("putting restored files in place", e));
            }
            Err(e) => return Err(Error::os("putting restored files in place", e)),
        }
    }
    Err(Error::io(
        "putting restored files in place",
        std::io::Error::other("the server directory keeps changing"),
    ))
}

/// Walks the staged tree and the server's tree side by side. `visit` sees
/// each staged name with both parent handles and its relative path, and says
/// whether to descend (both sides must then be directories); `leave` runs
/// after a directory's children, with both handles and its relative path.
/// At most a bounded number of handles are open, whatever the depth.
/// `visit(staged_dir, live_dir, name, relative_path) -> descend?`
type VisitFn<'a> = dyn FnMut(BorrowedFd<'_>, BorrowedFd<'_>, &CStr, &[u8]) -> Result<bool> + 'a;
/// `leave(staged_dir, live_dir, relative_path, staged_stat)`: the path is
/// empty for the root; `staged_stat` was taken when the walk entered the
/// staged directory, before its children moved.
type LeaveFn<'a> = dyn FnMut(BorrowedFd<'_>, BorrowedFd<'_>, &[u8], &Stat) -> Result<()> + 'a;

fn walk_pair(
    tree: BorrowedFd<'_>,
    root: BorrowedFd<'_>,
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
    let first = Listing::read(tree).map_err(err)?;
    staged.push(
        c".".to_owned(),
        safe_fs::open_dir(tree, c".").map_err(err)?,
        Level {
            listing: first,
            next: 0,
            prefix: Vec::new(),
            stat: rfs::fstat(tree).map_err(err)?,
        },
    );
    live.push(
        c".".to_owned(),
        safe_fs::open_dir(root, c".").map_err(err)?,
        (),
    );
    while let Some(frame) = staged.top_mut() {
        if frame.data.next >= frame.data.listing.len() {
            let stat = frame.data.stat;
            let path = std::mem::take(&mut frame.data.prefix);
            let path = path.strip_suffix(b"/").unwrap_or(&path);
            let s = staged.take_top_fd(tree).map_err(err)?;
            let l = live.take_top_fd(root).map_err(err)?;
            leave(s.as_fd(), l.as_fd(), path, &stat)?;
            staged.pop();
            live.pop();
            continue;
        }
        let (name, _) = frame.data.listing.get(frame.data.next);
        let name = name.to_owned();
        frame.data.next += 1;
        let mut path = frame.data.prefix.clone();
        path.extend_from_slice(name.to_bytes());
        let s = staged.take_top_fd(tree).map_err(err)?;
        let l = live.take_top_fd(root).map_err(err)?;
        let descend = match visit(s.as_fd(), l.as_fd(), &name, &path) {
            Ok(true) => Some((
                safe_fs::open_dir(s.as_fd(), name.as_c_str()).map_err(err),
                safe_fs::open_dir(l.as_fd(), name.as_c_str()).map_err(err),
            )),
            Ok(false) => None,
            Err(e) => return Err(e),
        };
        staged.put_top_fd(s);
        live.put_top_fd(l);
        if let Some((s, l)) = descend {
            let (s, l) = (s?, l?);
            let listing = Listing::read(s.as_fd()).map_err(err)?;
            let stat = rfs::fstat(&s).map_err(err)?;
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

/// Merges the staged tree into the server's: files replace files by an
/// atomic rename; a staged directory whose place is free moves as a whole,
/// one whose place holds a directory is merged into it and then, if the
/// archive listed it (`explicit`), given the archive's mode and time (and
/// the configured owner). A directory the archive only implied keeps the
/// server's mode, time and owner.
fn commit_merge(
    root: BorrowedFd<'_>,
    stage: BorrowedFd<'_>,
    tree: BorrowedFd<'_>,
    owner: Option<Owner>,
    explicit: Option<&DirList>,
) -> Result<()> {
    let displaced = stage_dir(stage, c"displaced")?;
    let mut counter = 0u64;
    let err = |e: Errno| Error::os("putting restored files in place", e);
    walk_pair(
        tree,
        root,
        &mut |s, l, name, _| {
            let staged_is_dir = safe_fs::lstat_at(s, name)
                .map(|st| safe_fs::file_type(&st) == FileType::Directory)
                .map_err(err)?;
            let live_ty = match safe_fs::lstat_at(l, name) {
                Ok(st) => Some(safe_fs::file_type(&st)),
                Err(Errno::NOENT) => None,
                Err(e) => return Err(err(e)),
            };
            match (staged_is_dir, live_ty) {
                (true, Some(FileType::Directory)) => return Ok(true),
                (false, Some(ty)) if ty != FileType::Directory => {
                    rfs::renameat(s, name, l, name).map_err(err)?;
                }
                _ => move_into(
                    s,
                    name,
                    l,
                    displaced.as_fd(),
                    &mut counter,
                    &mut Moves::default(),
                )?,
            }
            Ok(false)
        },
        &mut |_, l, path, st| {
            if !path.is_empty() && explicit.is_some_and(|dirs| dirs.contains(path)) {
                chown(l, owner).map_err(err)?;
                rfs::fchmod(l, Mode::from_raw_mode(st.st_mode & 0o1777)).map_err(err)?;
                rfs::futimens(l, &times(st.st_mtime)).map_err(err)?;
            }
            Ok(())
        },
    )
}

/// Finishes or removes what an interrupted restore left in `root`: a stage
/// with a `commit` marker is carried through (every file ends up new), one
/// without is deleted (every file stays old). Stages locked by a running
/// restore are left alone. Returns how many stages were dealt with.
pub fn recover(root: BorrowedFd<'_>) -> Result<usize> {
    let listing = Listing::read(root).map_err(|e| Error::os("reading the server directory", e))?;
    let mut handled = 0;
    let euid = rustix::process::geteuid().as_raw();
    let mut first_error = None;
    for i in 0..listing.len() {
        let (name, ty) = listing.get(i);
        if !name.to_bytes().starts_with(STAGE_PREFIX.as_bytes())
            || !matches!(ty, FileType::Directory | FileType::Unknown)
        {
            continue;
        }
        let Ok(stage) = safe_fs::open_dir(root, name) else {
            continue;
        };
        // Only a stage this engine could have made (`begin`): ours, 0700.
        // The server's user may plant anything under this name; it is left
        // alone, neither obeyed nor deleted.
        match rfs::fstat(&stage) {
            // (A setgid root passes its bit on; only the permissions count.)
            Ok(st) if st.st_uid == euid && st.st_mode & 0o777 == 0o700 => {}
            _ => continue,
        }
        // Held until this stage is dealt with; a restore still running (in
        // this or another process) holds it, and its stage is left alone.
        let _lock = match open_marker(stage.as_fd(), c"lock", OFlags::RDWR) {
            Some(lock) => {
                if rfs::flock(&lock, FlockOperation::NonBlockingLockExclusive).is_err() {
                    continue;
                }
                Some(lock)
            }
            None => None,
        };
        let finished = match open_marker(stage.as_fd(), c"commit", OFlags::RDONLY) {
            Some(fd) => {
                let mut buf = [0u8; 16];
                let n = rustix::io::read(&fd, &mut buf).unwrap_or(0);
                match safe_fs::open_dir(stage.as_fd(), c"tree") {
                    Ok(tree) if buf[..n].starts_with(b"truncate") => {
                        let mut moves = Moves::default();
                        commit_truncate(root, stage.as_fd(), tree.as_fd(), true, &mut moves)
                    }
                    Ok(tree) => commit_merge(root, stage.as_fd(), tree.as_fd(), None, None),
                    Err(e) => Err(Error::os("reading a stale restore", e)),
                }
            }
            None => Ok(()),
        };
        // A stage that cannot be finished is kept (it may hold the server's
        // files), and the others are still dealt with.
        let result = finished.and_then(|()| {
            safe_fs::remove_tree(root, name).map_err(|e| Error::os("removing a stale restore", e))
        });
        match result {
            Ok(()) => handled += 1,
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(handled),
    }
}

/// Opens a stage's marker file if it is a regular file: never through a
/// link, never blocking (a FIFO under that name is not waited on).
fn open_marker(stage: BorrowedFd<'_>, name: &CStr, access: OFlags) -> Option<OwnedFd> {
    let fd = rfs::openat(
        stage,
        name,
        access | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )
    .ok()?;
    let st = rfs::fstat(&fd).ok()?;
    (safe_fs::file_type(&st) == FileType::RegularFile).then_some(fd)
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

    struct Scratch(std::path::PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A server root with three old entries; returns it and its listing.
    fn old_server() -> Scratch {
        let dir = std::env::temp_dir().join(format!("wb-commit-{}", safe_fs::nonce()));
        std::fs::create_dir_all(dir.join("world")).unwrap();
        std::fs::write(dir.join("world/level.dat"), b"old level").unwrap();
        std::fs::write(dir.join("server.properties"), b"old props").unwrap();
        std::fs::write(dir.join("zz.txt"), b"old zz").unwrap();
        Scratch(dir)
    }

    fn listing(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                if p.is_dir() {
                    stack.push(p);
                    out.push((rel, Vec::new()));
                } else {
                    out.push((rel, std::fs::read(&p).unwrap()));
                }
            }
        }
        out.sort();
        out
    }

    struct Bytes<'a>(Option<&'a [u8]>);

    impl EntryData for Bytes<'_> {
        fn next_data(&mut self) -> Result<&[u8]> {
            Ok(self.0.take().unwrap_or(&[]))
        }
    }

    /// A truncating restore of new entries that fails at `point` of its
    /// commit: the server's files are all back, and no stage is left.
    fn failed_commit_keeps_old_files(point: &'static str) {
        let server = old_server();
        let before = listing(&server.0);
        let root = safe_fs::open_trusted_dir(&server.0).unwrap();
        let opts = RestoreOptions {
            truncate: true,
            ..Default::default()
        };
        let mut target = RestoreTarget::begin(root, opts).unwrap();
        for (path, data) in [
            (&b"a-new.txt"[..], &b"new a"[..]),
            (b"server.properties", b"new props"),
            (b"zz.txt", b"new zz"),
        ] {
            let entry = Entry {
                path,
                kind: EntryKind::File,
                mode: 0o644,
                mtime: 0,
            };
            target.apply(&entry, &mut Bytes(Some(data))).unwrap();
        }
        FAULT.with(|f| f.set(Some(point)));
        let result = target.commit();
        FAULT.with(|f| f.set(None));
        let err = result.unwrap_err();
        assert_eq!(err.status, crate::Status::Quota, "{}", err.message);
        assert_eq!(listing(&server.0), before, "after a fault at {point}");
    }

    #[test]
    fn a_commit_failing_before_moving_in_puts_everything_back() {
        failed_commit_keeps_old_files("phase-b");
    }

    #[test]
    fn a_commit_failing_while_moving_in_puts_everything_back() {
        failed_commit_keeps_old_files("move-in");
    }

    #[test]
    fn recover_ignores_stages_it_did_not_make() {
        let server = old_server();
        let before = listing(&server.0);
        // A planted stage: mode 0755, a FIFO as its commit marker, and a
        // `truncate` marker that would replace the server's files.
        let stage = server.0.join(format!("{STAGE_PREFIX}planted"));
        std::fs::create_dir_all(stage.join("tree/x")).unwrap();
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            stage.join("lock"),
            Mode::from_raw_mode(0o600),
        )
        .unwrap();
        std::fs::write(stage.join("commit"), b"truncate\n").unwrap();
        let root = safe_fs::open_trusted_dir(&server.0).unwrap();
        assert_eq!(recover(root.as_fd()).unwrap(), 0);
        // Mode 0700 but FIFO markers: never opened (no hang), the server's
        // files untouched.
        std::fs::remove_file(stage.join("commit")).unwrap();
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            stage.join("commit"),
            Mode::from_raw_mode(0o600),
        )
        .unwrap();
        rustix::fs::chmod(&stage, Mode::from_raw_mode(0o700)).unwrap();
        assert_eq!(recover(root.as_fd()).unwrap(), 1);
        let mut after = listing(&server.0);
        after.retain(|(p, _)| !p.starts_with(STAGE_PREFIX));
        assert_eq!(after, before);
    }
}
