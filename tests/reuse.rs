//! Backups that reuse the unchanged members of the server's previous local
//! archive: after each kind of change, a reusing backup's tar stream is the
//! one a backup from scratch makes (`gzip -dc | sha1sum`, with real gzip),
//! reuse really happened, and every doubt (a flipped byte, a missing or
//! stale index, another compression level) falls back to reading the tree.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::*;
use wings_backup::config::{CompressionLevel, EngineConfig};
use wings_backup::engine::{BackupDetails, Engine};
use wings_backup::index::{self, Index};
use wings_backup::progress::Control;
use wings_backup::request::CreateRequest;

const U1: &str = "11111111-1111-4111-8111-111111111111";
const U2: &str = "22222222-2222-4222-8222-222222222222";
const U3: &str = "33333333-3333-4333-8333-333333333333";

/// Text-like bytes (compressible, different per seed).
fn text(len: usize, seed: u64) -> Vec<u8> {
    let words: Vec<&[u8]> = vec![
        b"block ",
        b"stone ",
        b"player ",
        b"chunk ",
        b"level=3 ",
        b"true\n",
        b"{\"id\":",
        b"42}, ",
    ];
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut v = Vec::with_capacity(len + 16);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(words[(x % words.len() as u64) as usize]);
    }
    v.truncate(len);
    v
}

/// About 8 MiB of small files in 16 directories, two large files, a symlink
/// and a hard link.
fn build_tree(root: &Path) {
    for d in 0..16u64 {
        for f in 0..40u64 {
            let path = root.join(format!("d{d:02}/f{f:02}.txt"));
            write_file(
                &path,
                &text(9000 + (f as usize * 37), d * 100 + f),
                0o644,
                1_600_000_000,
            );
        }
    }
    write_file(
        &root.join("big/a.bin"),
        &noise((3 << 20) + 777, 1),
        0o644,
        1_600_000_000,
    );
    write_file(
        &root.join("big/b.bin"),
        &text(700 << 10, 2),
        0o644,
        1_600_000_000,
    );
    std::os::unix::fs::symlink("d00/f00.txt", root.join("link")).unwrap();
    std::fs::hard_link(root.join("d05/f01.txt"), root.join("d05/hl")).unwrap();
}

/// SHA-1 of the archive's tar stream, inflated by real gzip.
fn backup(engine: &Engine, uuid: &str, reuse: bool) -> BackupDetails {
    let request = CreateRequest {
        reuse,
        ..create_request(uuid, "")
    };
    engine
        .create_backup(SERVER, &request, &mut Control::none())
        .unwrap()
}

/// Backup 1, `change`, backup 2 (reusing) and 3 (`reuse: false`): the tar
/// streams of 2 and 3 are equal; returns backup 2's details.
fn after_change(node: &Node, change: impl FnOnce(&Path)) -> BackupDetails {
    let first = backup(&node.engine, U1, true);
    assert_eq!(first.archive.reused_members, 0);
    change(&node.root());
    let second = backup(&node.engine, U2, true);
    let third = backup(&node.engine, U3, false);
    assert_eq!(third.archive.reused_members, 0);
    assert_eq!(third.archive.reused_bytes, 0);
    assert_eq!(
        tar_sha1(&node.archive(U2)),
        tar_sha1(&node.archive(U3)),
        "the reusing backup's tar stream differs from a fresh one's"
    );
    assert!(second.archive.reused_bytes <= second.archive.size);
    second
}

fn check_change(change: impl FnOnce(&Path)) {
    let node = Node::new();
    build_tree(&node.root());
    let second = after_change(&node, change);
    // Most groups hold no changed file.
    assert!(
        second.archive.reused_members >= 4,
        "only {} members reused",
        second.archive.reused_members
    );
}

#[test]
fn unchanged_tree_reuses_every_member_and_makes_the_same_archive() {
    let node = Node::new();
    build_tree(&node.root());
    let first = backup(&node.engine, U1, true);
    let second = backup(&node.engine, U2, true);
    let index = Index::load(&index::path_for(&node.archive(U1)))
        .unwrap()
        .unwrap();
    // Every member but the end-of-archive one.
    assert_eq!(
        second.archive.reused_members,
        index.members.len() as u64 - 1
    );
    // The copied members are the old archive's bytes (the end-of-archive
    // member is compressed again, and ISA-L may encode it differently).
    let eoa = index.members.last().unwrap().offset as usize;
    let (old, new) = (
        std::fs::read(node.archive(U1)).unwrap(),
        std::fs::read(node.archive(U2)).unwrap(),
    );
    assert_eq!(old[..eoa], new[..eoa]);
    assert_eq!(second.archive.reused_bytes, eoa as u64);
    assert_eq!(tar_sha1(&node.archive(U1)), tar_sha1(&node.archive(U2)));
    assert_eq!(first.archive.reused_members, 0);
}

