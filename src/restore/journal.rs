//! The commit: how staged entries replace the server's files, the phases it
//! records on disk for crash recovery, and the journal of the moves it made
//! so that a commit that fails is undone.
//!
//! * truncating: every top-level entry of the server moves into the
//!   stage's `old/`, then every staged entry moves into the root;
//! * merging: staged entries move into the server's tree one by one; a
//!   server file they replace is first given a second name in the stage's
//!   `displaced/` (or moved there where a link cannot be made), so that it
//!   can be put back.
//!
//! Each move is an atomic rename, so every file is either the old or the
//! new one. A commit that fails undoes its moves, newest first, and removes
//! its `commit` marker: the restore then answers its error with the server's
//! old tree, and nothing finishes it later. A crash during a commit leaves
//! the marker, and `recover` carries the commit through at the next start.

use std::collections::HashSet;
use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, OwnedFd};

use super::checks::walk_pair;
use super::paths::{cstring, split_last, times};
use crate::config::Owner;
use crate::error::{quote, Error, Result};
use crate::safe_fs::{
    self, Beneath, Dir, Errno, FileType, Listing, Timespec, Timestamps, RESERVED_PREFIX,
};

/// The stage's marker that a commit has started; it holds the mode.
pub(super) const COMMIT_MARKER: &CStr = c"commit";
/// The stage's marker that a truncating commit has moved every server
/// entry aside (the name is kept for stages left by earlier versions).
const MOVED_ASIDE_MARKER: &CStr = c"phase-b";

/// The two kinds of commit, as the `commit` marker names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitMode {
    Truncate,
    Merge,
    /// A selective restore's truncate: each named path (recorded in the
    /// stage's `scope`) moves aside whole, then the staged tree is merged.
    ScopedTruncate,
}

impl CommitMode {
    fn marker(self) -> &'static [u8] {
        match self {
            CommitMode::Truncate => b"truncate\n",
            CommitMode::Merge => b"merge\n",
            // Not starting with `truncate`: a version that does not know
            // it merges (and loses nothing) rather than truncating all.
            CommitMode::ScopedTruncate => b"scoped-truncate\n",
        }
    }

    /// The mode a `commit` marker's content names (merge unless it says
    /// truncate, as earlier versions read it).
    pub(super) fn from_marker(content: &[u8]) -> CommitMode {
        if content.starts_with(b"truncate") {
            CommitMode::Truncate
        } else if content.starts_with(b"scoped-truncate") {
            CommitMode::ScopedTruncate
        } else {
            CommitMode::Merge
        }
    }
}

/// The phases of a commit, in order. The first two are recorded on disk
/// (markers in the stage), and the tests make the commit fail at each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitPhase {
    /// The `commit` marker is written; nothing of the server's has moved.
    Started,
    /// (truncating) every server entry is in `old/`: marker `phase-b`.
    MovedAside,
    /// Staged entries are moving into place (between two moves).
    MovingIn,
}

/// The phase a started commit recorded in its stage.
pub(super) fn recorded_phase(stage: Dir<'_>, mode: CommitMode) -> CommitPhase {
    if matches!(mode, CommitMode::Truncate | CommitMode::ScopedTruncate)
        && stage.lstat(MOVED_ASIDE_MARKER).is_ok()
    {
        CommitPhase::MovedAside
    } else {
        CommitPhase::Started
    }
}

#[cfg(test)]
thread_local! {
    /// A phase of the commit made to fail, for the tests of its undoing.
    pub(super) static FAULT: std::cell::Cell<Option<CommitPhase>> =
        const { std::cell::Cell::new(None) };
}

/// Fails at `phase` when a test asked for it; nothing outside tests.
fn fault(phase: CommitPhase) -> Result<()> {
    #[cfg(test)]
    if FAULT.with(|f| f.get()) == Some(phase) {
        return Err(Error::os(
            format!("injected fault at {phase:?}"),
            Errno::NOSPC,
        ));
    }
    let _ = phase;
    Ok(())
}

