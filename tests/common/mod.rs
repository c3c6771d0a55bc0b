//! Helpers shared by the integration tests: temporary directories, trees,
//! snapshots to compare trees, a raw tar builder for hostile archives.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use wings_backup::config::EngineConfig;
use wings_backup::engine::{BackupDetails, Engine};
use wings_backup::progress::Control;
use wings_backup::request::{Adapter, CreateRequest, RestoreRequest};

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p =
            std::env::temp_dir().join(format!("wb-test-{tag}-{}", wings_backup::safe_fs::nonce()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chmod")
            .args(["-R", "u+rwx"])
            .arg(&self.0)
            .status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub const SERVER: &str = "8e2b6c52-7a3f-4e9b-9c1d-0f5a7b3c2d1e";
pub const BACKUP: &str = "0b7d3f52-1c2a-4d5e-8f90-a1b2c3d4e5f6";

/// An engine over fresh data and backup directories, with one server.
pub struct Node {
    pub dir: TempDir,
    pub engine: Engine,
}

impl Node {
    pub fn new() -> Node {
        Node::with(|_| {})
    }
    /// A node whose configuration `configure` changes.
    pub fn with(configure: impl FnOnce(&mut EngineConfig)) -> Node {
        let dir = TempDir::new("node");
        std::fs::create_dir_all(dir.join("data").join(SERVER)).unwrap();
        let engine = engine_on(&dir, configure);
        Node { dir, engine }
    }
    /// Another engine on the same directories, as after a restart.
    pub fn restart(&self) -> Engine {
        engine_on(&self.dir, |_| {})
    }
    pub fn root(&self) -> PathBuf {
        self.dir.join("data").join(SERVER)
    }
    pub fn backups(&self) -> PathBuf {
        self.dir.join("backups")
    }
    pub fn archive(&self, uuid: &str) -> PathBuf {
        self.backups().join(format!("{uuid}.tar.gz"))
    }
    pub fn create(&self, uuid: &str, ignore: &str) -> wings_backup::Result<BackupDetails> {
        self.engine
            .create_backup(SERVER, &create_request(uuid, ignore), &mut Control::none())
    }
    pub fn restore(&self, uuid: &str, truncate: bool) -> wings_backup::Result<()> {
        self.engine
            .restore_backup(SERVER, uuid, &local_restore(truncate), &mut Control::none())
            .map(|_| ())
    }
    /// Names in the backup directory, but the catalog's files.
    pub fn backup_dir_names(&self) -> Vec<String> {
        backup_names(&self.backups())
    }
}

fn engine_on(dir: &TempDir, configure: impl FnOnce(&mut EngineConfig)) -> Engine {
    let mut config = EngineConfig {
        data_directory: dir.join("data"),
        backup_directory: dir.join("backups"),
        ..EngineConfig::default()
    };
    configure(&mut config);
    Engine::new(config).unwrap()
}

/// A `wings` backup request.
pub fn create_request(uuid: &str, ignore: &str) -> CreateRequest {
    CreateRequest {
        adapter: Adapter::Wings,
        uuid: uuid.to_string(),
        ignore: ignore.to_string(),
        dry_run: false,
        reuse: true,
    }
}

/// A restore request of a local (`wings`) backup.
pub fn local_restore(truncate: bool) -> RestoreRequest {
    RestoreRequest {
        adapter: Adapter::Wings,
        truncate_directory: truncate,
        download_url: None,
        paths: Vec::new(),
    }
}

/// Paths of a summary (`changed`), as text.
pub fn lossy(paths: &[Vec<u8>]) -> Vec<String> {
    paths
        .iter()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect()
}

/// The sorted names in a directory (none if it does not exist).
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The sorted names in a backup directory, without the catalog's files
/// (`.wings-backup.db` and its companions), the directory of the `s3`
/// backups' indexes and that of the Panel reports (`.pending`).
pub fn backup_names(dir: &Path) -> Vec<String> {
    names(dir)
        .into_iter()
        .filter(|n| {
            !n.starts_with(wings_backup::catalog::DATABASE_NAME)
                && n != wings_backup::backup_store::S3_INDEX_DIR
                && n != wings_backup::panel::PENDING_DIR
        })
        .collect()
}

/// Removes everything inside `dir`, keeping `dir`.
pub fn empty_dir(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            std::fs::remove_dir_all(p).unwrap();
        } else {
            std::fs::remove_file(p).unwrap();
        }
    }
}