#[test]
fn edit_in_place_with_a_new_mtime() {
    check_change(|root| {
        let p = root.join("d03/f05.txt");
        let len = std::fs::metadata(&p).unwrap().len() as usize;
        write_file(&p, &text(len, 999), 0o644, 1_700_000_000);
        // A large file too: same size, new bytes, new mtime.
        write_file(
            &root.join("big/a.bin"),
            &noise((3 << 20) + 777, 77),
            0o644,
            1_700_000_000,
        );
    });
}

#[test]
fn same_size_and_a_forged_mtime_is_seen_by_its_ctime() {
    check_change(|root| {
        let p = root.join("d02/f07.txt");
        let len = std::fs::metadata(&p).unwrap().len() as usize;
        // The old mtime put back: only the change time tells.
        write_file(&p, &text(len, 4242), 0o644, 1_600_000_000);
    });
}

#[test]
fn append() {
    check_change(|root| {
        for p in ["d04/f00.txt", "big/b.bin"] {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(root.join(p))
                .unwrap();
            std::io::Write::write_all(&mut f, b"appended line\n").unwrap();
        }
    });
}

#[test]
fn truncate() {
    check_change(|root| {
        for (p, len) in [("d06/f10.txt", 100), ("big/a.bin", 1 << 20)] {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(root.join(p))
                .unwrap();
            f.set_len(len).unwrap();
        }
    });
}

#[test]
fn rename_a_file_and_a_directory() {
    check_change(|root| {
        std::fs::rename(root.join("d07/f03.txt"), root.join("d07/zz.txt")).unwrap();
        std::fs::rename(root.join("d08"), root.join("e08")).unwrap();
    });
}

#[test]
fn delete() {
    check_change(|root| {
        std::fs::remove_file(root.join("d09/f01.txt")).unwrap();
        std::fs::remove_file(root.join("big/b.bin")).unwrap();
    });
}

#[test]
fn new_files() {
    check_change(|root| {
        write_file(&root.join("d10/new.txt"), b"new", 0o644, 1_700_000_000);
        write_file(
            &root.join("a_first/new.bin"),
            &noise(400 << 10, 9),
            0o644,
            1_700_000_000,
        );
    });
}

