//! The checks every fuzz input goes through. Shared by the libFuzzer targets
//! and by `tests/fuzz_regressions.rs`, which includes this file by path, so
//! it uses nothing but std and `wings_backup`.
//!
//! An input is restored as a `.tar.gz` into a scratch server root that sits
//! five directories deep inside a scratch directory, next to canary files and
//! an `outside` directory the root's own symlinks point at. Whatever the
//! bytes, the restore must not panic, must not change anything outside the
//! root (no new, changed or hard-linked file anywhere in the scratch
//! directory), must leave no staging directory behind, and:
//! * if it fails, with a status other than `Internal`, the root is exactly
//!   as it was (docs/api.md section 4, "nothing is lost on failure");
//! * if it succeeds, it wrote at most the disk limit, and the root holds
//!   only files, directories and symlinks, none setuid or setgid.
//!
//! Memory is bounded by the disk limit here and by libFuzzer's
//! `-rss_limit_mb` / `-malloc_limit_mb` in `scripts/fuzz.sh`.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use wings_backup::progress::Control;
use wings_backup::restore::restore_stream;
use wings_backup::restore::RestoreOptions;
use wings_backup::Status;

/// The restore's disk limit: small, so that a lying size or a gzip bomb
/// meets it quickly.
pub const DISK_LIMIT: u64 = 8 << 20;

/// Inflate workers of each restore (more than one, to exercise the
/// parallel path for the engine's own gzip members).
const THREADS: usize = 2;

/// Directories between the scratch directory and the root: a name that
/// climbs out of the root lands in one of them, where it is seen.
const DEPTH: [&str; 5] = ["a", "b", "c", "d", "e"];

/// What is compared about a path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    File {
        mode: u32,
        mtime: i64,
        nlink: u64,
        data: Vec<u8>,
    },
    Dir {
        mode: u32,
    },
    Symlink(Vec<u8>),
    Other(u32),
    Unreadable,
}

pub type Snapshot = BTreeMap<Vec<u8>, Item>;

/// Every path below `dir`, relative, except those under `skip` (an
/// absolute path). Directory mtimes are left out: creating and removing
/// the root changes its parent's.
pub fn snapshot(dir: &Path, skip: Option<&Path>) -> Snapshot {
    let mut out = Snapshot::new();
    walk(dir, dir, skip, &mut out);
    out
}

fn walk(base: &Path, dir: &Path, skip: Option<&Path>, out: &mut Snapshot) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        let rel = dir.strip_prefix(base).unwrap_or(dir);
        out.insert(rel.as_os_str().as_bytes().to_vec(), Item::Unreadable);
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if Some(path.as_path()) == skip {
            continue;
        }
        let rel = path
            .strip_prefix(base)
            .unwrap_or(&path)
            .as_os_str()
            .as_bytes()
            .to_vec();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            out.insert(rel, Item::Unreadable);
            continue;
        };
        let mode = meta.permissions().mode() & 0o7777;
        let ft = meta.file_type();
        let item = if ft.is_symlink() {
            Item::Symlink(
                std::fs::read_link(&path)
                    .map(|t| t.as_os_str().as_bytes().to_vec())
                    .unwrap_or_default(),
            )
        } else if ft.is_dir() {
            walk(base, &path, skip, out);
            Item::Dir { mode }
        } else if ft.is_file() {
            Item::File {
                mode,
                mtime: meta.mtime(),
                nlink: meta.nlink(),
                data: std::fs::read(&path).unwrap_or_default(),
            }
        } else {
            Item::Other(meta.mode())
        };
        out.insert(rel, item);
    }
}

