//! Browse: the entries directly under a directory of a backup, compared
//! with GNU tar's own listing (`tar -tv`) of the same archive; an archive
//! without an index (GNU tar's) is read once and its index written beside
//! it; paths the archive does not hold are NotFound, `..` is refused.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::*;
use wings_backup::index::{self, EntryKind, FileEntry};
use wings_backup::Status;

/// One line of `tar -tv`: what a user sees of an entry.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Listed {
    kind: char,
    mode: u32,
    size: u64,
    mtime: i64,
    link: String,
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn perm_bits(s: &str) -> u32 {
    let b: Vec<char> = s.chars().collect();
    let mut mode = 0;
    for (i, bit) in [
        (1, 0o400),
        (2, 0o200),
        (4, 0o40),
        (5, 0o20),
        (7, 0o4),
        (8, 0o2),
    ] {
        if b[i] != '-' {
            mode |= bit;
        }
    }
    for (i, x, special) in [(3, 0o100, 0o4000), (6, 0o10, 0o2000), (9, 0o1, 0o1000)] {
        match b[i] {
            'x' => mode |= x,
            's' | 't' => mode |= x | special,
            'S' | 'T' => mode |= special,
            _ => {}
        }
    }
    mode
}

/// GNU tar's verbose listing of `archive`, by path (without `./` or a
/// trailing slash). Names in the test trees have no newlines.
fn tar_tv(archive: &Path) -> BTreeMap<String, Listed> {
    let out = Command::new("tar")
        .args([
            "--utc",
            "--full-time",
            "--numeric-owner",
            "--quoting-style=literal",
            "-tvzf",
        ])
        .arg(archive)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut map = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        // perms owner size date time name
        let mut rest = line;
        let mut fields = Vec::new();
        for _ in 0..5 {
            rest = rest.trim_start();
            let end = rest.find(' ').unwrap();
            fields.push(&rest[..end]);
            rest = &rest[end..];
        }
        let name_part = &rest[1..];
        let kind = fields[0].chars().next().unwrap();
        let (name, link) = match kind {
            'l' => {
                let (n, l) = name_part.split_once(" -> ").unwrap();
                (n, l.to_string())
            }
            'h' => {
                let (n, l) = name_part.split_once(" link to ").unwrap();
                (n, l.to_string())
            }
            _ => (name_part, String::new()),
        };
        let date: Vec<i64> = fields[3].split('-').map(|x| x.parse().unwrap()).collect();
        let time: Vec<i64> = fields[4].split(':').map(|x| x.parse().unwrap()).collect();
        let mtime = days_from_civil(date[0], date[1], date[2]) * 86400
            + time[0] * 3600
            + time[1] * 60
            + time[2];
        let path = name
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        if path.is_empty() || path == "." {
            continue;
        }
        map.insert(
            path,
            Listed {
                kind,
                mode: perm_bits(fields[0]),
                size: if kind == '-' {
                    fields[2].parse().unwrap()
                } else {
                    0
                },
                mtime,
                link,
            },
        );
    }
    map
}

fn as_listed(e: &FileEntry) -> Listed {
    Listed {
        kind: match e.kind {
            EntryKind::File => '-',
            EntryKind::Dir => 'd',
            EntryKind::Symlink => 'l',
            EntryKind::HardLink => 'h',
            EntryKind::Fifo => 'p',
        },
        mode: e.mode,
        size: e.size,
        mtime: e.mtime,
        link: String::from_utf8_lossy(&e.link).into_owned(),
    }
}

/// The children of `dir` according to GNU tar's listing.
fn tar_children(listing: &BTreeMap<String, Listed>, dir: &str) -> BTreeMap<String, Listed> {
    listing
        .iter()
        .filter_map(|(path, l)| {
            let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
            (parent == dir).then(|| (name.to_string(), l.clone()))
        })
        .collect()
}

fn ours(list: &[FileEntry]) -> BTreeMap<String, Listed> {
    list.iter()
        .map(|e| (String::from_utf8_lossy(&e.name).into_owned(), as_listed(e)))
        .collect()
}

