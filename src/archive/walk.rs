//! The walk over a server directory for a backup: depth-first, names sorted,
//! ignored directories pruned, nothing followed. Entries are found with
//! `getdents` and opened relative to their parent's handle with `O_NOFOLLOW`
//! (and `O_NONBLOCK`, so a FIFO can never block the walk); a name whose type
//! changed between listing and opening is looked at again, a name that
//! vanished is skipped.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::FileType;
use rustix::io::Errno;

use crate::archive::header::{EntryMeta, Kind};
use crate::error::{Error, Result};
use crate::ignore::IgnoreRules;
use crate::index::StatKey;
use crate::progress::Shared;
use crate::safe_fs::{self, DirStack, Listing, Stat, RESERVED_PREFIX};

/// An entry to archive. Regular files come with an open handle and the stat
/// taken through it (except in a `stat_only` walk, which opens nothing).
pub struct WalkItem {
    pub meta: EntryMeta,
    pub file: Option<(OwnedFd, Stat)>,
    /// What a later backup compares to tell whether the entry changed.
    pub stat: StatKey,
}

/// Something left out of the archive, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub path: Vec<u8>,
    pub reason: String,
}

/// How many skipped entries are remembered by name (all are counted).
pub const MAX_LISTED: usize = 100;

struct Frame {
    listing: Listing,
    next: usize,
    /// Length of the relative path of this directory, with its trailing `/`.
    prefix_len: usize,
}

pub struct TreeWalker<'a> {
    root: OwnedFd,
    ignore: &'a IgnoreRules,
    stack: DirStack<Frame>,
    /// Relative path of the directory being listed, ending in `/` (empty at the root).
    path: Vec<u8>,
    /// First path seen for each (device, inode) of a multiply-linked file.
    links: HashMap<(u64, u64), Vec<u8>>,
    pub skipped: Vec<Skipped>,
    pub skipped_count: u64,
    /// Set when the walk must end early (a cancel, an error elsewhere).
    stop: Option<&'a Shared>,
    /// (device, inode) of files never archived: the archive being written
    /// and the file it replaces, when they lie inside the tree.
    exclude: Vec<(u64, u64)>,
    /// Paths the ignore rules left out, kept only when asked for
    /// (`collect_ignored`): a normal backup neither counts nor keeps them.
    ignored: Option<Ignored>,
    /// Stat regular files by name instead of opening them (`stat_only`).
    stat_only: bool,
    /// ... except files with more than one link (`stat_only_but_links`).
    open_links: bool,
    /// Checks that each file not opened could be read (a
    /// `stat_only_but_links` walk without the capability to read any file).
    check_read: bool,
}

/// What the ignore rules left out of a walk: every path counted, the first
/// `limit` kept. An ignored directory is one path (its contents are never
/// walked).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ignored {
    pub count: u64,
    pub paths: Vec<Vec<u8>>,
    pub limit: usize,
}

enum Found {
    Item(WalkItem),
    /// A directory to archive and then enter.
    Descend(WalkItem, CString, OwnedFd, Listing),
    Skip,
}