/// Where the scratch directories go: `$WB_FUZZ_DIR`, else `/dev/shm` (a
/// tmpfs, so the restore's syncs cost nothing), else the temporary
/// directory. The same rule in the fuzzer and in `cargo test` keeps the
/// scratch paths (which the grammar uses as absolute names) the same length.
pub fn scratch_base() -> PathBuf {
    if let Some(dir) = std::env::var_os("WB_FUZZ_DIR") {
        return PathBuf::from(dir);
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() && writable(shm) {
        return shm.to_path_buf();
    }
    std::env::temp_dir()
}

fn writable(dir: &Path) -> bool {
    let probe = dir.join(format!(".wbfz-probe-{}", std::process::id()));
    let ok = std::fs::write(&probe, b"").is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}

/// A scratch directory with a server root deep inside it.
pub struct Scratch {
    pub dir: PathBuf,
    pub root: PathBuf,
    /// An absolute directory outside the root, with a secret in it.
    pub outside: PathBuf,
    expected_outside: Snapshot,
}

impl Scratch {
    pub fn new() -> Scratch {
        let base = scratch_base();
        std::fs::create_dir_all(&base).expect("creating the scratch base");
        // A fixed-length name (see `scratch_base`).
        let tag = wings_backup::safe_fs::nonce();
        let hash = tag.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
        let dir = base.join(format!("wbfz-{hash:016x}"));
        std::fs::create_dir_all(&dir).expect("creating the scratch directory");
        let outside = dir.join("outside");
        std::fs::create_dir_all(outside.join("sub")).unwrap();
        std::fs::write(outside.join("secret"), b"outside secret").unwrap();
        std::fs::write(dir.join("canary"), b"canary").unwrap();
        let mut parent = dir.clone();
        for d in DEPTH {
            parent = parent.join(d);
            std::fs::create_dir_all(&parent).unwrap();
            std::fs::write(parent.join("canary"), d.as_bytes()).unwrap();
        }
        let root = parent.join("root");
        let mut scratch = Scratch {
            dir,
            root,
            outside,
            expected_outside: Snapshot::new(),
        };
        scratch.reset();
        scratch.expected_outside = snapshot(&scratch.dir, Some(&scratch.root));
        scratch
    }

    /// Puts the root back to its starting content: two files, a
    /// directory, and three symlinks that point outside the root (relative,
    /// absolute, and relative one level down).
    pub fn reset(&self) {
        if self.root.exists() && std::fs::remove_dir_all(&self.root).is_err() {
            make_writable(&self.root);
            std::fs::remove_dir_all(&self.root).expect("removing the scratch root");
        }
        std::fs::create_dir_all(self.root.join("dir")).unwrap();
        std::fs::write(self.root.join("keep.txt"), b"old keep").unwrap();
        std::fs::write(self.root.join("dir/inner.txt"), b"old inner").unwrap();
        let up = "../".repeat(DEPTH.len()) + "outside";
        std::os::unix::fs::symlink(up, self.root.join("out")).unwrap();
        std::os::unix::fs::symlink(&self.outside, self.root.join("abs")).unwrap();
        let up = "../".repeat(DEPTH.len() + 2) + "outside";
        std::os::unix::fs::symlink(up, self.root.join("dir/nested_out")).unwrap();
    }

    /// Asserts that nothing outside the root changed.
    pub fn check_outside(&self, what: &str) {
        let now = snapshot(&self.dir, Some(&self.root));
        if now != self.expected_outside {
            let mut diff = Vec::new();
            for (k, v) in &now {
                if self.expected_outside.get(k) != Some(v) {
                    diff.push(format!("now {:?}: {v:?}", String::from_utf8_lossy(k)));
                }
            }
            for k in self.expected_outside.keys() {
                if !now.contains_key(k) {
                    diff.push(format!("gone {:?}", String::from_utf8_lossy(k)));
                }
            }
            panic!("{what}: something outside the server root changed: {diff:?}");
        }
    }

    /// Restores `archive` into a fresh root and checks everything (see the
    /// module comment). Returns the status of a failed restore.
    pub fn check_restore(&self, archive: &[u8], truncate: bool) -> Option<Status> {
        self.reset();
        let before = snapshot(&self.root, None);
        let root_fd =
            wings_backup::safe_fs::open_trusted_dir(&self.root).expect("opening the scratch root");
        let mut source: &[u8] = archive;
        let opts = RestoreOptions {
            truncate,
            owner: None,
            disk_limit: DISK_LIMIT,
            scope: None,
        };
        let result = restore_stream(
            &mut source,
            archive.len() as u64,
            root_fd,
            opts,
            THREADS,
            0,
            &mut Control::none(),
        );
        let what = match &result {
            Ok(_) => format!("restore (truncate={truncate}) succeeded"),
            Err(e) => format!("restore (truncate={truncate}) failed with {e}"),
        };
        self.check_outside(&what);
        let after = snapshot(&self.root, None);
        for path in after.keys() {
            assert!(
                !path.starts_with(b".wings-backup-restore-"),
                "{what}: it left {:?} in the root",
                String::from_utf8_lossy(path)
            );
        }
        match result {
            Ok(summary) => {
                assert!(
                    summary.bytes <= DISK_LIMIT,
                    "{what}: it wrote {} bytes, over the disk limit",
                    summary.bytes
                );
                for (path, item) in &after {
                    let name = String::from_utf8_lossy(path);
                    match item {
                        Item::File { mode, .. } | Item::Dir { mode } => assert!(
                            mode & 0o6000 == 0,
                            "{what}: {name:?} has mode {mode:o} (setuid/setgid kept)"
                        ),
                        Item::Symlink(_) => {}
                        Item::Other(mode) => {
                            panic!("{what}: {name:?} is a special file (mode {mode:o})")
                        }
                        Item::Unreadable => {}
                    }
                }
                None
            }
            Err(e) => {
                assert!(
                    e.status != Status::Internal && e.status != Status::Ok,
                    "{what}: unexpected status"
                );
                if after != before {
                    let mut diff = Vec::new();
                    for (k, v) in &after {
                        if before.get(k) != Some(v) {
                            diff.push(format!("now {:?}: {v:?}", String::from_utf8_lossy(k)));
                        }
                    }
                    for k in before.keys() {
                        if !after.contains_key(k) {
                            diff.push(format!("gone {:?}", String::from_utf8_lossy(k)));
                        }
                    }
                    panic!("{what}, and the server's files changed: {diff:?}");
                }
                Some(e.status)
            }
        }
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch::new()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::fs::remove_dir_all(&self.dir).is_err() {
            make_writable(&self.dir);
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Gives the owner rwx on every directory below `dir` (a restored
/// directory may have mode 0), so that it can be removed without root.
fn make_writable(dir: &Path) {
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                make_writable(&e.path());
            }
        }
    }
}