/// One change a commit made to the server's tree, with what undoing it needs.
/// Directory paths are relative to the server root (and, for the staged
/// side, to the staging tree); empty is the root.
enum Move {
    /// The server's top-level entry moved into `old/` (truncating).
    Out { name: CString },
    /// The staged `dir/name` moved into its free place in the server's tree.
    In { dir: Vec<u8>, name: CString },
    /// The server's `dir/name` moved to `displaced/aside` to make room.
    Displaced {
        dir: Vec<u8>,
        name: CString,
        aside: CString,
    },
    /// The server's `dir/name` linked as `displaced/aside`, then the staged
    /// file renamed over it.
    Replaced {
        dir: Vec<u8>,
        name: CString,
        aside: CString,
    },
    /// The times of the server's directory `dir` before the first move in it.
    Touched { dir: Vec<u8>, times: Timestamps },
    /// The server's directory `dir` before the archive's mode, time and
    /// owner were applied to it.
    Meta {
        dir: Vec<u8>,
        mode: u32,
        uid: u32,
        gid: u32,
        times: Timestamps,
    },
}

/// The moves a commit made, in order.
#[derive(Default)]
pub(super) struct Journal {
    moves: Vec<Move>,
    touched: HashSet<Vec<u8>>,
    counter: u64,
}

fn stat_times(st: &safe_fs::Stat) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: st.st_atime as _,
            tv_nsec: st.st_atime_nsec as _,
        },
        last_modification: Timespec {
            tv_sec: st.st_mtime as _,
            tv_nsec: st.st_mtime_nsec as _,
        },
    }
}

fn same_times(st: &safe_fs::Stat, times: &Timestamps) -> bool {
    let now = stat_times(st);
    (now.last_modification.tv_sec, now.last_modification.tv_nsec)
        == (
            times.last_modification.tv_sec,
            times.last_modification.tv_nsec,
        )
}

impl Journal {
    /// Notes the times of the server's directory `dir` (open as `fd`)
    /// before the first move in it.
    fn touch(&mut self, fd: Dir<'_>, dir: &[u8]) -> Result<()> {
        if self.touched.contains(dir) {
            return Ok(());
        }
        let st = fd
            .stat()
            .map_err(|e| Error::os("reading the server directory", e))?;
        self.touched.insert(dir.to_vec());
        self.moves.push(Move::Touched {
            dir: dir.to_vec(),
            times: stat_times(&st),
        });
        Ok(())
    }

    /// A name in the stage's `displaced/` for a server entry in the way of a
    /// staged one. (Not in `old/`: there the server's own top-level entries
    /// keep their names, whatever they are.) Unique across runs too: a
    /// commit resumed after a crash adds to what the interrupted one
    /// displaced.
    fn aside_name(&mut self) -> Result<CString> {
        self.counter += 1;
        cstring(format!("{}-{}", self.counter, safe_fs::nonce()).as_bytes())
    }

    /// Undoes the moves, newest first: staged entries go back to the tree,
    /// the server's entries come back from `old/` and `displaced/`, and its
    /// directories get their modes, owners and times back. Then the `commit`
    /// marker goes, so that nothing finishes the commit later. An error
    /// leaves the stage as it is (for `recover`).
    pub(super) fn roll_back(
        &self,
        root: &Beneath,
        stage: Dir<'_>,
        tree: &Beneath,
    ) -> std::result::Result<(), Errno> {
        // The last directory opened on each side, as most moves share it.
        let mut live: Option<(Vec<u8>, OwnedFd)> = None;
        let mut staged: Option<(Vec<u8>, OwnedFd)> = None;
        fn open<'a>(
            cache: &'a mut Option<(Vec<u8>, OwnedFd)>,
            base: &Beneath,
            dir: &[u8],
        ) -> std::result::Result<Dir<'a>, Errno> {
            if cache.as_ref().is_none_or(|(d, _)| d != dir) {
                *cache = Some((dir.to_vec(), base.open_dir(dir)?));
            }
            Ok(Dir::of(cache.as_ref().ok_or(Errno::BADF)?.1.as_fd()))
        }
        let mut old: Option<OwnedFd> = None;
        let mut displaced: Option<OwnedFd> = None;
        for m in self.moves.iter().rev() {
            match m {
                Move::Out { name } => {
                    if old.is_none() {
                        old = Some(stage.open_dir(c"old")?);
                    }
                    let old = Dir::of(old.as_ref().ok_or(Errno::BADF)?.as_fd());
                    rename_noreplace(old, name, root.dir(), name)?;
                }
                Move::In { dir, name } => {
                    let l = open(&mut live, root, dir)?;
                    let s = open(&mut staged, tree, dir)?;
                    rename_noreplace(l, name, s, name)?;
                }
                Move::Displaced { dir, name, aside } | Move::Replaced { dir, name, aside } => {
                    if displaced.is_none() {
                        displaced = Some(stage.open_dir(c"displaced")?);
                    }
                    let d = Dir::of(displaced.as_ref().ok_or(Errno::BADF)?.as_fd());
                    let l = open(&mut live, root, dir)?;
                    if matches!(m, Move::Replaced { .. }) {
                        // The old file's second name takes its place back
                        // (the new file goes, atomically).
                        d.rename(aside, l, name)?;
                    } else {
                        rename_noreplace(d, aside, l, name)?;
                    }
                }
                // (What did not change is left alone: a directory the
                // commit could not change may refuse any change.)
                Move::Touched { dir, times } => {
                    let l = open(&mut live, root, dir)?;
                    if !same_times(&l.stat()?, times) {
                        unless_not_ours(l.set_times(times))?;
                    }
                }
                Move::Meta {
                    dir,
                    mode,
                    uid,
                    gid,
                    times,
                } => {
                    let l = open(&mut live, root, dir)?;
                    let now = l.stat()?;
                    if (now.st_uid, now.st_gid) != (*uid, *gid) {
                        unless_not_ours(l.chown(*uid, *gid))?;
                    }
                    if now.st_mode & 0o7777 != *mode {
                        unless_not_ours(l.chmod(*mode))?;
                    }
                    if !same_times(&now, times) {
                        unless_not_ours(l.set_times(times))?;
                    }
                }
            }
        }
        match stage.unlink(COMMIT_MARKER) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => return Err(e),
        }
        stage.sync()
    }
}

