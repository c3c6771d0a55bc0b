//! Dry runs and the space checks before work: a dry run lists exactly what
//! a backup then holds (against `tar -tzf` of the real one) and writes
//! nothing; a create or restore that cannot fit fails with `Quota` before
//! it reads or touches anything (on a small tmpfs, where mounting one is
//! permitted; else the test says it is skipped, and why).

mod common;
#[path = "support/panel_stub.rs"]
mod panel_stub;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use panel_stub::Stub;
use wings_backup::config::{EngineConfig, PanelConfig};
use wings_backup::engine::Engine;
use wings_backup::progress::{CancelToken, Control, Phase, Progress};
use wings_backup::Status;

const BACKUP2: &str = "5f0c2a61-93d4-4e7b-a1c8-2b6d9e0f3a47";

/// An engine on `dir` (data in `dir/data`, archives in `dir/backups`),
/// reporting to `stub` when given.
fn engine(dir: &Path, stub: Option<&Stub>, disk_limit: u64) -> Engine {
    Engine::new(EngineConfig {
        data_directory: dir.join("data"),
        backup_directory: dir.join("backups"),
        disk_limit,
        panel: stub.map(|s| PanelConfig {
            url: s.url.clone(),
            token_id: s.token_id.clone(),
            token: s.token.clone(),
            report_retry_s: 5,
        }),
        ..EngineConfig::default()
    })
    .unwrap()
}

fn dry_run(
    engine: &Engine,
    ignore: &str,
) -> wings_backup::Result<wings_backup::space::DryRunReport> {
    let mut request = create_request(BACKUP, ignore);
    request.dry_run = true;
    engine.dry_run_backup(SERVER, &request, &mut Control::none())
}

/// `tar -tzf` of an archive: the names it holds, as bytes, without a
/// trailing `/` (GNU tar's escapes, in the C locale, undone).
fn tar_names(archive: &Path) -> Vec<Vec<u8>> {
    let out = std::process::Command::new("tar")
        .args(["--quoting-style=escape", "-tzf"])
        .arg(archive)
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    out.stdout
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut name = unescape(l);
            if name.ends_with(b"/") {
                name.pop();
            }
            name
        })
        .collect()
}

/// Undoes GNU tar's `escape` quoting: `\\`, `\n` and the like, `\ooo`.
fn unescape(line: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < line.len() {
        if line[i] != b'\\' {
            out.push(line[i]);
            i += 1;
            continue;
        }
        let c = line[i + 1];
        let (byte, used) = match c {
            b'n' => (b'\n', 2),
            b't' => (b'\t', 2),
            b'r' => (b'\r', 2),
            b'a' => (7, 2),
            b'b' => (8, 2),
            b'f' => (12, 2),
            b'v' => (11, 2),
            b'0'..=b'7' => {
                let digits = std::str::from_utf8(&line[i + 1..i + 4]).unwrap();
                (u8::from_str_radix(digits, 8).unwrap(), 4)
            }
            other => (other, 2),
        };
        out.push(byte);
        i += used;
    }
    out
}

/// Every path under `root`, relative, as bytes, found by a plain walk.
fn all_paths(root: &Path) -> Vec<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    list_all(root)
        .into_iter()
        .map(|p| {
            p.strip_prefix(root)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec()
        })
        .filter(|p| !p.is_empty())
        .collect()
}

