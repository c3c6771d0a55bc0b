//! The staging directory of a restore and the entries written into it.
//!
//! Every lookup in the staging tree goes one component at a time from a
//! handle we hold, with `O_NOFOLLOW`: a symlink from the archive is stored,
//! never followed, and an entry below one is refused.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, OwnedFd};

use super::checks::{self, quota_error};
use super::journal::{self, CommitMode, Journal, ListedDirs};
use super::paths::{
    cstring, entry_path, link_target, normalize, replaces_root, split_last, through_symlink, times,
};
use super::{Entry, EntryData, EntryKind, RestoreOptions, RestoreSummary};
use crate::config::Owner;
use crate::error::{quote, Error, Result};
use crate::safe_fs::{self, Beneath, Dir, DirStack, Errno, File, FileType, RESERVED_PREFIX};

/// Staging directories are named `<STAGE_PREFIX><nonce>`.
pub(super) const STAGE_PREFIX: &str = ".wings-backup-restore-";

/// A directory's mode, mtime and the mtime's nanoseconds.
type DirItem = (u32, i64, u32);

/// Explicit directory entries, whose mode and time are applied at the end
/// (applying them earlier would fail for read-only modes, and creating
/// children changes a directory's mtime). One item per path, the last
/// listed wins: an archive that lists one directory a million times costs
/// one item, so memory follows the directories actually made.
#[derive(Default)]
struct DirList {
    items: HashMap<Vec<u8>, DirItem>,
}

impl DirList {
    fn push(&mut self, path: &[u8], mode: u32, mtime: (i64, u32)) {
        match self.items.get_mut(path) {
            Some(item) => *item = (mode, mtime.0, mtime.1),
            None => {
                self.items.insert(path.to_vec(), (mode, mtime.0, mtime.1));
            }
        }
    }

    fn contains(&self, path: &[u8]) -> bool {
        self.items.contains_key(path)
    }
}

pub struct RestoreTarget {
    root: Beneath,
    stage_name: CString,
    stage: OwnedFd,
    tree: Beneath,
    _lock: File,
    /// The staged directories of the last entry's parent path: the next
    /// entry most likely shares most of them, whatever the depth.
    cursor: DirStack<()>,
    state: State,
    done: bool,
    /// The root's access and modification times before the staging
    /// directory was made in it: a restore that changes nothing puts them
    /// back.
    root_times: Option<safe_fs::Timestamps>,
}

/// What the entries change besides the staged files.
struct State {
    opts: RestoreOptions,
    dirs: DirList,
    summary: RestoreSummary,
    root_mtime: Option<(i64, u32)>,
    /// Files staged only as hard link sources (selective restore).
    link_sources: Vec<Vec<u8>>,
    /// Directories whose mode denies their owner something (0555, 000):
    /// staged and moved with the owner's bits added, since moving a
    /// directory, or anything out of it, needs write permission on it for a
    /// process without `CAP_DAC_OVERRIDE`; given their own mode once in
    /// place, deepest first.
    tighten: Vec<(Vec<u8>, u32)>,
}

fn chown(dir: Dir<'_>, owner: Option<Owner>) -> std::result::Result<(), Errno> {
    match owner {
        Some(o) => dir.chown(o.uid, o.gid),
        None => Ok(()),
    }
}

impl RestoreTarget {
    /// Prepares a restore into the directory `root`.
    pub fn begin(root: OwnedFd, opts: RestoreOptions) -> Result<RestoreTarget> {
        let root = Beneath::new(root);
        let root_times = root.dir().stat().ok().map(|st| safe_fs::Timestamps {
            last_access: safe_fs::Timespec {
                tv_sec: st.st_atime,
                tv_nsec: st.st_atime_nsec as _,
            },
            last_modification: safe_fs::Timespec {
                tv_sec: st.st_mtime,
                tv_nsec: st.st_mtime_nsec as _,
            },
        });
        let stage_name = cstring(format!("{STAGE_PREFIX}{}", safe_fs::nonce()).as_bytes())?;
        let io = |what: &str, e: Errno| Error::os(format!("preparing the restore: {what}"), e);
        root.dir()
            .mkdir(&stage_name, 0o700)
            .map_err(|e| io("creating the staging directory", e))?;
        let stage = root
            .dir()
            .open_dir(&stage_name)
            .map_err(|e| io("opening the staging directory", e))?;
        let staged = Dir::of(stage.as_fd());
        let lock = staged
            .create_lock_file(c"lock", 0o600)
            .map_err(|e| io("creating the lock file", e))?;
        lock.try_lock()
            .map_err(|e| io("locking the staging directory", e))?;
        staged
            .mkdir(c"tree", 0o755)
            .map_err(|e| io("creating the staging tree", e))?;
        let tree = staged
            .open_dir(c"tree")
            .map_err(|e| io("opening the staging tree", e))?;
        Ok(RestoreTarget {
            root,
            stage_name,
            stage,
            tree: Beneath::new(tree),
            _lock: lock,
            cursor: DirStack::default(),
            state: State {
                opts,
                dirs: DirList::default(),
                summary: RestoreSummary::default(),
                root_mtime: None,
                link_sources: Vec::new(),
                tighten: Vec::new(),
            },
            done: false,
            root_times,
        })
    }