/// Run right after a restore's `commit` marker is written, before anything
/// of the server's moves: the tests of a process killed at that point
/// (`tests/reports.rs`) block in it. Set by nothing else.
#[doc(hidden)]
pub static AFTER_COMMIT_START: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Writes the `commit` marker: from here on a crash is carried through.
pub(super) fn start(stage: Dir<'_>, mode: CommitMode) -> Result<()> {
    write_marker(stage, COMMIT_MARKER, mode.marker())?;
    if let Some(hook) = AFTER_COMMIT_START.get() {
        hook();
    }
    Ok(())
}

/// What a merge gives the server's directories the archive listed: the
/// archive's mode and time, and the configured owner.
pub(super) struct ListedDirs<'a> {
    pub owner: Option<Owner>,
    pub listed: &'a dyn Fn(&[u8]) -> bool,
}

/// Puts the staged tree in place. `resume` continues a commit a crash
/// interrupted (some entries may already have moved); `explicit` is the
/// directories the archive listed (merging).
// (The commit's inputs, all needed by one of its modes or by `recover`.)
#[allow(clippy::too_many_arguments)]
pub(super) fn commit(
    root: &Beneath,
    stage: Dir<'_>,
    tree: &Beneath,
    mode: CommitMode,
    resume: bool,
    named: &[Vec<u8>],
    explicit: Option<&ListedDirs<'_>>,
    journal: &mut Journal,
) -> Result<()> {
    fault(CommitPhase::Started)?;
    match mode {
        CommitMode::Truncate => commit_truncate(root, stage, tree, resume, journal),
        CommitMode::Merge => commit_merge(root, stage, tree, explicit, journal),
        CommitMode::ScopedTruncate => {
            commit_scoped_truncate(root, stage, tree, named, resume, explicit, journal)
        }
    }
}

/// The stage's record of a selective restore's named paths.
const SCOPE_RECORD: &CStr = c"scope";

/// Records the named paths of a selective truncating restore in the stage
/// (NUL-separated), before its commit starts.
pub(super) fn record_scope(stage: Dir<'_>, named: &[Vec<u8>]) -> Result<()> {
    write_marker(stage, SCOPE_RECORD, &named.join(&0u8))
}

/// The named paths `record_scope` recorded (for `recover`).
pub(super) fn recorded_scope(stage: Dir<'_>) -> Result<Vec<Vec<u8>>> {
    let err = |e: Errno| Error::os("reading a stale restore's scope", e);
    let damaged = || Error::corrupt("a stale restore's scope record is damaged");
    let Some(file) = stage.open_regular(SCOPE_RECORD, false) else {
        return Err(damaged());
    };
    let mut content = Vec::new();
    let mut buf = [0u8; 64 << 10];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => content.extend_from_slice(&buf[..n]),
            Err(Errno::INTR) => {}
            Err(e) => return Err(err(e)),
        }
        if content.len() > 16 << 20 {
            return Err(damaged());
        }
    }
    let mut named = Vec::new();
    for p in content.split(|b| *b == 0) {
        // Only what a request could name: relative, without `..`.
        match super::paths::normalize(p) {
            Ok(n) if !n.is_empty() && n == p => named.push(n),
            _ => return Err(damaged()),
        }
    }
    Ok(named)
}

