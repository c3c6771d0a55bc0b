//! Selective restore (`paths` in the restore request): only the named
//! entries are restored, everything else of the server is left exactly as
//! it was (content, mtime, inode), with and without truncate; with the
//! archive's index only the members holding the selection are read.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use wings_backup::config::{CompressionLevel, EngineConfig};
use wings_backup::engine::Engine;
use wings_backup::index;
use wings_backup::progress::Control;
use wings_backup::request::{Adapter, RestoreRequest};
use wings_backup::restore::{restore_stream, RestoreOptions, RestoreSummary};
use wings_backup::selection::{plan, FileSource, MemberSource, Scope, SelectedArchive, Selection};
use wings_backup::Status;

/// A scratch directory on tmpfs when there is one (the big archive is
/// made and read at memory speed), removed when dropped.
fn scratch(tag: &str) -> TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        let p = shm.join(format!("wb-test-{tag}-{}", wings_backup::safe_fs::nonce()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    } else {
        TempDir::new(tag)
    }
}

fn engine_in(dir: &TempDir, level: CompressionLevel) -> Engine {
    std::fs::create_dir_all(dir.join("data").join(SERVER)).unwrap();
    Engine::new(EngineConfig {
        data_directory: dir.join("data"),
        backup_directory: dir.join("backups"),
        compression_level: level,
        ..EngineConfig::default()
    })
    .unwrap()
}

fn request(paths: &[&str], truncate: bool) -> RestoreRequest {
    RestoreRequest {
        paths: paths.iter().map(|p| p.to_string()).collect(),
        ..local_restore(truncate)
    }
}

fn restore(
    engine: &Engine,
    paths: &[&str],
    truncate: bool,
) -> wings_backup::Result<RestoreSummary> {
    engine.restore_backup(
        SERVER,
        BACKUP,
        &request(paths, truncate),
        &mut Control::none(),
    )
}

/// What "untouched" means for each non-directory below `root`: inode,
/// mtime (ns), mode, size and a hash of the contents (or link target).
type Files = BTreeMap<Vec<u8>, (u64, i64, u32, u64, u64)>;

fn files(root: &Path) -> Files {
    fn walk(root: &Path, dir: &Path, out: &mut Files) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                walk(root, &p, out);
                continue;
            }
            let rel = p
                .strip_prefix(root)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec();
            let hash = if m.file_type().is_symlink() {
                xxhash_rust::xxh3::xxh3_64(std::fs::read_link(&p).unwrap().as_os_str().as_bytes())
            } else {
                xxhash_rust::xxh3::xxh3_64(&std::fs::read(&p).unwrap())
            };
            out.insert(
                rel,
                (
                    m.ino(),
                    m.mtime() * 1_000_000_000 + m.mtime_nsec(),
                    m.mode(),
                    m.size(),
                    hash,
                ),
            );
        }
    }
    let mut out = Files::new();
    walk(root, root, &mut out);
    out
}

/// `files` without the paths at or under `prefix`.
fn outside(mut f: Files, prefix: &str) -> Files {
    let p = prefix.as_bytes();
    f.retain(|k, _| !(k == p || (k.starts_with(p) && k.get(p.len()) == Some(&b'/'))));
    f
}

/// `files` limited to the paths at or under `prefix`, without inode and
/// with `prefix` as it is (for comparing with what was backed up).
fn inside(f: &Files, prefix: &str) -> BTreeMap<Vec<u8>, (i64, u32, u64, u64)> {
    let p = prefix.as_bytes();
    f.iter()
        .filter(|(k, _)| *k == p || (k.starts_with(p) && k.get(p.len()) == Some(&b'/')))
        .map(|(k, v)| (k.clone(), (v.1, v.2, v.3, v.4)))
        .collect()
}

/// A member source that counts the archive bytes actually read from it.
struct Counting<S> {
    inner: S,
    read: Arc<AtomicU64>,
}

struct CountingReader {
    inner: Box<dyn Read + Send>,
    read: Arc<AtomicU64>,
}

impl Read for CountingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl<S: MemberSource> MemberSource for Counting<S> {
    fn open(&mut self, offset: u64, len: u64) -> wings_backup::Result<Box<dyn Read + Send>> {
        Ok(Box::new(CountingReader {
            inner: self.inner.open(offset, len)?,
            read: self.read.clone(),
        }))
    }
}

