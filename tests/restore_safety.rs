//! Restore safety (docs/api.md sections 4 and 10): every hostile archive fails with the
//! right status, nothing is written outside the server root, and with
//! `truncate_directory: true` the server's files are left as they were.

mod common;

use common::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use wings_backup::Status;

const HOSTILE: &str = "deadbeef-0000-4000-8000-000000000001";

/// A node with some server files and an `outside` directory next to the data.
struct Scene {
    node: Node,
    outside: PathBuf,
}

impl Scene {
    fn new() -> Scene {
        let node = Node::new();
        write_file(
            &node.root().join("server.properties"),
            b"keep me",
            0o644,
            1_600_000_000,
        );
        write_file(
            &node.root().join("world/level.dat"),
            b"level",
            0o644,
            1_600_000_000,
        );
        let outside = node.dir.join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        write_file(&outside.join("secret"), b"secret", 0o600, 1_600_000_000);
        Scene { node, outside }
    }

    /// Everything on the node that is not inside the server root.
    fn outside_view(&self) -> Vec<(PathBuf, Option<Vec<u8>>)> {
        let root = self.node.root();
        list_all(self.node.dir.path())
            .into_iter()
            .filter(|p| !p.starts_with(&root) && !p.starts_with(self.node.backups()))
            .map(|p| {
                let data = std::fs::symlink_metadata(&p)
                    .ok()
                    .filter(|m| m.is_file())
                    .map(|_| std::fs::read(&p).unwrap());
                (p, data)
            })
            .collect()
    }

    /// Restores `archive` (gzipped bytes) in both modes and checks the outcome.
    fn expect(&self, archive: &[u8], status: Status, message_part: &str) {
        std::fs::write(self.node.archive(HOSTILE), archive).unwrap();
        for truncate in [true, false] {
            // The root's own times too: the staging directory made and
            // removed in it must not show.
            set_mtime(&self.node.root(), 1_500_000_000);
            let before_root = snapshot(&self.node.root());
            let before_outside = self.outside_view();
            let err = self.node.restore(HOSTILE, truncate).unwrap_err();
            let root_meta = std::fs::metadata(self.node.root()).unwrap();
            assert_eq!(
                (root_meta.mtime(), root_meta.mtime_nsec()),
                (1_500_000_000, 0),
                "truncate={truncate}: the root's mtime changed"
            );
            assert_eq!(err.status, status, "truncate={truncate}: {}", err.message);
            assert!(
                err.message.contains(message_part),
                "message {:?} should mention {message_part:?}",
                err.message
            );
            assert_eq!(
                self.outside_view(),
                before_outside,
                "nothing changes outside the root"
            );
            assert_eq!(
                snapshot(&self.node.root()),
                before_root,
                "the server's files are intact"
            );
        }
    }
}

#[test]
fn dot_dot_escape_is_refused() {
    let s = Scene::new();
    let mut t = RawTar::default();
    t.entry(b"ok.txt", b'0', b"", 0o644, b"fine");
    t.entry(b"world/../../escape.txt", b'0', b"", 0o644, b"evil");
    s.expect(
        &gzip(&t.finish()),
        Status::UnsafeEntry,
        "world/../../escape.txt",
    );
    let mut t = RawTar::default();
    t.entry(b"../outside/secret", b'0', b"", 0o644, b"evil");
    s.expect(
        &gzip(&t.finish()),
        Status::UnsafeEntry,
        "leaves the server directory",
    );
}

#[test]
fn absolute_paths_are_refused() {
    let s = Scene::new();
    let target = s.outside.join("abs.txt");
    let mut t = RawTar::default();
    t.entry(
        target.to_str().unwrap().as_bytes(),
        b'0',
        b"",
        0o644,
        b"evil",
    );
    s.expect(&gzip(&t.finish()), Status::UnsafeEntry, "absolute");
    assert!(!target.exists());
}

#[test]
fn a_file_below_an_archived_symlink_is_refused() {
    let s = Scene::new();
    for link in [
        s.outside.to_str().unwrap().as_bytes().to_vec(),
        b"../../outside".to_vec(),
    ] {
        let mut t = RawTar::default();
        t.entry(b"link", b'2', &link, 0o777, b"");
        t.entry(b"link/secret", b'0', b"", 0o644, b"overwritten");
        t.entry(b"link/new", b'0', b"", 0o644, b"created");
        s.expect(&gzip(&t.finish()), Status::UnsafeEntry, "link/secret");
        assert_eq!(std::fs::read(s.outside.join("secret")).unwrap(), b"secret");
        assert!(!s.outside.join("new").exists());
    }
}