/// A selective truncate: each named path of the server moves aside whole
/// (into `displaced/`, journaled), then the staged tree (holding only the
/// selection and the directories above it) is merged in. A named path's
/// place is then free, so its staged version moves in as a whole.
fn commit_scoped_truncate(
    root: &Beneath,
    stage: Dir<'_>,
    tree: &Beneath,
    named: &[Vec<u8>],
    resume: bool,
    explicit: Option<&ListedDirs<'_>>,
    journal: &mut Journal,
) -> Result<()> {
    let displaced = stage_dir(stage, c"displaced")?;
    let moved_aside =
        resume && recorded_phase(stage, CommitMode::ScopedTruncate) == CommitPhase::MovedAside;
    if !moved_aside {
        let err = |e: Errno| Error::os("moving the server's files aside", e);
        for path in named {
            let (dir, last) = split_last(path);
            // A parent that is missing, not a directory or a symlink holds
            // nothing of the named path (the merge then deals with it).
            let parent = match root.open_dir(dir) {
                Ok(fd) => fd,
                Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP | Errno::XDEV) => continue,
                Err(e) => return Err(err(e)),
            };
            let parent = Dir::of(parent.as_fd());
            let name = cstring(last)?;
            match parent.lstat(name.as_c_str()) {
                Ok(_) => {}
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(err(e)),
            }
            journal.touch(parent, dir)?;
            let aside = journal.aside_name()?;
            match rename_noreplace(parent, &name, Dir::of(displaced.as_fd()), &aside) {
                Ok(()) => journal.moves.push(Move::Displaced {
                    dir: dir.to_vec(),
                    name,
                    aside,
                }),
                Err(Errno::NOENT) => {}
                Err(e) => return Err(err(e)),
            }
        }
        fault(CommitPhase::MovedAside)?;
        write_marker(stage, MOVED_ASIDE_MARKER, b"")?;
    }
    commit_merge(root, stage, tree, explicit, journal)
}

/// Writes a small marker file durably (written, synced, renamed into place).
fn write_marker(dir: Dir<'_>, name: &CStr, content: &[u8]) -> Result<()> {
    let err = |e: Errno| Error::os("recording the restore's progress", e);
    let mut tmp = name.to_bytes().to_vec();
    tmp.extend_from_slice(b".tmp");
    let tmp = cstring(&tmp)?;
    // A stale name there is removed first: the file is always new (and
    // never something planted, such as a FIFO, opened for writing).
    match dir.unlink(&tmp) {
        Ok(()) | Err(Errno::NOENT) => {}
        Err(e) => return Err(err(e)),
    }
    let file = dir.create_file(&tmp, 0o600).map_err(err)?;
    file.write_all(content).map_err(err)?;
    file.sync().map_err(err)?;
    dir.rename(&tmp, dir, name).map_err(err)?;
    dir.sync().map_err(err)?;
    Ok(())
}

/// The stage's directory `name` (`old`, `displaced`), made if need be.
fn stage_dir(stage: Dir<'_>, name: &CStr) -> Result<OwnedFd> {
    match stage.mkdir(name, 0o700) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(Error::os("preparing the restore", e)),
    }
    stage
        .open_dir(name)
        .map_err(|e| Error::os("preparing the restore", e))
}

/// Renames without replacing anything. On a filesystem without
/// `RENAME_NOREPLACE`, a plain rename after checking that the target is
/// free (nothing else writes into the stage).
fn rename_noreplace(
    from_dir: Dir<'_>,
    from: &CStr,
    to_dir: Dir<'_>,
    to: &CStr,
) -> std::result::Result<(), Errno> {
    match from_dir.rename_noreplace(from, to_dir, to) {
        Err(Errno::INVAL) | Err(Errno::NOSYS) => match to_dir.lstat(to) {
            Err(Errno::NOENT) => from_dir.rename(from, to_dir, to),
            Ok(_) => Err(Errno::EXIST),
            Err(e) => Err(e),
        },
        result => result,
    }
}