/// SHA-1 (hex) of an archive's tar stream, as real GNU gzip inflates it.
pub fn tar_sha1(archive: &Path) -> String {
    let out = std::process::Command::new("bash")
        .args(["-c", "set -o pipefail; gzip -dc \"$1\" | sha1sum", "-"])
        .arg(archive)
        .output()
        .unwrap();
    assert!(out.status.success(), "gzip -dc failed on {archive:?}");
    String::from_utf8(out.stdout).unwrap()[..40].to_string()
}

/// `len` bytes no compressor can shrink (xorshift64), from `seed`; every
/// seed gives different bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// What a test compares about each path of a tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node2 {
    File {
        mode: u32,
        mtime: i64,
        data: Vec<u8>,
    },
    Dir {
        mode: u32,
        mtime: i64,
    },
    Symlink {
        target: Vec<u8>,
    },
    Other,
}

/// Every path below `root` (relative, as bytes) with its type, mode, mtime
/// (seconds), contents or link target. Directory mtimes are included.
pub fn snapshot(root: &Path) -> BTreeMap<Vec<u8>, Node2> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<Vec<u8>, Node2>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .as_os_str()
            .as_bytes()
            .to_vec();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let ft = meta.file_type();
        let node = if ft.is_symlink() {
            Node2::Symlink {
                target: std::fs::read_link(&path)
                    .unwrap()
                    .as_os_str()
                    .as_bytes()
                    .to_vec(),
            }
        } else if ft.is_dir() {
            walk(root, &path, out);
            Node2::Dir {
                mode: meta.permissions().mode() & 0o7777,
                mtime: meta.mtime(),
            }
        } else if ft.is_file() {
            Node2::File {
                mode: meta.permissions().mode() & 0o7777,
                mtime: meta.mtime(),
                data: std::fs::read(&path).unwrap(),
            }
        } else {
            Node2::Other
        };
        out.insert(rel, node);
    }
}

pub fn set_mtime(path: &Path, secs: i64) {
    let status = std::process::Command::new("touch")
        .arg("-h")
        .arg("-d")
        .arg(format!("@{secs}"))
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

pub fn write_file(path: &Path, data: &[u8], mode: u32, mtime: i64) {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).unwrap();
    }
    std::fs::write(path, data).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    set_mtime(path, mtime);
}

/// A tree with what a game server holds: configs, a world, an empty
/// directory, a 0755 script, symlinks (relative, absolute, dangling), a long
/// name, odd characters and a binary blob.
pub fn build_game_tree(root: &Path) {
    write_file(
        &root.join("server.properties"),
        b"motd=hello\nmax-players=20\n",
        0o644,
        1_600_000_000,
    );
    write_file(
        &root.join("start.sh"),
        b"#!/bin/sh\nexec java -jar server.jar\n",
        0o755,
        1_600_000_100,
    );
    write_file(
        &root.join("libraries/x/unix_args.txt"),
        b"-Xmx2G\n",
        0o644,
        1_600_000_200,
    );
    std::os::unix::fs::symlink("libraries/x/unix_args.txt", root.join("unix_args.txt")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", root.join("abs_link")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", root.join("dangling")).unwrap();
    std::fs::create_dir_all(root.join("world/region")).unwrap();
    let blob: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    write_file(
        &root.join("world/region/r.0.0.mca"),
        &blob,
        0o600,
        1_600_000_300,
    );
    write_file(
        &root.join("world/level.dat"),
        &[0u8; 5000],
        0o640,
        1_600_000_400,
    );
    std::fs::create_dir_all(root.join("empty/nested_empty")).unwrap();
    let long = "l".repeat(120);
    write_file(
        &root.join(format!("deep/{long}/{long}/file.txt")),
        b"deep",
        0o644,
        1_600_000_500,
    );
    write_file(
        &root.join("name with spaces & ünïcödé.txt"),
        b"u",
        0o644,
        1_600_000_600,
    );
    write_file(
        &root.join(OsStr::from_bytes(b"line\nbreak")),
        b"n",
        0o644,
        1_600_000_700,
    );
    write_file(
        &root.join(OsStr::from_bytes(b"bad-\xff-utf8")),
        b"b",
        0o644,
        1_600_000_800,
    );
    std::fs::set_permissions(root.join("world"), std::fs::Permissions::from_mode(0o750)).unwrap();
    // Directory times last, after their contents exist.
    for (dir, t) in [
        ("empty/nested_empty", 1_500_000_000),
        ("empty", 1_500_000_100),
        ("world/region", 1_500_000_200),
        ("world", 1_500_000_300),
        ("libraries/x", 1_500_000_400),
        ("libraries", 1_500_000_500),
    ] {
        set_mtime(&root.join(dir), t);
    }
}