impl<'a> TreeWalker<'a> {
    pub fn new(root: OwnedFd, ignore: &'a IgnoreRules) -> Result<TreeWalker<'a>> {
        let listing = Listing::read(root.as_fd())
            .map_err(|e| Error::os("reading the server directory", e))?;
        let mut stack = DirStack::default();
        let dup = safe_fs::open_dir(root.as_fd(), c".")
            .map_err(|e| Error::os("opening the server directory", e))?;
        stack.push(
            c".".to_owned(),
            dup,
            Frame {
                listing,
                next: 0,
                prefix_len: 0,
            },
        );
        Ok(TreeWalker {
            root,
            ignore,
            stack,
            path: Vec::new(),
            links: HashMap::new(),
            skipped: Vec::new(),
            skipped_count: 0,
            stop: None,
            exclude: Vec::new(),
            ignored: None,
            stat_only: false,
            open_links: false,
            check_read: false,
        })
    }

    /// Makes the walk stat regular files by name (one `statx` each) instead
    /// of opening them: their items come without a handle (`file` is
    /// `None`), for a walk that only measures. A file a backup could not
    /// open is then counted rather than skipped.
    pub fn stat_only(&mut self) {
        self.stat_only = true;
    }

    /// Like `stat_only`, but a regular file with more than one link is
    /// opened as in a full walk (a reusing backup's walk): the first path
    /// of its inode is what later links point to, so it must be one the
    /// archive holds, and a file that cannot be opened is skipped here, as
    /// in any backup, before a link names it.
    ///
    /// A file the calling thread could not open for reading is skipped as
    /// a backup opening it would skip it: unless the thread reads any file
    /// (see [`safe_fs::reads_any_file`]), each file is opened and closed
    /// again, as a backup from scratch would open it.
    pub fn stat_only_but_links(&mut self) {
        self.stat_only = true;
        self.open_links = true;
        self.check_read = !safe_fs::reads_any_file();
    }

    /// Makes the walk count the paths the ignore rules leave out and keep
    /// the first `limit` of them (see `ignored`).
    pub fn collect_ignored(&mut self, limit: usize) {
        self.ignored = Some(Ignored {
            limit,
            ..Ignored::default()
        });
    }

    /// The ignored paths collected so far (`None` unless `collect_ignored`
    /// was called).
    pub fn take_ignored(&mut self) -> Option<Ignored> {
        self.ignored.take()
    }

    /// Whether `rel` is left out: ignored (noted when collecting) or the
    /// walk is stopping (`next_item` then says so).
    fn left_out(&mut self, rel: &[u8], is_dir: bool) -> bool {
        match self.ignored(rel, is_dir) {
            Some(false) => false,
            Some(true) => {
                if let Some(list) = &mut self.ignored {
                    list.count += 1;
                    if list.paths.len() < list.limit {
                        list.paths.push(rel.to_vec());
                    }
                }
                true
            }
            None => true,
        }
    }

    /// Leaves out the files with these (device, inode) identities, without
    /// listing them as skipped.
    pub fn exclude(&mut self, identities: &[(u64, u64)]) {
        self.exclude = identities.to_vec();
    }

    /// Makes the walk watch `shared`: once it says stop, `next_item` fails
    /// with `Cancelled` within one entry (or a few patterns of matching), even
    /// in a directory whose entries are all ignored.
    pub fn stop_when(&mut self, shared: &'a Shared) {
        self.stop = Some(shared);
    }

    fn should_stop(&self) -> bool {
        self.stop.is_some_and(|s| s.should_stop())
    }

    /// Whether the ignore rules leave `rel` out; `None` if the walk must stop.
    fn ignored(&self, rel: &[u8], is_dir: bool) -> Option<bool> {
        match self.stop {
            Some(shared) => self
                .ignore
                .matches_unless(rel, is_dir, &|| shared.should_stop()),
            None => Some(self.ignore.matches(rel, is_dir)),
        }
    }

    fn skip(&mut self, path: Vec<u8>, reason: impl Into<String>) {
        self.skipped_count += 1;
        if self.skipped.len() < MAX_LISTED {
            self.skipped.push(Skipped {
                path,
                reason: reason.into(),
            });
        }
    }

    /// The next entry, or `None` at the end of the walk.
    pub fn next_item(&mut self) -> Result<Option<WalkItem>> {
        loop {
            if self.should_stop() {
                return Err(Error::cancelled());
            }
            let depth = self.stack.len();
            let Some(frame) = self.stack.top_mut() else {
                return Ok(None);
            };
            if frame.data.next >= frame.data.listing.len() {
                self.stack.pop();
                let parent_len = self.stack.top_mut().map_or(0, |f| {
                    // The parent's own prefix, recomputed from its frame.
                    f.data.prefix_len
                });
                self.path.truncate(parent_len);
                continue;
            }
            let i = frame.data.next;
            frame.data.next += 1;
            let (name, ty) = frame.data.listing.get(i);
            let name = name.to_owned();
            if depth == 1 && name.to_bytes().starts_with(RESERVED_PREFIX) {
                continue;
            }
            let mut rel = self.path.clone();
            rel.extend_from_slice(name.to_bytes());
            let dir = self.stack.take_top_fd(self.root.as_fd()).map_err(|e| {
                Error::os(format!("reopening {}", crate::error::quote(&self.path)), e)
            })?;
            let found = self.visit(dir.as_fd(), &name, rel, ty);
            self.stack.put_top_fd(dir);
            match found? {
                Found::Item(item) => return Ok(Some(item)),
                Found::Descend(item, name, fd, listing) => {
                    self.path = item.meta.path.clone();
                    self.path.push(b'/');
                    let prefix_len = self.path.len();
                    self.stack.push(
                        name,
                        fd,
                        Frame {
                            listing,
                            next: 0,
                            prefix_len,
                        },
                    );
                    return Ok(Some(item));
                }
                Found::Skip => continue,
            }
        }
    }

    fn visit(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        rel: Vec<u8>,
        ty: FileType,
    ) -> Result<Found> {
        // Look again when the listing's type is unknown or stale (at most
        // twice: a name that keeps changing type is left out).
        let mut ty = ty;
        for _ in 0..3 {
            let outcome = match ty {
                FileType::RegularFile => self.visit_file(dir, name, &rel),
                FileType::Directory => self.visit_dir(dir, name, &rel),
                FileType::Symlink => self.visit_symlink(dir, name, &rel),
                FileType::Fifo => self.visit_fifo(dir, name, &rel),
                FileType::Socket | FileType::CharacterDevice | FileType::BlockDevice => {
                    return Ok(self.visit_unarchivable(&rel, ty))
                }
                FileType::Unknown => Err(Errno::AGAIN),
            };
            match outcome {
                Ok(found) => return Ok(found),
                Err(Errno::NOENT) => return Ok(Found::Skip),
                Err(Errno::LOOP) | Err(Errno::NOTDIR) | Err(Errno::AGAIN) | Err(Errno::ISDIR) => {
                    match safe_fs::lstat_at(dir, name) {
                        Ok(st) => ty = safe_fs::file_type(&st),
                        Err(Errno::NOENT) => return Ok(Found::Skip),
                        Err(e) => {
                            self.skip(rel, format!("cannot stat: {}", std::io::Error::from(e)));
                            return Ok(Found::Skip);
                        }
                    }
                }
                Err(e) => {
                    self.skip(rel, format!("cannot read: {}", std::io::Error::from(e)));
                    return Ok(Found::Skip);
                }
            }
        }
        self.skip(rel, "kept changing type while being read");
        Ok(Found::Skip)
    }

    fn meta(rel: &[u8], kind: Kind, st: &Stat) -> EntryMeta {
        EntryMeta {
            path: rel.to_vec(),
            kind,
            mode: st.st_mode & 0o7777,
            uid: st.st_uid as u64,
            gid: st.st_gid as u64,
            mtime: st.st_mtime,
            size: 0,
        }
    }

    fn visit_file(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        rel: &[u8],
    ) -> std::result::Result<Found, Errno> {
        if self.left_out(rel, false) {
            return Ok(Found::Skip);
        }
        let stat = if self.stat_only {
            Some(safe_fs::lstat_at(dir, name)?)
        } else {
            None
        };
        let (fd, st) = match stat {
            Some(st)
                if !(self.open_links
                    && st.st_nlink > 1
                    && safe_fs::file_type(&st) == FileType::RegularFile) =>
            {
                if self.check_read && safe_fs::file_type(&st) == FileType::RegularFile {
                    // The open a backup from scratch makes (no symlink
                    // followed, never waiting), closed at once.
                    drop(safe_fs::open_file(dir, name)?);
                }
                (None, st)
            }
            _ => {
                let fd = safe_fs::open_file(dir, name)?;
                let st = rustix::fs::fstat(&fd)?;
                (Some(fd), st)
            }
        };
        match safe_fs::file_type(&st) {
            FileType::RegularFile => {}
            FileType::Fifo => {
                return Ok(Found::Item(WalkItem {
                    meta: Self::meta(rel, Kind::Fifo, &st),
                    file: None,
                    stat: StatKey::of(&st),
                }))
            }
            FileType::Directory => return Err(Errno::ISDIR),
            // Stat by name sees the symlink a file became (opening it
            // with O_NOFOLLOW fails with ELOOP, and `visit` looks again).
            FileType::Symlink => return Err(Errno::LOOP),
            other => return Ok(self.visit_unarchivable(rel, other)),
        }
        if self.exclude.contains(&(st.st_dev, st.st_ino)) {
            return Ok(Found::Skip);
        }
        if st.st_nlink > 1 {
            let key = (st.st_dev, st.st_ino);
            if let Some(first) = self.links.get(&key) {
                return Ok(Found::Item(WalkItem {
                    meta: Self::meta(rel, Kind::HardLink(first.clone()), &st),
                    file: None,
                    stat: StatKey::of(&st),
                }));
            }
            self.links.insert(key, rel.to_vec());
        }
        let mut meta = Self::meta(rel, Kind::File, &st);
        meta.size = st.st_size as u64;
        Ok(Found::Item(WalkItem {
            meta,
            stat: StatKey::of(&st),
            file: fd.map(|fd| (fd, st)),
        }))
    }

    /// A socket or device node: never archived, but listed as skipped
    /// unless the ignore rules leave it out anyway.
    fn visit_unarchivable(&mut self, rel: &[u8], ty: FileType) -> Found {
        if !self.left_out(rel, false) {
            let what = match ty {
                FileType::Socket => "a socket",
                FileType::CharacterDevice => "a character device",
                FileType::BlockDevice => "a block device",
                _ => "not a file, directory, symlink or FIFO",
            };
            self.skip(rel.to_vec(), format!("{what} (not archived)"));
        }
        Found::Skip
    }

    fn visit_dir(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        rel: &[u8],
    ) -> std::result::Result<Found, Errno> {
        if self.left_out(rel, true) {
            return Ok(Found::Skip);
        }
        let fd = safe_fs::open_dir(dir, name)?;
        let st = rustix::fs::fstat(&fd)?;
        let meta = Self::meta(rel, Kind::Dir, &st);
        let listing = match Listing::read(fd.as_fd()) {
            Ok(listing) => listing,
            Err(e) => {
                // The directory itself is kept, its contents cannot be.
                self.skip(
                    rel.to_vec(),
                    format!("cannot list: {}", std::io::Error::from(e)),
                );
                Listing::default()
            }
        };
        Ok(Found::Descend(
            WalkItem {
                meta,
                file: None,
                stat: StatKey::of(&st),
            },
            CString::from(name),
            fd,
            listing,
        ))
    }

    fn visit_symlink(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        rel: &[u8],
    ) -> std::result::Result<Found, Errno> {
        if self.left_out(rel, false) {
            return Ok(Found::Skip);
        }
        let st = safe_fs::lstat_at(dir, name)?;
        if safe_fs::file_type(&st) != FileType::Symlink {
            return Err(Errno::AGAIN);
        }
        let target = rustix::fs::readlinkat(dir, name, Vec::new())?;
        Ok(Found::Item(WalkItem {
            meta: Self::meta(rel, Kind::Symlink(target.into_bytes()), &st),
            file: None,
            stat: StatKey::of(&st),
        }))
    }

    fn visit_fifo(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        rel: &[u8],
    ) -> std::result::Result<Found, Errno> {
        if self.left_out(rel, false) {
            return Ok(Found::Skip);
        }
        let st = safe_fs::lstat_at(dir, name)?;
        if safe_fs::file_type(&st) != FileType::Fifo {
            return Err(Errno::AGAIN);
        }
        Ok(Found::Item(WalkItem {
            meta: Self::meta(rel, Kind::Fifo, &st),
            file: None,
            stat: StatKey::of(&st),
        }))
    }
}