#[test]
fn a_dry_run_lists_exactly_what_the_backup_then_holds_and_writes_nothing() {
    let dir = TempDir::new("dry-run");
    let root = dir.join("data").join(SERVER);
    std::fs::create_dir_all(&root).unwrap();
    build_game_tree(&root);
    for i in 0..1200 {
        write_file(
            &root.join(format!("logs/{i:04}.log")),
            b"x",
            0o644,
            1_600_000_000,
        );
    }
    write_file(
        &root.join("cache/big.bin"),
        &noise(50_000, 1),
        0o644,
        1_600_000_000,
    );
    write_file(&root.join("cache/keep.txt"), b"keep", 0o644, 1_600_000_000);
    write_file(&root.join("plugins/a.jar"), b"jar", 0o644, 1_600_000_000);
    write_file(&root.join("plugins/a.log"), b"log", 0o644, 1_600_000_000);
    let rules = "*.log\ncache/*\n!cache/keep.txt\n";
    let stub = Stub::start();
    let engine = engine(dir.path(), Some(&stub), 0);
    let backups_before = backup_names(&dir.join("backups"));

    let report = dry_run(&engine, rules).unwrap();
    assert_eq!(
        backup_names(&dir.join("backups")),
        backups_before,
        "nothing is written"
    );
    assert_eq!(
        stub.state()["requests"].as_array().unwrap().len(),
        0,
        "no Panel call"
    );
    // Every *.log (1,200 + 1) and cache/big.bin; the first 1,000 listed.
    assert_eq!(report.ignored_count, 1202);
    assert_eq!(report.ignored.len(), 1000);

    let details = engine
        .create_backup(SERVER, &create_request(BACKUP, rules), &mut Control::none())
        .unwrap();
    let names = tar_names(&dir.join("backups").join(format!("{BACKUP}.tar.gz")));
    assert_eq!(report.entries, names.len() as u64);
    assert_eq!(report.files, details.archive.files);
    assert_eq!(report.bytes, details.archive.source_bytes);
    assert_eq!(report.skipped, details.archive.skipped);
    // The estimate (no earlier backup: the worst case) bounds the archive.
    assert!(report.estimated_size >= details.report.size, "{report:?}");

    // Every path of the tree is either in the archive or ignored (itself
    // or below an ignored directory), never both.
    let held: BTreeSet<Vec<u8>> = names.into_iter().collect();
    let ignored: BTreeSet<Vec<u8>> = report.ignored.iter().cloned().collect();
    let second = {
        let mut again = create_request(BACKUP2, rules);
        again.dry_run = true;
        engine
            .dry_run_backup(SERVER, &again, &mut Control::none())
            .unwrap()
    };
    assert_eq!(
        second.ignored, report.ignored,
        "the same walk, the same order"
    );
    let mut ignored_seen = 0;
    for path in all_paths(&root) {
        let is_ignored = ignored.contains(&path)
            || ignored
                .iter()
                .any(|i| path.len() > i.len() && path.starts_with(i) && path[i.len()] == b'/')
            || path.ends_with(b".log");
        ignored_seen += u64::from(is_ignored);
        assert!(
            held.contains(&path) != is_ignored,
            "{}: in archive {}, ignored {is_ignored}",
            String::from_utf8_lossy(&path),
            held.contains(&path)
        );
    }
    // cache/big.bin and the *.log files, each one path.
    assert_eq!(ignored_seen, report.ignored_count);
    assert!(held.contains(&b"cache/keep.txt"[..]) && held.contains(&b"plugins/a.jar"[..]));
}

#[test]
fn a_dry_run_with_the_server_ignore_file_and_a_cancel() {
    let node = Node::new();
    write_file(
        &node.root().join(".pteroignore"),
        b"secret/\n",
        0o644,
        1_600_000_000,
    );
    write_file(&node.root().join("secret/key"), b"k", 0o600, 1_600_000_000);
    write_file(&node.root().join("world/a"), b"aa", 0o644, 1_600_000_000);
    let report = dry_run(&node.engine, "").unwrap();
    assert_eq!(lossy(&report.ignored), vec!["secret".to_string()]);
    assert_eq!((report.files, report.bytes), (2, 2 + 8));
    // A cancelled dry run stops with `Cancelled`.
    let token = CancelToken::new();
    token.trigger();
    let err = node
        .engine
        .dry_run_backup(
            SERVER,
            &create_request(BACKUP, ""),
            &mut Control::new(Some(&token), None),
        )
        .unwrap_err();
    assert_eq!(err.status, Status::Cancelled);
    // A create request that asks for a dry run never makes a backup.
    let mut request = create_request(BACKUP, "");
    request.dry_run = true;
    let err = node
        .engine
        .create_backup(SERVER, &request, &mut Control::none())
        .unwrap_err();
    assert_eq!(err.status, Status::InvalidArgument);
    assert!(!node.archive(BACKUP).exists());
    // Unknown server.
    let err = node
        .engine
        .dry_run_backup(BACKUP, &create_request(BACKUP, ""), &mut Control::none())
        .unwrap_err();
    assert_eq!(err.status, Status::NotFound);
}