/// Restores `paths` of `archive` into `root` through its index and the
/// restore pipeline, as the engine does, counting the archive bytes read.
fn restore_counted(
    archive: &Path,
    root: &Path,
    paths: &[&str],
    truncate: bool,
) -> (wings_backup::Result<RestoreSummary>, u64) {
    let len = std::fs::metadata(archive).unwrap().len();
    let index = index::load_for(archive, len).expect("an index");
    let selection =
        Selection::parse(&paths.iter().map(|p| p.to_string()).collect::<Vec<_>>()).unwrap();
    let plan = plan(&index, &selection).unwrap();
    let read = Arc::new(AtomicU64::new(0));
    let source = Counting {
        inner: FileSource(std::fs::File::open(archive).unwrap()),
        read: read.clone(),
    };
    let mut stream = SelectedArchive::new(&index, &plan, source);
    let opts = RestoreOptions {
        truncate,
        scope: Some(Arc::new(Scope::new(selection, plan.link_sources.clone()))),
        ..Default::default()
    };
    let root_fd = wings_backup::safe_fs::open_trusted_dir(root).unwrap();
    let result = restore_stream(&mut stream, 0, root_fd, opts, 2, 0, &mut Control::none());
    (result, read.load(Ordering::Relaxed))
}

const TARGET: &str = "world/region/r.0.0.mca";

/// A server of about 1 GiB (16 files of 64 MiB of noise around a world
/// with a 1 MiB region file), backed up without compression.
fn big_scene(dir: &TempDir) -> (Engine, PathBuf, Vec<u8>) {
    let engine = engine_in(dir, CompressionLevel::None);
    let root = dir.join("data").join(SERVER);
    build_game_tree(&root);
    for i in 0..16u64 {
        let name = format!("{}/blob-{i:02}.bin", if i < 8 { "a-big" } else { "z-big" });
        write_file(
            &root.join(name),
            &noise(64 << 20, 100 + i),
            0o644,
            1_600_000_000,
        );
    }
    let target = noise(1 << 20, 7);
    write_file(&root.join(TARGET), &target, 0o640, 1_650_000_000);
    write_file(
        &root.join("world/region/r.0.1.mca"),
        &noise(300_000, 8),
        0o640,
        1_650_000_001,
    );
    engine
        .create_backup(SERVER, &create_request(BACKUP, ""), &mut Control::none())
        .unwrap();
    (engine, root, target)
}

#[test]
fn one_file_from_a_1gib_archive_reads_under_one_percent_and_touches_nothing_else() {
    let dir = scratch("sel-big");
    let (engine, root, target) = big_scene(&dir);
    let archive = dir.join("backups").join(format!("{BACKUP}.tar.gz"));
    let archive_len = std::fs::metadata(&archive).unwrap().len();
    assert!(
        archive_len > 1_000_000_000,
        "a 1 GiB archive: {archive_len}"
    );
    // The server changes after the backup: the target and its neighbour
    // are rewritten, a file appears beside them.
    write_file(&root.join(TARGET), b"damaged", 0o600, 1_700_000_000);
    write_file(
        &root.join("world/region/new.mca"),
        b"new",
        0o644,
        1_700_000_001,
    );
    write_file(&root.join("ops.json"), b"[changed]", 0o644, 1_700_000_002);
    let before = files(&root);

    for truncate in [false, true] {
        write_file(&root.join(TARGET), b"damaged", 0o600, 1_700_000_000);
        let before = files(&root);
        let (result, read) = restore_counted(&archive, &root, &[TARGET], truncate);
        let summary = result.unwrap();
        assert_eq!(summary.files, 1, "{summary:?}");
        assert!(
            read * 100 < archive_len,
            "truncate={truncate}: read {read} of {archive_len} bytes"
        );
        assert_eq!(std::fs::read(root.join(TARGET)).unwrap(), target);
        let m = std::fs::metadata(root.join(TARGET)).unwrap();
        assert_eq!((m.mode() & 0o7777, m.mtime()), (0o640, 1_650_000_000));
        let after = files(&root);
        assert_eq!(
            outside(after, TARGET),
            outside(before, TARGET),
            "truncate={truncate}"
        );
        eprintln!("read {read} of {archive_len} archive bytes (truncate={truncate})");
    }

    // Through the engine: with the index it takes milliseconds; without
    // it (the whole archive streamed) the result is the same.
    let mut times = Vec::new();
    for with_index in [true, false] {
        if !with_index {
            std::fs::rename(index::path_for(&archive), dir.join("index.aside")).unwrap();
        }
        write_file(&root.join(TARGET), b"damaged", 0o600, 1_700_000_000);
        let before = files(&root);
        let start = Instant::now();
        let summary = restore(&engine, &[TARGET], true).unwrap();
        times.push(start.elapsed());
        assert_eq!(summary.files, 1);
        assert_eq!(std::fs::read(root.join(TARGET)).unwrap(), target);
        assert_eq!(outside(files(&root), TARGET), outside(before, TARGET));
    }
    eprintln!(
        "engine: {:?} with the index, {:?} without",
        times[0], times[1]
    );
    assert!(times[0] < Duration::from_millis(500), "{:?}", times[0]);
    assert!(times[0] * 4 < times[1], "{times:?}");
    let _ = before;
}