#[test]
fn hard_links_to_outside_are_refused() {
    let s = Scene::new();
    let abs = s.outside.join("secret");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            b"../../outside/secret".to_vec(),
            "leaves the server directory",
        ),
        (
            abs.to_str().unwrap().as_bytes().to_vec(),
            "leaves the server directory",
        ),
    ];
    for (target, why) in cases {
        let mut t = RawTar::default();
        t.entry(b"stolen", b'1', &target, 0o644, b"");
        s.expect(&gzip(&t.finish()), Status::UnsafeEntry, why);
    }
    // Through an archived symlink: would link the outside file into the root.
    let mut t = RawTar::default();
    t.entry(
        b"door",
        b'2',
        s.outside.to_str().unwrap().as_bytes(),
        0o777,
        b"",
    );
    t.entry(b"stolen", b'1', b"door/secret", 0o644, b"");
    s.expect(&gzip(&t.finish()), Status::UnsafeEntry, "stolen");
}

#[test]
fn a_symlink_already_in_the_server_pointing_outside_is_not_followed() {
    let s = Scene::new();
    std::os::unix::fs::symlink(&s.outside, s.node.root().join("plugins")).unwrap();
    let mut t = RawTar::default();
    t.entry(b"plugins/", b'5', b"", 0o755, b"");
    t.entry(b"plugins/secret", b'0', b"", 0o644, b"overwritten");
    s.expect(&gzip(&t.finish()), Status::UnsafeEntry, "plugins/secret");
    assert_eq!(std::fs::read(s.outside.join("secret")).unwrap(), b"secret");
    // Without a directory entry, only the file below it.
    let mut t = RawTar::default();
    t.entry(b"plugins/evil.jar", b'0', b"", 0o644, b"x");
    s.expect(&gzip(&t.finish()), Status::UnsafeEntry, "plugins");
    assert!(!s.outside.join("evil.jar").exists());
}

#[test]
fn device_nodes_and_fifos_are_skipped_not_created() {
    let s = Scene::new();
    let mut t = RawTar::default();
    t.entry(b"dev_null", b'3', b"", 0o666, b"");
    t.entry(b"dev_sda", b'4', b"", 0o660, b"");
    t.entry(b"pipe", b'6', b"", 0o644, b"");
    t.entry(b"real.txt", b'0', b"", 0o644, b"real");
    std::fs::write(s.node.archive(HOSTILE), gzip(&t.finish())).unwrap();
    s.node.restore(HOSTILE, true).unwrap();
    let snap = snapshot(&s.node.root());
    let names: Vec<_> = snap
        .keys()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    assert_eq!(names, vec!["real.txt"]);
}