#[test]
fn a_create_that_cannot_fit_fails_at_once_with_quota_and_the_panel_is_told() {
    let dir = TempDir::new("space-create");
    let Some(_mount) = Mount::tmpfs(&dir.join("backups"), "size=4m,mode=0755") else {
        return;
    };
    let root = dir.join("data").join(SERVER);
    std::fs::create_dir_all(&root).unwrap();
    for i in 0..5 {
        write_file(
            &root.join(format!("world/r{i}.mca")),
            &noise(4 << 20, i),
            0o644,
            1_600_000_000,
        );
    }
    let stub = Stub::start();
    let engine = engine(dir.path(), Some(&stub), 0);
    let mut reports: Vec<Progress> = Vec::new();
    let mut on_progress = |p: &Progress| {
        reports.push(*p);
        true
    };
    let started = Instant::now();
    let err = engine
        .create_backup(
            SERVER,
            &create_request(BACKUP, ""),
            &mut Control::new(None, Some(&mut on_progress)),
        )
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.status, Status::Quota, "{err}");
    assert_eq!(err.status.http_status(), 507);
    assert!(err.message.contains("bytes are free"), "{}", err.message);
    assert!(took < Duration::from_secs(5), "{took:?}");
    // No file data was read (no report counts any), no temporary file stays.
    assert!(
        reports
            .iter()
            .all(|p| p.bytes_done == 0 && p.archive_bytes == 0),
        "{reports:?}"
    );
    assert!(
        reports.iter().all(|p| p.phase != Phase::Archive),
        "{reports:?}"
    );
    assert_eq!(backup_names(&dir.join("backups")), Vec::<String>::new());
    let state = stub.state();
    let sent = state["reports"].as_array().unwrap();
    assert_eq!(sent.len(), 1, "{state}");
    assert_eq!(sent[0]["backup"], BACKUP);
    assert_eq!(sent[0]["body"]["successful"], false);

    // The control: a tree that fits is backed up on the same filesystem.
    std::fs::remove_dir_all(root.join("world")).unwrap();
    write_file(
        &root.join("world/r.mca"),
        &noise(1 << 20, 9),
        0o644,
        1_600_000_000,
    );
    engine
        .create_backup(SERVER, &create_request(BACKUP2, ""), &mut Control::none())
        .unwrap();
    assert_eq!(
        backup_names(&dir.join("backups")),
        vec![
            format!("{BACKUP2}.tar.gz"),
            format!("{BACKUP2}.tar.gz.index")
        ]
    );
}

