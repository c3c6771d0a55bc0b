//! Sparse files restore sparse: runs of zeros become holes again, so a
//! server that holds a large sparse file does not need its full size free
//! to be restored.

mod common;

use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use common::*;
use wings_backup::progress::Control;

/// Whether two files hold the same bytes, read 1 MiB at a time.
fn same_contents(a: &Path, b: &Path) -> bool {
    let (mut fa, mut fb) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    if fa.metadata().unwrap().len() != fb.metadata().unwrap().len() {
        return false;
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    // At most 2048 rounds: the files are 1 GiB.
    for _ in 0..2048 {
        let n = fa.read(&mut ba).unwrap();
        if n == 0 {
            return true;
        }
        fb.read_exact(&mut bb[..n]).unwrap();
        if ba[..n] != bb[..n] {
            return false;
        }
    }
    false
}

#[test]
fn a_sparse_gigabyte_restores_sparse_with_the_same_contents() {
    let node = Node::new();
    let path = node.root().join("world/sparse.img");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let size: u64 = 1 << 30;
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(size).unwrap();
    // A few KB of data at the start, in the middle (not block-aligned) and
    // at the end.
    f.write_all_at(&noise(3000, 1), 0).unwrap();
    f.write_all_at(&noise(5000, 2), size / 2 + 123).unwrap();
    f.write_all_at(&noise(2000, 3), size - 2000).unwrap();
    drop(f);
    let allocated = |p: &Path| std::fs::metadata(p).unwrap().blocks() * 512;
    assert!(
        allocated(&path) < 1 << 20,
        "the test file is not sparse here"
    );
    node.create(BACKUP, "").unwrap();
    // The original is kept outside the server directory to compare.
    let original = node.dir.join("original.img");
    std::fs::rename(&path, &original).unwrap();
    std::fs::write(node.root().join("world/other"), b"replaced").unwrap();

    node.restore(BACKUP, true).unwrap();
    let restored = allocated(&path);
    eprintln!("a 1 GiB sparse file restored takes {restored} bytes");
    assert!(restored < 4 << 20, "{restored} bytes allocated");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
    assert!(same_contents(&original, &path), "the contents differ");
    assert!(!node.root().join("world/other").exists());
}

#[test]
fn a_sparse_file_counts_its_full_length_against_the_disk_limit() {
    // The limit counts what the archive holds (the file's length), not the
    // blocks the restored file happens to take.
    let node = Node::with(|c| c.disk_limit = 32 << 20);
    let path = node.root().join("sparse.img");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(64 << 20).unwrap();
    f.write_all_at(b"data", 0).unwrap();
    drop(f);
    node.create(BACKUP, "").unwrap();
    std::fs::remove_file(&path).unwrap();
    write_file(&node.root().join("keep.txt"), b"old", 0o644, 1);
    let before = snapshot(&node.root());
    for truncate in [true, false] {
        let err = node.restore(BACKUP, truncate).unwrap_err();
        assert_eq!(err.status, wings_backup::Status::Quota, "{err}");
        assert_eq!(snapshot(&node.root()), before);
    }
}

/// Runs `cmd` in `dir` and asserts it succeeded.
fn run_in(dir: &Path, cmd: &str, args: &[&str]) {
    let out = std::process::Command::new(cmd)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The tar bytes of a `.tar.gz` (via `gzip -dc`).
fn gunzip(archive: &Path) -> Vec<u8> {
    let out = std::process::Command::new("gzip")
        .arg("-dc")
        .arg(archive)
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

#[test]
fn gnu_and_pax_sparse_entries_from_other_tools_are_refused_everywhere() {
    // GNU tar's old GNU sparse headers (typeflag 'S'), its PAX sparse
    // formats 0.0, 0.1 and 1.0, and bsdtar's default (PAX 1.0): a restore
    // that wrote them as they are would give a wrong file (the map and the
    // data under `GNUSparseFile.0/`) or none, so they are refused.
    let node = Node::new();
    let src = node.dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let f = std::fs::File::create(src.join("sparse.img")).unwrap();
    f.set_len(4 << 20).unwrap();
    f.write_all_at(&noise(5000, 7), (2 << 20) + 100).unwrap();
    drop(f);
    std::fs::write(src.join("plain.txt"), b"plain").unwrap();
    std::fs::create_dir_all(node.backups()).unwrap();
    write_file(&node.root().join("keep.txt"), b"old", 0o644, 1);
    write_file(&node.root().join("sparse.img"), b"server's copy", 0o644, 1);
    let before = snapshot(&node.root());
    let makers: [(&str, &[&str]); 6] = [
        ("gnu", &["--format=gnu", "-S"]),
        ("oldgnu", &["--format=oldgnu", "-S"]),
        ("pax-0.0", &["--format=posix", "-S", "--sparse-version=0.0"]),
        ("pax-0.1", &["--format=posix", "-S", "--sparse-version=0.1"]),
        ("pax-1.0", &["--format=posix", "-S", "--sparse-version=1.0"]),
        ("bsdtar", &[]),
    ];
    for (what, flags) in makers {
        let archive = node.archive(BACKUP);
        let _ = std::fs::remove_file(&archive);
        let _ = std::fs::remove_file(wings_backup::index::path_for(&archive));
        let tool = if what == "bsdtar" { "bsdtar" } else { "tar" };
        let mut args = flags.to_vec();
        let out = archive.to_str().unwrap().to_string();
        args.extend(["-czf", &out, "plain.txt", "sparse.img"]);
        run_in(&src, tool, &args);
        let raw = gunzip(&archive);
        assert!(
            raw.windows(11).any(|w| w == b"GNU.sparse.")
                || raw
                    .chunks(512)
                    .any(|b| b.len() == 512 && b[156] == b'S' && &b[257..262] == b"ustar"),
            "{what}: the archive holds no sparse entry (holes not supported here?)"
        );
        let check = |e: &wings_backup::Error, op: &str| {
            assert_eq!(
                e.status,
                wings_backup::Status::CorruptArchive,
                "{what} {op}: {e}"
            );
            assert!(
                e.message.contains("sparse") && e.message.contains("sparse.img"),
                "{what} {op}: {e}"
            );
        };
        for truncate in [true, false] {
            let err = node.restore(BACKUP, truncate).unwrap_err();
            check(&err, "restore");
            assert_eq!(snapshot(&node.root()), before, "{what}: the server changed");
        }
        let report = node
            .engine
            .verify_backup(SERVER, BACKUP, &mut Control::none())
            .unwrap();
        assert!(!report.ok, "{what}: verify says ok");
        assert!(
            report
                .errors
                .iter()
                .any(|e| e.message.contains("sparse.img") && e.message.contains("sparse")),
            "{what}: {report:?}"
        );
        match node.engine.list_files(SERVER, BACKUP, "") {
            Err(e) => check(&e, "browse"),
            Ok(list) => panic!("{what}: browse listed {list:?}"),
        }
    }
}
