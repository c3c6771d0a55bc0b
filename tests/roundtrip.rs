//! Create then restore gives back the same tree: bytes, empty directories,
//! symlinks (target text), modes, mtimes; and the details match the file.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;

#[test]
fn create_then_truncating_restore_gives_back_the_same_tree() {
    let node = Node::new();
    build_game_tree(&node.root());
    let before = snapshot(&node.root());
    let details = node.create(BACKUP, "").unwrap();

    let archive = std::fs::read(node.archive(BACKUP)).unwrap();
    assert_eq!(details.report.checksum, sha1_hex(&archive));
    assert_eq!(details.checksum_type(), "sha1");
    assert_eq!(details.report.size, archive.len() as u64);
    assert!(details.report.successful);
    assert!(details.report.parts.is_none());
    let mode = std::fs::metadata(node.archive(BACKUP))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(
        node.backup_dir_names(),
        vec![format!("{BACKUP}.tar.gz"), format!("{BACKUP}.tar.gz.index")]
    );

    empty_dir(&node.root());
    write_file(
        &node.root().join("junk.txt"),
        b"not in the backup",
        0o644,
        1,
    );
    node.restore(BACKUP, true).unwrap();
    let after = snapshot(&node.root());
    let names = |s: &std::collections::BTreeMap<Vec<u8>, Node2>| {
        s.keys()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&before), names(&after));
    for (path, node_before) in &before {
        assert_eq!(
            Some(node_before),
            after.get(path),
            "{}",
            String::from_utf8_lossy(path)
        );
    }
}

#[test]
fn merge_restore_overwrites_archived_files_and_keeps_others() {
    let node = Node::new();
    write_file(
        &node.root().join("a.txt"),
        b"version 1",
        0o644,
        1_600_000_000,
    );
    write_file(&node.root().join("dir/b.txt"), b"b1", 0o644, 1_600_000_000);
    node.create(BACKUP, "").unwrap();
    write_file(
        &node.root().join("a.txt"),
        b"version 2, longer",
        0o600,
        1_700_000_000,
    );
    write_file(
        &node.root().join("dir/new.txt"),
        b"new",
        0o644,
        1_700_000_000,
    );
    write_file(
        &node.root().join("other.txt"),
        b"other",
        0o644,
        1_700_000_000,
    );
    node.restore(BACKUP, false).unwrap();
    let s = snapshot(&node.root());
    assert_eq!(
        s[&b"a.txt".to_vec()],
        Node2::File {
            mode: 0o644,
            mtime: 1_600_000_000,
            data: b"version 1".to_vec()
        }
    );
    assert!(s.contains_key(b"dir/new.txt".as_slice()));
    assert!(s.contains_key(b"other.txt".as_slice()));
    assert!(!std::fs::read_dir(node.root())
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with(".wings-backup")));
}

#[test]
fn hard_links_are_stored_once_and_restored_as_links() {
    use std::os::unix::fs::MetadataExt;
    let node = Node::new();
    write_file(
        &node.root().join("a"),
        &vec![7u8; 100_000],
        0o644,
        1_600_000_000,
    );
    std::fs::hard_link(node.root().join("a"), node.root().join("b")).unwrap();
    node.create(BACKUP, "").unwrap();
    let size = std::fs::metadata(node.archive(BACKUP)).unwrap().len();
    empty_dir(&node.root());
    node.restore(BACKUP, true).unwrap();
    let a = std::fs::metadata(node.root().join("a")).unwrap();
    let b = std::fs::metadata(node.root().join("b")).unwrap();
    assert_eq!(a.ino(), b.ino());
    assert_eq!(
        std::fs::read(node.root().join("b")).unwrap(),
        vec![7u8; 100_000]
    );
    assert!(
        size < 10_000,
        "the data is stored once and compressed: {size}"
    );
}

#[test]
fn fifos_are_stored_as_headers_and_never_opened() {
    let node = Node::new();
    let fifo = node.root().join("pipe");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    write_file(&node.root().join("f"), b"x", 0o644, 1_600_000_000);
    // Opening the FIFO would block forever: the test finishing proves it was not.
    node.create(BACKUP, "").unwrap();
    let list = std::process::Command::new("tar")
        .arg("-tvzf")
        .arg(node.archive(BACKUP))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with('p') && l.ends_with("pipe")),
        "{text}"
    );
}

#[test]
fn ignore_rules_apply_and_pteroignore_is_the_fallback() {
    let node = Node::new();
    write_file(&node.root().join("logs/a.log"), b"a", 0o644, 1);
    write_file(&node.root().join("logs/keep.txt"), b"k", 0o644, 1);
    write_file(&node.root().join("world/x.dat"), b"x", 0o644, 1);
    write_file(&node.root().join("cache.tmp"), b"c", 0o644, 1);
    let list = |uuid: &str| {
        let out = std::process::Command::new("tar")
            .arg("-tzf")
            .arg(node.archive(uuid))
            .output()
            .unwrap();
        let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        v.sort();
        v
    };
    node.create(BACKUP, "logs/\n*.tmp").unwrap();
    assert_eq!(list(BACKUP), vec!["world/", "world/x.dat"]);

    write_file(&node.root().join(".pteroignore"), b"world\n", 0o644, 1);
    let b2 = "11111111-2222-4333-8444-555555555555";
    node.create(b2, "").unwrap();
    assert_eq!(
        list(b2),
        vec![
            ".pteroignore",
            "cache.tmp",
            "logs/",
            "logs/a.log",
            "logs/keep.txt"
        ]
    );

    // A symlinked .pteroignore is not honoured.
    std::fs::remove_file(node.root().join(".pteroignore")).unwrap();
    write_file(&node.dir.join("outside-ignore"), b"*\n", 0o644, 1);
    std::os::unix::fs::symlink(
        node.dir.join("outside-ignore"),
        node.root().join(".pteroignore"),
    )
    .unwrap();
    let b3 = "11111111-2222-4333-8444-666666666666";
    node.create(b3, "").unwrap();
    assert!(list(b3).contains(&"world/x.dat".to_string()));
}