/// A small server, backed up (best_speed), then changed.
struct Scene {
    dir: TempDir,
    engine: Engine,
    root: PathBuf,
    /// The server's files at the time of the backup.
    backed_up: Files,
}

fn scene(tag: &str) -> Scene {
    let dir = TempDir::new(tag);
    let engine = engine_in(&dir, CompressionLevel::BestSpeed);
    let root = dir.join("data").join(SERVER);
    build_game_tree(&root);
    write_file(
        &root.join("world/region/r.0.0.mca"),
        &noise(2 << 20, 3),
        0o640,
        1_600_000_000,
    );
    write_file(
        &root.join("world/data/raids.dat"),
        b"raids",
        0o644,
        1_600_000_001,
    );
    write_file(&root.join("plugins/a.jar"), b"jar a", 0o644, 1_600_000_002);
    write_file(
        &root.join("worlds.txt"),
        b"a sibling with a longer name",
        0o644,
        1_600_000_003,
    );
    let backed_up = files(&root);
    engine
        .create_backup(SERVER, &create_request(BACKUP, ""), &mut Control::none())
        .unwrap();
    // After the backup: changes inside and outside `world`.
    write_file(
        &root.join("world/region/r.0.0.mca"),
        b"corrupted",
        0o600,
        1_700_000_000,
    );
    write_file(
        &root.join("world/new.txt"),
        b"made later",
        0o644,
        1_700_000_001,
    );
    std::fs::remove_file(root.join("world/data/raids.dat")).unwrap();
    write_file(&root.join("plugins/b.jar"), b"jar b", 0o644, 1_700_000_002);
    write_file(&root.join("worlds.txt"), b"changed", 0o644, 1_700_000_003);
    Scene {
        dir,
        engine,
        root,
        backed_up,
    }
}

impl Scene {
    fn archive(&self) -> PathBuf {
        self.dir.join("backups").join(format!("{BACKUP}.tar.gz"))
    }
    fn drop_index(&self) {
        std::fs::remove_file(index::path_for(&self.archive())).unwrap();
    }
}

fn directory_selection(with_index: bool) {
    let s = scene("sel-dir");
    if !with_index {
        s.drop_index();
    }
    // Truncate: `world` becomes what the backup held, and only `world`.
    let before = files(&s.root);
    restore(&s.engine, &["/world/"], true).unwrap();
    let after = files(&s.root);
    assert_eq!(inside(&after, "world"), inside(&s.backed_up, "world"));
    assert!(!s.root.join("world/new.txt").exists());
    assert_eq!(outside(after, "world"), outside(before, "world"));
    assert_eq!(
        std::fs::read(s.root.join("worlds.txt")).unwrap(),
        b"changed"
    );
    assert!(s.root.join("plugins/b.jar").exists());

    // Merge: the backup's files come back, a file it does not hold stays.
    write_file(
        &s.root.join("world/new.txt"),
        b"made later",
        0o644,
        1_700_000_001,
    );
    std::fs::remove_file(s.root.join("world/data/raids.dat")).unwrap();
    write_file(
        &s.root.join("world/level.dat"),
        b"changed",
        0o644,
        1_700_000_004,
    );
    let before = files(&s.root);
    restore(&s.engine, &["world"], false).unwrap();
    let after = files(&s.root);
    assert_eq!(
        std::fs::read(s.root.join("world/new.txt")).unwrap(),
        b"made later"
    );
    let mut want = inside(&s.backed_up, "world");
    want.extend(inside(&before, "world/new.txt"));
    assert_eq!(inside(&after, "world"), want);
    assert_eq!(outside(after, "world"), outside(before, "world"));
}

#[test]
fn a_directory_selection_restores_its_subtree_and_truncates_only_inside() {
    directory_selection(true);
}

#[test]
fn without_an_index_a_directory_selection_gives_the_same_result() {
    directory_selection(false);
}

#[test]
fn several_paths_and_a_file_in_a_selected_directory() {
    let s = scene("sel-many");
    let before = files(&s.root);
    let summary = restore(
        &s.engine,
        &[
            "world/region/r.0.0.mca",
            "server.properties",
            "world/region",
        ],
        true,
    )
    .unwrap();
    assert_eq!(summary.files, 2, "{summary:?}");
    let after = files(&s.root);
    assert_eq!(
        inside(&after, "world/region"),
        inside(&s.backed_up, "world/region")
    );
    let rest = outside(outside(after, "world/region"), "server.properties");
    assert_eq!(
        rest,
        outside(outside(before, "world/region"), "server.properties")
    );
}

