//! Local archives in the backup directory (docs/api.md section 9):
//! `<backup_directory>/<uuid>.tar.gz`, mode 0600, written under a temporary
//! name in the same directory and renamed into place only when complete and
//! flushed. A temporary file is locked (`flock`) by the call writing it, so a
//! later start can tell an abandoned one (lock free: removed) from one in use.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, RenameFlags};

use crate::error::{Error, Result};
use crate::safe_fs;

/// Temporary files are `.<final name>.part-<nonce>`; the final names of
/// archives and their indexes both hold `.tar.gz`.
const PART_MARK: &str = ".part-";

/// The directory (in the backup directory) of the indexes of `s3` backups,
/// whose archives are not here.
pub const S3_INDEX_DIR: &str = ".s3-indexes";

pub struct BackupStore {
    dir: PathBuf,
}

/// An archive being written. Dropped without `publish`, it is removed.
pub struct TempArchive {
    pub file: File,
    path: PathBuf,
    kept: bool,
}

impl BackupStore {
    /// Opens (creating it, mode 0700, if needed) the backup directory.
    pub fn open(dir: &Path) -> Result<BackupStore> {
        if !dir.is_dir() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io("creating the backup directory", e))?;
            let _ =
                std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700));
        }
        Ok(BackupStore {
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of the local archive of backup `uuid` (a validated UUID).
    pub fn archive_path(&self, uuid: &str) -> PathBuf {
        self.dir.join(format!("{uuid}.tar.gz"))
    }

    pub fn exists(&self, uuid: &str) -> bool {
        std::fs::symlink_metadata(self.archive_path(uuid)).is_ok()
    }

    /// Opens the local archive for reading, with its size.
    pub fn open_archive(&self, uuid: &str) -> Result<(File, u64)> {
        let not_found = || Error::not_found("The requested backup was not found on this server.");
        let file = match crate::safe_fs::open_for_reading(&self.archive_path(uuid)) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(not_found()),
            Err(e) => return Err(Error::io("opening the backup", e)),
        };
        let meta = file
            .metadata()
            .map_err(|e| Error::io("opening the backup", e))?;
        if !meta.is_file() {
            return Err(not_found());
        }
        Ok((file, meta.len()))
    }

    /// Path of the index of backup `uuid`'s archive (see `crate::index`):
    /// beside a local archive; for a backup whose archive is not here (an
    /// `s3` backup), in the `.s3-indexes` directory.
    pub fn index_path(&self, uuid: &str) -> PathBuf {
        if self.exists(uuid) {
            self.local_index_path(uuid)
        } else {
            self.s3_index_path(uuid)
        }
    }

    /// `<uuid>.tar.gz.index`.
    pub fn local_index_path(&self, uuid: &str) -> PathBuf {
        crate::index::path_for(&self.archive_path(uuid))
    }

    /// `.s3-indexes/<uuid>.tar.gz.index`: the index of an `s3` backup.
    pub fn s3_index_path(&self, uuid: &str) -> PathBuf {
        crate::index::path_for(&self.dir.join(S3_INDEX_DIR).join(format!("{uuid}.tar.gz")))
    }

    /// The directory of the indexes of `s3` backups, as a store (created,
    /// mode 0700, if missing).
    pub fn s3_index_store(&self) -> Result<BackupStore> {
        BackupStore::open(&self.dir.join(S3_INDEX_DIR))
    }

    /// Starts a new archive for backup `uuid` under a temporary name.
    pub fn create_temp(&self, uuid: &str) -> Result<TempArchive> {
        self.create_temp_for(&format!("{uuid}.tar.gz"))
    }

    /// Starts a file to be published as `final_name` in this directory.
    pub fn create_temp_for(&self, final_name: &str) -> Result<TempArchive> {
        let path = self
            .dir
            .join(format!(".{final_name}{PART_MARK}{}", safe_fs::nonce()));
        // Readable too: an s3 backup uploads its parts from this file.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| Error::io("creating the archive file", e))?;
        let temp = TempArchive {
            file,
            path,
            kept: false,
        };
        rustix::fs::flock(&temp.file, FlockOperation::NonBlockingLockExclusive)
            .map_err(|e| Error::os("locking the archive file", e))?;
        Ok(temp)
    }

    /// Removes the local archive of backup `uuid`, and its index (an `s3`
    /// backup's index goes too, though the answer is then `NotFound`).
    pub fn delete(&self, uuid: &str) -> Result<()> {
        let deleted = self.delete_archive(uuid);
        for index in [self.local_index_path(uuid), self.s3_index_path(uuid)] {
            match std::fs::remove_file(index) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) if deleted.is_ok() => {
                    return Err(Error::io("deleting the backup's index", e))
                }
                Err(_) => {}
            }
        }
        deleted
    }

    fn delete_archive(&self, uuid: &str) -> Result<()> {
        let path = self.archive_path(uuid);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => {
                return Err(Error::io(
                    "deleting the backup",
                    std::io::Error::other("the backup path is a directory"),
                ))
            }
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(Error::not_found(
                    "The requested backup was not found on this server.",
                ))
            }
            Err(e) => return Err(Error::io("deleting the backup", e)),
        }
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            // Gone between the check and the removal: deleted all the same.
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("deleting the backup", e)),
        }
    }

    /// Removes temporary archives nobody holds a lock on (left by a process
    /// that was killed). Returns how many were removed.
    pub fn remove_stale_temps(&self) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let mut removed = 0;
        let s3_indexes = self.dir.join(S3_INDEX_DIR);
        if s3_indexes.is_dir() && !self.dir.ends_with(S3_INDEX_DIR) {
            removed += BackupStore { dir: s3_indexes }.remove_stale_temps();
        }
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if !(name.starts_with('.') && name.contains(".tar.gz") && name.contains(PART_MARK)) {
                continue;
            }
            let path = entry.path();
            let Ok(file) = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
                .open(&path)
            else {
                continue;
            };
            if rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive).is_ok()
                && std::fs::remove_file(&path).is_ok()
            {
                removed += 1;
            }
        }
        removed
    }
}

