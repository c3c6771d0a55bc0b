//! The index written beside every archive: each entry's recorded place in
//! the archive holds that entry (read through the index alone, as browse
//! and single-file restore do), the members tile the file and match their
//! checksums, and the listing agrees with GNU tar's.

mod common;

use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use common::*;
use sha1::{Digest, Sha1};
use wings_backup::engine::{archive_create, ArchiveOptions};
use wings_backup::index::{self, EntryKind, Index};
use wings_backup::progress::Control;

/// The tar bytes `[start, end)` of `archive`, inflating only the members
/// the index says hold them; also returns how many compressed bytes it read.
fn tar_range(archive: &[u8], index: &Index, start: u64, end: u64) -> (Vec<u8>, u64) {
    let members = index.members_for(start, end);
    let first = &index.members[members.start];
    let mut tar = Vec::new();
    let mut read = 0;
    for m in &index.members[members] {
        let bytes = &archive[m.offset as usize..(m.offset + m.compressed) as usize];
        read += bytes.len() as u64;
        assert_eq!(index::member_checksum(bytes), m.checksum);
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out.len() as u64, m.uncompressed);
        tar.extend_from_slice(&out);
    }
    let from = (start - first.tar_offset) as usize;
    (tar[from..from + (end - start) as usize].to_vec(), read)
}

/// GNU tar's listing, names as they are (one per line).
fn tar_listing(archive: &Path) -> Vec<u8> {
    let out = std::process::Command::new("tar")
        .args(["--quoting-style=literal", "-tzf"])
        .arg(archive)
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

#[test]
fn every_entry_is_where_the_index_says() {
    let dir = TempDir::new("index");
    let src = dir.join("src");
    build_game_tree(&src);
    std::fs::create_dir_all(src.join("big")).unwrap();
    // Spans several 1 MiB members and starts mid-member.
    let big = noise(3 << 20 | 777, 5);
    write_file(&src.join("big/region.mca"), &big, 0o640, 1_600_000_000);
    let long = format!("{}/{}", "d".repeat(120), "f".repeat(120));
    std::fs::create_dir_all(src.join(&long).parent().unwrap()).unwrap();
    write_file(&src.join(&long), b"long name", 0o600, 1_600_000_001);
    std::os::unix::fs::symlink("big/region.mca", src.join("link")).unwrap();
    std::fs::hard_link(src.join("big/region.mca"), src.join("hard.mca")).unwrap();

    let out = dir.join("out.tar.gz");
    let summary =
        archive_create(&src, &out, &ArchiveOptions::default(), &mut Control::none()).unwrap();
    let bytes = std::fs::read(&out).unwrap();
    let index = Index::load(&index::path_for(&out))
        .unwrap()
        .expect("an index");
    assert!(index::load_for(&out, bytes.len() as u64).is_some());
    assert!(index::load_for(&out, bytes.len() as u64 + 1).is_none());

    // The file and the members agree.
    assert_eq!(index.footer.archive_size, bytes.len() as u64);
    assert_eq!(index.footer.archive_sha1, summary.sha1);
    assert_eq!(
        format!("{:x}", Sha1::digest(&bytes)),
        index.footer.archive_sha1
    );
    assert!(index.members.len() >= 4, "{} members", index.members.len());
    index.check_consistent().unwrap();

    // Same entries, same order, as GNU tar lists them.
    let mut names = Vec::new();
    for e in &index.entries {
        names.extend_from_slice(&e.path);
        if e.kind == EntryKind::Dir {
            names.push(b'/');
        }
        names.push(b'\n');
    }
    assert_eq!(
        String::from_utf8_lossy(&names),
        String::from_utf8_lossy(&tar_listing(&out))
    );

    // Each entry, read through the index alone, is a tar header of that
    // name (the `tar` crate reads it) followed by the file's bytes.
    for e in &index.entries {
        let start = index.tar_offset(e);
        let (slice, read) = tar_range(&bytes, &index, start, start + e.tar_len());
        let mut ar = tar::Archive::new(&slice[..]);
        let mut entries = ar.entries().unwrap();
        let mut entry = entries.next().expect("an entry").unwrap();
        let path = entry.path_bytes().into_owned();
        let mut want = e.path.clone();
        if e.kind == EntryKind::Dir {
            want.push(b'/');
        }
        assert_eq!(path, want);
        assert_eq!(entry.header().size().unwrap(), e.size);
        assert_eq!(entry.header().mode().unwrap(), e.mode);
        assert_eq!(entry.header().mtime().unwrap() as i64, e.mtime);
        let stat = e.stat.expect("a stat key");
        let disk_path = src.join(std::ffi::OsStr::from_bytes(&e.path));
        let on_disk = std::fs::symlink_metadata(&disk_path).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!((stat.dev, stat.ino), (on_disk.dev(), on_disk.ino()));
        assert_eq!(
            stat.mtime_ns,
            on_disk.mtime() * 1_000_000_000 + on_disk.mtime_nsec()
        );
        match e.kind {
            EntryKind::File => {
                let mut data = Vec::new();
                entry.read_to_end(&mut data).unwrap();
                let disk = std::fs::read(&disk_path).unwrap();
                assert_eq!(data, disk);
            }
            EntryKind::Symlink | EntryKind::HardLink => {
                assert_eq!(entry.link_name_bytes().unwrap().into_owned(), e.link);
            }
            _ => {}
        }
        // Reading one entry touches only the members its bytes are in.
        let span = index.members_for(start, start + e.tar_len());
        assert!(span.len() as u64 <= e.tar_len().div_ceil(1 << 20) + 1);
        let members: u64 = index.members[span].iter().map(|m| m.compressed).sum();
        assert_eq!(read, members);
    }
}

#[test]
fn a_backup_publishes_its_index_and_a_delete_removes_it() {
    let node = Node::new();
    build_game_tree(&node.root());
    node.create(BACKUP, "").unwrap();
    let archive = node.archive(BACKUP);
    let len = std::fs::metadata(&archive).unwrap().len();
    let index = index::load_for(&archive, len).expect("an index beside the archive");
    assert_eq!(index.header.level, "best_speed");
    assert_eq!(
        node.backup_dir_names(),
        vec![format!("{BACKUP}.tar.gz"), format!("{BACKUP}.tar.gz.index")]
    );
    node.engine.delete_backup(SERVER, BACKUP).unwrap();
    assert!(node.backup_dir_names().is_empty());
}