/// A raw tar stream builder that writes any name, type and size, valid or
/// not, for hostile-archive tests.
#[derive(Default)]
pub struct RawTar {
    pub bytes: Vec<u8>,
}

impl RawTar {
    pub fn entry(
        &mut self,
        name: &[u8],
        typeflag: u8,
        link: &[u8],
        mode: u32,
        data: &[u8],
    ) -> &mut Self {
        self.entry_with_size(name, typeflag, link, mode, data, data.len() as u64)
    }

    pub fn entry_with_size(
        &mut self,
        name: &[u8],
        typeflag: u8,
        link: &[u8],
        mode: u32,
        data: &[u8],
        claimed: u64,
    ) -> &mut Self {
        let mut h = [0u8; 512];
        h[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
        put_octal(&mut h[100..108], mode as u64);
        put_octal(&mut h[108..116], 0);
        put_octal(&mut h[116..124], 0);
        put_octal(&mut h[124..136], claimed);
        put_octal(&mut h[136..148], 1_600_000_000);
        h[156] = typeflag;
        h[157..157 + link.len().min(100)].copy_from_slice(&link[..link.len().min(100)]);
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| *b as u32).sum();
        put_octal(&mut h[148..155], sum as u64);
        h[155] = b' ';
        self.bytes.extend_from_slice(&h);
        self.bytes.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.bytes.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    /// A PAX extended header with the given records before the next entry.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let mut body = Vec::new();
        for (k, v) in records {
            let base = k.len() + v.len() + 3;
            let mut len = base + 1;
            while len != base + len.to_string().len() {
                len = base + len.to_string().len();
            }
            body.extend_from_slice(format!("{len} {k}=").as_bytes());
            body.extend_from_slice(v);
            body.push(b'\n');
        }
        self.entry(b"PaxHeaders/x", b'x', b"", 0o644, &body)
    }

    pub fn finish(&mut self) -> Vec<u8> {
        let mut v = self.bytes.clone();
        v.extend_from_slice(&[0u8; 1024]);
        v
    }
}

fn put_octal(field: &mut [u8], v: u64) {
    let s = format!("{:0width$o}", v, width = field.len() - 1);
    field[..s.len()].copy_from_slice(s.as_bytes());
    field[s.len()] = 0;
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn sha1_hex(data: &[u8]) -> String {
    use sha1::Digest;
    sha1::Sha1::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every path under `dir` (for "nothing was written outside" checks).
pub fn list_all(dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                v.extend(list_all(&p));
            }
            v.push(p);
        }
    }
    v.sort();
    v
}

/// A filesystem mounted for the length of a test (we run as root; where
/// mounting is not possible the constructor says so and returns `None`, and
/// the test is skipped), unmounted when dropped.
pub struct Mount(pub PathBuf);