#[test]
fn chmod() {
    check_change(|root| {
        std::fs::set_permissions(
            root.join("d11/f02.txt"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
    });
}

#[test]
fn a_file_replaced_by_a_directory() {
    check_change(|root| {
        std::fs::remove_file(root.join("d12/f04.txt")).unwrap();
        write_file(
            &root.join("d12/f04.txt/inside.txt"),
            b"in",
            0o644,
            1_600_000_000,
        );
    });
}

#[test]
fn hard_links() {
    check_change(|root| {
        // The first path of a linked inode goes: the link becomes the file.
        std::fs::remove_file(root.join("d05/f01.txt")).unwrap();
        std::fs::hard_link(root.join("d13/f00.txt"), root.join("d13/zz_link")).unwrap();
    });
}

#[test]
fn a_symlink_retargeted() {
    check_change(|root| {
        std::fs::remove_file(root.join("link")).unwrap();
        std::os::unix::fs::symlink("d00/f01.txt", root.join("link")).unwrap();
    });
}

/// Flips one byte of `path` at `at`.
/// A file below 17 directories of 250-byte names (a path of 4,271 bytes,
/// longer than the kernel resolves in one call), made one directory at a
/// time; returns the directory holding it.
fn deep_file(root: &Path, data: &[u8]) -> std::os::fd::OwnedFd {
    let dir = deep_dirs(root, &"p".repeat(250), 17);
    append_at(&dir, data);
    dir
}

fn append_at(dir: &std::os::fd::OwnedFd, data: &[u8]) {
    use rustix::fs::{openat, Mode, OFlags};
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::APPEND | OFlags::CLOEXEC;
    let f = openat(dir, "leaf", flags, Mode::from_raw_mode(0o644)).unwrap();
    assert_eq!(rustix::io::write(&f, data).unwrap(), data.len());
}

#[test]
fn a_path_longer_than_path_max_is_read_when_it_changed_or_its_member_is_damaged() {
    let node = Node::new();
    build_tree(&node.root());
    let dir = deep_file(&node.root(), &text(5000, 3));
    // Changed: appended to.
    let second = after_change(&node, |_| append_at(&dir, b"appended line\n"));
    assert!(
        second.archive.skipped.is_empty(),
        "{:?}",
        second.archive.skipped
    );
    assert!(
        second.archive.changed.is_empty(),
        "{:?}",
        second.archive.changed
    );
    // Unchanged, but every old member damaged: each is read from the tree.
    let node = Node::new();
    build_tree(&node.root());
    deep_file(&node.root(), &text(5000, 3));
    backup(&node.engine, U1, true);
    let index = Index::load(&index::path_for(&node.archive(U1)))
        .unwrap()
        .unwrap();
    for m in &index.members {
        flip(&node.archive(U1), m.offset + m.compressed / 2);
    }
    let second = backup(&node.engine, U2, true);
    backup(&node.engine, U3, false);
    assert_eq!(tar_sha1(&node.archive(U2)), tar_sha1(&node.archive(U3)));
    assert!(
        second.archive.changed.is_empty(),
        "{:?}",
        second.archive.changed
    );
}

#[test]
fn a_fifo_in_place_of_the_previous_archive_or_its_index_is_not_waited_on() {
    use wings_backup::engine::{archive_create, ArchiveOptions};
    for which in ["archive", "index"] {
        let node = Node::new();
        build_tree(&node.root());
        let (old, new) = (node.dir.join("old.tar.gz"), node.dir.join("new.tar.gz"));
        let opts = ArchiveOptions::default();
        archive_create(&node.root(), &old, &opts, &mut Control::none()).unwrap();
        let fifo = match which {
            "archive" => old.clone(),
            _ => index::path_for(&old),
        };
        std::fs::remove_file(&fifo).unwrap();
        assert!(Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        let reusing = ArchiveOptions {
            reuse_from: Some(old.clone()),
            ..ArchiveOptions::default()
        };
        let (root, new_path) = (node.root(), new.clone());
        std::thread::scope(|s| {
            let (tx, rx) = std::sync::mpsc::channel();
            s.spawn(move || {
                let made = archive_create(&root, &new_path, &reusing, &mut Control::none());
                tx.send(made).unwrap()
            });
            match rx.recv_timeout(std::time::Duration::from_secs(30)) {
                Ok(made) => assert_eq!(made.unwrap().reused_members, 0, "{which}"),
                Err(_) => {
                    // A writer lets the blocked open go on, so the scope ends.
                    let _ = std::fs::OpenOptions::new().write(true).open(&fifo);
                    panic!("the backup waited on a FIFO at the previous {which}'s path");
                }
            }
        });
        let fresh = node.dir.join("fresh.tar.gz");
        archive_create(&node.root(), &fresh, &opts, &mut Control::none()).unwrap();
        assert_eq!(tar_sha1(&new), tar_sha1(&fresh));
    }
}

/// A file the backup's thread may not read (owned by another user, mode
/// 0600, the thread without `CAP_DAC_OVERRIDE` and `CAP_DAC_READ_SEARCH`) is
/// skipped by a reusing backup as by a fresh one, although the previous
/// archive, made with them, holds it.
#[test]
fn a_file_the_backup_can_no_longer_read_is_skipped_not_copied() {
    use rustix::thread::{capabilities, set_capabilities, CapabilitySet};
    use wings_backup::engine::{archive_create, ArchiveOptions};
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root to give a file to another user");
        return;
    }
    let node = Node::new();
    build_tree(&node.root());
    let secret = node.root().join("d03/secret.txt");
    write_file(&secret, &text(3000, 9), 0o600, 1_600_000_000);
    std::os::unix::fs::chown(&secret, Some(1234), Some(1234)).unwrap();
    let (old, new, fresh) = (
        node.dir.join("old.tar.gz"),
        node.dir.join("new.tar.gz"),
        node.dir.join("fresh.tar.gz"),
    );
    let opts = ArchiveOptions::default();
    archive_create(&node.root(), &old, &opts, &mut Control::none()).unwrap();
    let root = node.root();
    let (reusing, fresh_summary) = std::thread::spawn({
        let (old, new, fresh) = (old.clone(), new.clone(), fresh.clone());
        move || {
            // Capabilities are per thread; the threads the backup starts
            // inherit these.
            let mut caps = capabilities(None).unwrap();
            caps.effective
                .remove(CapabilitySet::DAC_OVERRIDE | CapabilitySet::DAC_READ_SEARCH);
            set_capabilities(None, caps).unwrap();
            let reuse = ArchiveOptions {
                reuse_from: Some(old),
                ..ArchiveOptions::default()
            };
            let a = archive_create(&root, &new, &reuse, &mut Control::none()).unwrap();
            let b = archive_create(
                &root,
                &fresh,
                &ArchiveOptions::default(),
                &mut Control::none(),
            )
            .unwrap();
            (a, b)
        }
    })
    .join()
    .unwrap();
    assert!(reusing.reused_members > 0);
    for summary in [&reusing, &fresh_summary] {
        let skipped: Vec<&[u8]> = summary.skipped.iter().map(|s| &s.path[..]).collect();
        assert_eq!(skipped, [b"d03/secret.txt"], "{:?}", summary.skipped);
    }
    assert_eq!(tar_sha1(&new), tar_sha1(&fresh));
}

/// An index edited to place a file's entry in another file's members (their
/// checksums intact) is not believed from there on: the new archive holds
/// each file's own bytes.
#[test]
fn an_index_that_places_an_entry_in_another_files_members_is_not_believed() {
    let node = Node::new();
    build_tree(&node.root());
    let c = noise((3 << 20) + 777, 3);
    write_file(&node.root().join("big/c.bin"), &c, 0o644, 1_600_000_000);
    backup(&node.engine, U1, true);
    let old = node.archive(U1);
    let mut index = Index::load(&index::path_for(&old)).unwrap().unwrap();
    let find = |index: &Index, path: &[u8]| index.entries.iter().position(|e| e.path == path);
    let (a, c) = (
        find(&index, b"big/a.bin").unwrap(),
        find(&index, b"big/c.bin").unwrap(),
    );
    index.entries[a].member = index.entries[c].member;
    index::browse::write_beside(&index, &old).unwrap();
    let second = backup(&node.engine, U2, true);
    backup(&node.engine, U3, false);
    assert_eq!(tar_sha1(&node.archive(U2)), tar_sha1(&node.archive(U3)));
    // The members before `big/a.bin` were still copied.
    assert!(second.archive.reused_members > 0);
}

fn flip(path: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x40], at).unwrap();
}