fn live_names(root: Dir<'_>) -> Result<Vec<CString>> {
    let listing =
        Listing::read(root.fd()).map_err(|e| Error::os("reading the server directory", e))?;
    Ok((0..listing.len())
        .map(|i| listing.get(i).0.to_owned())
        .filter(|n| !n.to_bytes().starts_with(RESERVED_PREFIX))
        .collect())
}

/// Replaces the server's top-level entries with the staged ones.
fn commit_truncate(
    root: &Beneath,
    stage: Dir<'_>,
    tree: &Beneath,
    resume: bool,
    journal: &mut Journal,
) -> Result<()> {
    let old = stage_dir(stage, c"old")?;
    let displaced = stage_dir(stage, c"displaced")?;
    let moved_aside =
        resume && recorded_phase(stage, CommitMode::Truncate) == CommitPhase::MovedAside;
    journal.touch(root.dir(), b"")?;
    if !moved_aside {
        for name in live_names(root.dir())? {
            match root.dir().rename(&name, Dir::of(old.as_fd()), &name) {
                Ok(()) => journal.moves.push(Move::Out { name }),
                Err(Errno::NOENT) => {}
                Err(e) => return Err(Error::os("moving the server's files aside", e)),
            }
        }
        fault(CommitPhase::MovedAside)?;
        write_marker(stage, MOVED_ASIDE_MARKER, b"")?;
    }
    let listing = Listing::read(tree.fd()).map_err(|e| Error::os("reading the staging tree", e))?;
    for i in 0..listing.len() {
        let (name, _) = listing.get(i);
        if i > 0 {
            fault(CommitPhase::MovingIn)?;
        }
        move_into(
            tree.dir(),
            name,
            root.dir(),
            b"",
            Dir::of(displaced.as_fd()),
            journal,
        )?;
    }
    Ok(())
}

/// Merges the staged tree into the server's: a file replaces a file (the
/// old one kept in `displaced/` until the end); a staged directory whose
/// place is free moves as a whole, one whose place holds a directory is
/// merged into it and then, if the archive listed it (`explicit`), given
/// the archive's mode and time (and the configured owner). A directory the
/// archive only implied keeps the server's mode, time and owner.
fn commit_merge(
    root: &Beneath,
    stage: Dir<'_>,
    tree: &Beneath,
    explicit: Option<&ListedDirs<'_>>,
    journal: &mut Journal,
) -> Result<()> {
    let displaced = stage_dir(stage, c"displaced")?;
    let err = |path: &[u8], e: Errno| {
        Error::os(
            format!("putting restored files in place ({})", quote(path)),
            e,
        )
    };
    let mut moves = 0u64;
    // Both callbacks of the walk record their changes.
    let journal = std::cell::RefCell::new(journal);
    let displaced = Dir::of(displaced.as_fd());
    walk_pair(
        tree,
        root,
        &mut |s, l, name, path| {
            let staged_is_dir = s
                .lstat(name)
                .map(|st| safe_fs::file_type(&st) == FileType::Directory)
                .map_err(|e| err(path, e))?;
            let live_ty = match l.lstat(name) {
                Ok(st) => Some(safe_fs::file_type(&st)),
                Err(Errno::NOENT) => None,
                Err(e) => return Err(err(path, e)),
            };
            if let (true, Some(FileType::Directory)) = (staged_is_dir, live_ty) {
                return Ok(true);
            }
            if moves > 0 {
                fault(CommitPhase::MovingIn)?;
            }
            moves += 1;
            let journal = &mut **journal.borrow_mut();
            let (dir, _) = split_last(path);
            journal.touch(l, dir)?;
            match (staged_is_dir, live_ty) {
                (false, Some(ty)) if ty != FileType::Directory => {
                    let aside = journal.aside_name()?;
                    match l.link(name, displaced, &aside) {
                        Ok(()) => {
                            s.rename(name, l, name).map_err(|e| err(path, e))?;
                            journal.moves.push(Move::Replaced {
                                dir: dir.to_vec(),
                                name: name.to_owned(),
                                aside,
                            });
                        }
                        // No second name for it (not ours to link, or no
                        // room): moved aside instead.
                        Err(_) => move_into(s, name, l, dir, displaced, journal)?,
                    }
                }
                _ => move_into(s, name, l, dir, displaced, journal)?,
            }
            Ok(false)
        },
        &mut |_, l, path, st| {
            let Some(dirs) = explicit.filter(|dirs| !path.is_empty() && (dirs.listed)(path)) else {
                return Ok(());
            };
            {
                let before = l.stat().map_err(|e| err(path, e))?;
                journal.borrow_mut().moves.push(Move::Meta {
                    dir: path.to_vec(),
                    mode: before.st_mode & 0o7777,
                    uid: before.st_uid,
                    gid: before.st_gid,
                    times: stat_times(&before),
                });
                // A directory of the server's that the node does not own
                // (and may not change without `CAP_FOWNER`) keeps its own
                // mode, owner and time, as GNU tar keeps them: the files
                // merged into it are what matters.
                let meta = |e: Errno| err(path, e);
                if let Some(o) = dirs.owner {
                    unless_not_ours(l.chown(o.uid, o.gid)).map_err(meta)?;
                }
                unless_not_ours(l.chmod(st.st_mode & 0o1777)).map_err(meta)?;
                unless_not_ours(l.set_times(&times(st.st_mtime, st.st_mtime_nsec as u32)))
                    .map_err(meta)?;
            }
            Ok(())
        },
    )
}