/// Waits (at most 5 s) until the filesystem of `dir` has `bytes` free: a
/// removed file's space comes back once nothing holds it open (a child
/// process another test forks meanwhile inherits open files until it execs).
fn wait_for_free(dir: &Path, bytes: u64) {
    for _ in 0..50 {
        let st = rustix::fs::statvfs(dir).unwrap();
        if st.f_bavail * st.f_frsize >= bytes {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("{} never had {bytes} bytes free", dir.display());
}

/// A node whose server root is a 16 MiB tmpfs holding a backup `BACKUP` of
/// 6 MiB of noise (and a copy `BACKUP2` of its archive that the engine did
/// not make); the big files are then replaced by a filler leaving about
/// 3 MiB free.
fn full_server(tag: &str, disk_limit: u64) -> Option<(TempDir, Mount, Engine)> {
    let dir = TempDir::new(tag);
    let root = dir.join("data").join(SERVER);
    let mount = Mount::tmpfs(&root, "size=16m,mode=0755")?;
    write_file(
        &root.join("server.properties"),
        b"motd=x\n",
        0o644,
        1_600_000_000,
    );
    for i in 0..3 {
        write_file(
            &root.join(format!("world/r{i}.mca")),
            &noise(2 << 20, i),
            0o644,
            1_600_000_000,
        );
    }
    let engine = engine(dir.path(), None, disk_limit);
    engine
        .create_backup(SERVER, &create_request(BACKUP, ""), &mut Control::none())
        .unwrap();
    std::fs::remove_dir_all(root.join("world")).unwrap();
    write_file(
        &root.join("filler"),
        &noise(13 << 20, 7),
        0o644,
        1_600_000_000,
    );
    let backups = dir.join("backups");
    std::fs::copy(
        backups.join(format!("{BACKUP}.tar.gz")),
        backups.join(format!("{BACKUP2}.tar.gz")),
    )
    .unwrap();
    drop(engine);
    // A restart: the copy is an archive found on disk, with no record.
    let engine = self::engine(dir.path(), None, disk_limit);
    Some((dir, mount, engine))
}

#[test]
fn a_restore_that_cannot_fit_fails_with_quota_and_leaves_the_tree_as_it_was() {
    let Some((dir, _mount, engine)) = full_server("space-restore", 0) else {
        return;
    };
    let root = dir.join("data").join(SERVER);
    let before = snapshot(&root);
    // The recorded create's bytes, then the members' headers (the copy).
    for (backup, truncate) in [
        (BACKUP, false),
        (BACKUP, true),
        (BACKUP2, false),
        (BACKUP2, true),
    ] {
        let err = engine
            .restore_backup(
                SERVER,
                backup,
                &local_restore(truncate),
                &mut Control::none(),
            )
            .unwrap_err();
        assert_eq!(err.status, Status::Quota, "{backup} {truncate}: {err}");
        assert!(err.message.contains("bytes are free"), "{}", err.message);
        assert_eq!(snapshot(&root), before, "{backup} {truncate}");
        assert_eq!(
            names(&root),
            vec!["filler".to_string(), "server.properties".to_string()]
        );
    }
    // The control: with room, the same restores succeed.
    std::fs::remove_file(root.join("filler")).unwrap();
    wait_for_free(&root, 12 << 20);
    for backup in [BACKUP2, BACKUP] {
        engine
            .restore_backup(SERVER, backup, &local_restore(true), &mut Control::none())
            .unwrap();
        assert_eq!(
            std::fs::read(root.join("world/r1.mca")).unwrap(),
            noise(2 << 20, 1)
        );
    }
}

#[test]
fn a_restore_over_the_disk_limit_fails_before_touching_anything() {
    let node = Node::with(|c| c.disk_limit = 3 << 20);
    for i in 0..2 {
        write_file(
            &node.root().join(format!("world/r{i}.mca")),
            &noise(2 << 20, i),
            0o644,
            1_600_000_000,
        );
    }
    node.create(BACKUP, "").unwrap();
    std::fs::remove_dir_all(node.root().join("world")).unwrap();
    write_file(&node.root().join("a.txt"), b"a", 0o644, 1_600_000_000);
    let before = snapshot(&node.root());
    for truncate in [false, true] {
        let err = node
            .engine
            .restore_backup(
                SERVER,
                BACKUP,
                &local_restore(truncate),
                &mut Control::none(),
            )
            .unwrap_err();
        assert_eq!(err.status, Status::Quota);
        // The check before the restore names what the backup holds.
        assert!(
            err.message
                .contains("disk limit of 3145728 bytes: the backup holds 4194304 bytes"),
            "{}",
            err.message
        );
        assert_eq!(snapshot(&node.root()), before);
    }
    // The control: under a larger limit it is restored.
    let roomy = Node::with(|c| c.disk_limit = 5 << 20);
    write_file(
        &roomy.root().join("world/r0.mca"),
        &noise(2 << 20, 0),
        0o644,
        1_600_000_000,
    );
    roomy.create(BACKUP, "").unwrap();
    roomy.restore(BACKUP, true).unwrap();
    assert_eq!(
        std::fs::read(roomy.root().join("world/r0.mca")).unwrap(),
        noise(2 << 20, 0)
    );
}

#[test]
fn an_s3_restore_this_node_backed_up_is_checked_before_it_touches_anything() {
    let dir = TempDir::new("space-s3");
    let root = dir.join("data").join(SERVER);
    let Some(_mount) = Mount::tmpfs(&root, "size=16m,mode=0755") else {
        return;
    };
    for i in 0..3 {
        write_file(
            &root.join(format!("world/r{i}.mca")),
            &noise(2 << 20, i),
            0o644,
            1_600_000_000,
        );
    }
    let stub = Stub::start();
    let engine = Engine::new(EngineConfig {
        data_directory: dir.join("data"),
        backup_directory: dir.join("backups"),
        panel: Some(PanelConfig {
            url: stub.url.clone(),
            token_id: stub.token_id.clone(),
            token: stub.token.clone(),
            report_retry_s: 5,
        }),
        restore_host_allowlist: vec![wings_backup::config::AllowEntry::parse("127.0.0.1").unwrap()],
        ..EngineConfig::default()
    })
    .unwrap();
    let mut request = create_request(BACKUP, "");
    request.adapter = wings_backup::request::Adapter::S3;
    engine
        .create_backup(SERVER, &request, &mut Control::none())
        .unwrap();
    std::fs::remove_dir_all(root.join("world")).unwrap();
    write_file(
        &root.join("filler"),
        &noise(13 << 20, 7),
        0o644,
        1_600_000_000,
    );
    let before = snapshot(&root);
    let url = stub.get(&format!("/_test/presign?key=backups/{BACKUP}.tar.gz"))["url"]
        .as_str()
        .unwrap()
        .to_string();
    let restore = wings_backup::request::RestoreRequest {
        adapter: wings_backup::request::Adapter::S3,
        truncate_directory: true,
        download_url: Some(url),
        paths: Vec::new(),
    };
    let err = engine
        .restore_backup(SERVER, BACKUP, &restore, &mut Control::none())
        .unwrap_err();
    assert_eq!(err.status, Status::Quota, "{err}");
    assert!(err.message.contains("bytes are free"), "{}", err.message);
    assert_eq!(snapshot(&root), before);
    // With room, the same restore succeeds.
    std::fs::remove_file(root.join("filler")).unwrap();
    engine
        .restore_backup(SERVER, BACKUP, &restore, &mut Control::none())
        .unwrap();
    assert_eq!(
        std::fs::read(root.join("world/r2.mca")).unwrap(),
        noise(2 << 20, 2)
    );
}

#[test]
fn a_create_the_estimate_lets_through_still_fails_cleanly_when_the_disk_fills() {
    // The last backup's ratio (zeros: tiny) makes the estimate of a tree of
    // noise far too low; the disk then fills while writing, as before the
    // check existed, and the failure is the same clean one.
    let dir = TempDir::new("space-ratio");
    let Some(_mount) = Mount::tmpfs(&dir.join("backups"), "size=8m,mode=0755") else {
        return;
    };
    let root = dir.join("data").join(SERVER);
    write_file(
        &root.join("world/r.mca"),
        &vec![0u8; 6 << 20],
        0o644,
        1_600_000_000,
    );
    let engine = engine(dir.path(), None, 0);
    engine
        .create_backup(SERVER, &create_request(BACKUP, ""), &mut Control::none())
        .unwrap();
    let report = dry_run(&engine, "").unwrap();
    assert!(report.estimated_size < 1 << 20, "{report:?}");
    write_file(
        &root.join("world/r.mca"),
        &noise(10 << 20, 3),
        0o644,
        1_600_000_000,
    );
    let err = engine
        .create_backup(SERVER, &create_request(BACKUP2, ""), &mut Control::none())
        .unwrap_err();
    assert_eq!(err.status, Status::Quota, "{err}");
    assert!(
        !err.message.contains("bytes are free"),
        "not the check: {}",
        err.message
    );
    assert_eq!(
        backup_names(&dir.join("backups")),
        vec![format!("{BACKUP}.tar.gz"), format!("{BACKUP}.tar.gz.index")],
        "no temporary file is left"
    );
}