#[test]
fn a_flipped_byte_in_the_previous_archive_falls_back_for_its_member() {
    let node = Node::new();
    build_tree(&node.root());
    backup(&node.engine, U1, true);
    let old = node.archive(U1);
    let index = Index::load(&index::path_for(&old)).unwrap().unwrap();
    // One byte in the second member of the large file (that piece of it is
    // then read from the tree) and one in a group of small files.
    let big = index
        .entries
        .iter()
        .find(|e| e.path == b"big/a.bin")
        .unwrap();
    let big_members = index
        .members_for(index.tar_offset(big), index.tar_offset(big) + big.tar_len())
        .len();
    assert!(big_members >= 3);
    let big_second = index.members[big.member as usize + 1];
    let total = index.members.len();
    let small = index.members[total - 2];
    assert!(small.uncompressed < 1 << 20);
    flip(&old, big_second.offset + big_second.compressed / 2);
    flip(&old, small.offset + small.compressed / 2);
    let second = backup(&node.engine, U2, true);
    let third = backup(&node.engine, U3, false);
    assert_eq!(tar_sha1(&node.archive(U2)), tar_sha1(&node.archive(U3)));
    // All but the damaged small group, the large file's damaged member
    // (the ones after it are still copied) and the end.
    assert_eq!(second.archive.reused_members, (total - 1 - 1 - 1) as u64);
    assert_eq!(third.archive.reused_members, 0);
}

#[test]
fn no_index_or_a_stale_one_means_no_reuse() {
    // Missing index.
    let node = Node::new();
    build_tree(&node.root());
    backup(&node.engine, U1, true);
    std::fs::remove_file(index::path_for(&node.archive(U1))).unwrap();
    let second = backup(&node.engine, U2, true);
    assert_eq!(second.archive.reused_members, 0);
    assert_eq!(tar_sha1(&node.archive(U2)), tar_sha1(&node.archive(U1)));

    // Stale index: the archive replaced by another one.
    let node = Node::new();
    build_tree(&node.root());
    backup(&node.engine, U1, true);
    let other = node.dir.join("other.tar.gz");
    wings_backup::engine::archive_create(
        &node.root().join("d00"),
        &other,
        &Default::default(),
        &mut Control::none(),
    )
    .unwrap();
    std::fs::copy(&other, node.archive(U1)).unwrap();
    let second = backup(&node.engine, U2, true);
    let third = backup(&node.engine, U3, false);
    assert_eq!(second.archive.reused_members, 0);
    assert_eq!(third.archive.reused_members, 0);
    assert_eq!(tar_sha1(&node.archive(U2)), tar_sha1(&node.archive(U3)));
}

