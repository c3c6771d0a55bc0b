//! Faults (docs/api.md sections 4 and 9): the disk filling up during a backup
//! or a restore, and the process being killed (SIGKILL) in the middle of a
//! backup or a restore, then an engine started again on the same
//! directories.
//!
//! A killed process is this test binary run again as a child (selected with
//! `WB_FAULT_CHILD`), which starts an engine and runs one operation slowed
//! down by `write_limit`; the test kills it at a random moment (the seed is
//! printed; `WB_FAULT_SEED` replays it) or at a chosen event. Disk-full
//! tests mount a small tmpfs (we run as root), and are skipped with a note
//! where mounting is not permitted.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::*;
use wings_backup::config::EngineConfig;
use wings_backup::engine::Engine;
use wings_backup::progress::Control;
use wings_backup::Status;

fn child_mode() -> Option<String> {
    std::env::var("WB_FAULT_CHILD").ok()
}

fn engine_config(data: &Path, backups: &Path) -> EngineConfig {
    EngineConfig {
        data_directory: data.to_path_buf(),
        backup_directory: backups.to_path_buf(),
        ..EngineConfig::default()
    }
}

/// A small random number generator for kill times, seeded from the clock
/// or `WB_FAULT_SEED`.
struct Rng(u64);

impl Rng {
    fn new(what: &str) -> Rng {
        let seed = std::env::var("WB_FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("{what}: WB_FAULT_SEED={seed}");
        Rng(seed | 1)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn a_full_disk_during_a_backup_is_a_quota_error_and_leaves_nothing() {
    let node = Node::with(|c| c.threads = 1);
    for i in 0..4 {
        write_file(
            &node.root().join(format!("world/region-{i}.mca")),
            &noise(2 << 20, i),
            0o644,
            1_600_000_000,
        );
    }
    write_file(
        &node.root().join("server.properties"),
        b"motd=x\n",
        0o644,
        1,
    );
    // Declared after `node`, so unmounted before its directory goes.
    let Some(_mount) = Mount::tmpfs(&node.backups(), "size=2m,mode=0755") else {
        return;
    };
    let err = node.create(BACKUP, "").unwrap_err();
    assert_eq!(err.status, Status::Quota, "{err}");
    assert!(err.message.contains("disk space"), "{err}");
    assert_eq!(backup_names(&node.backups()), Vec::<String>::new());

    // The engine is fine afterwards: a backup that fits succeeds.
    std::fs::remove_dir_all(node.root().join("world")).unwrap();
    node.create(BACKUP, "").unwrap();
    assert_eq!(
        backup_names(&node.backups()),
        vec![format!("{BACKUP}.tar.gz"), format!("{BACKUP}.tar.gz.index")]
    );
}

#[test]
fn a_full_disk_during_a_restore_is_a_quota_error_and_keeps_every_file() {
    let node = Node::new();
    let Some(_mount) = Mount::tmpfs(&node.root(), "size=6m,mode=0755") else {
        return;
    };
    write_file(&node.root().join("new/a.bin"), &noise(3 << 20, 1), 0o644, 1);
    node.create(BACKUP, "").unwrap();
    std::fs::remove_dir_all(node.root().join("new")).unwrap();
    // 3.5 MiB of the server's own files and 3 MiB to stage do not fit in 6.
    write_file(&node.root().join("old/b.bin"), &noise(7 << 19, 2), 0o644, 1);
    write_file(&node.root().join("config.yml"), b"old", 0o600, 2);
    let before = snapshot(&node.root());
    for truncate in [true, false] {
        let err = node.restore(BACKUP, truncate).unwrap_err();
        assert_eq!(err.status, Status::Quota, "truncate={truncate}: {err}");
        assert_eq!(snapshot(&node.root()), before, "truncate={truncate}");
    }
}

/// Runs this test binary's test `name` as a child with `env` set.
fn spawn_child(name: &str, env: &[(&str, &OsStr)]) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([name, "--exact", "--nocapture", "--test-threads=1"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    cmd.spawn().expect("re-running the test binary")
}

fn kill(child: &mut Child) {
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
}

/// Waits until `cond` holds, at most `secs`, polling every 100 µs (the
/// commit of a restore can be over in a few milliseconds).
fn wait_for(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    false
}

/// The child side of the kill tests: an engine over `WB_DATA` and
/// `WB_BACKUPS` at 1 MiB/s runs one operation.
fn run_child_operation(mode: &str) {
    let data = PathBuf::from(std::env::var_os("WB_DATA").unwrap());
    let backups = PathBuf::from(std::env::var_os("WB_BACKUPS").unwrap());
    let engine = Engine::new(EngineConfig {
        write_limit: 1,
        threads: 1,
        ..engine_config(&data, &backups)
    })
    .unwrap();
    let result = match mode {
        "create" => engine
            .create_backup(SERVER, &create_request(BACKUP, ""), &mut Control::none())
            .map(|_| ()),
        _ => {
            let truncate = mode == "restore-truncate";
            engine
                .restore_backup(
                    SERVER,
                    BACKUP,
                    &local_restore(truncate),
                    &mut Control::none(),
                )
                .map(|_| ())
        }
    };
    eprintln!("child {mode}: {result:?}");
}

fn part_files(backups: &Path) -> Vec<String> {
    names(backups)
        .into_iter()
        .filter(|n| n.contains(".tar.gz.part-"))
        .collect()
}

#[test]
fn a_backup_killed_midway_leaves_no_archive_and_its_temporary_file_goes_at_start() {
    if let Some(mode) = child_mode() {
        return run_child_operation(&mode);
    }
    let node = Node::new();
    for i in 0..3 {
        write_file(
            &node.root().join(format!("world/r{i}.mca")),
            &noise(2 << 20, i),
            0o644,
            1,
        );
    }
    let mut rng = Rng::new("killed backup");
    for round in 0..2 {
        let mut child = spawn_child(
            "a_backup_killed_midway_leaves_no_archive_and_its_temporary_file_goes_at_start",
            &[
                ("WB_FAULT_CHILD", OsStr::new("create")),
                ("WB_DATA", node.dir.join("data").as_os_str()),
                ("WB_BACKUPS", node.backups().as_os_str()),
            ],
        );
        let started = wait_for(30, || {
            part_files(&node.backups())
                .iter()
                .any(|p| std::fs::metadata(node.backups().join(p)).is_ok_and(|m| m.len() > 0))
        });
        if !started {
            kill(&mut child);
            panic!("the child never started writing");
        }
        // An engine starting while the backup runs leaves its file alone
        // (the file is locked).
        let running = part_files(&node.backups());
        drop(Engine::new(engine_config(&node.dir.join("data"), &node.backups())).unwrap());
        assert_eq!(
            part_files(&node.backups()),
            running,
            "a live temporary file was removed"
        );

        std::thread::sleep(Duration::from_millis(rng.below(2500)));
        let finished = matches!(child.try_wait(), Ok(Some(_)));
        kill(&mut child);
        assert!(
            !finished,
            "round {round}: the backup ended before it was killed"
        );
        assert!(
            !node.archive(BACKUP).exists(),
            "an archive under the final name"
        );
        assert_eq!(
            part_files(&node.backups()).len(),
            1,
            "the abandoned temporary file"
        );

        // Starting again removes it; the same backup can then be made.
        let engine = Engine::new(engine_config(&node.dir.join("data"), &node.backups())).unwrap();
        assert_eq!(backup_names(&node.backups()), Vec::<String>::new());
        if round == 1 {
            engine
                .create_backup(SERVER, &create_request(BACKUP, ""), &mut Control::none())
                .unwrap();
            assert_eq!(
                backup_names(&node.backups()),
                vec![format!("{BACKUP}.tar.gz"), format!("{BACKUP}.tar.gz.index")]
            );
        }
    }
}

/// The files of a tree: (relative path, what is there), reserved names
/// (the engine's staging directories) left out.
fn view(root: &Path) -> BTreeMap<Vec<u8>, Node2> {
    snapshot(root)
        .into_iter()
        .filter(|(k, _)| !k.starts_with(b".wings-backup-restore-"))
        .collect()
}

/// `view` with the directories' times left out: a merge interrupted by a
/// kill and finished at the next start cannot give the directories it had
/// begun to merge their archive times back (their staged copies' times
/// changed as children moved out; see docs/guarantees.md).
fn without_dir_times(v: BTreeMap<Vec<u8>, Node2>) -> BTreeMap<Vec<u8>, Node2> {
    v.into_iter()
        .map(|(k, n)| match n {
            Node2::Dir { mode, .. } => (k, Node2::Dir { mode, mtime: 0 }),
            n => (k, n),
        })
        .collect()
}

/// What is compared after an interrupted restore: everything, except the
/// directories' times after a merge (see `without_dir_times`).
fn comparable(v: BTreeMap<Vec<u8>, Node2>, truncate: bool) -> BTreeMap<Vec<u8>, Node2> {
    if truncate {
        v
    } else {
        without_dir_times(v)
    }
}

#[test]
fn a_merge_restore_gives_directories_the_archive_s_times() {
    let node = Node::new();
    write_file(&node.root().join("world/a"), b"a", 0o644, 1);
    set_mtime(&node.root().join("world"), 1_500_000_000);
    node.create(BACKUP, "").unwrap();
    std::fs::remove_file(node.root().join("world/a")).unwrap();
    set_mtime(&node.root().join("world"), 1_400_000_000);
    node.restore(BACKUP, false).unwrap();
    let world = snapshot(&node.root()).remove(b"world".as_slice());
    assert_eq!(
        world,
        Some(Node2::Dir {
            mode: 0o755,
            mtime: 1_500_000_000
        })
    );
}

/// The tree the backup holds: 300 small top-level files, a world of 2 MiB
/// (so that reading it at 1 MiB/s takes a while), nested directories.
fn new_tree(root: &Path) {
    for i in 0..300 {
        let data = format!("NEW {i} {}", "n".repeat(i % 37));
        write_file(
            &root.join(format!("f{i:03}")),
            data.as_bytes(),
            0o644,
            1_700_000_000,
        );
    }
    for i in 0..2 {
        write_file(
            &root.join(format!("world/r{i}.mca")),
            &noise(1 << 20, 100 + i),
            0o600,
            1_700_000_000,
        );
    }
    write_file(
        &root.join("cfg/a/b/c.txt"),
        b"NEW nested",
        0o644,
        1_700_000_000,
    );
    write_file(&root.join("new-only/x"), b"NEW only", 0o755, 1_700_000_000);
    fix_dir_times(root, 1_700_000_500);
}

/// The server's files before the restore: half the same names, files
/// only it has, a different world, and `cfg` a file where the backup has a
/// directory.
fn old_tree(root: &Path) {
    for i in 0..150 {
        let data = format!("OLD {i} {}", "o".repeat(i % 53));
        write_file(
            &root.join(format!("f{i:03}")),
            data.as_bytes(),
            0o640,
            1_600_000_000,
        );
    }
    for i in 0..150 {
        write_file(
            &root.join(format!("old-only-{i:03}")),
            format!("OLD only {i}").as_bytes(),
            0o644,
            1_600_000_000,
        );
    }
    write_file(
        &root.join("world/r0.mca"),
        &noise(100_000, 7),
        0o644,
        1_600_000_000,
    );
    write_file(
        &root.join("world/old.dat"),
        b"OLD world",
        0o644,
        1_600_000_000,
    );
    write_file(
        &root.join("cfg"),
        b"OLD cfg is a file",
        0o644,
        1_600_000_000,
    );
    fix_dir_times(root, 1_600_000_500);
}

/// Gives every directory below `root` the time `t`, so that two trees
/// built at different times compare equal.
fn fix_dir_times(root: &Path, t: i64) {
    let mut dirs = Vec::new();
    for (k, v) in snapshot(root) {
        if matches!(v, Node2::Dir { .. }) {
            dirs.push(k);
        }
    }
    dirs.sort_by_key(|d| std::cmp::Reverse(d.len()));
    for d in dirs {
        set_mtime(&root.join(OsStr::from_bytes(&d)), t);
    }
}

/// The stage directories in `root` and whether each has its commit marker.
fn stages(root: &Path) -> Vec<(String, bool)> {
    names(root)
        .into_iter()
        .filter(|n| n.starts_with(".wings-backup-restore-"))
        .map(|n| {
            let committed = root.join(&n).join("commit").exists();
            (n, committed)
        })
        .collect()
}

#[test]
fn a_restore_killed_at_any_point_leaves_every_file_old_or_new_and_recovers_to_one_tree() {
    if let Some(mode) = child_mode() {
        return run_child_operation(&mode);
    }
    let node = Node::new();
    let root = node.root();
    new_tree(&root);
    node.create(BACKUP, "").unwrap();
    let new_view = view(&root);

    // What a complete restore of each kind gives, over the old tree.
    let mut complete = BTreeMap::new();
    for truncate in [true, false] {
        empty_dir(&root);
        old_tree(&root);
        node.restore(BACKUP, truncate).unwrap();
        complete.insert(truncate, comparable(view(&root), truncate));
    }
    assert_eq!(
        complete[&true], new_view,
        "a truncating restore gives the backup"
    );
    empty_dir(&root);
    old_tree(&root);
    let old_view = view(&root);

    let mut rng = Rng::new("killed restore");
    let mut outcomes = Vec::new();
    // (truncate, kill at a random moment or as soon as the commit starts)
    let plan = [
        (true, false),
        (false, false),
        (true, false),
        (false, false),
        (true, true),
        (false, true),
        (true, false),
        (false, true),
    ];
    for (round, (truncate, at_commit)) in plan.into_iter().enumerate() {
        empty_dir(&root);
        old_tree(&root);
        let mode = if truncate {
            "restore-truncate"
        } else {
            "restore-merge"
        };
        let mut child = spawn_child(
            "a_restore_killed_at_any_point_leaves_every_file_old_or_new_and_recovers_to_one_tree",
            &[
                ("WB_FAULT_CHILD", OsStr::new(mode)),
                ("WB_DATA", node.dir.join("data").as_os_str()),
                ("WB_BACKUPS", node.backups().as_os_str()),
            ],
        );
        let when = if at_commit {
            // A commit can end between two looks on a loaded machine: the
            // child having finished counts as having passed the commit.
            let seen = wait_for(30, || {
                stages(&root).iter().any(|(_, c)| *c) || matches!(child.try_wait(), Ok(Some(_)))
            });
            assert!(seen, "round {round}: the restore never reached its commit");
            let us = rng.below(4000);
            std::thread::sleep(Duration::from_micros(us));
            format!("{us} µs into the commit")
        } else {
            let ms = 50 + rng.below(2300);
            std::thread::sleep(Duration::from_millis(ms));
            format!("after {ms} ms")
        };
        let finished = matches!(child.try_wait(), Ok(Some(_)));
        kill(&mut child);
        let stage_state = stages(&root);

        // Before any recovery, every file there is the old or the new one.
        let target = &complete[&truncate];
        let (mut olds, mut news) = (0, 0);
        for (path, now) in view(&root) {
            let name = String::from_utf8_lossy(&path);
            if let Node2::File { data, mode, .. } = &now {
                let is = |v: Option<&Node2>| matches!(v, Some(Node2::File { data: d, mode: m, .. }) if d == data && m == mode);
                let (old, new) = (is(old_view.get(&path)), is(target.get(&path)));
                olds += usize::from(old && !new);
                news += usize::from(new && !old);
                assert!(
                    old || new,
                    "round {round} (truncate={truncate}, killed {when}): {name} is neither \
                     the old file nor the new one"
                );
            }
        }

        // An engine starting over the same directories recovers.
        drop(Engine::new(engine_config(&node.dir.join("data"), &node.backups())).unwrap());
        assert_eq!(stages(&root), vec![], "round {round}: a stage is left");
        let after = comparable(view(&root), truncate);
        let old_view = comparable(old_view.clone(), truncate);
        let outcome = if after == old_view {
            "old"
        } else if &after == target {
            "new"
        } else {
            let diff: Vec<String> = after
                .iter()
                .filter(|(k, v)| old_view.get(*k) != Some(*v) && target.get(*k) != Some(*v))
                .map(|(k, v)| {
                    format!(
                        "{}: now {v:?}, new {:?}",
                        String::from_utf8_lossy(k),
                        target.get(k)
                    )
                })
                .take(10)
                .collect();
            panic!(
                "round {round} (truncate={truncate}, killed {when}, stage {stage_state:?}): \
                 the tree is neither all old nor all new after recovery; e.g. {diff:?}"
            );
        };
        assert!(
            !(finished && outcome == "old"),
            "round {round}: a restore that finished was undone"
        );
        outcomes.push(format!(
            "{mode} killed {when} ({olds} old-only and {news} new-only files in place): {outcome}"
        ));
    }
    eprintln!("killed restores: {outcomes:#?}");
}

/// The tree of the backup for the commit failure tests, and the server's
/// older one. The backup's new names come first in the commit's order (40
/// top-level files, then 300 files with long names in `world`, so that
/// moving them in takes new directory blocks), then the names both have
/// (100 in `world`, 60 at the top), whose old files a commit that cannot
/// be undone frees as it replaces them.
fn commit_tree(root: &Path, new: bool) {
    let (tag, mode, mtime) = if new {
        ("NEW", 0o644, 1_700_000_000)
    } else {
        ("OLD", 0o640, 1_600_000_000)
    };
    let mut files = Vec::new();
    for i in 0..60 {
        files.push(format!("z{i:03}"));
    }
    for i in 0..100 {
        files.push(format!(
            "world/shared-region-file-with-a-rather-long-name-{i:04}.dat"
        ));
    }
    if new {
        for i in 0..40 {
            files.push(format!("a-new-{i:03}"));
        }
        for i in 0..300 {
            files.push(format!(
                "world/new-region-file-with-a-rather-long-name-{i:04}.dat"
            ));
        }
    } else {
        files.push("old-only.txt".to_string());
    }
    for (i, name) in files.iter().enumerate() {
        let data = format!("{tag} {name} {}", "x".repeat(i % 97));
        write_file(&root.join(name), data.as_bytes(), mode, mtime);
    }
    fix_dir_times(root, mtime + 500);
}

/// Fills the filesystem of `dir` with the file `dir/filler`, then frees
/// `leave_kib` KiB of it. Returns the bytes then free (statvfs).
fn fill_leaving(dir: &Path, leave_kib: u64) -> u64 {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    // What the restore staged is written back first (the commit syncs it).
    let _ = rustix::fs::syncfs(&f);
    // Delayed allocation reserves more than the writes end up taking:
    // written back, some room is free again, and is filled too.
    for size in [64 << 10, 1 << 10, 1 << 10, 1 << 10, 1 << 10] {
        let chunk = vec![0xa5u8; size];
        // At most 64 MiB in all: the filesystem is 64 MiB.
        for _ in 0..(64 << 20) / size {
            match f.write(&chunk) {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
        let _ = rustix::fs::syncfs(&f);
    }
    let len = f.metadata().unwrap().len();
    f.set_len(len.saturating_sub(leave_kib << 10)).unwrap();
    let _ = f.sync_all();
    let st = rustix::fs::statvfs(dir).unwrap();
    st.f_bfree * st.f_frsize
}

fn stage_names(root: &Path) -> Vec<String> {
    names(root)
        .into_iter()
        .filter(|n| n.starts_with(".wings-backup-restore-"))
        .collect()
}

/// Restores `BACKUP` with `engine`, running `at_commit` at the first
/// report of the commit phase.
fn restore_with_hook(
    engine: &Engine,
    truncate: bool,
    mut at_commit: impl FnMut(),
) -> wings_backup::Result<()> {
    let body = local_restore(truncate);
    let mut fired = false;
    let mut cb = |p: &wings_backup::progress::Progress| {
        if p.phase == wings_backup::progress::Phase::Commit && !fired {
            fired = true;
            at_commit();
        }
        true
    };
    let mut ctl = Control::new(None, Some(&mut cb));
    let result = engine.restore_backup(SERVER, BACKUP, &body, &mut ctl);
    drop(ctl);
    result.map(|_| ())
}

#[test]
fn a_restore_that_fills_the_disk_during_its_commit_answers_an_error_with_the_old_tree() {
    let node = Node::new();
    let data = node.dir.join("data");
    let Some(_mount) = Mount::ext4(&node.dir.join("ext4.img"), &data) else {
        return;
    };
    let root = node.root();
    std::fs::create_dir_all(&root).unwrap();
    let engine = node.restart();
    commit_tree(&root, true);
    engine
        .create_backup(SERVER, &create_request(BACKUP, ""), &mut Control::none())
        .unwrap();
    let new_view = snapshot(&root);
    let mut outcomes = Vec::new();
    let mut failed = 0;
    for truncate in [false, true] {
        for leave_kib in [0, 2, 4, 6, 8, 12, 16, 24, 32, 38, 48, 64, 128] {
            empty_dir(&root);
            commit_tree(&root, false);
            let before = snapshot(&root);
            let mut free = 0;
            let result =
                restore_with_hook(&engine, truncate, || free = fill_leaving(&data, leave_kib));
            let what = format!("truncate={truncate}, {free} bytes free (f_bfree) at the commit");
            outcomes.push(format!("{what}: {:?}", result.as_ref().map(|_| "restored")));
            match result {
                Ok(_) => {
                    // A restore that succeeds restored every file.
                    let now = snapshot(&root);
                    for (path, node) in &new_view {
                        if let Node2::File { .. } = node {
                            assert_eq!(now.get(path), Some(node), "{what}");
                        }
                    }
                    std::fs::remove_file(data.join("filler")).unwrap();
                    continue;
                }
                Err(e) => {
                    failed += 1;
                    assert_eq!(e.status, Status::Quota, "{what}: {e}");
                    assert!(!e.message.contains("finished at the next"), "{what}: {e}");
                }
            }
            assert_eq!(snapshot(&root), before, "{what}: the tree after the error");
            assert_eq!(
                stage_names(&root),
                Vec::<String>::new(),
                "{what}: a stage is left"
            );
            // A restart while the disk is still full, then one with room.
            drop(node.restart());
            assert_eq!(snapshot(&root), before, "{what}: after a restart");
            std::fs::remove_file(data.join("filler")).unwrap();
            drop(node.restart());
            assert_eq!(snapshot(&root), before, "{what}: after a restart with room");
        }
    }
    eprintln!("restores filling the disk at their commit: {outcomes:#?}");
    assert!(failed > 0, "no restore failed: {outcomes:#?}");
}

/// `chattr` on `path` (`+i` or `-i`).
fn chattr(flag: &str, path: &Path) -> bool {
    Command::new("chattr")
        .arg(flag)
        .arg(path)
        .status()
        .is_ok_and(|s| s.success())
}

/// Clears the immutable flag when a test ends, however it ends.
struct Immutable(PathBuf);

impl Drop for Immutable {
    fn drop(&mut self) {
        chattr("-i", &self.0);
    }
}

#[test]
fn a_restore_refused_by_an_immutable_directory_answers_an_error_with_the_old_tree() {
    let node = Node::new();
    let data = node.dir.join("data");
    let Some(_mount) = Mount::ext4(&node.dir.join("ext4.img"), &data) else {
        return;
    };
    let root = node.root();
    std::fs::create_dir_all(&root).unwrap();
    let engine = node.restart();
    commit_tree(&root, true);
    engine
        .create_backup(SERVER, &create_request(BACKUP, ""), &mut Control::none())
        .unwrap();
    for truncate in [false, true] {
        empty_dir(&root);
        commit_tree(&root, false);
        let before = snapshot(&root);
        let world = root.join("world");
        if !chattr("+i", &world) {
            eprintln!("SKIPPED: chattr +i is not possible here");
            return;
        }
        let guard = Immutable(world);
        let err = restore_with_hook(&engine, truncate, || {}).unwrap_err();
        let what = format!("truncate={truncate}");
        assert!(
            !err.message.contains("finished at the next"),
            "{what}: {err}"
        );
        assert_eq!(snapshot(&root), before, "{what}: the tree after the error");
        assert_eq!(
            stage_names(&root),
            Vec::<String>::new(),
            "{what}: a stage is left"
        );
        drop(node.restart());
        assert_eq!(snapshot(&root), before, "{what}: after a restart");
        drop(guard);
        drop(node.restart());
        assert_eq!(
            snapshot(&root),
            before,
            "{what}: after a restart, the directory writable"
        );
    }
}