#[test]
fn setuid_and_setgid_bits_are_cleared() {
    let s = Scene::new();
    let mut t = RawTar::default();
    t.entry(b"suid", b'0', b"", 0o4755, b"#!/bin/sh\n");
    t.entry(b"sgid", b'0', b"", 0o2755, b"#!/bin/sh\n");
    t.entry(b"sticky/", b'5', b"", 0o3777, b"");
    std::fs::write(s.node.archive(HOSTILE), gzip(&t.finish())).unwrap();
    s.node.restore(HOSTILE, true).unwrap();
    let mode = |p: &str| {
        std::fs::symlink_metadata(s.node.root().join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("suid"), 0o755);
    assert_eq!(mode("sgid"), 0o755);
    assert_eq!(mode("sticky"), 0o1777);
}

/// The bytes of an archive this engine makes of `files` files of `len`
/// bytes each, byte `j` of file `i` being `byte(i, j)`.
fn our_archive_of(s: &Scene, files: u32, byte: impl Fn(u32, u32) -> u8, len: u32) -> Vec<u8> {
    let src = TempDir::new("our-archive-src");
    for i in 0..files {
        let data: Vec<u8> = (0..len).map(|j| byte(i, j)).collect();
        write_file(&src.join(format!("f{i}")), &data, 0o644, 1_600_000_000);
    }
    let full = s.node.dir.join("ours.tar.gz");
    wings_backup::engine::archive_create(
        src.path(),
        &full,
        &wings_backup::engine::ArchiveOptions::default(),
        &mut wings_backup::progress::Control::none(),
    )
    .unwrap();
    std::fs::read(&full).unwrap()
}

#[test]
fn truncated_gzip_is_a_corrupt_archive_and_loses_nothing() {
    let s = Scene::new();
    // A real backup of a bigger tree, cut short.
    let bytes = our_archive_of(&s, 50, |i, j| ((i * 7 + j * 13) % 251) as u8, 40_000);
    for cut in [bytes.len() / 2, bytes.len() - 40, bytes.len() - 1] {
        s.expect(&bytes[..cut], Status::CorruptArchive, "");
    }
    // A foreign single-member gzip cut short.
    let mut t = RawTar::default();
    for i in 0..20 {
        t.entry(
            format!("g{i}").as_bytes(),
            b'0',
            b"",
            0o644,
            &vec![i as u8; 30_000],
        );
    }
    let g = gzip(&t.finish());
    s.expect(&g[..g.len() - 10], Status::CorruptArchive, "");
}

#[test]
fn our_archive_cut_after_a_whole_member_is_truncated_not_short() {
    // Entries of exactly one block of the tar stream each (header + data =
    // BLOCK_SIZE), so that every gzip member ends at an entry boundary: a
    // cut there leaves a valid gzip stream of whole entries.
    use wings_backup::archive::gzip::{parse_member_header, BLOCK_SIZE, HEADER_LEN};
    let s = Scene::new();
    let noise = |i: u32, j: u32| (j.wrapping_mul(2_654_435_761) >> (i + 3)) as u8;
    let bytes = our_archive_of(&s, 4, noise, BLOCK_SIZE as u32 - 512);
    let mut cuts = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let head = &bytes[at..(at + HEADER_LEN).min(bytes.len())];
        let member = parse_member_header(head).expect("a member of our making");
        at += member.member_len;
        cuts.push(at);
    }
    assert!(cuts.len() >= 4, "members: {cuts:?}");
    for cut in &cuts[..cuts.len() - 1] {
        s.expect(&bytes[..*cut], Status::CorruptArchive, "");
    }
}

#[test]
fn data_that_is_not_gzip_is_a_corrupt_archive() {
    let s = Scene::new();
    s.expect(
        b"this is not a gzip file at all",
        Status::CorruptArchive,
        "not gzip",
    );
    s.expect(b"", Status::CorruptArchive, "empty");
    let mut t = RawTar::default();
    t.entry(b"plain.txt", b'0', b"", 0o644, b"uncompressed tar");
    s.expect(&t.finish(), Status::CorruptArchive, "not gzip");
    // Gzip of something that is not a tar.
    s.expect(&gzip(&[0x42; 2000]), Status::CorruptArchive, "checksum");
}

#[test]
fn entries_claiming_more_data_than_there_is_are_corrupt() {
    let s = Scene::new();
    let mut t = RawTar::default();
    t.entry_with_size(
        b"huge.bin",
        b'0',
        b"",
        0o644,
        b"only a little",
        8_000_000_000,
    );
    s.expect(&gzip(&t.bytes), Status::CorruptArchive, "truncated");
}

#[test]
fn duplicated_entries_may_not_turn_a_directory_into_a_symlink() {
    let s = Scene::new();
    let mut t = RawTar::default();
    t.entry(b"mods/", b'5', b"", 0o755, b"");
    t.entry(b"mods/a.jar", b'0', b"", 0o644, b"a");
    t.entry(
        b"mods",
        b'2',
        s.outside.to_str().unwrap().as_bytes(),
        0o777,
        b"",
    );
    t.entry(b"mods/secret", b'0', b"", 0o644, b"overwritten");
    s.expect(&gzip(&t.finish()), Status::UnsafeEntry, "mods");
    assert_eq!(std::fs::read(s.outside.join("secret")).unwrap(), b"secret");
}

