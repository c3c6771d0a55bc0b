//! Archive interop with real tools: our archives list and extract with GNU
//! tar, bsdtar, Python's tarfile and Go's archive/tar to the same tree; GNU
//! tar (gnu and pax formats), pigz, concatenated gzip members and Python's
//! tarfile write archives we restore correctly.

mod common;

use common::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use wings_backup::engine::{archive_create, archive_extract, ArchiveOptions};
use wings_backup::progress::Control;

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The tree every tool must agree on, plus a hard link pair.
fn source_tree(dir: &TempDir) -> std::path::PathBuf {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    build_game_tree(&src);
    write_file(&src.join("hl/a"), b"linked twice", 0o644, 1_600_000_900);
    std::fs::hard_link(src.join("hl/a"), src.join("hl/b")).unwrap();
    set_mtime(&src.join("hl"), 1_500_000_900);
    src
}

fn ours(src: &Path, archive: &Path) {
    let opts = ArchiveOptions::default();
    archive_create(src, archive, &opts, &mut Control::none()).unwrap();
}

/// Extracts `archive` with GNU tar into `dest` (made if missing).
fn gnu_extract(archive: &Path, dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    run(Command::new("tar")
        .arg("-xzf")
        .arg(archive)
        .arg("-C")
        .arg(dest));
}

fn extract_with_us(archive: &Path, dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    let opts = ArchiveOptions::default();
    archive_extract(archive, dest, &opts, &mut Control::none()).unwrap();
}

fn assert_same_tree(a: &Path, b: &Path) {
    let (sa, sb) = (snapshot(a), snapshot(b));
    let names = |s: &std::collections::BTreeMap<Vec<u8>, Node2>| {
        s.keys()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&sa), names(&sb));
    for (k, v) in &sa {
        assert_eq!(Some(v), sb.get(k), "{}", String::from_utf8_lossy(k));
    }
}

#[test]
fn gnu_tar_lists_and_extracts_our_archives() {
    let dir = TempDir::new("interop-gnu");
    let src = source_tree(&dir);
    let archive = dir.join("ours.tar.gz");
    ours(&src, &archive);
    let listing = run(Command::new("tar").arg("-tzf").arg(&archive));
    assert!(String::from_utf8_lossy(&listing)
        .lines()
        .any(|l| l == "unix_args.txt"));
    let out = dir.join("gnu");
    gnu_extract(&archive, &out);
    assert_same_tree(&src, &out);
}

#[test]
fn python_tarfile_lists_and_extracts_our_archives() {
    let dir = TempDir::new("interop-py");
    let src = source_tree(&dir);
    let archive = dir.join("ours.tar.gz");
    ours(&src, &archive);
    let out = dir.join("py");
    std::fs::create_dir_all(&out).unwrap();
    let script = "import sys, tarfile\n\
        with tarfile.open(sys.argv[1], 'r:gz') as t:\n\
        \x20   names = t.getnames()\n\
        \x20   kw = {'filter': 'fully_trusted'} if hasattr(tarfile, 'fully_trusted_filter') else {}\n\
        \x20   t.extractall(sys.argv[2], **kw)\n\
        print(len(names))\n";
    run(Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&archive)
        .arg(&out));
    assert_same_tree(&src, &out);
}

#[test]
fn bsdtar_and_go_archive_tar_read_our_archives() {
    let dir = TempDir::new("interop-bsd-go");
    let src = source_tree(&dir);
    let archive = dir.join("ours.tar.gz");
    ours(&src, &archive);
    let gnu_names: Vec<String> =
        String::from_utf8_lossy(&run(Command::new("tar").arg("-tzf").arg(&archive)))
            .lines()
            .map(str::to_string)
            .collect();
    if have("bsdtar") {
        let out = dir.join("bsd");
        std::fs::create_dir_all(&out).unwrap();
        run(Command::new("bsdtar")
            .arg("-xzf")
            .arg(&archive)
            .arg("-C")
            .arg(&out));
        assert_same_tree(&src, &out);
    }
    assert!(have("go"), "go is needed for this test");
    let listing = run(Command::new("go")
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/gotar"))
        .env("GOFLAGS", "-mod=mod")
        .arg("run")
        .arg(".")
        .arg(&archive));
    let go_names: Vec<String> = String::from_utf8_lossy(&listing)
        .lines()
        .map(|l| l.splitn(3, ' ').nth(2).unwrap_or("").to_string())
        .collect();
    assert_eq!(go_names.len(), gnu_names.len());
}

#[test]
fn we_restore_gnu_pax_and_ustar_archives() {
    let dir = TempDir::new("interop-formats");
    let src = source_tree(&dir);
    for format in ["gnu", "pax", "posix", "oldgnu"] {
        let archive = dir.join(format!("{format}.tar.gz"));
        run(Command::new("tar")
            .arg(format!("--format={format}"))
            .arg("-czf")
            .arg(&archive)
            .arg("-C")
            .arg(&src)
            .arg("."));
        let out = dir.join(format!("out-{format}"));
        extract_with_us(&archive, &out);
        assert_same_tree(&src, &out);
    }
}