fn nested_tree(root: &Path) {
    write_file(
        &root.join("server.properties"),
        b"motd=hi\n",
        0o644,
        1_600_000_000,
    );
    write_file(&root.join("start.sh"), b"#!/bin/sh\n", 0o755, 1_600_000_100);
    write_file(
        &root.join("world/level.dat"),
        &[7u8; 5000],
        0o640,
        1_600_000_200,
    );
    write_file(
        &root.join("world/region/r.0.0.mca"),
        &noise(1_500_000, 3),
        0o600,
        1_600_000_300,
    );
    write_file(
        &root.join("world/region/r.0.1.mca"),
        &noise(200_000, 4),
        0o600,
        1_600_000_301,
    );
    write_file(
        &root.join("a/b/c/deep file.txt"),
        b"deep",
        0o4755,
        1_600_000_400,
    );
    write_file(&root.join("a/b/sibling"), b"s", 0o600, 1_600_000_500);
    std::fs::create_dir_all(root.join("a/empty")).unwrap();
    std::os::unix::fs::symlink("../world/level.dat", root.join("a/link")).unwrap();
    std::fs::hard_link(root.join("start.sh"), root.join("a/hard.sh")).unwrap();
    let fifo = root.join("a/b/pipe");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    for (dir, t) in [
        ("a/b/c", 1_500_000_000),
        ("a/b", 1_500_000_100),
        ("a/empty", 1_500_000_150),
        ("a", 1_500_000_200),
        ("world/region", 1_500_000_300),
        ("world", 1_500_000_400),
    ] {
        set_mtime(&root.join(dir), t);
    }
}

const DIRS: [&str; 7] = ["", "a", "a/b", "a/b/c", "a/empty", "world", "world/region"];

#[test]
fn browse_of_nested_directories_matches_gnu_tar() {
    let node = Node::new();
    nested_tree(&node.root());
    node.create(BACKUP, "").unwrap();
    let listing = tar_tv(&node.archive(BACKUP));
    assert!(listing.len() >= 15, "{listing:?}");
    for dir in DIRS {
        let got = node.engine.list_files(SERVER, BACKUP, dir).unwrap();
        let want = tar_children(&listing, dir);
        assert_eq!(ours(&got), want, "directory {dir:?}");
        // Sorted by name.
        let names: Vec<&[u8]> = got.iter().map(|e| &e.name[..]).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
    }
    // The second name of the hard-linked file lists as a hard link.
    let top = ours(&node.engine.list_files(SERVER, BACKUP, "").unwrap());
    let a = ours(&node.engine.list_files(SERVER, BACKUP, "a").unwrap());
    assert!(top["start.sh"].kind == 'h' || a["hard.sh"].kind == 'h');
    // Every spelling of a directory lists the same.
    let world = node.engine.list_files(SERVER, BACKUP, "world").unwrap();
    for spelling in ["world/", "/world", "./world", "/world/", "world//"] {
        assert_eq!(
            node.engine.list_files(SERVER, BACKUP, spelling).unwrap(),
            world
        );
    }
    assert_eq!(
        node.engine.list_files(SERVER, BACKUP, "/").unwrap(),
        node.engine.list_files(SERVER, BACKUP, "").unwrap()
    );
}

#[test]
fn missing_paths_files_and_dotdot_are_refused() {
    let node = Node::new();
    nested_tree(&node.root());
    node.create(BACKUP, "").unwrap();
    let e = node
        .engine
        .list_files(SERVER, BACKUP, "nope/deeper")
        .unwrap_err();
    assert_eq!(e.status, Status::NotFound);
    assert_eq!(e.message, "The requested path was not found in the backup.");
    let e = node
        .engine
        .list_files(SERVER, BACKUP, "start.sh")
        .unwrap_err();
    assert_eq!(e.status, Status::NotFound);
    assert!(e.message.contains("not a directory"), "{}", e.message);
    for bad in ["..", "world/../..", "/../etc"] {
        let e = node.engine.list_files(SERVER, BACKUP, bad).unwrap_err();
        assert_eq!(e.status, Status::InvalidArgument, "{bad}");
        assert!(e.message.contains(".."), "{}", e.message);
    }
    // Unknown backup, unknown server.
    let other = "11111111-2222-4333-8444-555555555555";
    let e = node.engine.list_files(SERVER, other, "").unwrap_err();
    assert_eq!(e.status, Status::NotFound);
    let e = node.engine.list_files(other, BACKUP, "").unwrap_err();
    assert_eq!(e.status, Status::NotFound);
}