#[test]
fn duplicate_and_missing_backups() {
    let node = Node::new();
    write_file(&node.root().join("f"), b"x", 0o644, 1);
    node.create(BACKUP, "").unwrap();
    let err = node.create(BACKUP, "").unwrap_err();
    assert_eq!(err.status, wings_backup::Status::Conflict);
    let err = node
        .restore("99999999-2222-4333-8444-555555555555", true)
        .unwrap_err();
    assert_eq!(err.status, wings_backup::Status::NotFound);
    node.engine.delete_backup(SERVER, BACKUP).unwrap();
    let err = node.engine.delete_backup(SERVER, BACKUP).unwrap_err();
    assert_eq!(err.status, wings_backup::Status::NotFound);
    assert_eq!(
        err.message,
        "The requested backup was not found on this server."
    );
    let err = node
        .engine
        .delete_backup(SERVER, "../../etc/passwd")
        .unwrap_err();
    assert_eq!(err.status, wings_backup::Status::InvalidArgument);
    let err = node.engine.delete_backup("not-a-uuid", BACKUP).unwrap_err();
    assert_eq!(err.status, wings_backup::Status::NotFound);
}

#[test]
fn the_ignore_file_is_honoured_only_up_to_32_kib() {
    let node = Node::new();
    write_file(&node.root().join("world/x.dat"), b"x", 0o644, 1);
    write_file(&node.root().join("keep.txt"), b"k", 0o644, 1);
    let listed = |uuid: &str| {
        let out = std::process::Command::new("tar")
            .arg("-tzf")
            .arg(node.archive(uuid))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains("world/x.dat")
    };
    // Exactly 32 KiB: honoured (padding comments, then the rule).
    let mut text = "#".repeat(32 * 1024 - "\nworld\n".len());
    text.push_str("\nworld\n");
    assert_eq!(text.len(), 32 * 1024);
    write_file(&node.root().join(".pteroignore"), text.as_bytes(), 0o644, 1);
    let a = "aaaaaaaa-2222-4333-8444-555555555555";
    node.create(a, "").unwrap();
    assert!(!listed(a));
    // One byte more: ignored altogether, as in Wings.
    text.insert(0, '#');
    write_file(&node.root().join(".pteroignore"), text.as_bytes(), 0o644, 1);
    let b = "bbbbbbbb-2222-4333-8444-555555555555";
    node.create(b, "").unwrap();
    assert!(listed(b));
    // A request's own rules win over the file.
    let c = "cccccccc-2222-4333-8444-555555555555";
    std::fs::remove_file(node.root().join(".pteroignore")).unwrap();
    write_file(&node.root().join(".pelicanignore"), b"world\n", 0o644, 1);
    node.create(c, "keep.txt").unwrap();
    assert!(listed(c));
    // Without request rules, Pelican's file name works too.
    let d = "dddddddd-2222-4333-8444-555555555555";
    node.create(d, "").unwrap();
    assert!(!listed(d));
}

#[test]
fn a_merge_keeps_the_mode_of_directories_the_archive_only_implies() {
    // Another tool's archive with no directory entries: "world/" and
    // "config/" exist only as parents of files.
    let node = Node::new();
    let root = node.root();
    std::fs::create_dir_all(root.join("world")).unwrap();
    std::fs::create_dir_all(root.join("config")).unwrap();
    std::fs::set_permissions(root.join("world"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(root.join("config"), std::fs::Permissions::from_mode(0o750)).unwrap();
    let mut t = RawTar::default();
    t.entry(b"world/level.dat", b'0', b"", 0o644, b"new level");
    // The archive does list "config/", with its own mode: that one applies.
    t.entry(b"config/", b'5', b"", 0o711, b"");
    t.entry(b"config/server.properties", b'0', b"", 0o600, b"motd=new");
    std::fs::write(
        node.archive("11111111-2222-4333-8444-555555555555"),
        gzip(&t.finish()),
    )
    .unwrap();
    node.restore("11111111-2222-4333-8444-555555555555", false)
        .unwrap();
    let mode = |p: &str| {
        std::fs::metadata(root.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(
        mode("world"),
        0o700,
        "an implied directory keeps the server's mode"
    );
    assert_eq!(
        mode("config"),
        0o711,
        "a listed directory takes the archive's mode"
    );
    assert_eq!(
        std::fs::read(root.join("world/level.dat")).unwrap(),
        b"new level"
    );
}

#[test]
fn a_backup_leaves_the_files_access_times_alone() {
    use std::os::unix::fs::MetadataExt;
    let node = Node::new();
    let root = node.root();
    // touch -d sets both times: atime == mtime, so relatime would update
    // the atime at the next read.
    write_file(
        &root.join("world/level.dat"),
        b"level",
        0o644,
        1_600_000_000,
    );
    write_file(
        &root.join("control.txt"),
        b"read by a plain read",
        0o644,
        1_600_000_000,
    );
    std::fs::read(root.join("control.txt")).unwrap();
    if std::fs::metadata(root.join("control.txt")).unwrap().atime() == 1_600_000_000 {
        eprintln!("this filesystem does not record access times; nothing to check");
        return;
    }
    node.create("11111111-2222-4333-8444-555555555555", "")
        .unwrap();
    let atime = std::fs::metadata(root.join("world/level.dat"))
        .unwrap()
        .atime();
    assert_eq!(atime, 1_600_000_000, "the backup changed the access time");
}