fn refused(with_index: bool) {
    let s = scene("sel-refused");
    if !with_index {
        s.drop_index();
    }
    let before = files(&s.root);
    for truncate in [false, true] {
        // Not in the backup: 404, nothing touched (also when another path is).
        for paths in [
            &["nope.txt"][..],
            &["world", "world2/x"],
            &["/etc"],
            &["/etc/passwd"],
        ] {
            let err = restore(&s.engine, paths, truncate).unwrap_err();
            assert_eq!(err.status, Status::NotFound, "{paths:?}: {err}");
            assert_eq!(err.status.http_status(), 404);
            assert_eq!(files(&s.root), before, "{paths:?}");
        }
        // Hostile or empty names: refused as invalid.
        for paths in [&["../x"][..], &["world/../../x"], &["a\0b"], &["/"], &["."]] {
            let err = restore(&s.engine, paths, truncate).unwrap_err();
            assert_eq!(err.status, Status::InvalidArgument, "{paths:?}: {err}");
            assert_eq!(files(&s.root), before, "{paths:?}");
        }
    }
    let names: Vec<String> = std::fs::read_dir(&s.root)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.starts_with(".wings-backup")),
        "{names:?}"
    );
}

#[test]
fn a_path_not_in_the_backup_or_a_hostile_one_is_refused_before_anything_changes() {
    refused(true);
}

#[test]
fn without_an_index_a_missing_path_is_refused_before_anything_changes() {
    refused(false);
}