#[test]
fn we_restore_pigz_and_concatenated_gzip_members() {
    let dir = TempDir::new("interop-pigz");
    let src = source_tree(&dir);
    let tar_path = dir.join("plain.tar");
    run(Command::new("tar")
        .arg("-cf")
        .arg(&tar_path)
        .arg("-C")
        .arg(&src)
        .arg("."));
    if have("pigz") {
        let out = run(Command::new("pigz").arg("-1").arg("-c").arg(&tar_path));
        let archive = dir.join("pigz.tar.gz");
        std::fs::write(&archive, out).unwrap();
        let dest = dir.join("out-pigz");
        extract_with_us(&archive, &dest);
        assert_same_tree(&src, &dest);
    }
    // The same tar split in three and gzipped separately, members back to back.
    let bytes = std::fs::read(&tar_path).unwrap();
    let mut multi = Vec::new();
    for part in bytes.chunks(bytes.len() / 3 + 1) {
        multi.extend_from_slice(&gzip(part));
    }
    let archive = dir.join("multi.tar.gz");
    std::fs::write(&archive, multi).unwrap();
    let dest = dir.join("out-multi");
    extract_with_us(&archive, &dest);
    assert_same_tree(&src, &dest);
}

#[test]
fn we_restore_python_tarfile_archives() {
    let dir = TempDir::new("interop-pywrite");
    let src = source_tree(&dir);
    for format in ["PAX_FORMAT", "GNU_FORMAT"] {
        let archive = dir.join(format!("{format}.tar.gz"));
        let script = format!(
            "import sys, tarfile, os\n\
             with tarfile.open(sys.argv[1], 'w:gz', format=tarfile.{format}) as t:\n\
             \x20   for name in sorted(os.listdir(sys.argv[2])):\n\
             \x20       t.add(os.path.join(sys.argv[2], name), arcname=name)\n"
        );
        run(Command::new("python3")
            .arg("-c")
            .arg(&script)
            .arg(&archive)
            .arg(&src));
        let out = dir.join(format!("out-{format}"));
        extract_with_us(&archive, &out);
        assert_same_tree(&src, &out);
    }
}

