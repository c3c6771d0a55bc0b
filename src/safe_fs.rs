//! Filesystem primitives relative to directory handles that never follow a
//! symlink: the server directory is untrusted, so every lookup below its root
//! goes one component at a time through `openat(O_NOFOLLOW)` on a handle we
//! hold, and no path is resolved by name from the root again.

use std::ffi::{CStr, CString};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, RawDir};
use rustix::io::Errno;

pub use rustix::fs::Stat;

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

pub fn lstat_at<P: rustix::path::Arg>(dir: BorrowedFd<'_>, name: P) -> Result<Stat, Errno> {
    rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
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
/// it, without following symlinks, whatever the depth of the tree.
pub fn remove_tree(dir: BorrowedFd<'_>, name: &CStr) -> Result<(), Errno> {
    match rfs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => return Ok(()),
        Err(Errno::ISDIR) | Err(Errno::PERM) => {}
        Err(e) => return Err(e),
    }
    let mut stack: DirStack<()> = DirStack::default();
    stack.push(name.to_owned(), open_dir(dir, name)?, ());
    while !stack.is_empty() {
        let fd = stack.top_fd(dir)?;
        let listing = Listing::read(fd)?;
        let mut descend = None;
        for i in 0..listing.len() {
            let (child, _) = listing.get(i);
            match rfs::unlinkat(fd, child, AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(Errno::ISDIR) | Err(Errno::PERM) => {
                    match rfs::unlinkat(fd, child, AtFlags::REMOVEDIR) {
                        Ok(()) | Err(Errno::NOENT) => {}
                        Err(Errno::NOTEMPTY) | Err(Errno::EXIST) => {
                            descend = Some(child.to_owned());
                            break;
                        }
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            }
        }
        match descend {
            Some(child) => {
                let child_fd = open_dir(fd, child.as_c_str())?;
                stack.push(child, child_fd, ());
            }
            None => {
                let Some(done) = stack.pop() else { break };
                drop(done.fd);
                let parent = if stack.is_empty() {
                    dir
                } else {
                    stack.top_fd(dir)?
                };
                match rfs::unlinkat(parent, done.name.as_c_str(), AtFlags::REMOVEDIR) {
                    Ok(()) | Err(Errno::NOENT) => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(())
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
}