#[test]
fn an_archive_without_index_is_read_once_and_indexed() {
    let node = Node::new();
    let src = node.dir.join("src");
    nested_tree(&src);
    std::fs::create_dir_all(node.backups()).unwrap();
    let archive = node.archive(BACKUP);
    // GNU tar: one gzip member, `./` names.
    gnu_tar_gz(&src, &archive);
    let index_path = index::path_for(&archive);
    assert!(!index_path.exists());
    let listing = tar_tv(&archive);
    for dir in DIRS {
        let got = node.engine.list_files(SERVER, BACKUP, dir).unwrap();
        assert_eq!(ours(&got), tar_children(&listing, dir), "directory {dir:?}");
    }
    // The index is there now, and is the one used: the archive's bytes
    // overwritten (same length), browse still answers from the index.
    let len = std::fs::metadata(&archive).unwrap().len();
    let index = index::load_for(&archive, len).expect("an index was written");
    assert_eq!(index.members.len(), 1);
    let before = node.engine.list_files(SERVER, BACKUP, "a/b").unwrap();
    std::fs::write(&archive, vec![0u8; len as usize]).unwrap();
    assert_eq!(
        node.engine.list_files(SERVER, BACKUP, "a/b").unwrap(),
        before
    );
}

#[test]
fn directories_held_only_implicitly_still_list() {
    let dir = TempDir::new("implicit");
    let src = dir.join("src");
    write_file(&src.join("a/b/c.txt"), b"c", 0o644, 1_600_000_000);
    write_file(&src.join("top.txt"), b"t", 0o644, 1_600_000_000);
    let archive = dir.join("x.tar.gz");
    // Files only: no entry for `a` or `a/b`.
    let st = Command::new("tar")
        .arg("-czf")
        .arg(&archive)
        .arg("-C")
        .arg(&src)
        .args(["a/b/c.txt", "top.txt"])
        .status()
        .unwrap();
    assert!(st.success());
    let top = wings_backup::engine::archive_list(&archive, "").unwrap();
    let names: Vec<(String, EntryKind)> = top
        .iter()
        .map(|e| (String::from_utf8_lossy(&e.name).into_owned(), e.kind))
        .collect();
    assert_eq!(
        names,
        [
            ("a".to_string(), EntryKind::Dir),
            ("top.txt".to_string(), EntryKind::File)
        ]
    );
    let b = wings_backup::engine::archive_list(&archive, "a/b").unwrap();
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].name, b"c.txt");
}

#[test]
fn hostile_archives_fail_cleanly() {
    let dir = TempDir::new("hostile");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("not gzip", b"hello, not an archive at all".to_vec()),
        ("cut", {
            let mut t = RawTar::default();
            t.entry(b"a.txt", b'0', b"", 0o644, &[1u8; 4000]);
            let g = gzip(&t.finish());
            g[..g.len() / 2].to_vec()
        }),
        ("absurd size", {
            let mut t = RawTar::default();
            t.entry_with_size(b"a.txt", b'0', b"", 0o644, b"x", 0o77_777_777_777);
            gzip(&t.finish())
        }),
        ("huge name", {
            let mut t = RawTar::default();
            t.pax(&[("path", &vec![b'n'; 2 << 20])]);
            t.entry(b"a.txt", b'0', b"", 0o644, b"x");
            gzip(&t.finish())
        }),
    ];
    for (what, bytes) in cases {
        let archive = dir.join(format!("{}.tar.gz", what.replace(' ', "_")));
        std::fs::write(&archive, &bytes).unwrap();
        let err = wings_backup::engine::archive_list(&archive, "").unwrap_err();
        assert_eq!(err.status, Status::CorruptArchive, "{what}: {err:?}");
        assert!(!index::path_for(&archive).exists(), "{what}");
    }
}

#[test]
fn a_backup_whose_archive_is_gone_browses_from_its_index() {
    // As an `s3` backup: only its index stays on the node.
    let node = Node::new();
    nested_tree(&node.root());
    node.create(BACKUP, "").unwrap();
    let want = node.engine.list_files(SERVER, BACKUP, "a/b").unwrap();
    // An s3 backup keeps its index as a hidden file of the backup directory.
    std::fs::remove_file(node.archive(BACKUP)).unwrap();
    let s3_index = node
        .backups()
        .join(format!(".s3-indexes/{BACKUP}.tar.gz.index"));
    std::fs::create_dir_all(s3_index.parent().unwrap()).unwrap();
    std::fs::rename(index::path_for(&node.archive(BACKUP)), &s3_index).unwrap();
    assert_eq!(node.engine.list_files(SERVER, BACKUP, "a/b").unwrap(), want);
    // Neither archive nor index: the backup is unknown.
    std::fs::remove_file(&s3_index).unwrap();
    let e = node.engine.list_files(SERVER, BACKUP, "a/b").unwrap_err();
    assert_eq!(e.status, Status::NotFound);
    assert_eq!(
        e.message,
        "The requested backup was not found on this server."
    );
}