    /// Removes the staging directory of a restore that changed nothing, and
    /// puts the root's times back as they were.
    fn discard(&self) {
        let _ = self.root.dir().remove_tree(&self.stage_name);
        if let Some(times) = &self.root_times {
            let _ = self.root.dir().set_times(times);
        }
    }

    pub fn summary(&self) -> &RestoreSummary {
        &self.state.summary
    }

    /// Restores one entry into the staging tree.
    pub fn apply(&mut self, entry: &Entry<'_>, data: &mut dyn EntryData) -> Result<()> {
        let state = &mut self.state;
        state.summary.entries += 1;
        let path = entry_path(entry.path)?;
        if path.is_empty() {
            return match entry.kind {
                EntryKind::Dir => {
                    state.root_mtime = Some((entry.mtime, entry.mtime_nsec));
                    Ok(())
                }
                EntryKind::Skipped => {
                    state.summary.skipped += 1;
                    Ok(())
                }
                _ => Err(replaces_root(entry.path)),
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
        let tree = self.tree.fd();
        let parent = self
            .cursor
            .goto(tree, parents, &mut |dir, part| {
                open_or_make_dir(Dir::of(dir), part, owner, entry.path)
            })?
            .unwrap_or(tree);
        let parent = Dir::of(parent);
        let tree = self.tree.dir();
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

    /// Stages a file outside a selective restore's scope that hard links in
    /// it point to; it is dropped before the commit (see `crate::selection`).
    pub fn apply_link_source(&mut self, entry: &Entry<'_>, data: &mut dyn EntryData) -> Result<()> {
        self.apply(entry, data)?;
        let state = &mut self.state;
        state.summary.entries -= 1;
        state.summary.files = state.summary.files.saturating_sub(1);
        if let Ok(path) = normalize(entry.path) {
            state.link_sources.push(path);
        }
        Ok(())
    }

    /// Before a selective restore's commit: every named path was in the
    /// archive, every link had its source, and the link sources (and the
    /// directories made only for them) leave the staging tree.
    fn finish_scope(&mut self) -> Result<()> {
        let Some(scope) = self.state.opts.scope.clone() else {
            return Ok(());
        };
        let not_seen = scope.not_seen();
        if !not_seen.is_empty() {
            return Err(crate::selection::not_in_backup(&not_seen));
        }
        if !scope.missing_sources().is_empty() {
            return Err(Error::corrupt(
                "a hard link in the selection points to a file the restore did not read",
            ));
        }
        let selection = &scope.selection;
        let needed = |dir: &[u8]| {
            selection
                .paths()
                .iter()
                .any(|p| p.starts_with(dir) && p.get(dir.len()) == Some(&b'/'))
        };
        for path in std::mem::take(&mut self.state.link_sources) {
            let (dir, last) = split_last(&path);
            if let Ok(parent) = self.tree.open_dir(dir) {
                let name = cstring(last)?;
                match Dir::of(parent.as_fd()).unlink(name.as_c_str()) {
                    Ok(()) | Err(Errno::NOENT) => {}
                    Err(e) => return Err(entry_error(&path, e)),
                }
            }
            // Directories made only for it go too (one that holds anything
            // else is not empty and stays).
            let mut dir = dir;
            while !dir.is_empty() && !selection.covers(dir) && !needed(dir) {
                let (up, last) = split_last(dir);
                let Ok(parent) = self.tree.open_dir(up) else {
                    break;
                };
                let name = cstring(last)?;
                if Dir::of(parent.as_fd()).rmdir(name.as_c_str()).is_err() {
                    break;
                }
                dir = up;
            }
        }
        Ok(())
    }

    /// Applies the explicit directories' modes and times, deepest first (a
    /// read-only directory is made so after its children); for a directory
    /// listed twice the later entry wins. A mode that denies the owner
    /// reading, writing or searching is staged with those bits and noted
    /// for [`RestoreTarget::tighten_dirs`].
    fn finish_dirs(&mut self) -> Result<()> {
        let mut order: Vec<(&Vec<u8>, &DirItem)> = self.state.dirs.items.iter().collect();
        let depth = |p: &[u8]| p.iter().filter(|b| **b == b'/').count();
        order.sort_unstable_by(|a, b| depth(b.0).cmp(&depth(a.0)).then_with(|| a.0.cmp(b.0)));
        let tree = self.tree.fd();
        for (path, (mode, mtime, nsec)) in order {
            let path = path.as_slice();
            let parts: Vec<&[u8]> = path.split(|b| *b == b'/').collect();
            let Some(fd) = self.cursor.goto(tree, &parts, &mut |dir, part| {
                let dir = Dir::of(dir);
                dir.open_dir(part)
                    .map_err(|e| lookup_error(dir, part, path, e))
            })?
            else {
                continue;
            };
            let dir = Dir::of(fd);
            let err = |e: Errno| entry_error(path, e);
            let mode = mode & 0o1777;
            if mode & 0o700 != 0o700 {
                self.state.tighten.push((path.to_vec(), mode));
            }
            dir.chmod(mode | 0o700).map_err(err)?;
            dir.set_times(&times(*mtime, *nsec)).map_err(err)?;
        }
        Ok(())
    }

    /// Gives the directories staged with their owner's bits added their
    /// own mode, now that they are in place (deepest first, as
    /// [`RestoreTarget::finish_dirs`] listed them). A directory the server
    /// replaced meanwhile is left alone; changing a mode moves no time.
    fn tighten_dirs(&mut self) {
        for (path, mode) in std::mem::take(&mut self.state.tighten) {
            if let Ok(fd) = self.root.open_dir(&path) {
                let _ = Dir::of(fd.as_fd()).chmod(mode);
            }
        }
    }

    /// Finishes the restore: checks, then puts the staged files in place.
    /// An error leaves the server's files as they were (a commit that fails
    /// is undone), unless undoing failed too, which the error says.
    pub fn commit(mut self) -> Result<RestoreSummary> {
        self.finish_dirs()?;
        self.finish_scope()?;
        checks::plan(&self.root, &self.tree, &self.state.opts)?;
        let stage = Dir::of(self.stage.as_fd());
        let _ = stage.sync_filesystem();
        let named: Vec<Vec<u8>> = match &self.state.opts.scope {
            Some(scope) => scope.selection.paths().to_vec(),
            None => Vec::new(),
        };
        let mode = match (self.state.opts.truncate, named.is_empty()) {
            (true, true) => CommitMode::Truncate,
            (true, false) => CommitMode::ScopedTruncate,
            (false, _) => CommitMode::Merge,
        };
        if mode == CommitMode::ScopedTruncate {
            journal::record_scope(stage, &named)?;
        }
        journal::start(stage, mode)?;
        // From here on the stage may hold the server's files (in `old/` or
        // `displaced/`): whatever happens, it is not deleted unless they
        // are back.
        self.done = true;
        let dirs = &self.state.dirs;
        let listed = |path: &[u8]| dirs.contains(path);
        let explicit = ListedDirs {
            owner: self.state.opts.owner,
            listed: &listed,
        };
        let mut moves = Journal::default();
        let committed = journal::commit(
            &self.root,
            stage,
            &self.tree,
            mode,
            false,
            &named,
            Some(&explicit),
            &mut moves,
        );
        if let Err(e) = committed {
            return Err(match moves.roll_back(&self.root, stage, &self.tree) {
                Ok(()) => {
                    self.discard();
                    e
                }
                Err(undo) => journal::unfinished(e, undo),
            });
        }
        self.tighten_dirs();
        // The stage goes first: removing it moves the root's mtime.
        let _ = self.root.dir().remove_tree(&self.stage_name);
        if let Some((mtime, nsec)) = self.state.root_mtime {
            let _ = self.root.dir().set_times(&times(mtime, nsec));
        }
        Ok(self.state.summary.clone())
    }
}

impl Drop for RestoreTarget {
    fn drop(&mut self) {
        if !self.done {
            // Not committed: the server's files were never touched.
            self.discard();
        }
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
fn lookup_error(dir: Dir<'_>, name: &CStr, entry: &[u8], e: Errno) -> Error {
    match e {
        Errno::LOOP | Errno::NOTDIR => match dir.lstat(name) {
            Ok(st) if safe_fs::file_type(&st) == FileType::Symlink => through_symlink(entry),
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
    dir: Dir<'_>,
    name: &CStr,
    owner: Option<Owner>,
    entry: &[u8],
) -> Result<OwnedFd> {
    match dir.open_dir(name) {
        Ok(fd) => Ok(fd),
        Err(Errno::NOENT) => {
            match dir.mkdir(name, 0o755) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(entry_error(entry, e)),
            }
            let fd = dir
                .open_dir(name)
                .map_err(|e| lookup_error(dir, name, entry, e))?;
            chown(Dir::of(fd.as_fd()), owner).map_err(|e| entry_error(entry, e))?;
            Ok(fd)
        }
        Err(e) => Err(lookup_error(dir, name, entry, e)),
    }
}

/// Opens the staged directory `dir` (a normalised path) without creating
/// anything, for hard link targets. (Component by component, so that the
/// error names a symlink or a file in the way.)
fn open_staged_dir(tree: Dir<'_>, dir: &[u8], entry: &[u8]) -> Result<OwnedFd> {
    let mut current = tree.dup().map_err(|e| entry_error(entry, e))?;
    for part in dir.split(|b| *b == b'/').filter(|p| !p.is_empty()) {
        let name = cstring(part)?;
        let parent = Dir::of(current.as_fd());
        current = parent
            .open_dir(&name)
            .map_err(|e| lookup_error(parent, &name, entry, e))?;
    }
    Ok(current)
}

/// Makes room for a new entry called `name`: an earlier entry of the same
/// name goes, unless it is a directory (which would drop what was restored
/// into it: duplicated entries may not do that).
fn clear_name(dir: Dir<'_>, name: &CStr, entry: &[u8]) -> Result<()> {
    match dir.lstat(name) {
        Err(Errno::NOENT) => Ok(()),
        Ok(st) if safe_fs::file_type(&st) == FileType::Directory => Err(Error::unsafe_entry(
            entry,
            "it would replace a directory restored earlier",
        )),
        Ok(_) => dir.unlink(name).map_err(|e| entry_error(entry, e)),
        Err(e) => Err(entry_error(entry, e)),
    }
}

/// Creates a new entry called `name` with `create`, which fails with
/// `EEXIST` if the name is taken; then the earlier entry is cleared (see
/// `clear_name`) and `create` runs once more. Names are rarely taken (only
/// by duplicated entries), so the usual cost is the one call.
fn create_new<T>(
    dir: Dir<'_>,
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
    dir: Dir<'_>,
    name: &CStr,
    path: &[u8],
    entry: &Entry<'_>,
    state: &mut State,
) -> Result<()> {
    let err = |e: Errno| entry_error(entry.path, e);
    match dir.mkdir(name, 0o755) {
        Ok(()) => {}
        Err(Errno::EXIST) => {
            let st = dir.lstat(name).map_err(err)?;
            if safe_fs::file_type(&st) != FileType::Directory {
                clear_name(dir, name, entry.path)?;
                dir.mkdir(name, 0o755).map_err(err)?;
            }
        }
        Err(e) => return Err(err(e)),
    }
    let fd = dir
        .open_dir(name)
        .map_err(|e| lookup_error(dir, name, entry.path, e))?;
    chown(Dir::of(fd.as_fd()), state.opts.owner).map_err(err)?;
    state
        .dirs
        .push(path, entry.mode, (entry.mtime, entry.mtime_nsec));
    state.summary.dirs += 1;
    Ok(())
}

/// The unit of holes: a run of zeros this long, at an offset that is a
/// multiple of it, is not written (every Linux filesystem's block is at most
/// this, so each such run can be a hole).
const HOLE: usize = 4096;

/// Whether a block is all zeros. The first bytes decide for almost every
/// block of real data, so dense data costs a few comparisons per block.
fn is_zero(block: &[u8]) -> bool {
    block.iter().take(16).all(|b| *b == 0) && block.iter().fold(0u8, |acc, b| acc | b) == 0
}

/// Writes a new file's data piece by piece from offset 0, leaving a hole
/// for each aligned block of zeros (the file is new, so a hole reads as
/// zeros). Pieces may end anywhere: a partial block waits for the next
/// piece, so that blocks stay aligned in the file. `finish` writes what
/// is left and sets the file's length where it ends in a hole.
struct SparseWriter<'a> {
    file: &'a File,
    /// Bytes of the file so far, written, skipped or pending.
    len: u64,
    /// Where the last write ended.
    written: u64,
    /// The start of the last block, shorter than `HOLE` (it begins at
    /// `len - pending.len()`, a multiple of `HOLE`).
    pending: Vec<u8>,
}

impl<'a> SparseWriter<'a> {
    fn new(file: &'a File) -> SparseWriter<'a> {
        SparseWriter {
            file,
            len: 0,
            written: 0,
            pending: Vec::new(),
        }
    }

    /// Writes `data` at `at` unless it is all zeros.
    fn put(&mut self, data: &[u8], at: u64) -> std::result::Result<(), Errno> {
        if !is_zero(data) {
            self.file.write_all_at(data, at)?;
            self.written = at + data.len() as u64;
        }
        Ok(())
    }

    fn write(&mut self, mut data: &[u8]) -> std::result::Result<(), Errno> {
        if !self.pending.is_empty() {
            let take = (HOLE - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            self.len += take as u64;
            data = &data[take..];
            if self.pending.len() < HOLE {
                return Ok(());
            }
            let block = std::mem::take(&mut self.pending);
            self.put(&block, self.len - HOLE as u64)?;
            self.pending = block;
            self.pending.clear();
        }
        // From here `start` is a multiple of HOLE.
        let start = self.len;
        let whole = data.len() / HOLE * HOLE;
        let (mut i, mut run) = (0, 0);
        while i < whole {
            if is_zero(&data[i..i + HOLE]) {
                if run < i {
                    self.file.write_all_at(&data[run..i], start + run as u64)?;
                    self.written = start + i as u64;
                }
                i += HOLE;
                while i < whole && is_zero(&data[i..i + HOLE]) {
                    i += HOLE;
                }
                run = i;
            } else {
                i += HOLE;
            }
        }
        if run < whole {
            self.file
                .write_all_at(&data[run..whole], start + run as u64)?;
            self.written = start + whole as u64;
        }
        self.pending.extend_from_slice(&data[whole..]);
        self.len += data.len() as u64;
        Ok(())
    }

    fn finish(mut self) -> std::result::Result<(), Errno> {
        if !self.pending.is_empty() {
            let block = std::mem::take(&mut self.pending);
            self.put(&block, self.len - block.len() as u64)?;
        }
        if self.written < self.len {
            self.file.set_len(self.len)?;
        }
        Ok(())
    }
}

fn write_file(
    dir: Dir<'_>,
    name: &CStr,
    entry: &Entry<'_>,
    data: &mut dyn EntryData,
    state: &mut State,
) -> Result<()> {
    let err = |e: Errno| entry_error(entry.path, e);
    let file = create_new(dir, name, entry.path, || dir.create_file(name, 0o600))?.map_err(err)?;
    let mut out = SparseWriter::new(&file);
    loop {
        let chunk = data.next_data()?;
        if chunk.is_empty() {
            break;
        }
        // The limit counts the bytes the archive holds, holes or not.
        let after = state.summary.bytes + chunk.len() as u64;
        if state.opts.disk_limit > 0 && after > state.opts.disk_limit {
            return Err(quota_error(state.opts.disk_limit));
        }
        out.write(chunk).map_err(err)?;
        state.summary.bytes = after;
    }
    out.finish().map_err(err)?;
    if let Some(o) = state.opts.owner {
        file.chown(o.uid, o.gid).map_err(err)?;
    }
    // setuid and setgid bits are never restored.
    file.chmod(entry.mode & 0o1777).map_err(err)?;
    file.set_times(&times(entry.mtime, entry.mtime_nsec))
        .map_err(err)?;
    state.summary.files += 1;
    Ok(())
}

fn make_symlink(
    dir: Dir<'_>,
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
    create_new(dir, name, entry.path, || dir.symlink(&target, name))?.map_err(err)?;
    if let Some(o) = state.opts.owner {
        dir.chown_entry(name, o.uid, o.gid).map_err(err)?;
    }
    dir.set_entry_times(name, &times(entry.mtime, entry.mtime_nsec))
        .map_err(err)?;
    state.summary.symlinks += 1;
    Ok(())
}

fn make_hard_link(
    tree: Dir<'_>,
    dir: Dir<'_>,
    name: &CStr,
    path: &[u8],
    target: &[u8],
    entry: &Entry<'_>,
    state: &mut State,
) -> Result<()> {
    let target = link_target(entry.path, target)?;
    if target == path {
        return Ok(());
    }
    let (target_dir, target_last) = split_last(&target);
    let target_parent = open_staged_dir(tree, target_dir, entry.path)?;
    let target_name = cstring(target_last)?;
    let target_parent = Dir::of(target_parent.as_fd());
    create_new(dir, name, entry.path, || {
        target_parent.link(&target_name, dir, name)
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::super::journal::{CommitPhase, FAULT};
    use super::super::recover;
    use super::*;

    struct Scratch(std::path::PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Stages each `(path, kind, mode, data)`, a file or a directory (mtime 0).
    fn stage_all(target: &mut RestoreTarget, entries: &[(&[u8], EntryKind<'_>, u32, &[u8])]) {
        for (path, kind, mode, data) in entries {
            let (path, mode, data) = (*path, *mode, *data);
            let kind = match kind {
                EntryKind::Dir => EntryKind::Dir,
                _ => EntryKind::File,
            };
            let entry = Entry {
                path,
                kind,
                mode,
                mtime: 0,
                mtime_nsec: 0,
            };
            target.apply(&entry, &mut Bytes(Some(data))).unwrap();
        }
    }

    /// A server root with old entries: a directory, files, one read-only.
    fn old_server() -> Scratch {
        let dir = std::env::temp_dir().join(format!("wb-commit-{}", safe_fs::nonce()));
        std::fs::create_dir_all(dir.join("world")).unwrap();
        std::fs::write(dir.join("world/level.dat"), b"old level").unwrap();
        std::fs::write(dir.join("server.properties"), b"old props").unwrap();
        std::fs::write(dir.join("zz.txt"), b"old zz").unwrap();
        std::fs::set_permissions(dir.join("zz.txt"), PermissionsExt::from_mode(0o400)).unwrap();
        Scratch(dir)
    }

    /// Every path below `dir` with its mode and contents (none for a
    /// directory).
    fn listing(dir: &std::path::Path) -> Vec<(String, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                let mode = std::fs::symlink_metadata(&p).unwrap().permissions().mode();
                if p.is_dir() {
                    stack.push(p);
                    out.push((rel, mode, Vec::new()));
                } else {
                    out.push((rel, mode, std::fs::read(&p).unwrap()));
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

    /// A restore of new and replacing entries (files, and in merge mode a
    /// directory listed by the archive) that fails at `phase` of its commit:
    /// the server's files are all back with their modes, no stage is left,
    /// and a recovery (as at the next start) changes nothing.
    fn failed_commit_keeps_old_files(truncate: bool, phase: CommitPhase) {
        let server = old_server();
        let before = listing(&server.0);
        let root = safe_fs::open_trusted_dir(&server.0).unwrap();
        let opts = RestoreOptions {
            truncate,
            ..Default::default()
        };
        let mut target = RestoreTarget::begin(root, opts).unwrap();
        let entries: [(&[u8], EntryKind<'_>, u32, &[u8]); 5] = [
            (b"a-new.txt", EntryKind::File, 0o644, b"new a"),
            (b"server.properties", EntryKind::File, 0o600, b"new props"),
            (b"world", EntryKind::Dir, 0o700, b""),
            (b"world/level.dat", EntryKind::File, 0o644, b"new level"),
            (b"zz.txt", EntryKind::File, 0o644, b"new zz"),
        ];
        stage_all(&mut target, &entries);
        FAULT.with(|f| f.set(Some(phase)));
        let result = target.commit();
        FAULT.with(|f| f.set(None));
        let err = result.unwrap_err();
        assert_eq!(err.status, crate::Status::Quota, "{}", err.message);
        let what = format!("truncate={truncate}, a fault at {phase:?}");
        assert_eq!(listing(&server.0), before, "{what}");
        let root = safe_fs::open_trusted_dir(&server.0).unwrap();
        assert_eq!(
            recover(root.as_fd()).result().unwrap(),
            0,
            "{what}: a stage is left"
        );
        assert_eq!(listing(&server.0), before, "{what}, after a recovery");
    }

    /// A merge into a server directory the node does not own (another
    /// user's, mode 0777), by a thread without `CAP_FOWNER`, `CAP_CHOWN`,
    /// `CAP_DAC_OVERRIDE` and `CAP_DAC_READ_SEARCH`, as a non-root node
    /// runs: the files go in and the directory keeps its mode and owner, as
    /// GNU tar leaves them. Failing at its second move, the commit is undone
    /// whole, although that directory's time cannot be put back.
    #[test]
    fn a_merge_into_a_directory_the_node_does_not_own() {
        use rustix::thread::{capabilities, set_capabilities, CapabilitySet};
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root to give a directory to another user");
            return;
        }
        for fail in [false, true] {
            let server = old_server();
            std::fs::write(server.0.join("world/level.dat"), b"old level").unwrap();
            std::os::unix::fs::chown(server.0.join("world"), Some(4321), Some(4321)).unwrap();
            std::fs::set_permissions(server.0.join("world"), PermissionsExt::from_mode(0o777))
                .unwrap();
            let before = listing(&server.0);
            let path = server.0.clone();
            let result = std::thread::spawn(move || {
                let mut caps = capabilities(None).unwrap();
                caps.effective.remove(
                    CapabilitySet::FOWNER
                        | CapabilitySet::CHOWN
                        | CapabilitySet::DAC_OVERRIDE
                        | CapabilitySet::DAC_READ_SEARCH,
                );
                set_capabilities(None, caps).unwrap();
                let root = safe_fs::open_trusted_dir(&path).unwrap();
                let mut target = RestoreTarget::begin(root, RestoreOptions::default()).unwrap();
                let entries: [(&[u8], EntryKind<'_>, u32, &[u8]); 3] = [
                    (b"world", EntryKind::Dir, 0o755, b""),
                    (b"world/level.dat", EntryKind::File, 0o644, b"new level"),
                    (b"zz-new.txt", EntryKind::File, 0o644, b"new zz"),
                ];
                stage_all(&mut target, &entries);
                FAULT.with(|f| f.set(fail.then_some(CommitPhase::MovingIn)));
                let result = target.commit().map(|_| ()).map_err(|e| e.message);
                FAULT.with(|f| f.set(None));
                result
            })
            .join()
            .unwrap();
            use std::os::unix::fs::MetadataExt;
            let world = std::fs::metadata(server.0.join("world")).unwrap();
            assert_eq!(
                (world.uid(), world.mode() & 0o7777),
                (4321, 0o777),
                "fail={fail}"
            );
            if fail {
                let err = result.unwrap_err();
                assert!(err.contains("injected fault"), "{err}");
                assert_eq!(listing(&server.0), before, "undone whole");
            } else {
                result.unwrap();
                let data = |p: &str| std::fs::read(server.0.join(p)).unwrap();
                assert_eq!(data("world/level.dat"), b"new level");
                assert_eq!(data("zz-new.txt"), b"new zz");
            }
            let names: Vec<String> = std::fs::read_dir(&server.0)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            assert!(
                names.iter().all(|n| !n.starts_with(STAGE_PREFIX)),
                "{names:?}"
            );
        }
    }

    #[test]
    fn a_commit_failing_before_any_move_leaves_the_old_files() {
        failed_commit_keeps_old_files(true, CommitPhase::Started);
        failed_commit_keeps_old_files(false, CommitPhase::Started);
    }

    #[test]
    fn a_commit_failing_before_moving_in_puts_everything_back() {
        failed_commit_keeps_old_files(true, CommitPhase::MovedAside);
    }

    /// A target limited to `world` and `zz.txt` (truncating), with new ones
    /// staged.
    fn scoped_world(server: &Scratch) -> RestoreTarget {
        let root = safe_fs::open_trusted_dir(&server.0).unwrap();
        let selection =
            crate::selection::Selection::parse(&["world".to_string(), "zz.txt".to_string()])
                .unwrap();
        let opts = RestoreOptions {
            truncate: true,
            scope: Some(std::sync::Arc::new(crate::selection::Scope::new(
                selection,
                Default::default(),
            ))),
            ..Default::default()
        };
        let mut target = RestoreTarget::begin(root, opts).unwrap();
        let scope = target.state.opts.scope.clone().unwrap();
        let entries: [(&[u8], EntryKind<'_>, u32, &[u8]); 4] = [
            (b"world", EntryKind::Dir, 0o755, b""),
            (b"world/level.dat", EntryKind::File, 0o644, b"new level"),
            (b"world/extra.dat", EntryKind::File, 0o644, b"new extra"),
            (b"zz.txt", EntryKind::File, 0o644, b"new zz"),
        ];
        for (path, kind, _, _) in &entries {
            let kind = match kind {
                EntryKind::Dir => crate::index::EntryKind::Dir,
                _ => crate::index::EntryKind::File,
            };
            assert_eq!(
                scope.admit(path, b"", kind).unwrap(),
                crate::selection::Admit::Yes
            );
        }
        stage_all(&mut target, &entries);
        target
    }

    #[test]
    fn a_scoped_truncate_replaces_only_its_paths_and_is_undone_at_any_phase() {
        for phase in [
            CommitPhase::Started,
            CommitPhase::MovedAside,
            CommitPhase::MovingIn,
        ] {
            let server = old_server();
            std::fs::write(server.0.join("world/stale.dat"), b"stale").unwrap();
            let before = listing(&server.0);
            let target = scoped_world(&server);
            FAULT.with(|f| f.set(Some(phase)));
            let result = target.commit();
            FAULT.with(|f| f.set(None));
            assert!(result.is_err(), "{phase:?}");
            assert_eq!(listing(&server.0), before, "a fault at {phase:?}");
            let root = safe_fs::open_trusted_dir(&server.0).unwrap();
            assert_eq!(recover(root.as_fd()).result().unwrap(), 0);
            assert_eq!(listing(&server.0), before);
        }
        // Committed: `world` is the staged one (its stale file gone), the
        // rest as it was.
        let server = old_server();
        std::fs::write(server.0.join("world/stale.dat"), b"stale").unwrap();
        let mut want: Vec<_> = listing(&server.0)
            .into_iter()
            .filter(|(p, _, _)| !p.starts_with("world/") && p != "zz.txt")
            .collect();
        scoped_world(&server).commit().unwrap();
        want.push(("world/extra.dat".into(), 0o100644, b"new extra".to_vec()));
        want.push(("world/level.dat".into(), 0o100644, b"new level".to_vec()));
        want.push(("zz.txt".into(), 0o100644, b"new zz".to_vec()));
        want.sort();
        let mut got = listing(&server.0);
        for item in got.iter_mut().chain(want.iter_mut()) {
            if item.0 == "world" {
                item.1 = 0; // the directory's mode is the archive's
            }
        }
        assert_eq!(got, want);
    }

    #[test]
    fn a_scoped_truncate_interrupted_after_its_start_is_finished_by_recover() {
        let server = old_server();
        std::fs::write(server.0.join("world/stale.dat"), b"stale").unwrap();
        let mut target = scoped_world(&server);
        // As a crash right after the commit started: markers written,
        // nothing moved, the stage left.
        target.finish_dirs().unwrap();
        journal::record_scope(
            Dir::of(target.stage.as_fd()),
            &[b"world".to_vec(), b"zz.txt".to_vec()],
        )
        .unwrap();
        journal::start(Dir::of(target.stage.as_fd()), CommitMode::ScopedTruncate).unwrap();
        target.done = true;
        drop(target);
        let root = safe_fs::open_trusted_dir(&server.0).unwrap();
        assert_eq!(recover(root.as_fd()).result().unwrap(), 1);
        assert_eq!(
            std::fs::read(server.0.join("world/level.dat")).unwrap(),
            b"new level"
        );
        assert!(!server.0.join("world/stale.dat").exists());
        assert_eq!(
            std::fs::read(server.0.join("server.properties")).unwrap(),
            b"old props"
        );
        assert_eq!(std::fs::read(server.0.join("zz.txt")).unwrap(), b"new zz");
        assert!(server.0.join("world").is_dir());
    }

    #[test]
    fn a_commit_failing_while_moving_in_puts_everything_back() {
        failed_commit_keeps_old_files(true, CommitPhase::MovingIn);
        failed_commit_keeps_old_files(false, CommitPhase::MovingIn);
    }

    /// A FIFO at `path`, made by coreutils' mkfifo.
    fn mkfifo(path: &std::path::Path) {
        let made = std::process::Command::new("mkfifo")
            .args(["-m", "600"])
            .arg(path)
            .status()
            .unwrap();
        assert!(made.success(), "mkfifo {}", path.display());
    }

    #[test]
    fn recover_ignores_stages_it_did_not_make() {
        let server = old_server();
        let before = listing(&server.0);
        // A planted stage: mode 0755, a FIFO as its commit marker, and a
        // `truncate` marker that would replace the server's files.
        let stage = server.0.join(format!("{STAGE_PREFIX}planted"));
        std::fs::create_dir_all(stage.join("tree/x")).unwrap();
        mkfifo(&stage.join("lock"));
        std::fs::write(stage.join("commit"), b"truncate\n").unwrap();
        let root = safe_fs::open_trusted_dir(&server.0).unwrap();
        assert_eq!(recover(root.as_fd()).result().unwrap(), 0);
        // Mode 0700 but FIFO markers: never opened (no hang), the server's
        // files untouched.
        std::fs::remove_file(stage.join("commit")).unwrap();
        mkfifo(&stage.join("commit"));
        std::fs::set_permissions(&stage, PermissionsExt::from_mode(0o700)).unwrap();
        assert_eq!(recover(root.as_fd()).result().unwrap(), 1);
        let mut after = listing(&server.0);
        after.retain(|(p, _, _)| !p.starts_with(STAGE_PREFIX));
        assert_eq!(after, before);
    }

    /// Writes `pieces` as one file's data through `SparseWriter`.
    fn sparse_file(pieces: &[&[u8]]) -> (Vec<u8>, u64) {
        let dir = Scratch(std::env::temp_dir().join(format!("wb-sparse-{}", safe_fs::nonce())));
        std::fs::create_dir_all(&dir.0).unwrap();
        let path = dir.0.join("f");
        let fd = safe_fs::open_trusted_dir(&dir.0).unwrap();
        let file = Dir::of(fd.as_fd()).create_file(c"f", 0o600).unwrap();
        let mut out = SparseWriter::new(&file);
        for piece in pieces {
            out.write(piece).unwrap();
        }
        out.finish().unwrap();
        drop(file);
        let blocks = std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(&path).unwrap());
        (std::fs::read(&path).unwrap(), blocks * 512)
    }

    #[test]
    fn zeros_become_holes_and_the_data_stays_the_same() {
        let zeros = vec![0u8; 1 << 20];
        let mut mixed = vec![0u8; 3 * HOLE + 10];
        mixed[5] = 1; // first block data
        mixed[2 * HOLE + 7] = 2; // third block data
        let cases: Vec<Vec<&[u8]>> = vec![
            vec![&zeros],
            vec![b"head", &zeros, b"tail"],
            vec![&mixed, &zeros, &mixed],
            vec![&zeros[..HOLE - 1], &zeros[..HOLE + 1], &mixed[..HOLE + 3]],
            vec![&[]],
            vec![b"x"],
            // Pieces that split blocks: holes all the same.
            vec![&zeros[..1000], &zeros[..HOLE * 100 + 7], &zeros, b"end"],
        ];
        for pieces in cases {
            let want: Vec<u8> = pieces.concat();
            let (got, allocated) = sparse_file(&pieces);
            assert_eq!(got.len(), want.len());
            assert!(got == want, "contents differ");
            if want.len() >= 1 << 20 {
                assert!(allocated <= 64 << 10, "{allocated} bytes allocated");
            }
        }
    }
}