impl TempArchive {
    /// Flushes the archive to disk and renames it to `final_path`, which
    /// must not exist yet (a conflict otherwise).
    pub fn publish(self, final_path: &Path) -> Result<()> {
        self.publish_with(final_path, false)
    }

    /// Like `publish`, but atomically replaces an existing file.
    pub fn publish_replacing(self, final_path: &Path) -> Result<()> {
        self.publish_with(final_path, true)
    }

    fn publish_with(mut self, final_path: &Path, replace: bool) -> Result<()> {
        self.file
            .sync_all()
            .map_err(|e| Error::io("flushing the archive", e))?;
        let dir = final_path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let dir_fd = safe_fs::open_trusted_dir(dir)
            .map_err(|e| Error::os("opening the backup directory", e))?;
        let from = self.path.file_name().unwrap_or_default();
        let to = final_path.file_name().unwrap_or_default();
        use rustix::fs::{linkat, renameat, renameat_with, statat, unlinkat, AtFlags};
        use rustix::io::Errno;
        let exists = || Error::conflict(crate::operations::MSG_UUID_EXISTS);
        let failed = |e: Errno| Error::os("publishing the archive", e);
        if replace {
            renameat(&dir_fd, from, &dir_fd, to).map_err(failed)?;
        } else {
            match renameat_with(&dir_fd, from, &dir_fd, to, RenameFlags::NOREPLACE) {
                Ok(()) => {}
                Err(Errno::EXIST) => return Err(exists()),
                Err(Errno::INVAL) | Err(Errno::NOSYS) => {
                    // No RENAME_NOREPLACE here: a hard link never replaces
                    // an existing archive either (then the temporary name
                    // goes); without hard links, a rename once the name is
                    // seen to be free.
                    match linkat(&dir_fd, from, &dir_fd, to, AtFlags::empty()) {
                        Ok(()) => {
                            let _ = unlinkat(&dir_fd, from, AtFlags::empty());
                        }
                        Err(Errno::EXIST) => return Err(exists()),
                        Err(Errno::PERM) | Err(Errno::OPNOTSUPP) | Err(Errno::NOSYS) => {
                            match statat(&dir_fd, to, AtFlags::SYMLINK_NOFOLLOW) {
                                Err(Errno::NOENT) => {
                                    renameat(&dir_fd, from, &dir_fd, to).map_err(failed)?
                                }
                                Ok(_) => return Err(exists()),
                                Err(e) => return Err(failed(e)),
                            }
                        }
                        Err(e) => return Err(failed(e)),
                    }
                }
                Err(e) => return Err(failed(e)),
            }
        }
        self.kept = true;
        // The archive is in place under its final name: a failure to flush
        // the directory does not make the backup fail after the fact (the
        // file is synced; at worst a crash now forgets the rename).
        let _ = rustix::fs::fsync(&dir_fd);
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempArchive {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