#[test]
fn another_compression_level_means_no_reuse() {
    let Node { dir, engine } = Node::with(|c| c.compression_level = CompressionLevel::None);
    build_tree(&dir.join("data").join(SERVER));
    backup(&engine, U1, true);
    drop(engine);
    let engine = Engine::new(EngineConfig {
        data_directory: dir.join("data"),
        backup_directory: dir.join("backups"),
        ..EngineConfig::default()
    })
    .unwrap();
    let second = backup(&engine, U2, true);
    assert_eq!(second.archive.reused_members, 0);
    let archive = |u: &str| dir.join("backups").join(format!("{u}.tar.gz"));
    assert_eq!(tar_sha1(&archive(U2)), tar_sha1(&archive(U1)));
    // Compressed this time: smaller than the stored archive.
    assert!(second.archive.size < std::fs::metadata(archive(U1)).unwrap().len());
}

#[test]
fn the_setting_turns_reuse_off() {
    let node = Node::with(|c| c.backup_reuse = false);
    build_tree(&node.root());
    backup(&node.engine, U1, true);
    let second = backup(&node.engine, U2, true);
    assert_eq!(second.archive.reused_members, 0);
}

#[test]
fn the_new_archive_needs_nothing_of_the_old_one() {
    let node = Node::new();
    build_tree(&node.root());
    let before = snapshot(&node.root());
    backup(&node.engine, U1, true);
    let second = backup(&node.engine, U2, true);
    assert!(second.archive.reused_members > 0);
    node.engine.delete_backup(SERVER, U1).unwrap();
    assert!(!node.archive(U1).exists());
    empty_dir(&node.root());
    node.restore(U2, true).unwrap();
    assert_eq!(snapshot(&node.root()), before);
    // GNU tar reads it too.
    let out = Command::new("tar")
        .arg("-tzf")
        .arg(node.archive(U2))
        .output()
        .unwrap();
    assert!(out.status.success());
}