#[test]
fn a_later_entry_of_a_name_replaces_the_earlier_one_without_following_it() {
    use std::os::unix::fs::MetadataExt;
    let s = Scene::new();
    let mut t = RawTar::default();
    t.entry(b"a.txt", b'0', b"", 0o644, b"one");
    t.entry(b"a.txt", b'0', b"", 0o644, b"two");
    let outside = s.outside.join("secret");
    t.entry(
        b"link",
        b'2',
        outside.to_str().unwrap().as_bytes(),
        0o777,
        b"",
    );
    t.entry(b"link", b'0', b"", 0o644, b"a file now");
    t.entry(b"f", b'0', b"", 0o644, b"x");
    t.entry(b"f", b'2', b"a.txt", 0o777, b"");
    t.entry(b"h", b'0', b"", 0o644, b"h");
    t.entry(b"h", b'1', b"a.txt", 0o644, b"");
    std::fs::write(s.node.archive(HOSTILE), gzip(&t.finish())).unwrap();
    for truncate in [true, false] {
        s.node.restore(HOSTILE, truncate).unwrap();
        let root = s.node.root();
        assert_eq!(std::fs::read(root.join("a.txt")).unwrap(), b"two");
        let link = std::fs::symlink_metadata(root.join("link")).unwrap();
        assert!(link.is_file(), "the file replaced the symlink");
        assert_eq!(std::fs::read(root.join("link")).unwrap(), b"a file now");
        assert_eq!(std::fs::read(&outside).unwrap(), b"secret");
        let f = std::fs::read_link(root.join("f")).unwrap();
        assert_eq!(f, PathBuf::from("a.txt"));
        let (h, a) = (
            std::fs::metadata(root.join("h")).unwrap(),
            std::fs::metadata(root.join("a.txt")).unwrap(),
        );
        assert_eq!((h.dev(), h.ino()), (a.dev(), a.ino()), "h is a hard link");
    }
    // A directory is never replaced by a later entry.
    let mut t = RawTar::default();
    t.entry(b"mods/", b'5', b"", 0o755, b"");
    t.entry(b"mods/a.jar", b'0', b"", 0o644, b"a");
    t.entry(b"mods", b'0', b"", 0o644, b"a file");
    s.expect(&gzip(&t.finish()), Status::UnsafeEntry, "mods");
}

#[test]
fn pax_and_gnu_long_names_cannot_escape() {
    let s = Scene::new();
    let mut t = RawTar::default();
    t.pax(&[("path", b"../../outside/pax-escape")]);
    t.entry(b"innocent.txt", b'0', b"", 0o644, b"evil");
    s.expect(&gzip(&t.finish()), Status::UnsafeEntry, "pax-escape");
    let mut t = RawTar::default();
    let long = format!(
        "{}/{}/../../../outside/gnu-escape",
        "a".repeat(80),
        "b".repeat(80)
    );
    t.entry(b"././@LongLink", b'L', b"", 0o644, long.as_bytes());
    t.entry(b"innocent.txt", b'0', b"", 0o644, b"evil");
    s.expect(&gzip(&t.finish()), Status::UnsafeEntry, "gnu-escape");
    assert!(!s.outside.join("pax-escape").exists() && !s.outside.join("gnu-escape").exists());
}

#[test]
fn the_disk_limit_stops_a_gzip_bomb() {
    let node = Node::with(|c| c.disk_limit = 1_000_000);
    write_file(&node.root().join("old.txt"), b"old", 0o644, 1_600_000_000);
    let mut t = RawTar::default();
    t.entry(b"bomb.bin", b'0', b"", 0o644, &vec![0u8; 50_000_000]);
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut e, &t.finish()).unwrap();
    let archive = e.finish().unwrap();
    assert!(archive.len() < 200_000, "{}", archive.len());
    std::fs::write(node.archive(HOSTILE), archive).unwrap();
    let before = snapshot(&node.root());
    for truncate in [true, false] {
        let err = node.restore(HOSTILE, truncate).unwrap_err();
        assert_eq!(err.status, Status::Quota, "{}", err.message);
        assert_eq!(snapshot(&node.root()), before);
    }
}

#[test]
fn reserved_names_in_archives_are_ignored() {
    let s = Scene::new();
    let mut t = RawTar::default();
    t.entry(
        b".wings-backup-restore-fake/commit",
        b'0',
        b"",
        0o644,
        b"truncate\n",
    );
    t.entry(b"real.txt", b'0', b"", 0o644, b"r");
    std::fs::write(s.node.archive(HOSTILE), gzip(&t.finish())).unwrap();
    s.node.restore(HOSTILE, true).unwrap();
    let names: Vec<_> = snapshot(&s.node.root())
        .keys()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    assert_eq!(names, vec!["real.txt"]);
}