/// `EPERM` from a change of a directory's mode, owner or times: the node
/// does not own it (nor has `CAP_FOWNER`), so it is left as it is.
fn unless_not_ours(r: std::result::Result<(), Errno>) -> std::result::Result<(), Errno> {
    match r {
        Err(Errno::PERM) => Ok(()),
        other => other,
    }
}

/// Renames `from/name` to `live/name` (`dir` is `live`'s path); whatever
/// is in the way (a server entry of another type, or one the server created
/// meanwhile) is moved to `displaced` first. Both moves are journaled.
fn move_into(
    from: Dir<'_>,
    name: &CStr,
    live: Dir<'_>,
    dir: &[u8],
    displaced: Dir<'_>,
    journal: &mut Journal,
) -> Result<()> {
    let path = || {
        let mut p = dir.to_vec();
        if !p.is_empty() {
            p.push(b'/');
        }
        p.extend_from_slice(name.to_bytes());
        quote(&p)
    };
    let aside_error = |e: Errno| Error::os(format!("moving the server's {} aside", path()), e);
    let in_error = |e: Errno| Error::os(format!("putting restored files in place ({})", path()), e);
    for _ in 0..3 {
        match from.rename_noreplace(name, live, name) {
            Ok(()) => {
                journal.moves.push(Move::In {
                    dir: dir.to_vec(),
                    name: name.to_owned(),
                });
                return Ok(());
            }
            Err(Errno::EXIST) => {
                let aside = journal.aside_name()?;
                match rename_noreplace(live, name, displaced, &aside) {
                    Ok(()) => journal.moves.push(Move::Displaced {
                        dir: dir.to_vec(),
                        name: name.to_owned(),
                        aside,
                    }),
                    Err(Errno::NOENT) => {}
                    Err(e) => return Err(aside_error(e)),
                }
            }
            Err(Errno::INVAL) | Err(Errno::NOSYS) => {
                // No RENAME_NOREPLACE on this filesystem: move whatever is
                // there aside, then a plain rename.
                if live.lstat(name).is_ok() {
                    let aside = journal.aside_name()?;
                    live.rename(name, displaced, &aside).map_err(aside_error)?;
                    journal.moves.push(Move::Displaced {
                        dir: dir.to_vec(),
                        name: name.to_owned(),
                        aside,
                    });
                }
                from.rename(name, live, name).map_err(in_error)?;
                journal.moves.push(Move::In {
                    dir: dir.to_vec(),
                    name: name.to_owned(),
                });
                return Ok(());
            }
            Err(e) => return Err(in_error(e)),
        }
    }
    Err(Error::io(
        "putting restored files in place",
        std::io::Error::other("the server directory keeps changing"),
    ))
}

/// A commit that failed and whose moves could not all be undone: the stage
/// keeps what it holds (the server's files among it), and `recover` (at
/// the next restore of the server, or the next start) carries the commit
/// through.
pub(super) fn unfinished(e: Error, undo: Errno) -> Error {
    Error::new(
        e.status,
        format!(
            "{}; undoing the restore failed too ({undo}): some files are already restored, \
             and the restore is finished at the next restore of this server or the next start",
            e.message
        ),
    )
}