#[test]
fn the_reuse_field_is_a_boolean_that_defaults_to_true() {
    use wings_backup::ffi::wire::create_request as parse;
    let body = |extra: &str| format!(r#"{{"adapter":"wings","uuid":"{U1}","ignore":""{extra}}}"#);
    assert!(parse(&body("")).unwrap().reuse);
    assert!(parse(&body(r#","reuse":null"#)).unwrap().reuse);
    assert!(!parse(&body(r#","reuse":false"#)).unwrap().reuse);
    let err = parse(&body(r#","reuse":"no""#)).unwrap_err();
    assert!(
        err.message.contains("`reuse` must be a boolean"),
        "{}",
        err.message
    );
}

/// `sha1sum` of a file.
fn file_sha1(path: &Path) -> String {
    let out = Command::new("sha1sum").arg(path).output().unwrap();
    assert!(out.status.success(), "sha1sum failed on {path:?}");
    String::from_utf8(out.stdout).unwrap()[..40].to_string()
}

/// Every member of the archive's index records the SHA-1 state of the
/// archive's bytes up to the member's last whole 64-byte block, which a
/// later backup resumes from.
fn check_states(archive: &Path) {
    use wings_backup::archive::sha1::Sha1Stream;
    let index = Index::load(&index::path_for(archive)).unwrap().unwrap();
    assert_eq!(index.header.version, 2);
    let bytes = std::fs::read(archive).unwrap();
    let mut s = Sha1Stream::new();
    for m in &index.members {
        s.update(&bytes[m.offset as usize..(m.offset + m.compressed) as usize]);
        assert_eq!(m.sha1_state, Some(s.state()), "member at {}", m.offset);
    }
}

#[test]
fn the_reported_sha1_is_the_archive_files_with_reuse() {
    let node = Node::new();
    build_tree(&node.root());
    let first = backup(&node.engine, U1, true);
    let second = backup(&node.engine, U2, true);
    assert!(second.archive.reused_members > 0);
    for (details, uuid) in [(&first, U1), (&second, U2)] {
        let file = file_sha1(&node.archive(uuid));
        assert_eq!(details.archive.sha1, file);
        assert_eq!(details.report.checksum, file);
        check_states(&node.archive(uuid));
    }
    // Unchanged: the same archive (the end-of-archive member is compressed
    // again, to the same bytes), so the same SHA-1.
    let (old, new) = (
        std::fs::read(node.archive(U1)).unwrap(),
        std::fs::read(node.archive(U2)).unwrap(),
    );
    assert!(old == new, "an unchanged tree gave another archive");
    assert_eq!(first.archive.sha1, second.archive.sha1);

    // One file in the middle of the tree changed: members after it move.
    let p = node.root().join("d08/f20.txt");
    let len = std::fs::metadata(&p).unwrap().len() as usize;
    write_file(&p, &text(len + 3000, 4711), 0o644, 1_700_000_000);
    let third = backup(&node.engine, U3, true);
    assert!(third.archive.reused_members > 0);
    let file = file_sha1(&node.archive(U3));
    assert_eq!(third.archive.sha1, file);
    assert_eq!(third.report.checksum, file);
    assert_ne!(third.archive.sha1, second.archive.sha1);
    check_states(&node.archive(U3));
}

#[test]
fn members_copied_by_the_kernel_make_the_same_archive() {
    // `copy_file_range` on any file system (on XFS and btrfs it is the
    // default, and shares the old archive's blocks).
    use wings_backup::archive::writer::KernelCopy;
    use wings_backup::engine::{archive_create, ArchiveOptions};
    let dir = TempDir::new("kernel-copy");
    let root = dir.join("tree");
    build_tree(&root);
    let archive = |name: &str, reuse: Option<&str>, kernel_copy| {
        let opts = ArchiveOptions {
            reuse_from: reuse.map(|r| dir.join(r)),
            kernel_copy,
            ..ArchiveOptions::default()
        };
        archive_create(&root, &dir.join(name), &opts, &mut Control::none()).unwrap()
    };
    let first = archive("a1.tar.gz", None, KernelCopy::Never);
    // Unchanged: every member but the end is the kernel's copy, byte for byte.
    let same = archive("a2.tar.gz", Some("a1.tar.gz"), KernelCopy::Always);
    assert!(same.reused_members >= 8, "{}", same.reused_members);
    assert_eq!(
        std::fs::read(dir.join("a1.tar.gz")).unwrap(),
        std::fs::read(dir.join("a2.tar.gz")).unwrap()
    );
    assert_eq!(same.sha1, first.sha1);
    // One file changed: copied members land at new offsets.
    let p = root.join("d03/f10.txt");
    let len = std::fs::metadata(&p).unwrap().len() as usize;
    write_file(&p, &text(len + 5000, 99), 0o644, 1_700_000_000);
    let changed = archive("a3.tar.gz", Some("a1.tar.gz"), KernelCopy::Always);
    let fresh = archive("a4.tar.gz", None, KernelCopy::Never);
    assert!(changed.reused_members >= 4, "{}", changed.reused_members);
    assert_eq!(fresh.reused_members, 0);
    assert_eq!(
        tar_sha1(&dir.join("a3.tar.gz")),
        tar_sha1(&dir.join("a4.tar.gz"))
    );
    assert_eq!(changed.sha1, file_sha1(&dir.join("a3.tar.gz")));
    check_states(&dir.join("a3.tar.gz"));
}

#[test]
fn an_index_of_format_version_1_is_still_reused() {
    let node = Node::new();
    build_tree(&node.root());
    backup(&node.engine, U1, true);
    // Rewrite the index as version 1 wrote it: no SHA-1 states.
    let path = index::path_for(&node.archive(U1));
    let mut old = Index::load(&path).unwrap().unwrap();
    old.header.version = 1;
    let mut w = index::IndexWriter::new(Vec::new(), &old.header).unwrap();
    for e in &old.entries {
        w.entry(e).unwrap();
    }
    for m in &mut old.members {
        m.sha1_state = None;
    }
    std::fs::write(&path, w.finish(&old.members, old.footer.clone()).unwrap()).unwrap();
    let reread = Index::load(&path).unwrap().unwrap();
    assert_eq!(
        (reread.header.version, reread.members),
        (1, old.members.clone())
    );

    let second = backup(&node.engine, U2, true);
    assert_eq!(second.archive.reused_members, old.members.len() as u64 - 1);
    assert_eq!(second.archive.sha1, file_sha1(&node.archive(U2)));
    assert_eq!(second.archive.sha1, old.footer.archive_sha1);
    check_states(&node.archive(U2));
}