#[test]
fn the_request_body_takes_paths_and_checks_them() {
    use wings_backup::ffi::wire::restore_request;
    let r = restore_request(r#"{"adapter":"wings","paths":["world/","ops.json"]}"#).unwrap();
    assert_eq!(r.paths, vec!["world/", "ops.json"]);
    let r = restore_request(r#"{"adapter":"wings","paths":[]}"#).unwrap();
    assert!(r.paths.is_empty());
    let r = restore_request(r#"{"adapter":"wings"}"#).unwrap();
    assert!(r.paths.is_empty());
    for bad in [
        r#"{"adapter":"wings","paths":"world"}"#,
        r#"{"adapter":"wings","paths":[1]}"#,
        r#"{"adapter":"wings","paths":["../x"]}"#,
        r#"{"adapter":"wings","paths":["a/../.."]}"#,
    ] {
        let err = restore_request(bad).unwrap_err();
        assert_eq!(err.status, Status::InvalidArgument, "{bad}");
    }
}

fn corrupt_member(truncate: bool) {
    let s = scene("sel-corrupt");
    let archive = s.archive();
    let len = std::fs::metadata(&archive).unwrap().len();
    let index = index::load_for(&archive, len).unwrap();
    let entry = index
        .entries
        .iter()
        .find(|e| e.path == b"world/region/r.0.0.mca")
        .unwrap();
    // One byte flipped in the middle of a member holding the file: same
    // length, so the index still names this archive.
    let start = index.tar_offset(entry) + entry.header_len as u64 + 4096;
    let m = index.members[index.members_for(start, start + 1).start];
    let mut bytes = std::fs::read(&archive).unwrap();
    let at = (m.offset + m.compressed / 2) as usize;
    bytes[at] ^= 0x40;
    std::fs::write(&archive, &bytes).unwrap();
    let before = files(&s.root);
    let err = restore(&s.engine, &["world/region"], truncate).unwrap_err();
    assert_eq!(err.status, Status::CorruptArchive, "{err}");
    assert!(err.message.contains("does not match its index"), "{err}");
    assert_eq!(files(&s.root), before);
    // A selection whose members are whole is still restored.
    let damaged = index.members_for(start, start + 1).start;
    let elsewhere = index
        .entries
        .iter()
        .find(|e| {
            let a = index.tar_offset(e);
            // (A path a request can name: valid UTF-8.)
            e.kind == index::EntryKind::File
                && std::str::from_utf8(&e.path).is_ok()
                && !index.members_for(a, a + e.tar_len()).contains(&damaged)
        })
        .expect("a file in other members");
    let name = String::from_utf8(elsewhere.path.clone()).unwrap();
    restore(&s.engine, &[&name], truncate).unwrap();
}

#[test]
fn a_damaged_member_under_the_selection_fails_without_changing_anything() {
    corrupt_member(false);
    corrupt_member(true);
}

/// An archive made elsewhere (GNU tar's stream, gzipped as one member or
/// as one member per 64 KiB, with no header of this engine's), indexed by a
/// browse: a selection from it is restored all the same, the rest of the
/// server left alone.
fn foreign_archive(multi: bool) {
    let dir = TempDir::new("sel-foreign");
    let engine = engine_in(&dir, CompressionLevel::BestSpeed);
    let root = dir.join("data").join(SERVER);
    let src = dir.join("src");
    build_game_tree(&src);
    let tar = std::process::Command::new("tar")
        .arg("-cf")
        .arg("-")
        .arg("-C")
        .arg(&src)
        .arg(".")
        .output()
        .unwrap();
    assert!(tar.status.success());
    let piece = if multi { 64 << 10 } else { tar.stdout.len() };
    let mut gz = Vec::new();
    for chunk in tar.stdout.chunks(piece) {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut e, chunk).unwrap();
        gz.extend(e.finish().unwrap());
    }
    std::fs::create_dir_all(dir.join("backups")).unwrap();
    let archive = dir.join("backups").join(format!("{BACKUP}.tar.gz"));
    std::fs::write(&archive, &gz).unwrap();
    write_file(
        &root.join("world/level.dat"),
        b"changed",
        0o644,
        1_700_000_000,
    );
    write_file(
        &root.join("kept.txt"),
        b"not in the backup",
        0o644,
        1_700_000_001,
    );

    let listed = engine.list_files(SERVER, BACKUP, "world").unwrap();
    assert!(listed.iter().any(|e| e.name == b"level.dat"), "{listed:?}");
    let index = index::load_for(&archive, gz.len() as u64).expect("the browse wrote an index");
    assert_eq!(
        index.members.len() > 1,
        multi,
        "{} members",
        index.members.len()
    );

    let before = files(&root);
    restore(&engine, &["world"], false).unwrap();
    let after = files(&root);
    assert_eq!(inside(&after, "world"), inside(&files(&src), "world"));
    assert_eq!(outside(after, "world"), outside(before, "world"));
}

#[test]
fn a_selection_from_an_archive_made_elsewhere_and_browsed_is_restored() {
    foreign_archive(false);
    foreign_archive(true);
}

#[test]
fn an_index_with_an_impossible_size_is_not_used() {
    // An entry whose size the index gives as nearly 2^64 (its ranges would
    // wrap around): the index is not believed, and the selection is read
    // from the whole archive.
    let s = scene("sel-forged-size");
    let archive = s.archive();
    let len = std::fs::metadata(&archive).unwrap().len();
    let mut index = index::load_for(&archive, len).unwrap();
    let i = index
        .entries
        .iter()
        .position(|e| e.path == b"world/level.dat")
        .unwrap();
    index.entries[i].size = u64::MAX - 1023;
    index::browse::write_beside(&index, &archive).unwrap();
    assert!(index::load_for(&archive, len).is_none());
    restore(&s.engine, &["world/level.dat"], false).unwrap();
    assert_eq!(
        inside(&files(&s.root), "world/level.dat"),
        inside(&s.backed_up, "world/level.dat")
    );
}

fn hard_link_out_of_selection(with_index: bool) {
    let dir = TempDir::new("sel-link");
    let engine = engine_in(&dir, CompressionLevel::BestSpeed);
    let root = dir.join("data").join(SERVER);
    write_file(
        &root.join("a/file.txt"),
        b"shared data",
        0o644,
        1_600_000_000,
    );
    std::fs::create_dir_all(root.join("b")).unwrap();
    std::fs::hard_link(root.join("a/file.txt"), root.join("b/link.txt")).unwrap();
    std::fs::hard_link(root.join("a/file.txt"), root.join("b/link2.txt")).unwrap();
    write_file(&root.join("b/own.txt"), b"own", 0o644, 1_600_000_001);
    engine
        .create_backup(SERVER, &create_request(BACKUP, ""), &mut Control::none())
        .unwrap();
    if !with_index {
        std::fs::remove_file(index::path_for(
            &dir.join("backups").join(format!("{BACKUP}.tar.gz")),
        ))
        .unwrap();
    }
    // The server's `a/file.txt` changed since; `b` is gone.
    std::fs::remove_dir_all(root.join("b")).unwrap();
    std::fs::remove_file(root.join("a/file.txt")).unwrap();
    write_file(
        &root.join("a/file.txt"),
        b"changed since",
        0o644,
        1_700_000_000,
    );
    let before = files(&root);
    restore(&engine, &["b"], true).unwrap();
    // The links are files with the backed-up data, linked to each other
    // and not to the server's `a/file.txt`, which is untouched.
    assert_eq!(
        std::fs::read(root.join("b/link.txt")).unwrap(),
        b"shared data"
    );
    let l1 = std::fs::metadata(root.join("b/link.txt")).unwrap();
    let l2 = std::fs::metadata(root.join("b/link2.txt")).unwrap();
    assert_eq!(l1.ino(), l2.ino());
    assert_eq!(l1.nlink(), 2);
    assert_eq!(std::fs::read(root.join("b/own.txt")).unwrap(), b"own");
    assert_eq!(outside(files(&root), "b"), before);
    assert_eq!(
        std::fs::read(root.join("a/file.txt")).unwrap(),
        b"changed since"
    );
}

#[test]
fn a_hard_link_whose_target_is_outside_the_selection_becomes_a_copy() {
    hard_link_out_of_selection(true);
}

#[test]
fn without_an_index_a_hard_link_out_of_the_selection_gives_the_same_result() {
    hard_link_out_of_selection(false);
}

#[test]
fn a_selection_on_s3_is_refused_like_a_local_one() {
    // The adapter does not change the validation.
    let r = RestoreRequest {
        adapter: Adapter::S3,
        download_url: Some("https://example.com/x.tar.gz".into()),
        ..request(&["../x"], false)
    };
    let s = scene("sel-s3-check");
    let err = s.engine.check_restore(SERVER, BACKUP, &r).unwrap_err();
    assert_eq!(err.status, Status::InvalidArgument);
}

// --- s3: the members through HTTP Range requests on the download URL ---

#[path = "support/panel_stub.rs"]
mod panel_stub;

/// A proxy in front of moto that counts the bytes it serves and records
/// the `Range` header of each request; with `ignore_ranges` it drops that
/// header, so moto answers 200 with the whole object (a server that does
/// not honour ranges). One request per connection.
struct Proxy {
    addr: std::net::SocketAddr,
    served: Arc<AtomicU64>,
    ranges: Arc<std::sync::Mutex<Vec<Option<String>>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn proxy(upstream: String, ignore_ranges: bool) -> Proxy {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let p = Proxy {
        addr: listener.local_addr().unwrap(),
        served: Arc::new(AtomicU64::new(0)),
        ranges: Default::default(),
        stop: Default::default(),
    };
    let (served, ranges, stop) = (p.served.clone(), p.ranges.clone(), p.stop.clone());
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(300);
        let mut conns = 0;
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline && conns < 10_000 {
            let (mut client, _) = match listener.accept() {
                Ok(c) => c,
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
            };
            conns += 1;
            let (served, ranges, upstream) = (served.clone(), ranges.clone(), upstream.clone());
            std::thread::spawn(move || {
                client.set_nonblocking(false).unwrap();
                client
                    .set_read_timeout(Some(Duration::from_secs(30)))
                    .unwrap();
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 64 << 10 {
                    if client.read(&mut byte).unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let text = String::from_utf8_lossy(&head).into_owned();
                let mut out = String::new();
                let mut range = None;
                for line in text.split("\r\n").filter(|l| !l.is_empty()) {
                    let lower = line.to_ascii_lowercase();
                    if lower.starts_with("range:") {
                        range = Some(line[6..].trim().to_string());
                        if ignore_ranges {
                            continue;
                        }
                    }
                    if lower.starts_with("connection:") {
                        continue;
                    }
                    out.push_str(line);
                    out.push_str("\r\n");
                }
                out.push_str("Connection: close\r\n\r\n");
                ranges.lock().unwrap().push(range);
                let mut up = std::net::TcpStream::connect(&upstream).unwrap();
                up.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                up.write_all(out.as_bytes()).unwrap();
                let mut buf = vec![0u8; 64 << 10];
                for _ in 0..1_000_000 {
                    let n = up.read(&mut buf).unwrap_or(0);
                    if n == 0 || client.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    served.fetch_add(n as u64, Ordering::Relaxed);
                }
            });
        }
    });
    p
}

/// An s3 backup: the archive (of `big_scene`, made locally, then uploaded)
/// in the bucket, its index alone in the backup directory.
fn s3_scene(stub: &panel_stub::Stub, dir: &TempDir) -> (Engine, PathBuf, Vec<u8>, String, u64) {
    let engine = engine_in(dir, CompressionLevel::None);
    let root = dir.join("data").join(SERVER);
    build_game_tree(&root);
    for i in 0..4u64 {
        write_file(
            &root.join(format!("big/blob-{i}.bin")),
            &noise(64 << 20, 200 + i),
            0o644,
            1_600_000_000,
        );
    }
    let target = noise(1 << 20, 9);
    write_file(&root.join(TARGET), &target, 0o640, 1_650_000_000);
    engine
        .create_backup(SERVER, &create_request(BACKUP, ""), &mut Control::none())
        .unwrap();
    let archive = dir.join("backups").join(format!("{BACKUP}.tar.gz"));
    let bytes = std::fs::read(&archive).unwrap();
    std::fs::remove_file(&archive).unwrap();
    // Where an s3 backup keeps its index (its archive is only in the bucket).
    let s3_indexes = dir.join("backups").join(".s3-indexes");
    std::fs::create_dir_all(&s3_indexes).unwrap();
    std::fs::rename(
        wings_backup::index::path_for(&archive),
        s3_indexes.join(format!("{BACKUP}.tar.gz.index")),
    )
    .unwrap();
    let key = format!("sel/{BACKUP}.tar.gz");
    stub.put(&key, &bytes);
    let url = stub.get(&format!("/_test/presign?key={key}"))["url"]
        .as_str()
        .unwrap()
        .to_string();
    drop(engine);
    // Allowed to download from 127.0.0.1 (the proxy).
    let engine = Engine::new(EngineConfig {
        data_directory: dir.join("data"),
        backup_directory: dir.join("backups"),
        restore_host_allowlist: vec![wings_backup::config::AllowEntry::parse("127.0.0.1").unwrap()],
        ..EngineConfig::default()
    })
    .unwrap();
    (engine, root, target, url, bytes.len() as u64)
}

/// `url` with its authority replaced by the proxy's.
fn through(url: &str, proxy: &Proxy) -> (String, String) {
    let rest = url.strip_prefix("http://").unwrap();
    let slash = rest.find('/').unwrap();
    (
        format!("http://{}{}", proxy.addr, &rest[slash..]),
        rest[..slash].to_string(),
    )
}

fn s3_request(url: &str, paths: &[&str], truncate: bool) -> RestoreRequest {
    RestoreRequest {
        adapter: Adapter::S3,
        download_url: Some(url.to_string()),
        ..request(paths, truncate)
    }
}

#[test]
fn s3_one_file_through_range_requests_and_the_fallback_when_ranges_are_ignored() {
    let stub = panel_stub::Stub::start();
    let dir = scratch("sel-s3");
    let (engine, root, target, url, archive_len) = s3_scene(&stub, &dir);
    let upstream = url.strip_prefix("http://").unwrap();
    let upstream = upstream[..upstream.find('/').unwrap()].to_string();

    for truncate in [false, true] {
        let ranged = proxy(upstream.clone(), false);
        let (proxied, _) = through(&url, &ranged);
        write_file(&root.join(TARGET), b"damaged", 0o600, 1_700_000_000);
        let before = files(&root);
        let start = Instant::now();
        let summary = engine
            .restore_backup(
                SERVER,
                BACKUP,
                &s3_request(&proxied, &[TARGET], truncate),
                &mut Control::none(),
            )
            .unwrap();
        let took = start.elapsed();
        assert_eq!(summary.files, 1);
        assert_eq!(std::fs::read(root.join(TARGET)).unwrap(), target);
        assert_eq!(outside(files(&root), TARGET), outside(before, TARGET));
        let served = ranged.served.load(Ordering::Relaxed);
        let ranges = ranged.ranges.lock().unwrap().clone();
        eprintln!("s3 (truncate={truncate}): {served} of {archive_len} bytes served in {took:?}, ranges {ranges:?}");
        assert!(
            served * 100 < archive_len,
            "served {served} of {archive_len}"
        );
        assert!(
            !ranges.is_empty() && ranges.iter().all(|r| r.is_some()),
            "{ranges:?}"
        );
    }

    // A server that ignores ranges (200, the whole object): the object is
    // streamed and the selection restored all the same.
    let whole = proxy(upstream.clone(), true);
    let (proxied, _) = through(&url, &whole);
    write_file(&root.join(TARGET), b"damaged", 0o600, 1_700_000_000);
    let before = files(&root);
    engine
        .restore_backup(
            SERVER,
            BACKUP,
            &s3_request(&proxied, &[TARGET], true),
            &mut Control::none(),
        )
        .unwrap();
    assert_eq!(std::fs::read(root.join(TARGET)).unwrap(), target);
    assert_eq!(outside(files(&root), TARGET), outside(before, TARGET));
    let served = whole.served.load(Ordering::Relaxed);
    assert!(
        served >= archive_len,
        "the whole object: {served} of {archive_len}"
    );

    // A path the backup does not hold: 404 from the local index, nothing
    // downloaded.
    let counted = proxy(upstream, false);
    let (proxied, _) = through(&url, &counted);
    let before = files(&root);
    let err = engine
        .restore_backup(
            SERVER,
            BACKUP,
            &s3_request(&proxied, &["nope"], true),
            &mut Control::none(),
        )
        .unwrap_err();
    assert_eq!(err.status, Status::NotFound);
    assert_eq!(files(&root), before);
    assert_eq!(counted.served.load(Ordering::Relaxed), 0);
}

#[test]
fn archive_extract_takes_paths_too() {
    use wings_backup::engine::{archive_create, archive_extract, ArchiveOptions};
    let dir = TempDir::new("sel-extract");
    let src = dir.join("src");
    build_game_tree(&src);
    write_file(
        &src.join("world/region/r.0.0.mca"),
        &noise(3 << 20, 4),
        0o640,
        1_600_000_000,
    );
    let archive = dir.join("a.tar.gz");
    archive_create(
        &src,
        &archive,
        &ArchiveOptions::default(),
        &mut Control::none(),
    )
    .unwrap();
    let dest = dir.join("dest");
    write_file(&dest.join("world/mine.txt"), b"mine", 0o644, 1_700_000_000);
    write_file(&dest.join("keep.txt"), b"keep", 0o644, 1_700_000_000);
    let before = files(&dest);
    let opts = ArchiveOptions {
        paths: vec!["world/region".into()],
        truncate: true,
        ..ArchiveOptions::default()
    };
    let summary = archive_extract(&archive, &dest, &opts, &mut Control::none()).unwrap();
    assert_eq!(summary.files, 1);
    let after = files(&dest);
    assert_eq!(
        inside(&after, "world/region"),
        inside(&files(&src), "world/region")
    );
    assert_eq!(outside(after, "world/region"), before);
    let missing = ArchiveOptions {
        paths: vec!["nope".into()],
        ..ArchiveOptions::default()
    };
    let err = archive_extract(&archive, &dest, &missing, &mut Control::none()).unwrap_err();
    assert_eq!(err.status, Status::NotFound);
}

/// A named path below the archive's own symlink, or below one of its files,
/// is refused as a whole restore refuses it (the symlink as unsafe, the file
/// as a corrupt archive), with the index or without, and nothing changes;
/// a path beside them is restored.
#[test]
fn a_path_below_a_symlink_or_a_file_of_the_archive_is_refused_as_in_a_whole_restore() {
    let dir = TempDir::new("sel-below-link");
    let engine = engine_in(&dir, CompressionLevel::BestSpeed);
    let root = dir.join("data").join(SERVER);
    write_file(
        &root.join("world/level.dat"),
        b"level",
        0o644,
        1_700_000_000,
    );
    let mut t = RawTar::default();
    t.entry(b"ok.txt", b'0', b"", 0o644, b"fine");
    t.entry(b"ln", b'2', b"world", 0o777, b"");
    t.entry(b"ln/pwn.txt", b'0', b"", 0o644, b"through the link");
    t.entry(b"f.txt", b'0', b"", 0o644, b"a file");
    t.entry(b"f.txt/x", b'0', b"", 0o644, b"below a file");
    let archive = raw_backup(&dir, t);
    let whole = restore(&engine, &[], false).unwrap_err();
    assert_eq!(whole.status, Status::UnsafeEntry, "{whole}");
    for with_index in [false, true] {
        if with_index {
            engine.list_files(SERVER, BACKUP, "").unwrap();
            assert!(index::path_for(&archive).exists());
        }
        let before = files(&root);
        for truncate in [false, true] {
            let what = format!("index={with_index} truncate={truncate}");
            let err = restore(&engine, &["ln/pwn.txt"], truncate).unwrap_err();
            assert_eq!(err.status, Status::UnsafeEntry, "{what}: {err}");
            assert!(err.message.contains("ln/pwn.txt"), "{what}: {err}");
            let err = restore(&engine, &["ok.txt", "f.txt/x"], truncate).unwrap_err();
            assert_eq!(err.status, Status::CorruptArchive, "{what}: {err}");
            assert!(err.message.contains("f.txt/x"), "{what}: {err}");
            assert_eq!(files(&root), before, "{what}");
        }
        restore(&engine, &["ok.txt"], false).unwrap();
        assert_eq!(std::fs::read(root.join("ok.txt")).unwrap(), b"fine");
        std::fs::remove_file(root.join("ok.txt")).unwrap();
    }
    assert!(!root.join("ln").exists() && !root.join("f.txt").exists());
}

/// A path that names only a device node of the archive (which no restore
/// writes and no index lists) is not in the backup: 404 with the index and
/// without it, alike.
#[test]
fn a_path_naming_a_device_node_is_not_in_the_backup_with_the_index_or_without() {
    let dir = TempDir::new("sel-device");
    let engine = engine_in(&dir, CompressionLevel::BestSpeed);
    let mut t = RawTar::default();
    t.entry(b"ok.txt", b'0', b"", 0o644, b"fine");
    t.entry(b"tty0", b'3', b"", 0o600, b"");
    let archive = raw_backup(&dir, t);
    for with_index in [false, true] {
        if with_index {
            engine.list_files(SERVER, BACKUP, "").unwrap();
            assert!(index::path_for(&archive).exists());
        }
        let err = restore(&engine, &["tty0"], false).unwrap_err();
        assert_eq!(err.status, Status::NotFound, "index={with_index}: {err}");
    }
}

/// `t`, gzipped, as the backup `BACKUP` of the node in `dir`.
fn raw_backup(dir: &TempDir, mut t: RawTar) -> PathBuf {
    std::fs::create_dir_all(dir.join("backups")).unwrap();
    let archive = dir.join("backups").join(format!("{BACKUP}.tar.gz"));
    std::fs::write(&archive, gzip(&t.finish())).unwrap();
    archive
}
