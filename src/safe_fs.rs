//! Filesystem primitives relative to directory handles that never follow a
//! symlink: the server directory is untrusted, so every lookup below its root
//! goes one component at a time through `openat(O_NOFOLLOW)` on a handle we
//! hold, and no path is resolved by name from the root again.

use std::collections::HashSet;
use std::ffi::{CStr, CString};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use std::sync::OnceLock;

use rustix::fs::{
    self as rfs, AtFlags, FlockOperation, Gid, Mode, OFlags, RawDir, RenameFlags, ResolveFlags, Uid,
};

// The data types of the calls below, for their callers.
pub use rustix::fs::{FileType, Stat, Timespec, Timestamps};
pub use rustix::io::Errno;

/// Prefix of the names this engine creates inside a server root while it
/// restores (its staging directories); such names are never archived,
/// restored or treated as the server's own files.
pub const RESERVED_PREFIX: &[u8] = b".wings-backup-restore-";

pub fn file_type(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

/// Opens a directory the operator configured (following symlinks there is
/// the operator's choice).
pub fn open_trusted_dir(path: &Path) -> Result<OwnedFd, Errno> {
    rfs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Opens `name` inside `dir` as a directory, refusing a symlink.
pub fn open_dir<P: rustix::path::Arg>(dir: BorrowedFd<'_>, name: P) -> Result<OwnedFd, Errno> {
    rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Opens `name` inside `dir` for reading, refusing a symlink and never
/// blocking on a FIFO. Reading a backup does not touch the files' access
/// times (`O_NOATIME`, as GNU tar's `--atime-preserve=system`): on a disk,
/// relatime would otherwise write the inode of every file not read for a
/// day. The flag needs the file's owner or `CAP_FOWNER`; without them the
/// file is opened without it.
pub fn open_file<P: rustix::path::Arg + Copy>(
    dir: BorrowedFd<'_>,
    name: P,
) -> Result<OwnedFd, Errno> {
    let flags =
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    match rfs::openat(dir, name, flags | OFlags::NOATIME, Mode::empty()) {
        Err(Errno::PERM) => rfs::openat(dir, name, flags, Mode::empty()),
        result => result,
    }
}

/// Whether the calling thread may read any file whatever its mode and
/// ACL: `CAP_DAC_OVERRIDE` or `CAP_DAC_READ_SEARCH` in its effective set, in
/// the initial user namespace (in another one they cover only the files
/// whose owner it maps). Threads it starts inherit its capabilities.
pub fn reads_any_file() -> bool {
    use rustix::thread::CapabilitySet;
    static INITIAL_NAMESPACE: OnceLock<bool> = OnceLock::new();
    let dac = rustix::thread::capabilities(None).is_ok_and(|c| {
        c.effective
            .intersects(CapabilitySet::DAC_OVERRIDE | CapabilitySet::DAC_READ_SEARCH)
    });
    dac && *INITIAL_NAMESPACE.get_or_init(|| {
        std::fs::read_to_string("/proc/self/uid_map")
            .is_ok_and(|map| map.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"])
    })
}

/// Opens the file at `path` (symlinks followed) for reading without
/// waiting on a FIFO: an archive or index path that holds a FIFO or a device
/// opens at once, and the caller's check that it is a regular file refuses
/// it, where a plain open would block until a writer came.
pub fn open_for_reading(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
}

pub fn lstat_at<P: rustix::path::Arg>(dir: BorrowedFd<'_>, name: P) -> Result<Stat, Errno> {
    rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
}

/// A directory below which every path is resolved without leaving it: the
/// capability through which restore code reaches a server's tree (and its
/// own staging tree). Paths given to it are relative, `/`-separated byte
/// strings; they are looked up with `openat2(RESOLVE_BENEATH)` where the
/// kernel has it, and otherwise one component at a time with `O_NOFOLLOW`
/// from the handle held here (whether `openat2` works is probed once per
/// process). Single-name operations (`renameat`, `unlinkat`, ...) on the
/// handles it gives out never resolve more than one component.
pub struct Beneath {
    fd: OwnedFd,
}

/// The longest path the kernel resolves in one call is `PATH_MAX - 1`
/// bytes; a longer one (a deep tree can hold it) is resolved one component
/// at a time.
const PATH_MAX: usize = libc::PATH_MAX as usize;

/// Whether this kernel (and its seccomp filter) lets `openat2` through.
fn have_openat2() -> bool {
    static PROBE: OnceLock<bool> = OnceLock::new();
    *PROBE.get_or_init(|| {
        let Ok(root) = open_trusted_dir(Path::new("/")) else {
            return false;
        };
        rfs::openat2(
            &root,
            ".",
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
        )
        .is_ok()
    })
}

/// The components of a relative path, `.` and empty ones left out.
fn components(path: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    path.split(|b| *b == b'/')
        .filter(|p| !p.is_empty() && *p != b".")
}

impl Beneath {
    /// Takes a handle on a directory that was itself reached safely (by the
    /// operator's configured path, or by a no-follow lookup).
    pub fn new(fd: OwnedFd) -> Beneath {
        Beneath { fd }
    }

    /// A second capability on the same directory.
    pub fn dup(dir: BorrowedFd<'_>) -> Result<Beneath, Errno> {
        open_dir(dir, c".").map(Beneath::new)
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Opens the directory at `path` (empty: this one), refusing a symlink
    /// in any component and anything outside.
    pub fn open_dir(&self, path: &[u8]) -> Result<OwnedFd, Errno> {
        self.open_dir_with(path, have_openat2())
    }

    fn open_dir_with(&self, path: &[u8], kernel: bool) -> Result<OwnedFd, Errno> {
        if components(path).next().is_none() {
            return open_dir(self.fd(), c".");
        }
        if kernel && path.len() < PATH_MAX {
            return rfs::openat2(
                self.fd(),
                path,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
            );
        }
        let mut current: Option<OwnedFd> = None;
        for part in components(path) {
            if part == b".." {
                return Err(Errno::XDEV);
            }
            let parent = current.as_ref().map_or(self.fd(), |fd| fd.as_fd());
            current = Some(open_dir(parent, part)?);
        }
        current.ok_or(Errno::NOENT)
    }

    /// Opens the file at `path` for reading as [`open_file`] does (no
    /// symlink followed in any component, nothing outside, never blocking
    /// on a FIFO). The caller checks what it opened (`fstat`).
    pub fn open_file(&self, path: &[u8]) -> Result<OwnedFd, Errno> {
        self.open_file_with(path, have_openat2())
    }

    fn open_file_with(&self, path: &[u8], kernel: bool) -> Result<OwnedFd, Errno> {
        let parts: Vec<&[u8]> = components(path).collect();
        let (name, parent) = parts.split_last().ok_or(Errno::ISDIR)?;
        if *name == b".." {
            return Err(Errno::XDEV);
        }
        if kernel && path.len() < PATH_MAX {
            let flags = OFlags::RDONLY
                | OFlags::NOFOLLOW
                | OFlags::NONBLOCK
                | OFlags::NOCTTY
                | OFlags::CLOEXEC;
            let resolve =
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
            let open = |flags| rfs::openat2(self.fd(), path, flags, Mode::empty(), resolve);
            return match open(flags | OFlags::NOATIME) {
                Err(Errno::PERM) => open(flags),
                result => result,
            };
        }
        let dir = self.open_dir(&parent.join(&b'/'))?;
        open_file(dir.as_fd(), *name)
    }

    /// Whether `path`, symlinks in it followed the way the kernel follows
    /// them, would resolve to somewhere outside this directory (or could not
    /// be judged). A path that does not exist is inside.
    pub fn resolves_outside(&self, path: &[u8]) -> bool {
        self.resolves_outside_with(path, have_openat2())
    }

    fn resolves_outside_with(&self, path: &[u8], kernel: bool) -> bool {
        if kernel {
            return match rfs::openat2(
                self.fd(),
                path,
                OFlags::PATH | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
            ) {
                Ok(_) | Err(Errno::NOENT) => false,
                Err(_) => true,
            };
        }
        // Without openat2: resolve as the kernel would, one component at a
        // time from handles held here, symlink targets spliced in, and a
        // `..` above this directory or an absolute target counting as
        // outside.
        let mut pending: Vec<Vec<u8>> = components(path).rev().map(<[u8]>::to_vec).collect();
        let mut dirs: Vec<OwnedFd> = Vec::new();
        let mut links = 0;
        while let Some(part) = pending.pop() {
            if part == b".." {
                if dirs.pop().is_none() {
                    return true;
                }
                continue;
            }
            let current = dirs.last().map_or(self.fd(), |fd| fd.as_fd());
            let st = match lstat_at(current, part.as_slice()) {
                Ok(st) => st,
                Err(Errno::NOENT) => return false,
                Err(_) => return true,
            };
            match file_type(&st) {
                FileType::Symlink => {
                    links += 1;
                    let Ok(target) = rfs::readlinkat(current, part.as_slice(), Vec::new()) else {
                        return true;
                    };
                    let target = target.as_bytes();
                    if links > 40 || target.first() == Some(&b'/') {
                        return true;
                    }
                    pending.extend(components(target).rev().map(<[u8]>::to_vec));
                }
                FileType::Directory => match open_dir(current, part.as_slice()) {
                    Ok(fd) => dirs.push(fd),
                    Err(_) => return true,
                },
                _ if pending.is_empty() => return false,
                _ => return true,
            }
        }
        false
    }
}

/// The effective user id of this process (the owner of what it creates).
pub fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Refuses a name that is not one entry of a directory: empty, `.`, `..`
/// or with a `/` in it. The operations of [`Dir`] resolve nothing but the
/// one name they are given.
fn single(name: &CStr) -> Result<&CStr, Errno> {
    match name.to_bytes() {
        b"" | b"." => Err(Errno::INVAL),
        b".." => Err(Errno::XDEV),
        n if n.contains(&b'/') => Err(Errno::INVAL),
        _ => Ok(name),
    }
}

/// A directory of a tree reached through a [`Beneath`] (its root, or a
/// directory opened below it without following a symlink). Every operation
/// names one entry of it (never a path, never `..`) and never follows a
/// symlink at that entry, so nothing it does reaches outside the tree.
#[derive(Clone, Copy)]
pub struct Dir<'a> {
    fd: BorrowedFd<'a>,
}

impl Beneath {
    /// The root directory itself, for single-name operations.
    pub fn dir(&self) -> Dir<'_> {
        Dir { fd: self.fd() }
    }
}

impl<'a> Dir<'a> {
    /// A handle this tree's walks opened (by `open_dir` from a `Dir`, or
    /// from a [`DirStack`] whose base is one).
    pub fn of(fd: BorrowedFd<'a>) -> Dir<'a> {
        Dir { fd }
    }

    pub fn fd(self) -> BorrowedFd<'a> {
        self.fd
    }

    /// A second handle on this directory.
    pub fn dup(self) -> Result<OwnedFd, Errno> {
        open_dir(self.fd, c".")
    }

    /// Opens the directory `name`, refusing a symlink.
    pub fn open_dir(self, name: &CStr) -> Result<OwnedFd, Errno> {
        open_dir(self.fd, single(name)?)
    }

    pub fn stat(self) -> Result<Stat, Errno> {
        rfs::fstat(self.fd)
    }

    /// The status of `name` itself (a symlink is not followed).
    pub fn lstat(self, name: &CStr) -> Result<Stat, Errno> {
        lstat_at(self.fd, single(name)?)
    }

    pub fn mkdir(self, name: &CStr, mode: u32) -> Result<(), Errno> {
        rfs::mkdirat(self.fd, single(name)?, Mode::from_raw_mode(mode))
    }

    /// Removes the non-directory `name` (a symlink itself, not its target).
    pub fn unlink(self, name: &CStr) -> Result<(), Errno> {
        rfs::unlinkat(self.fd, single(name)?, AtFlags::empty())
    }

    /// Removes the empty directory `name`.
    pub fn rmdir(self, name: &CStr) -> Result<(), Errno> {
        rfs::unlinkat(self.fd, single(name)?, AtFlags::REMOVEDIR)
    }

    /// Renames `name` to `to/to_name`, replacing what is there.
    pub fn rename(self, name: &CStr, to: Dir<'_>, to_name: &CStr) -> Result<(), Errno> {
        rfs::renameat(self.fd, single(name)?, to.fd, single(to_name)?)
    }

    /// Renames `name` to `to/to_name` with `RENAME_NOREPLACE` (`EEXIST` if
    /// taken; `EINVAL` or `ENOSYS` where the filesystem lacks the flag).
    pub fn rename_noreplace(self, name: &CStr, to: Dir<'_>, to_name: &CStr) -> Result<(), Errno> {
        rfs::renameat_with(
            self.fd,
            single(name)?,
            to.fd,
            single(to_name)?,
            RenameFlags::NOREPLACE,
        )
    }

    /// Gives the file `name` (not followed if a symlink) the second name
    /// `to/to_name`.
    pub fn link(self, name: &CStr, to: Dir<'_>, to_name: &CStr) -> Result<(), Errno> {
        rfs::linkat(
            self.fd,
            single(name)?,
            to.fd,
            single(to_name)?,
            AtFlags::empty(),
        )
    }

    /// Creates the symlink `name` pointing at `target` (stored, never
    /// resolved here).
    pub fn symlink(self, target: &CStr, name: &CStr) -> Result<(), Errno> {
        rfs::symlinkat(target, self.fd, single(name)?)
    }

    /// Sets the owner of `name` itself (a symlink's own owner).
    pub fn chown_entry(self, name: &CStr, uid: u32, gid: u32) -> Result<(), Errno> {
        rfs::chownat(
            self.fd,
            single(name)?,
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
    }

    /// Sets the times of `name` itself (a symlink's own times).
    pub fn set_entry_times(self, name: &CStr, times: &Timestamps) -> Result<(), Errno> {
        rfs::utimensat(self.fd, single(name)?, times, AtFlags::SYMLINK_NOFOLLOW)
    }

    /// Creates the new file `name` (`O_EXCL`: never an existing file, never
    /// through a symlink), for writing.
    pub fn create_file(self, name: &CStr, mode: u32) -> Result<File, Errno> {
        self.create(name, OFlags::WRONLY, mode)
    }

    /// `create_file`, opened for reading and writing (a lock file).
    pub fn create_lock_file(self, name: &CStr, mode: u32) -> Result<File, Errno> {
        self.create(name, OFlags::RDWR, mode)
    }

    fn create(self, name: &CStr, access: OFlags, mode: u32) -> Result<File, Errno> {
        rfs::openat(
            self.fd,
            single(name)?,
            access | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        )
        .map(File)
    }

    /// Opens `name` if it is a regular file: never through a symlink, never
    /// blocking (a FIFO under that name is not waited on).
    pub fn open_regular(self, name: &CStr, write: bool) -> Option<File> {
        let access = if write { OFlags::RDWR } else { OFlags::RDONLY };
        let fd = rfs::openat(
            self.fd,
            single(name).ok()?,
            access | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
            Mode::empty(),
        )
        .ok()?;
        let st = rfs::fstat(&fd).ok()?;
        (file_type(&st) == FileType::RegularFile).then_some(File(fd))
    }

    pub fn chmod(self, mode: u32) -> Result<(), Errno> {
        rfs::fchmod(self.fd, Mode::from_raw_mode(mode))
    }

    pub fn chown(self, uid: u32, gid: u32) -> Result<(), Errno> {
        rfs::fchown(self.fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
    }

    pub fn set_times(self, times: &Timestamps) -> Result<(), Errno> {
        rfs::futimens(self.fd, times)
    }

    pub fn sync(self) -> Result<(), Errno> {
        rfs::fsync(self.fd)
    }

    /// Writes back everything of the filesystem this directory is on.
    pub fn sync_filesystem(self) -> Result<(), Errno> {
        rfs::syncfs(self.fd)
    }

    /// Removes `name` and everything below it (see [`remove_tree`]).
    pub fn remove_tree(self, name: &CStr) -> Result<(), Errno> {
        remove_tree(self.fd, single(name)?)
    }
}

/// A regular file a [`Dir`] created or opened.
pub struct File(OwnedFd);

impl File {
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }

    pub fn write_all(&self, mut data: &[u8]) -> Result<(), Errno> {
        while !data.is_empty() {
            match rustix::io::write(&self.0, data) {
                Ok(0) => return Err(Errno::IO),
                Ok(n) => data = &data[n..],
                Err(Errno::INTR) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes all of `data` at offset `at`.
    pub fn write_all_at(&self, mut data: &[u8], mut at: u64) -> Result<(), Errno> {
        while !data.is_empty() {
            match rustix::io::pwrite(&self.0, data, at) {
                Ok(0) => return Err(Errno::IO),
                Ok(n) => {
                    data = &data[n..];
                    at += n as u64;
                }
                Err(Errno::INTR) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads into `buf` once, from the current offset.
    pub fn read(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        rustix::io::read(&self.0, buf)
    }

    pub fn set_len(&self, len: u64) -> Result<(), Errno> {
        rfs::ftruncate(&self.0, len)
    }

    pub fn sync(&self) -> Result<(), Errno> {
        rfs::fsync(&self.0)
    }

    /// Takes an exclusive `flock` without waiting (`EWOULDBLOCK` if held).
    pub fn try_lock(&self) -> Result<(), Errno> {
        rfs::flock(&self.0, FlockOperation::NonBlockingLockExclusive)
    }

    pub fn chmod(&self, mode: u32) -> Result<(), Errno> {
        rfs::fchmod(&self.0, Mode::from_raw_mode(mode))
    }

    pub fn chown(&self, uid: u32, gid: u32) -> Result<(), Errno> {
        rfs::fchown(&self.0, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
    }

    pub fn set_times(&self, times: &Timestamps) -> Result<(), Errno> {
        rfs::futimens(&self.0, times)
    }
}

/// The names in a directory (without `.` and `..`), sorted bytewise, with
/// the type `getdents` reported.
#[derive(Default)]
pub struct Listing {
    /// Every name followed by a NUL.
    names: Vec<u8>,
    items: Vec<(u32, u32, FileType)>,
}

impl Listing {
    pub fn read(dir: BorrowedFd<'_>) -> Result<Listing, Errno> {
        // getdents continues from the handle's offset: always list from the start.
        rfs::seek(dir, rfs::SeekFrom::Start(0))?;
        let mut buf: Vec<MaybeUninit<u8>> = Vec::with_capacity(32 * 1024);
        buf.resize(32 * 1024, MaybeUninit::uninit());
        let mut raw = RawDir::new(dir, &mut buf);
        let mut listing = Listing::default();
        while let Some(entry) = raw.next() {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let off = listing.names.len() as u32;
            listing.names.extend_from_slice(name);
            listing.names.push(0);
            listing
                .items
                .push((off, name.len() as u32, entry.file_type()));
        }
        let names = &listing.names;
        listing.items.sort_unstable_by(|a, b| {
            names[a.0 as usize..(a.0 + a.1) as usize]
                .cmp(&names[b.0 as usize..(b.0 + b.1) as usize])
        });
        Ok(listing)
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The i-th name (as a C string for the syscalls) and its reported type.
    pub fn get(&self, i: usize) -> (&CStr, FileType) {
        let (off, len, ty) = self.items[i];
        let bytes = &self.names[off as usize..=(off + len) as usize];
        // Names come from getdents and were stored with their NUL.
        let name = CStr::from_bytes_with_nul(bytes).unwrap_or(c"");
        (name, ty)
    }
}

/// A path of open directories below a base handle, for walks of any depth:
/// at most `MAX_OPEN` handles stay open (the deepest ones), and a frame
/// whose handle was closed is reopened by name from the nearest ancestor
/// that has one.
pub struct DirStack<T> {
    frames: Vec<DirFrame<T>>,
    open: usize,
}

pub struct DirFrame<T> {
    pub name: CString,
    fd: Option<OwnedFd>,
    pub data: T,
}

const MAX_OPEN: usize = 64;

impl<T> Default for DirStack<T> {
    fn default() -> Self {
        DirStack {
            frames: Vec::new(),
            open: 0,
        }
    }
}

impl<T> DirStack<T> {
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    pub fn push(&mut self, name: CString, fd: OwnedFd, data: T) {
        self.frames.push(DirFrame {
            name,
            fd: Some(fd),
            data,
        });
        self.open += 1;
        self.trim();
    }

    /// Closes the shallowest handles (never the top one) until at most
    /// `MAX_OPEN` are open: the walk will not need them until it climbs back.
    fn trim(&mut self) {
        self.trim_below(self.frames.len().saturating_sub(1));
    }

    /// `trim`, keeping frame `keep` and everything deeper open.
    fn trim_below(&mut self, keep: usize) {
        let mut i = 0;
        while self.open > MAX_OPEN && i < keep {
            if self.frames[i].fd.take().is_some() {
                self.open -= 1;
            }
            i += 1;
        }
    }

    pub fn pop(&mut self) -> Option<DirFrame<T>> {
        let frame = self.frames.pop()?;
        if frame.fd.is_some() {
            self.open -= 1;
        }
        Some(frame)
    }

    pub fn top_mut(&mut self) -> Option<&mut DirFrame<T>> {
        self.frames.last_mut()
    }

    /// Moves the top frame's handle out (reopening it if it was closed), so
    /// that the caller can use it while changing other state; give it back
    /// with `put_top_fd`.
    pub fn take_top_fd(&mut self, base: BorrowedFd<'_>) -> Result<OwnedFd, Errno> {
        self.top_fd(base)?;
        let fd = self
            .frames
            .last_mut()
            .and_then(|f| f.fd.take())
            .ok_or(Errno::BADF)?;
        self.open -= 1;
        Ok(fd)
    }

    pub fn put_top_fd(&mut self, fd: OwnedFd) {
        if let Some(frame) = self.frames.last_mut() {
            if frame.fd.is_none() {
                self.open += 1;
            }
            frame.fd = Some(fd);
        }
        self.trim();
    }

    /// The handle of the top frame, reopening closed frames from `base`.
    pub fn top_fd(&mut self, base: BorrowedFd<'_>) -> Result<BorrowedFd<'_>, Errno> {
        let last = self.frames.len().checked_sub(1).ok_or(Errno::BADF)?;
        if self.frames[last].fd.is_none() {
            let mut first = last;
            while first > 0 && self.frames[first - 1].fd.is_none() {
                first -= 1;
            }
            // Reopen down to the top, keeping the handles (the walk is about
            // to climb through them) but closing the shallowest ones as soon as
            // more than the limit are open, so a deep reopen stays bounded too.
            for i in first..=last {
                let fd = {
                    let parent = if i == 0 {
                        base
                    } else {
                        self.frames[i - 1].fd.as_ref().ok_or(Errno::BADF)?.as_fd()
                    };
                    open_dir(parent, self.frames[i].name.as_c_str())?
                };
                self.frames[i].fd = Some(fd);
                self.open += 1;
                self.trim_below(i);
            }
        }
        self.frames[last]
            .fd
            .as_ref()
            .map(|fd| fd.as_fd())
            .ok_or(Errno::BADF)
    }
}

impl DirStack<()> {
    /// Makes the stack the path `parts` below `base` (reusing the frames it
    /// shares with the current path) and returns the handle of the path's last
    /// directory, or `None` for the empty path (`base` itself). Components
    /// not open yet are opened with `open_child(parent, name)`, which may
    /// create them.
    pub fn goto<E: From<Errno>>(
        &mut self,
        base: BorrowedFd<'_>,
        parts: &[&[u8]],
        open_child: &mut dyn FnMut(BorrowedFd<'_>, &CStr) -> Result<OwnedFd, E>,
    ) -> Result<Option<BorrowedFd<'_>>, E> {
        let common = self
            .frames
            .iter()
            .zip(parts)
            .take_while(|(f, p)| f.name.as_bytes() == **p)
            .count();
        while self.frames.len() > common {
            self.pop();
        }
        for part in &parts[common..] {
            let name = CString::new(*part).map_err(|_| Errno::INVAL)?;
            let child = if self.frames.is_empty() {
                open_child(base, &name)?
            } else {
                let parent = self.top_fd(base)?;
                open_child(parent, &name)?
            };
            self.push(name, child, ());
        }
        if self.frames.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.top_fd(base)?))
    }
}

/// Removes `name` inside `dir` and, if it is a directory, everything below
/// it, without following symlinks, whatever the depth of the tree. An entry
/// that cannot be removed (another user's file in a sticky directory, for a
/// process that is not root) is passed over and the rest still goes; the
/// first such error is returned.
pub fn remove_tree(dir: BorrowedFd<'_>, name: &CStr) -> Result<(), Errno> {
    match rfs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => return Ok(()),
        Err(Errno::ISDIR) | Err(Errno::PERM) => {}
        Err(e) => return Err(e),
    }
    // Each frame keeps the names in it that could not be removed: they are
    // passed over, the rest still goes, and the first error is returned.
    let mut first_error: Option<Errno> = None;
    let mut stack: DirStack<HashSet<CString>> = DirStack::default();
    stack.push(name.to_owned(), open_dir(dir, name)?, HashSet::new());
    while !stack.is_empty() {
        let fd = stack.take_top_fd(dir)?;
        let listing = Listing::read(fd.as_fd());
        let mut descend = None;
        let mut stuck = Vec::new();
        match &listing {
            Err(e) => {
                first_error.get_or_insert(*e);
            }
            Ok(listing) => {
                let passed = &stack.top_mut().ok_or(Errno::BADF)?.data;
                for i in 0..listing.len() {
                    let (child, _) = listing.get(i);
                    if passed.contains(child) {
                        continue;
                    }
                    let removed = match rfs::unlinkat(&fd, child, AtFlags::empty()) {
                        Err(Errno::ISDIR) | Err(Errno::PERM) => {
                            rfs::unlinkat(&fd, child, AtFlags::REMOVEDIR)
                        }
                        other => other,
                    };
                    match removed {
                        Ok(()) | Err(Errno::NOENT) => {}
                        Err(Errno::NOTEMPTY) | Err(Errno::EXIST) => {
                            descend = Some(child.to_owned());
                            break;
                        }
                        Err(e) => {
                            first_error.get_or_insert(e);
                            stuck.push(child.to_owned());
                        }
                    }
                }
            }
        }
        if let Some(frame) = stack.top_mut() {
            frame.data.extend(stuck);
        }
        let child_fd = descend
            .as_ref()
            .map(|child| open_dir(fd.as_fd(), child.as_c_str()));
        stack.put_top_fd(fd);
        match (descend, child_fd) {
            (Some(child), Some(Ok(child_fd))) => stack.push(child, child_fd, HashSet::new()),
            (Some(child), Some(Err(e))) => {
                first_error.get_or_insert(e);
                if let Some(frame) = stack.top_mut() {
                    frame.data.insert(child);
                }
            }
            _ => {
                let Some(done) = stack.pop() else { break };
                drop(done.fd);
                let parent = if stack.is_empty() {
                    dir
                } else {
                    stack.top_fd(dir)?
                };
                match rfs::unlinkat(parent, done.name.as_c_str(), AtFlags::REMOVEDIR) {
                    Ok(()) | Err(Errno::NOENT) => {}
                    Err(e) => {
                        first_error.get_or_insert(e);
                        if let Some(frame) = stack.top_mut() {
                            frame.data.insert(done.name);
                        }
                    }
                }
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// A FIFO read as a stream that a cancel token stops even while no writer
/// has come or the writer sends nothing: it is opened without waiting for a
/// writer (`O_NONBLOCK`), and each read waits for data in `poll` slices of
/// 100 ms, checking the token between them. A cancel is an I/O error that
/// carries `Error::cancelled()`.
pub struct FifoReader {
    file: std::fs::File,
    cancel: std::sync::Arc<crate::progress::CancelToken>,
}

impl FifoReader {
    pub fn open(
        path: &Path,
        cancel: std::sync::Arc<crate::progress::CancelToken>,
    ) -> std::io::Result<FifoReader> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)?;
        Ok(FifoReader { file, cancel })
    }
}

impl std::io::Read for FifoReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use rustix::event::{poll, PollFd, PollFlags, Timespec};
        let slice = Timespec {
            tv_sec: 0,
            tv_nsec: 100_000_000,
        };
        loop {
            if self.cancel.is_triggered() {
                return Err(std::io::Error::other(crate::error::Error::cancelled()));
            }
            // Before any writer has come, Linux reports nothing (no POLLHUP):
            // the wait goes on. After the last writer has gone, POLLHUP, and
            // the read below answers 0, the end of the stream.
            let mut fds = [PollFd::new(&self.file, PollFlags::IN)];
            match poll(&mut fds, Some(&slice)) {
                Ok(0) | Err(Errno::INTR) => continue,
                Ok(_) => {}
                Err(e) => return Err(e.into()),
            }
            match std::io::Read::read(&mut self.file, buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }
}

/// A name for temporary files and directories that no other process or call
/// will pick: pid, time and a counter.
pub fn nonce() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!("{:x}-{:x}-{:x}", std::process::id(), t, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_deep_trees_without_following_links() {
        let base = std::env::temp_dir().join(format!("wb-rmtree-{}", nonce()));
        let outside = base.join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("keep"), b"x").unwrap();
        let mut p = base.join("victim");
        for _ in 0..300 {
            p = p.join("d");
        }
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("f"), b"x").unwrap();
        std::os::unix::fs::symlink(&outside, base.join("victim/link")).unwrap();
        let fd = open_trusted_dir(&base).unwrap();
        remove_tree(fd.as_fd(), c"victim").unwrap();
        assert!(!base.join("victim").exists());
        assert!(outside.join("keep").exists());
        std::fs::remove_dir_all(&base).unwrap();
    }

    /// Another user's file in that user's sticky directory cannot be
    /// removed by a thread without `CAP_FOWNER`: it is passed over, the
    /// rest of the tree (before and after it) still goes, and the error is
    /// returned.
    #[test]
    fn an_entry_that_cannot_be_removed_is_passed_over() {
        use rustix::thread::{capabilities, set_capabilities, CapabilitySet};
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root to give files to another user");
            return;
        }
        let base = std::env::temp_dir().join(format!("wb-rmstuck-{}", nonce()));
        let sticky = base.join("victim/a/sticky");
        std::fs::create_dir_all(&sticky).unwrap();
        std::fs::write(sticky.join("theirs"), b"x").unwrap();
        std::fs::write(base.join("victim/a/mine.txt"), b"x").unwrap();
        std::fs::create_dir_all(base.join("victim/z/deep")).unwrap();
        std::fs::write(base.join("victim/z/deep/z.txt"), b"x").unwrap();
        for p in [sticky.join("theirs"), sticky.clone()] {
            std::os::unix::fs::chown(&p, Some(4321), Some(4321)).unwrap();
        }
        std::fs::set_permissions(
            &sticky,
            std::os::unix::fs::PermissionsExt::from_mode(0o1777),
        )
        .unwrap();
        let fd = open_trusted_dir(&base).unwrap();
        let result = std::thread::spawn(move || {
            let mut caps = capabilities(None).unwrap();
            caps.effective
                .remove(CapabilitySet::FOWNER | CapabilitySet::DAC_OVERRIDE);
            set_capabilities(None, caps).unwrap();
            remove_tree(fd.as_fd(), c"victim")
        })
        .join()
        .unwrap();
        assert_eq!(result, Err(Errno::PERM));
        assert!(sticky.join("theirs").exists());
        assert!(!base.join("victim/a/mine.txt").exists());
        assert!(!base.join("victim/z").exists());
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn paths_longer_than_path_max_open_one_component_at_a_time() {
        let base = std::env::temp_dir().join(format!("wb-long-{}", nonce()));
        let name = "n".repeat(250);
        let mut rel = String::new();
        while rel.len() < 2 * PATH_MAX {
            rel.push_str(&name);
            rel.push('/');
        }
        // Made one directory at a time: `create_dir_all` would pass the
        // whole path to the kernel.
        std::fs::create_dir_all(&base).unwrap();
        let mut fd = open_trusted_dir(&base).unwrap();
        for _ in 0..rel.len() / (name.len() + 1) {
            rfs::mkdirat(&fd, name.as_str(), Mode::from_raw_mode(0o755)).unwrap();
            fd = open_dir(fd.as_fd(), name.as_str()).unwrap();
        }
        let file = rfs::openat(
            &fd,
            "leaf",
            OFlags::WRONLY | OFlags::CREATE | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .unwrap();
        rustix::io::write(&file, b"deep").unwrap();
        let root = Beneath::new(open_trusted_dir(&base).unwrap());
        let leaf = format!("{rel}leaf");
        assert!(leaf.len() > PATH_MAX);
        for kernel in [false, have_openat2()] {
            let f = root.open_file_with(leaf.as_bytes(), kernel).unwrap();
            let mut buf = [0u8; 8];
            assert_eq!(rustix::io::read(&f, &mut buf).unwrap(), 4);
            assert_eq!(&buf[..4], b"deep");
            root.open_dir_with(rel.as_bytes(), kernel).unwrap();
        }
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn the_fallback_resolves_links_as_openat2_does() {
        use std::os::unix::fs::symlink;
        let base = std::env::temp_dir().join(format!("wb-beneath-{}", nonce()));
        let root = base.join("root");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir_all(base.join("outside")).unwrap();
        symlink("b", root.join("a/in")).unwrap();
        symlink("../a/b", root.join("a/up-in")).unwrap();
        symlink("../../outside", root.join("a/up-out")).unwrap();
        symlink("/tmp", root.join("abs")).unwrap();
        symlink("a/in/..", root.join("chain")).unwrap();
        symlink("loop2", root.join("loop1")).unwrap();
        symlink("loop1", root.join("loop2")).unwrap();
        symlink("missing/x", root.join("dangling")).unwrap();
        std::fs::write(root.join("file"), b"x").unwrap();
        symlink("file/x", root.join("through-file")).unwrap();
        let dir = Beneath::new(open_trusted_dir(&root).unwrap());
        let cases: [(&[u8], bool); 11] = [
            (b"a", false),
            (b"a/in", false),
            (b"a/up-in", false),
            (b"a/up-out", true),
            (b"abs", true),
            (b"chain", false),
            (b"loop1", true),
            (b"dangling", false),
            (b"through-file", true),
            (b"a/../..", true),
            (b"nothing", false),
        ];
        for (path, outside) in cases {
            let name = String::from_utf8_lossy(path);
            assert_eq!(
                dir.resolves_outside_with(path, false),
                outside,
                "fallback: {name}"
            );
            if have_openat2() {
                assert_eq!(
                    dir.resolves_outside_with(path, true),
                    outside,
                    "openat2: {name}"
                );
            }
        }
        for kernel in [false, have_openat2()] {
            // Files: only through directories, never through a link.
            let mut text = String::new();
            let f = dir.open_file_with(b"file", kernel).unwrap();
            std::io::Read::read_to_string(&mut std::fs::File::from(f), &mut text).unwrap();
            assert_eq!(text, "x");
            for refused in [
                &b"through-file"[..],
                b"a/up-out/x",
                b"a/in/../../file",
                b"abs/x",
                b"chain",
                b"dangling",
                b"a/in",
                b"../root/file",
                b"",
            ] {
                assert!(
                    dir.open_file_with(refused, kernel).is_err(),
                    "{} opened (openat2: {kernel})",
                    String::from_utf8_lossy(refused)
                );
            }
            assert!(dir.open_dir_with(b"a/b", kernel).is_ok());
            assert!(dir.open_dir_with(b"", kernel).is_ok());
            assert!(dir.open_dir_with(b"a/in", kernel).is_err());
            assert!(dir.open_dir_with(b"a/up-out/x", kernel).is_err());
            assert!(dir.open_dir_with(b"a/../..", kernel).is_err());
        }
        std::fs::remove_dir_all(&base).unwrap();
    }

    /// A root with a directory `a`, a file `f`, and symlinks leading
    /// outside it: `out` (absolute, to a directory), `up` (`../outside`),
    /// `out-file` (to a file) and `out-new` (to a name not there yet).
    struct Escape {
        base: std::path::PathBuf,
        root: Beneath,
    }

    impl Escape {
        fn new() -> Escape {
            use std::os::unix::fs::symlink;
            let base = std::env::temp_dir().join(format!("wb-escape-{}", nonce()));
            let root = base.join("root");
            let outside = base.join("outside");
            std::fs::create_dir_all(root.join("a")).unwrap();
            std::fs::create_dir_all(&outside).unwrap();
            std::fs::write(outside.join("keep"), b"outside").unwrap();
            std::fs::write(root.join("f"), b"inside").unwrap();
            symlink(&outside, root.join("out")).unwrap();
            symlink("../outside", root.join("up")).unwrap();
            symlink(outside.join("keep"), root.join("out-file")).unwrap();
            symlink(outside.join("new"), root.join("out-new")).unwrap();
            let dir = Beneath::new(open_trusted_dir(&root).unwrap());
            Escape { base, root: dir }
        }

        /// The outside directory as it is now: its names and contents.
        fn outside(&self) -> Vec<(String, Vec<u8>)> {
            let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(self.base.join("outside"))
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    let data = std::fs::read(e.path()).unwrap_or_default();
                    (e.file_name().to_string_lossy().into_owned(), data)
                })
                .collect();
            out.sort();
            out
        }

        fn untouched(&self) {
            assert_eq!(
                self.outside(),
                vec![("keep".to_string(), b"outside".to_vec())]
            );
        }

        fn is_link(&self, name: &str) -> bool {
            std::fs::symlink_metadata(self.base.join("root").join(name))
                .unwrap()
                .file_type()
                .is_symlink()
        }
    }

    impl Drop for Escape {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.base);
        }
    }

    /// The names no single-name operation takes.
    const NOT_ONE_NAME: [&CStr; 5] = [c"..", c".", c"", c"out/x", c"a/../../outside"];

    #[test]
    fn dir_open_dir_and_lstat_stay_inside() {
        let t = Escape::new();
        let d = t.root.dir();
        for name in NOT_ONE_NAME {
            assert!(d.open_dir(name).is_err(), "{name:?}");
            assert!(d.lstat(name).is_err(), "{name:?}");
        }
        assert_eq!(d.open_dir(c"..").unwrap_err(), Errno::XDEV);
        assert!(d.open_dir(c"out").is_err());
        assert!(d.open_dir(c"up").is_err());
        assert!(d.open_dir(c"a").is_ok());
        // The link itself, not what it points at.
        assert_eq!(file_type(&d.lstat(c"out").unwrap()), FileType::Symlink);
        assert!(d.dup().is_ok());
    }

    #[test]
    fn dir_mkdir_stays_inside() {
        let t = Escape::new();
        let d = t.root.dir();
        for name in NOT_ONE_NAME {
            assert!(d.mkdir(name, 0o755).is_err(), "{name:?}");
        }
        assert_eq!(d.mkdir(c"out", 0o755).unwrap_err(), Errno::EXIST);
        assert_eq!(d.mkdir(c"out-new", 0o755).unwrap_err(), Errno::EXIST);
        t.untouched();
        d.mkdir(c"made", 0o755).unwrap();
        assert!(t.base.join("root/made").is_dir());
    }

    #[test]
    fn dir_unlink_and_remove_tree_remove_links_not_targets() {
        let t = Escape::new();
        let d = t.root.dir();
        for name in NOT_ONE_NAME {
            assert!(d.unlink(name).is_err(), "{name:?}");
            assert!(d.remove_tree(name).is_err(), "{name:?}");
        }
        d.unlink(c"out-file").unwrap();
        d.remove_tree(c"out").unwrap();
        d.remove_tree(c"up").unwrap();
        t.untouched();
        assert!(!t.base.join("root/out").exists());
        assert!(t.base.join("outside").is_dir());
    }

    #[test]
    fn dir_renames_stay_inside() {
        let t = Escape::new();
        let d = t.root.dir();
        let a = d.open_dir(c"a").unwrap();
        let a = Dir::of(a.as_fd());
        for name in NOT_ONE_NAME {
            assert!(d.rename(c"f", a, name).is_err(), "{name:?}");
            assert!(d.rename(name, a, c"g").is_err(), "{name:?}");
            assert!(d.rename_noreplace(c"f", a, name).is_err(), "{name:?}");
            assert!(d.rename_noreplace(name, a, c"g").is_err(), "{name:?}");
        }
        // Onto a link: the link is taken (or refused), never followed.
        match d.rename_noreplace(c"f", d, c"out-new") {
            Err(e) => assert!([Errno::EXIST, Errno::INVAL, Errno::NOSYS].contains(&e)),
            Ok(()) => panic!("renamed over an existing link"),
        }
        d.rename(c"f", d, c"out-file").unwrap();
        assert!(!t.is_link("out-file"));
        // Moving a link moves the link.
        d.rename(c"out", a, c"moved").unwrap();
        assert!(t.is_link("a/moved"));
        t.untouched();
    }

    #[test]
    fn dir_link_and_symlink_stay_inside() {
        let t = Escape::new();
        let d = t.root.dir();
        for name in NOT_ONE_NAME {
            assert!(d.link(c"f", d, name).is_err(), "{name:?}");
            assert!(d.link(name, d, c"g").is_err(), "{name:?}");
            assert!(d.symlink(c"f", name).is_err(), "{name:?}");
        }
        // A hard link to a symlink is a second name of the link.
        d.link(c"out-file", d, c"second").unwrap();
        assert!(t.is_link("second"));
        assert_eq!(d.link(c"f", d, c"out-new").unwrap_err(), Errno::EXIST);
        assert_eq!(d.symlink(c"f", c"out-new").unwrap_err(), Errno::EXIST);
        t.untouched();
    }

    #[test]
    fn dir_entry_owner_and_times_change_the_link_only() {
        use std::os::unix::fs::MetadataExt;
        let t = Escape::new();
        let d = t.root.dir();
        let times = Timestamps {
            last_access: Timespec {
                tv_sec: 1_000_000,
                tv_nsec: 0,
            },
            last_modification: Timespec {
                tv_sec: 1_000_000,
                tv_nsec: 0,
            },
        };
        let (uid, gid) = (euid(), rustix::process::getegid().as_raw());
        for name in NOT_ONE_NAME {
            assert!(d.chown_entry(name, uid, gid).is_err(), "{name:?}");
            assert!(d.set_entry_times(name, &times).is_err(), "{name:?}");
        }
        let target = t.base.join("outside/keep");
        let before = std::fs::metadata(&target).unwrap().mtime();
        d.chown_entry(c"out-file", uid, gid).unwrap();
        d.set_entry_times(c"out-file", &times).unwrap();
        let link = std::fs::symlink_metadata(t.base.join("root/out-file")).unwrap();
        assert_eq!(link.mtime(), 1_000_000);
        assert_eq!(std::fs::metadata(&target).unwrap().mtime(), before);
    }

    #[test]
    fn dir_create_and_open_files_stay_inside() {
        let t = Escape::new();
        let d = t.root.dir();
        for name in NOT_ONE_NAME {
            assert!(d.create_file(name, 0o600).is_err(), "{name:?}");
            assert!(d.create_lock_file(name, 0o600).is_err(), "{name:?}");
            assert!(d.open_regular(name, false).is_none(), "{name:?}");
        }
        for name in [c"out-new", c"out-file", c"out"] {
            assert!(d.create_file(name, 0o600).is_err(), "{name:?}");
            assert!(d.create_lock_file(name, 0o600).is_err(), "{name:?}");
            assert!(d.open_regular(name, true).is_none(), "{name:?}");
        }
        t.untouched();
        let file = d.create_file(c"new", 0o600).unwrap();
        file.write_all(b"hello").unwrap();
        file.write_all_at(b"J", 0).unwrap();
        file.set_len(7).unwrap();
        file.sync().unwrap();
        assert_eq!(
            std::fs::read(t.base.join("root/new")).unwrap(),
            b"Jello\0\0"
        );
        let lock = d.create_lock_file(c"lock", 0o600).unwrap();
        lock.try_lock().unwrap();
        let again = d.open_regular(c"lock", true).unwrap();
        assert_eq!(again.try_lock().unwrap_err(), Errno::WOULDBLOCK);
        let mut buf = [0u8; 8];
        let n = d.open_regular(c"f", false).unwrap().read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"inside");
    }
}