impl Mount {
    /// A tmpfs at `dir` with mount `options` (e.g. `size=2m,mode=0755`).
    pub fn tmpfs(dir: &Path, options: &str) -> Option<Mount> {
        std::fs::create_dir_all(dir).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Mount(dir.to_path_buf())),
            Ok(o) => {
                eprintln!(
                    "SKIPPED: cannot mount a tmpfs here: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("SKIPPED: cannot run mount: {e}");
                None
            }
        }
    }

    /// A 64 MiB ext4 filesystem with 1 KiB blocks in the file `image`,
    /// mounted at `dir` through a loop device; `None` (the test skipped,
    /// saying why) where that is not possible.
    pub fn ext4(image: &Path, dir: &Path) -> Option<Mount> {
        std::fs::create_dir_all(dir).unwrap();
        let steps: [(&str, Vec<&OsStr>); 3] = [
            (
                "truncate",
                vec![OsStr::new("-s"), OsStr::new("64M"), image.as_os_str()],
            ),
            (
                "mkfs.ext4",
                vec![
                    OsStr::new("-q"),
                    OsStr::new("-b"),
                    OsStr::new("1024"),
                    image.as_os_str(),
                ],
            ),
            (
                "mount",
                vec![
                    OsStr::new("-o"),
                    OsStr::new("loop"),
                    image.as_os_str(),
                    dir.as_os_str(),
                ],
            ),
        ];
        for (cmd, args) in steps {
            match std::process::Command::new(cmd).args(&args).output() {
                Ok(o) if o.status.success() => {}
                Ok(o) => {
                    eprintln!(
                        "SKIPPED: cannot make an ext4 loop mount ({cmd}): {}",
                        String::from_utf8_lossy(&o.stderr).trim()
                    );
                    return None;
                }
                Err(e) => {
                    eprintln!("SKIPPED: cannot run {cmd}: {e}");
                    return None;
                }
            }
        }
        Some(Mount(dir.to_path_buf()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// `depth` directories named `name`, each in the one before, below `root`,
/// made one at a time (their path may be longer than the kernel resolves
/// in one call); returns the deepest, open.
pub fn deep_dirs(root: &Path, name: &str, depth: usize) -> std::os::fd::OwnedFd {
    use rustix::fs::{mkdirat, open, openat, Mode, OFlags};
    let dir_flags = OFlags::DIRECTORY | OFlags::CLOEXEC;
    let mut dir = open(root, dir_flags, Mode::empty()).unwrap();
    for _ in 0..depth {
        mkdirat(&dir, name, Mode::from_raw_mode(0o755)).unwrap();
        dir = openat(&dir, name, dir_flags, Mode::empty()).unwrap();
    }
    dir
}

/// `archive`, made by GNU tar of everything in `src` (`tar -czf ARCHIVE -C
/// SRC .`: one gzip member, `./` names).
pub fn gnu_tar_gz(src: &Path, archive: &Path) {
    let st = std::process::Command::new("tar")
        .arg("-czf")
        .arg(archive)
        .arg("-C")
        .arg(src)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success(), "tar -czf {}", archive.display());
}

/// The calling process's peak RSS (`VmHWM`), in KiB.
pub fn peak_rss_kib() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// Starts this binary's test `name` again as a child with `env` (which
/// selects its child part), its standard output piped.
pub fn spawn_test_child(name: &str, env: &[(&str, &std::ffi::OsStr)]) -> std::process::Child {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (key, value) in env {
        command.env(key, value);
    }
    command.spawn().expect("re-running the test binary")
}

/// Waits for `child` (killed after `secs`: `what` then names the work in
/// the failure), checks that it succeeded, and returns its standard output.
pub fn wait_test_child(mut child: std::process::Child, secs: u64, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} took over {secs} s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "child failed: {:?}", out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs this binary's test `name` again as a child with `env` and returns
/// the report line it prints after `wb-memory-child: `; `what` names the
/// work in a failure.
pub fn run_child(name: &str, env: &[(&str, &std::ffi::OsStr)], what: &str) -> String {
    let text = wait_test_child(spawn_test_child(name, env), 300, what);
    text.lines()
        .find_map(|l| l.split("wb-memory-child: ").nth(1))
        .unwrap_or_else(|| panic!("no report from the child: {text}"))
        .to_string()
}

/// The value of `key` (e.g. `vmhwm_kib=`) in a child's report line.
pub fn field(line: &str, key: &str) -> String {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {line}"))
        .to_string()
}