/// GNU tar, run by a user without `CAP_DAC_OVERRIDE`, restores an archive
/// holding a read-only (0555) and a closed (000) directory: it gives them
/// their modes last. So do we, in either mode, with the thread's
/// `CAP_DAC_OVERRIDE`, `CAP_DAC_READ_SEARCH` and `CAP_FOWNER` dropped (a
/// directory's mode then binds its owner too: moving it into place needs
/// write permission on it). The root's mtime is GNU tar's `./` entry's.
#[test]
fn read_only_and_closed_directories_restore_without_override_capabilities() {
    use rustix::thread::{capabilities, set_capabilities, CapabilitySet};
    let dir = TempDir::new("interop-ro-dirs");
    let src = dir.join("src");
    write_file(
        &src.join("plugins/ro/config.yml"),
        b"a: 1\n",
        0o644,
        1_600_000_000,
    );
    write_file(
        &src.join("plugins/ro/deep/x.txt"),
        b"x",
        0o444,
        1_600_000_001,
    );
    write_file(&src.join("locked/inner/secret"), b"s", 0o600, 1_600_000_002);
    write_file(&src.join("open.txt"), b"o", 0o644, 1_600_000_003);
    for (path, mode, mtime) in [
        ("plugins/ro/deep", 0o500, 1_500_000_001),
        ("plugins/ro", 0o555, 1_500_000_002),
        ("locked/inner", 0o000, 1_500_000_003),
        ("locked", 0o000, 1_500_000_004),
        ("plugins", 0o755, 1_500_000_005),
        ("", 0o755, 1_500_000_006),
    ] {
        let p = src.join(path);
        set_mtime(&p, mtime);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let gnu = dir.join("gnu.tar.gz");
    gnu_tar_gz(&src, &gnu);
    let ours_archive = dir.join("ours.tar.gz");
    ours(&src, &ours_archive);
    let dests: Vec<(std::path::PathBuf, std::path::PathBuf, bool)> = [&gnu, &ours_archive]
        .iter()
        .enumerate()
        .flat_map(|(i, a)| {
            [false, true].map(|truncate| {
                (
                    (*a).clone(),
                    dir.join(format!("out-{i}-{truncate}")),
                    truncate,
                )
            })
        })
        .collect();
    for (_, dest, _) in &dests {
        std::fs::create_dir_all(dest).unwrap();
    }
    let mut results = std::thread::spawn({
        let dests = dests.clone();
        move || {
            let mut caps = capabilities(None).unwrap();
            caps.effective.remove(
                CapabilitySet::DAC_OVERRIDE
                    | CapabilitySet::DAC_READ_SEARCH
                    | CapabilitySet::FOWNER,
            );
            set_capabilities(None, caps).unwrap();
            let again = {
                let (archive, dest, _) = &dests[1];
                (archive.clone(), dest.clone())
            };
            let mut results: Vec<Result<(), String>> = dests
                .iter()
                .map(|(archive, dest, truncate)| {
                    let opts = ArchiveOptions {
                        truncate: *truncate,
                        ..ArchiveOptions::default()
                    };
                    archive_extract(archive, dest, &opts, &mut Control::none())
                        .map(|_| ())
                        .map_err(|e| e.message)
                })
                .collect();
            // Truncating a tree that holds them: they cannot be moved
            // aside, and the restore is undone (the tree is checked below).
            let opts = ArchiveOptions {
                truncate: true,
                ..ArchiveOptions::default()
            };
            let again = archive_extract(&again.0, &again.1, &opts, &mut Control::none());
            results.push(match again {
                Ok(_) => Err("a truncating restore over them succeeded".into()),
                Err(_) => Ok(()),
            });
            results
        }
    })
    .join()
    .unwrap();
    assert_eq!(results.pop(), Some(Ok(())));
    for ((archive, dest, truncate), result) in dests.iter().zip(results) {
        let what = format!("{} truncate={truncate}", archive.display());
        result.unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_same_tree(&src, dest);
        if *archive == gnu {
            // Ours has no `./` entry, as Wings' archives have none.
            let meta = std::fs::metadata(dest).unwrap();
            assert_eq!(meta.mtime(), 1_500_000_006, "{what}: the root's mtime");
        }
    }
}

#[test]
fn gnu_tar_times_before_1970_restore_and_list_as_they_are() {
    // GNU format writes a negative mtime in base-256 (two's complement).
    const T1960: i64 = -315_619_200; // 1960-01-01T00:00:00Z
    const T1950: i64 = -631_152_000; // 1950-01-01T00:00:00Z
    let node = Node::new();
    let src = node.dir.join("src");
    write_file(&src.join("old.txt"), b"old", 0o644, T1960);
    write_file(&src.join("older.txt"), b"older", 0o644, T1950);
    std::fs::create_dir_all(node.backups()).unwrap();
    let archive = node.archive(BACKUP);
    run(Command::new("tar")
        .arg("--format=gnu")
        .arg("-czf")
        .arg(&archive)
        .arg("-C")
        .arg(&src)
        .arg("old.txt")
        .arg("older.txt"));
    let listed = node.engine.list_files(SERVER, BACKUP, "").unwrap();
    let mtimes: Vec<(String, i64)> = listed
        .iter()
        .map(|e| (String::from_utf8_lossy(&e.name).into_owned(), e.mtime))
        .collect();
    assert_eq!(
        mtimes,
        [
            ("old.txt".to_string(), T1960),
            ("older.txt".to_string(), T1950)
        ]
    );
    node.restore(BACKUP, true).unwrap();
    let mtime = |name: &str| std::fs::metadata(node.root().join(name)).unwrap().mtime();
    assert_eq!((mtime("old.txt"), mtime("older.txt")), (T1960, T1950));
    // GNU tar agrees.
    let out = node.dir.join("gnu-out");
    gnu_extract(&archive, &out);
    assert_eq!(
        std::fs::metadata(out.join("old.txt")).unwrap().mtime(),
        T1960
    );
}

#[test]
fn pax_sub_second_mtimes_restore_to_the_nanosecond() {
    // GNU tar's posix format and bsdtar's pax format write `mtime=<s>.<ns>`
    // PAX records.
    let node = Node::new();
    let src = node.dir.join("src");
    write_file(&src.join("d/f.txt"), b"f", 0o644, 0);
    let stamp = |p: &Path, t: &str| {
        run(Command::new("touch").arg("-h").arg("-d").arg(t).arg(p));
    };
    stamp(&src.join("d/f.txt"), "@1600000000.123456789");
    stamp(&src.join("d"), "@1500000000.5");
    std::fs::create_dir_all(node.backups()).unwrap();
    let archive = node.archive(BACKUP);
    let want = |p: &Path| {
        let m = std::fs::symlink_metadata(p).unwrap();
        (m.mtime(), m.mtime_nsec())
    };
    assert_eq!(want(&src.join("d/f.txt")), (1_600_000_000, 123_456_789));
    for (tool, flags) in [
        ("tar", &["--format=posix"][..]),
        ("bsdtar", &["--format=pax"][..]),
    ] {
        let _ = std::fs::remove_file(&archive);
        let _ = std::fs::remove_file(wings_backup::index::path_for(&archive));
        run(Command::new(tool)
            .args(flags)
            .arg("-czf")
            .arg(&archive)
            .arg("-C")
            .arg(&src)
            .arg("d"));
        for truncate in [true, false] {
            // Without truncate, `d` exists and is merged into.
            std::fs::create_dir_all(node.root().join("d")).unwrap();
            node.restore(BACKUP, truncate).unwrap();
            for name in ["d/f.txt", "d"] {
                assert_eq!(
                    want(&node.root().join(name)),
                    want(&src.join(name)),
                    "{tool}, truncate {truncate}: {name}"
                );
            }
        }
    }
}
