//! Browse and verify of a backup's archive (see `crate::index::browse` and
//! `crate::index::verify`), and the same for any archive file.
//!
//! Neither holds the server: both only read. Verify opens the archive once
//! and reads that open file to its end, so a delete of the backup meanwhile
//! (which only removes the name) cannot cut it short or mix two archives; a
//! restore or another verify of the same backup may run beside it.

use std::path::Path;

use super::{backup_not_found, Engine};
use crate::error::{Error, Result};
use crate::index::{self, browse, FileEntry, Index, VerifyError, VerifyReport};
use crate::progress::{Control, Phase, Progress};
use crate::request::backup_uuid;

/// Browse of an `s3` backup whose index is not on this node.
pub const MSG_NO_LOCAL_INDEX: &str =
    "This backup is stored in S3 and this node has no local index of it to browse.";

impl Engine {
    /// The entries directly under `dir` in backup `backup` of server
    /// `server` (`""` or `"/"`: the top level; `world`, `world/` and
    /// `/world` alike), by name. From the archive's index; an archive
    /// without one is read once and its index written beside it. An `s3`
    /// backup is browsed from its local index. `InvalidArgument` for a
    /// path with `..`; `NotFound` for an unknown server or backup, a path
    /// the archive does not hold or that is not a directory, or an `s3`
    /// backup without a local index.
    pub fn list_files(&self, server: &str, backup: &str, dir: &str) -> Result<Vec<FileEntry>> {
        self.server_root(server)?;
        let backup = backup_uuid(backup)?;
        let dir = browse::normalize_dir(dir)?;
        let archive = self.store.archive_path(&backup);
        let index = if std::fs::symlink_metadata(&archive).is_ok_and(|m| m.is_file()) {
            browse::index_of(&archive, &mut Control::none())?
        } else {
            match Index::load(&self.store.index_path(&backup)) {
                Ok(Some(index)) => index,
                _ => {
                    return Err(match self.backup_status(server, &backup) {
                        Ok(r) if r.adapter == "s3" => Error::not_found(MSG_NO_LOCAL_INDEX),
                        _ => backup_not_found(),
                    })
                }
            }
        };
        browse::list_dir(&index.entries, &dir)
    }

    /// Reads the local archive of backup `backup` once and checks it (see
    /// `crate::index::verify`), against its index when it has one. Damage
    /// is in the report, not an error; `NotFound` for an unknown server or
    /// a backup without a local archive, `Cancelled`, or an I/O error.
    /// Progress: `Started`, then `Extract` (archive bytes read of the
    /// archive's size, entries), then `Done`.
    pub fn verify_backup(
        &self,
        server: &str,
        backup: &str,
        ctl: &mut Control<'_>,
    ) -> Result<VerifyReport> {
        self.server_root(server)?;
        let backup = backup_uuid(backup)?;
        let (mut file, len) = self.store.open_archive(&backup)?;
        verify_open_file(&mut file, len, &self.store.index_path(&backup), ctl)
    }
}

fn verify_open_file(
    file: &mut std::fs::File,
    len: u64,
    index_path: &Path,
    ctl: &mut Control<'_>,
) -> Result<VerifyReport> {
    let (index, unreadable) = match Index::load(index_path) {
        Ok(index) => (index, None),
        Err(e) => (None, Some(e)),
    };
    ctl.report(Progress::at(Phase::Started))?;
    let mut report = index::verify_archive(file, len, index.as_ref(), ctl)?;
    if let Some(e) = unreadable {
        report.error_count += 1;
        report.ok = false;
        report.errors.insert(
            0,
            VerifyError {
                member: None,
                offset: None,
                path: None,
                message: e.message,
            },
        );
        report.errors.truncate(index::verify::MAX_ERRORS);
    }
    ctl.report_final(Progress::done(len, report.files).with_archive_bytes(len));
    Ok(report)
}

/// The entries directly under `dir` in the archive file `archive` (as
/// `Engine::list_files`): from the index beside it, else by reading the
/// archive once (and writing the index beside it when the directory lets).
pub fn archive_list(archive: &Path, dir: &str) -> Result<Vec<FileEntry>> {
    let dir = browse::normalize_dir(dir)?;
    let index = browse::index_of(archive, &mut Control::none())?;
    browse::list_dir(&index.entries, &dir)
}

/// Verifies the archive file `archive` (as `Engine::verify_backup`),
/// against the index beside it when there is one.
pub fn archive_verify(archive: &Path, ctl: &mut Control<'_>) -> Result<VerifyReport> {
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
    verify_open_file(&mut file, meta.len(), &index::path_for(archive), ctl)
}
