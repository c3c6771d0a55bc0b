//! Hostile server directories for a backup (docs/api.md section 10): symlinks to
//! files and directories outside the root, FIFOs, files that grow, shrink,
//! vanish or turn into symlinks while they are archived, unreadable files and
//! directories, odd names, a 4,000-deep tree and a very large number of empty
//! files. Each ends in a valid archive (checked with GNU tar and Python's
//! tarfile) or a clear error, never a hang or a corrupt archive.
//!
//! Some tests re-run this test binary in a child process (selected with the
//! `WB_HOSTILE_CHILD` variable): to drop root's DAC capabilities, and to
//! measure a peak RSS that is the operation's alone.

mod common;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};
use wings_backup::engine::{archive_create, archive_extract, ArchiveOptions, BackupDetails};
use wings_backup::ffi::wire;
use wings_backup::progress::{Control, Phase, Progress};

/// Runs `f` on its own thread; a call still running after `secs` fails the
/// test (the thread is left behind) instead of hanging it.
fn within<T: Send + 'static>(secs: u64, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(v) => v,
        Err(_) => panic!("{what} did not finish within {secs}s (hang)"),
    }
}

/// One member as Python's tarfile reads it.
#[derive(Debug, Clone)]
struct Member {
    name: Vec<u8>,
    kind: char,
    link: Vec<u8>,
    size: u64,
    /// Data bytes Python read back (files only).
    data: Option<Vec<u8>>,
}

const PY_LIST: &str = r#"
import sys, tarfile, json
out = []
enc = lambda s: s.encode("utf-8", "surrogateescape").hex()
with tarfile.open(sys.argv[1], "r:gz", errors="surrogateescape") as t:
    for m in t:
        data = None
        if m.isfile():
            data = t.extractfile(m).read()
            data = data.hex() if len(data) <= int(sys.argv[2]) else "len:%d" % len(data)
        out.append({"name": enc(m.name), "type": m.type.decode("latin1"),
                    "link": enc(m.linkname), "size": m.size, "data": data})
print(json.dumps(out))
"#;

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Lists `archive` with Python's tarfile, reading every file's data (data
/// of more than `keep` bytes is only measured: `data` is then zeros of the
/// length read, which is what the checks below need).
fn python_members(archive: &Path, keep: usize) -> Vec<Member> {
    let out = Command::new("python3")
        .arg("-c")
        .arg(PY_LIST)
        .arg(archive)
        .arg(keep.to_string())
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "Python's tarfile cannot read the archive: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|m| Member {
            name: unhex(m["name"].as_str().unwrap()),
            kind: m["type"].as_str().unwrap().chars().next().unwrap_or('0'),
            link: unhex(m["link"].as_str().unwrap()),
            size: m["size"].as_u64().unwrap(),
            data: m["data"].as_str().map(|d| match d.strip_prefix("len:") {
                Some(n) => vec![0; n.parse().unwrap()],
                None => unhex(d),
            }),
        })
        .collect()
}

/// GNU tar lists the archive without an error or a warning, except the
/// one GNU tar 1.34 prints for the standard `hdrcharset` PAX keyword (which
/// the writer uses for names that are not UTF-8).
fn gnu_tar_lists(archive: &Path) -> String {
    let out = Command::new("tar")
        .arg("-tvzf")
        .arg(archive)
        .output()
        .expect("tar runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let unexpected: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.contains("unknown extended header keyword 'hdrcharset'"))
        .collect();
    assert!(
        out.status.success() && unexpected.is_empty(),
        "GNU tar: {stderr}"
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The whole uncompressed tar stream of an archive.
fn tar_bytes(archive: &Path) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(std::fs::File::open(archive).unwrap())
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn member<'m>(members: &'m [Member], name: &[u8]) -> &'m Member {
    members
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("no member {:?}", String::from_utf8_lossy(name)))
}

fn create(node: &Node, ctl: &mut Control<'_>) -> BackupDetails {
    node.engine
        .create_backup(SERVER, &create_request(BACKUP, ""), ctl)
        .unwrap()
}

#[test]
fn symlinks_pointing_outside_are_stored_as_links_and_never_read_through() {
    let node = Node::new();
    let outside = node.dir.join("outside");
    let marker = format!("OUTSIDE-SECRET-{}", wings_backup::safe_fs::nonce());
    write_file(&outside.join("secret.txt"), marker.as_bytes(), 0o644, 1);
    write_file(&node.root().join("own.txt"), b"own", 0o644, 1);
    let links: Vec<(&str, Vec<u8>)> = vec![
        ("passwd", b"/etc/passwd".to_vec()),
        ("etc", b"/etc".to_vec()),
        ("outdir", outside.as_os_str().as_bytes().to_vec()),
        (
            "outfile",
            outside.join("secret.txt").as_os_str().as_bytes().to_vec(),
        ),
        ("rel_out", b"../../outside".to_vec()),
        ("sub/deeper_out", b"../../../outside/secret.txt".to_vec()),
        ("self_loop", b"self_loop".to_vec()),
    ];
    std::fs::create_dir_all(node.root().join("sub")).unwrap();
    for (name, target) in &links {
        std::os::unix::fs::symlink(OsStr::from_bytes(target), node.root().join(name)).unwrap();
    }
    // The relative ones do reach outside the root.
    assert_eq!(
        std::fs::read(node.root().join("rel_out/secret.txt")).unwrap(),
        marker.as_bytes()
    );

    node.create(BACKUP, "").unwrap();
    let archive = node.archive(BACKUP);
    let members = python_members(&archive, 1 << 20);
    for (name, target) in &links {
        let m = member(&members, name.as_bytes());
        assert_eq!(m.kind, '2', "{name} is stored as a symlink");
        assert_eq!(&m.link, target, "{name} keeps its target text");
    }
    let listing = gnu_tar_lists(&archive);
    assert!(listing.contains("passwd -> /etc/passwd"), "{listing}");
    assert!(listing
        .lines()
        .any(|l| l.starts_with('l') && l.ends_with("etc -> /etc")));
    let names: BTreeSet<_> = members.iter().map(|m| m.name.clone()).collect();
    let expected: BTreeSet<Vec<u8>> = ["own.txt", "sub"]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .chain(links.iter().map(|(n, _)| n.as_bytes().to_vec()))
        .collect();
    assert_eq!(names, expected, "nothing is archived through a link");
    let raw = tar_bytes(&archive);
    let passwd = std::fs::read("/etc/passwd").unwrap();
    let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    assert!(!contains(&raw, marker.as_bytes()), "outside content leaked");
    assert!(
        !contains(&raw, &passwd[..passwd.len().min(32)]),
        "/etc/passwd leaked"
    );

    // Restored as the same links, and never followed while restoring.
    let before = snapshot(&node.root());
    let outside_before = snapshot(&outside);
    node.restore(BACKUP, true).unwrap();
    assert_eq!(snapshot(&node.root()), before);
    assert_eq!(snapshot(&outside), outside_before);
}

/// Watches paths for `open(2)` with inotify.
struct OpenWatch(OwnedFd);

impl OpenWatch {
    fn new(paths: &[PathBuf]) -> OpenWatch {
        let fd = rustix::fs::inotify::init(rustix::fs::inotify::CreateFlags::NONBLOCK).unwrap();
        for p in paths {
            rustix::fs::inotify::add_watch(
                &fd,
                p.as_path(),
                rustix::fs::inotify::WatchFlags::OPEN | rustix::fs::inotify::WatchFlags::ACCESS,
            )
            .unwrap();
        }
        OpenWatch(fd)
    }

    /// Whether anything opened or read a watched path since the last call.
    fn saw_open(&self) -> bool {
        let mut buf = [0u8; 4096];
        matches!(rustix::io::read(&self.0, &mut buf), Ok(n) if n > 0)
    }
}

#[test]
fn fifos_are_archived_without_being_opened_and_never_hang_a_backup() {
    let node = Arc::new(Node::new());
    write_file(&node.root().join("a.txt"), b"a", 0o644, 1);
    let fifos = [
        node.root().join("console.pipe"),
        node.root().join("dir/z.fifo"),
    ];
    std::fs::create_dir_all(node.root().join("dir")).unwrap();
    for f in &fifos {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            f.as_path(),
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
    }
    let watch = OpenWatch::new(&fifos);
    assert!(!watch.saw_open());
    let n = Arc::clone(&node);
    let details = within(60, "a backup of a tree with FIFOs", move || {
        n.create(BACKUP, "")
    });
    details.unwrap();
    assert!(!watch.saw_open(), "the backup opened a FIFO");

    let archive = node.archive(BACKUP);
    let members = python_members(&archive, 1 << 20);
    assert_eq!(member(&members, b"console.pipe").kind, '6');
    assert_eq!(member(&members, b"dir/z.fifo").kind, '6');
    gnu_tar_lists(&archive);

    // A restore skips them (and does not create or open anything for them).
    let dest = node.dir.join("extracted");
    std::fs::create_dir_all(&dest).unwrap();
    let archive2 = archive.clone();
    let dest2 = dest.clone();
    let summary = within(60, "restoring FIFOs", move || {
        let opts = ArchiveOptions::default();
        archive_extract(&archive2, &dest2, &opts, &mut Control::none())
    })
    .unwrap();
    assert_eq!(summary.skipped, 2, "{summary:?}");
    assert!(!dest.join("console.pipe").exists());
    assert!(!watch.saw_open());
}

#[test]
fn files_that_change_while_archived_end_in_a_valid_archive() {
    // One compression thread and a write limit: the walk runs at most a
    // few MiB ahead of the writer, so progress reports arrive while each
    // big file is being read, and the callback changes the tree then.
    let node = Node::with(|c| {
        c.threads = 1;
        c.write_limit = 8;
    });
    const MIB: usize = 1 << 20;
    let size = 8 * MIB;
    let r = node.root();
    for (i, name) in ["1-grows.bin", "2-shrinks.bin", "3-swapped-while-read.bin"]
        .iter()
        .enumerate()
    {
        write_file(
            &r.join(name),
            &noise(size, i as u64 + 7),
            0o644,
            1_600_000_000,
        );
    }
    // The walk opens files ahead of the reading, by at most a bounded number
    // of entries (about 160: `WALK_BATCHES` batches of `WALK_BATCH` in the
    // channel, one being filled, one being read): more than twice that many
    // stand between the big files and the ones changed below, so those are
    // not open yet when they change.
    for i in 0..400 {
        write_file(
            &r.join(format!("4-filler/{i:03}")),
            b"f",
            0o644,
            1_600_000_000,
        );
    }
    for name in [
        "7-becomes-fifo.txt",
        "8-becomes-symlink.txt",
        "9-vanishes.txt",
    ] {
        write_file(&r.join(name), b"small", 0o644, 1_600_000_000);
    }
    let original_2 = std::fs::read(r.join("2-shrinks.bin")).unwrap();
    let mut fired = [false; 3];
    let mut cb = |p: &Progress| {
        if p.phase != Phase::Archive {
            return true;
        }
        let done = p.bytes_done as usize;
        if !fired[0] && done < size - MIB {
            fired[0] = true;
            // The file being read (opened, its size taken, maybe not read
            // yet) grows; files not opened yet vanish or change type.
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(r.join("1-grows.bin"))
                .unwrap();
            f.write_all(&vec![1u8; MIB]).unwrap();
            std::fs::remove_file(r.join("9-vanishes.txt")).unwrap();
            std::fs::remove_file(r.join("8-becomes-symlink.txt")).unwrap();
            std::os::unix::fs::symlink("/etc/passwd", r.join("8-becomes-symlink.txt")).unwrap();
            std::fs::remove_file(r.join("7-becomes-fifo.txt")).unwrap();
            rustix::fs::mknodat(
                rustix::fs::CWD,
                r.join("7-becomes-fifo.txt").as_path(),
                rustix::fs::FileType::Fifo,
                Mode::from_raw_mode(0o644),
                0,
            )
            .unwrap();
        } else if !fired[1] && done > size + 2 * MIB && done < 2 * size - MIB {
            fired[1] = true;
            // The file being read shrinks below what was read of it.
            std::fs::OpenOptions::new()
                .write(true)
                .open(r.join("2-shrinks.bin"))
                .unwrap()
                .set_len(MIB as u64)
                .unwrap();
        } else if !fired[2] && done > 2 * size + MIB && done < 3 * size - MIB {
            fired[2] = true;
            // The file being read is replaced by a symlink.
            let p = r.join("3-swapped-while-read.bin");
            std::fs::remove_file(&p).unwrap();
            std::os::unix::fs::symlink("/etc/passwd", &p).unwrap();
        }
        true
    };
    let mut ctl = Control::new(None, Some(&mut cb));
    let details = create(&node, &mut ctl);
    drop(ctl);
    assert_eq!(fired, [true; 3], "every change happened during the backup");
    let changed = lossy(&details.archive.changed);
    assert!(changed.contains(&"1-grows.bin".to_string()), "{details:?}");
    assert!(
        changed.contains(&"2-shrinks.bin".to_string()),
        "{details:?}"
    );

    let archive = node.archive(BACKUP);
    gnu_tar_lists(&archive);
    let members = python_members(&archive, 2 * MIB);
    let grown = member(&members, b"1-grows.bin");
    assert_eq!(
        (grown.size, grown.data.as_ref().unwrap().len()),
        (size as u64, size)
    );
    let shrunk = member(&members, b"2-shrinks.bin");
    assert_eq!(shrunk.size, size as u64, "the header keeps the size it had");
    let data = shrunk.data.as_ref().unwrap();
    assert_eq!(data.len(), size);
    let swapped = member(&members, b"3-swapped-while-read.bin");
    assert_eq!((swapped.kind, swapped.size), ('0', size as u64));
    assert_eq!(member(&members, b"7-becomes-fifo.txt").kind, '6');
    let link = member(&members, b"8-becomes-symlink.txt");
    assert_eq!(
        (link.kind, link.link.as_slice()),
        ('2', &b"/etc/passwd"[..])
    );
    assert!(members.iter().all(|m| m.name != b"9-vanishes.txt"));

    // The padded file restores to its size: what was read, then zeros.
    let dest = node.dir.join("extracted");
    std::fs::create_dir_all(&dest).unwrap();
    let opts = ArchiveOptions::default();
    archive_extract(&archive, &dest, &opts, &mut Control::none()).unwrap();
    let back = std::fs::read(dest.join("2-shrinks.bin")).unwrap();
    assert_eq!(back.len(), size);
    // At least 2 MiB had been read when it was cut to 1 MiB, and at most
    // all but the last MiB.
    assert_eq!(&back[..2 * MIB], &original_2[..2 * MIB]);
    assert!(
        back[size - MIB..].iter().all(|b| *b == 0),
        "the tail is zero padding"
    );
    assert_eq!(
        std::fs::read(dest.join("3-swapped-while-read.bin")).unwrap(),
        noise(size, 9)
    );
}

/// Re-runs this binary's test `name` in a child process with `env` set,
/// optionally under `wrapper` (a command and its arguments); returns the
/// lines the child printed with the `WBCHILD:` prefix, and its status.
fn run_child(
    name: &str,
    env: &[(&str, &OsStr)],
    wrapper: &[&str],
    timeout: Duration,
) -> (Vec<String>, std::process::ExitStatus, String) {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = match wrapper.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    cmd.args([name, "--exact", "--nocapture", "--test-threads=1"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().expect("re-running the test binary");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(timeout) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_raw(pid as i32).unwrap(),
                rustix::process::Signal::KILL,
            );
            panic!("the child running {name} hung for {timeout:?}");
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines = stdout
        .lines()
        .filter_map(|l| {
            l.find("WBCHILD:")
                .map(|i| l[i + "WBCHILD:".len()..].to_string())
        })
        .collect();
    (
        lines,
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the test `name` again in a child without `CAP_DAC_OVERRIDE` and
/// `CAP_DAC_READ_SEARCH` (so that file modes bind it, as they bind a node
/// not run as root) and returns the lines it reported; `None`, after saying
/// so, where `setpriv` cannot drop them here.
fn run_child_without_dac(name: &str, env: &[(&str, &OsStr)]) -> Option<Vec<String>> {
    let (lines, status, stderr) = run_child(
        name,
        env,
        &[
            "setpriv",
            "--inh-caps=-dac_override,-dac_read_search",
            "--bounding-set=-dac_override,-dac_read_search",
        ],
        Duration::from_secs(60),
    );
    if !status.success() && stderr.contains("setpriv") {
        eprintln!("SKIPPED: cannot drop capabilities with setpriv here: {stderr}");
        return None;
    }
    assert!(status.success(), "child failed: {stderr}");
    Some(lines)
}

fn child_mode() -> Option<String> {
    std::env::var("WB_HOSTILE_CHILD").ok()
}

#[test]
fn unreadable_files_and_directories_are_skipped_with_a_reason() {
    if child_mode().as_deref() == Some("unreadable") {
        // The child, without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH.
        let src = PathBuf::from(std::env::var_os("WB_SRC").unwrap());
        let archive = PathBuf::from(std::env::var_os("WB_ARCHIVE").unwrap());
        let opts = ArchiveOptions::default();
        let out = archive_create(&src, &archive, &opts, &mut Control::none());
        match out {
            // To the parent, as the C ABI renders it.
            Ok(summary) => println!("WBCHILD:ok {}", wire::archive_summary(&summary)),
            Err(e) => println!("WBCHILD:err {e}"),
        }
        return;
    }
    let dir = TempDir::new("unreadable");
    let src = dir.join("src");
    write_file(&src.join("readable.txt"), b"r", 0o644, 1);
    write_file(&src.join("secret.txt"), b"s", 0o000, 1);
    write_file(&src.join("locked/inside.txt"), b"i", 0o644, 1);
    write_file(&src.join("list-only/child.txt"), b"c", 0o644, 1);
    write_file(&src.join("zz-after.txt"), b"z", 0o644, 1);
    use std::os::unix::fs::PermissionsExt;
    let chmod = |p: &str, m: u32| {
        std::fs::set_permissions(src.join(p), std::fs::Permissions::from_mode(m)).unwrap()
    };
    chmod("locked", 0o000);
    chmod("list-only", 0o400);
    let archive = dir.join("out.tar.gz");

    let Some(lines) = run_child_without_dac(
        "unreadable_files_and_directories_are_skipped_with_a_reason",
        &[
            ("WB_HOSTILE_CHILD", OsStr::new("unreadable")),
            ("WB_SRC", src.as_os_str()),
            ("WB_ARCHIVE", archive.as_os_str()),
        ],
    ) else {
        return;
    };
    let line = lines.first().expect("the child reports");
    let json = line
        .strip_prefix("ok ")
        .unwrap_or_else(|| panic!("the backup failed: {line}"));
    let details: serde_json::Value = serde_json::from_str(json).unwrap();
    let skipped: Vec<(String, String)> = details["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["path"].as_str().unwrap().to_string(),
                s["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for path in ["secret.txt", "locked", "list-only/child.txt"] {
        let hit = skipped.iter().find(|(p, _)| p == path);
        let (_, reason) = hit.unwrap_or_else(|| panic!("{path} not in skipped: {skipped:?}"));
        assert!(reason.contains("ermission denied"), "{path}: {reason}");
    }
    gnu_tar_lists(&archive);
    let names: BTreeSet<Vec<u8>> = python_members(&archive, 1024)
        .into_iter()
        .map(|m| m.name)
        .collect();
    let expected: BTreeSet<Vec<u8>> = ["readable.txt", "list-only", "zz-after.txt"]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
    assert_eq!(names, expected);
}

#[test]
fn names_with_newlines_and_invalid_utf8_round_trip() {
    let node = Node::new();
    let r = node.root();
    let names: Vec<&[u8]> = vec![
        b"line\nbreak.txt",
        b"\ncr\r\nlf",
        b"bad-\xff\xfe-utf8",
        b"dir-\x80\n/inner-\xc3(.txt",
        b"tab\tand\x01control",
        b"back\\slash",
        b"-leading-dash",
        b"   ",
        b"...",
        b"trailing space ",
        b"quote\"and'apostrophe",
        b"\xe2\x80\xae-rtl-override",
    ];
    for (i, n) in names.iter().enumerate() {
        write_file(
            &r.join(OsStr::from_bytes(n)),
            &[b'0' + i as u8; 3],
            0o644,
            1_600_000_000,
        );
    }
    let long_name = vec![b'\xe9'; 255];
    write_file(&r.join(OsStr::from_bytes(&long_name)), b"255", 0o644, 1);
    std::os::unix::fs::symlink(
        OsStr::from_bytes(b"target\nwith-\xff"),
        r.join(OsStr::from_bytes(b"link\n\xff")),
    )
    .unwrap();
    let before = snapshot(&r);

    node.create(BACKUP, "").unwrap();
    let archive = node.archive(BACKUP);
    gnu_tar_lists(&archive);
    let listed: BTreeSet<Vec<u8>> = python_members(&archive, 1024)
        .into_iter()
        .map(|m| m.name)
        .collect();
    let expected: BTreeSet<Vec<u8>> = before.keys().cloned().collect();
    assert_eq!(listed, expected, "Python's tarfile reads every name back");

    for entry in std::fs::read_dir(&r).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() && !p.is_symlink() {
            std::fs::remove_dir_all(p).unwrap();
        } else {
            std::fs::remove_file(p).unwrap();
        }
    }
    node.restore(BACKUP, true).unwrap();
    assert_eq!(snapshot(&r), before);
}

/// Makes a chain of `depth` directories named `d` below `top` (which must
/// exist), with `leaf.txt` at the bottom and, with `siblings`, a `z.txt`
/// at every level (listed after `d`, so a walk must come back up to each
/// level's handle). Paths this deep exceed PATH_MAX, so everything goes
/// through directory handles.
fn make_chain(top: &Path, depth: usize, leaf: &[u8], siblings: bool) {
    let file = |dir: &OwnedFd, name: &str, data: &[u8]| {
        let f = rfs::openat(
            dir,
            name,
            OFlags::CREATE | OFlags::WRONLY,
            Mode::from_raw_mode(0o644),
        )
        .unwrap();
        rustix::io::write(&f, data).unwrap();
    };
    let mut fd = rfs::open(top, OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty()).unwrap();
    for _ in 0..depth {
        rfs::mkdirat(&fd, "d", Mode::from_raw_mode(0o755)).unwrap();
        if siblings {
            file(&fd, "z.txt", b"z");
        }
        fd = rfs::openat(&fd, "d", OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty()).unwrap();
    }
    file(&fd, "leaf.txt", leaf);
}

/// How deep the chain of `d` below `top` goes, the bottom file's data, and
/// how many levels have a `z.txt`.
fn read_chain(top: &Path) -> (usize, Vec<u8>, usize) {
    let mut fd = rfs::open(top, OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty()).unwrap();
    let mut depth = 0;
    let mut siblings = 0;
    loop {
        if rfs::statat(&fd, "z.txt", AtFlags::SYMLINK_NOFOLLOW).is_ok() {
            siblings += 1;
        }
        let Ok(next) = rfs::openat(
            &fd,
            "d",
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW,
            Mode::empty(),
        ) else {
            break;
        };
        fd = next;
        depth += 1;
    }
    let mut data = vec![0u8; 64];
    let n = match rfs::openat(&fd, "leaf.txt", OFlags::RDONLY, Mode::empty()) {
        Ok(f) => rustix::io::read(&f, &mut data).unwrap(),
        Err(_) => 0,
    };
    data.truncate(n);
    (depth, data, siblings)
}

/// Removes the chain of `d` below `top` bottom-up, one handle at a time
/// (`remove_dir_all` would hold a handle per level).
fn remove_chain(top: &Path) {
    let mut fd = rfs::open(top, OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty()).unwrap();
    let mut depth = 0;
    while let Ok(next) = rfs::openat(
        &fd,
        "d",
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW,
        Mode::empty(),
    ) {
        fd = next;
        depth += 1;
    }
    let _ = rfs::unlinkat(&fd, "leaf.txt", AtFlags::empty());
    for _ in 0..depth {
        let parent: OwnedFd =
            rfs::openat(&fd, "..", OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty()).unwrap();
        let _ = rfs::unlinkat(parent.as_fd(), "z.txt", AtFlags::empty());
        rfs::unlinkat(parent.as_fd(), "d", AtFlags::REMOVEDIR).unwrap();
        fd = parent;
    }
}

/// Backs up a `depth`-deep chain, checks the archive with GNU tar and
/// Python, restores it over the server (truncating) and checks the result.
/// Returns the time the backup and the restore took.
fn deep_round_trip(depth: usize, limit: Duration) -> (Duration, Duration) {
    let node = Arc::new(Node::new());
    make_chain(&node.root(), depth, b"at the bottom", false);
    let n = Arc::clone(&node);
    let t = Instant::now();
    within(limit.as_secs(), "backing up a deep tree", move || {
        n.create(BACKUP, "").map(|_| ())
    })
    .unwrap();
    let created = t.elapsed();
    let archive = node.archive(BACKUP);
    gnu_tar_lists(&archive);
    let members = python_members(&archive, 1024);
    assert_eq!(members.len(), depth + 1);
    let leaf = members
        .iter()
        .find(|m| m.name.ends_with(b"/leaf.txt"))
        .unwrap();
    assert_eq!(leaf.name.len(), depth * 2 + "leaf.txt".len());
    assert_eq!(leaf.data.as_deref(), Some(&b"at the bottom"[..]));

    // Restore over the same server (truncating), after changing it.
    remove_chain(&node.root());
    make_chain(&node.root(), 10, b"replaced", false);
    let n = Arc::clone(&node);
    let t = Instant::now();
    within(limit.as_secs(), "restoring a deep tree", move || {
        n.restore(BACKUP, true)
    })
    .unwrap();
    let restored = t.elapsed();
    assert_eq!(
        read_chain(&node.root()),
        (depth, b"at the bottom".to_vec(), 0)
    );
    remove_chain(&node.root());
    eprintln!("{depth}-deep tree: create {created:?}, restore {restored:?}");
    (created, restored)
}

#[test]
fn a_1000_deep_tree_round_trips() {
    deep_round_trip(1000, Duration::from_secs(120));
}

#[test]
fn a_4000_deep_tree_round_trips() {
    let (created, restored) = deep_round_trip(4000, Duration::from_secs(300));
    assert!(
        restored < created * 10 + Duration::from_secs(5),
        "the restore took {restored:?}, the backup {created:?}"
    );
}

#[test]
fn a_deep_tree_with_a_file_at_every_level_round_trips_with_1024_open_files() {
    const DEPTH: usize = 1500;
    if child_mode().as_deref() == Some("deep-nofile") {
        let src = PathBuf::from(std::env::var_os("WB_SRC").unwrap());
        let archive = PathBuf::from(std::env::var_os("WB_ARCHIVE").unwrap());
        let dest = PathBuf::from(std::env::var_os("WB_DEST").unwrap());
        let opts = ArchiveOptions::default();
        match archive_create(&src, &archive, &opts, &mut Control::none())
            .and_then(|_| archive_extract(&archive, &dest, &opts, &mut Control::none()))
        {
            Ok(summary) => println!("\nWBCHILD:ok {}", wire::restore_summary(&summary)),
            Err(e) => println!("\nWBCHILD:err {e}"),
        }
        return;
    }
    let dir = TempDir::new("deep-nofile");
    let (src, dest) = (dir.join("src"), dir.join("dest"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&dest).unwrap();
    make_chain(&src, DEPTH, b"bottom", true);
    let archive = dir.join("deep.tar.gz");
    let (lines, status, stderr) = run_child(
        "a_deep_tree_with_a_file_at_every_level_round_trips_with_1024_open_files",
        &[
            ("WB_HOSTILE_CHILD", OsStr::new("deep-nofile")),
            ("WB_SRC", src.as_os_str()),
            ("WB_ARCHIVE", archive.as_os_str()),
            ("WB_DEST", dest.as_os_str()),
        ],
        &["prlimit", "--nofile=1024:1024"],
        Duration::from_secs(120),
    );
    assert!(status.success(), "child failed: {stderr}");
    let line = lines.first().expect("the child reports");
    remove_chain(&src);
    let back = read_chain(&dest);
    remove_chain(&dest);
    let short: String = line.chars().take(300).collect();
    assert!(
        line.starts_with("ok "),
        "with 1024 open files at most: {short}"
    );
    assert_eq!(back, (DEPTH, b"bottom".to_vec(), DEPTH));
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// Files for the many-files test: `WB_MANY_FILES`, by default 600,000.
/// A million (`WB_MANY_FILES=1000000`) passes too, but takes about 80 s on
/// two shared cores (10 s to make the files, 9 s to back up, 27 s to
/// restore, 34 s to delete both trees), over this suite's time budget.
fn many_files_count() -> usize {
    std::env::var("WB_MANY_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600_000)
}

/// Makes `count` empty files, 1,000 per directory, through handles.
fn make_empty_files(root: &Path, count: usize) {
    let rootfd = rfs::open(root, OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty()).unwrap();
    for d in 0..count.div_ceil(1000) {
        let name = format!("d{d:04}");
        rfs::mkdirat(&rootfd, name.as_str(), Mode::from_raw_mode(0o755)).unwrap();
        let dfd = rfs::openat(
            &rootfd,
            name.as_str(),
            OFlags::DIRECTORY | OFlags::RDONLY,
            Mode::empty(),
        )
        .unwrap();
        for f in d * 1000..((d + 1) * 1000).min(count) {
            rfs::openat(
                &dfd,
                format!("f{f}").as_str(),
                OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            )
            .unwrap();
        }
    }
}

/// A temporary directory on tmpfs (`/dev/shm`) when there is one: creating
/// a million files on a disk shared with other work is slower than what is
/// being measured.
fn memory_backed_dir(tag: &str) -> TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        let p = shm.join(format!("wb-test-{tag}-{}", wings_backup::safe_fs::nonce()));
        if std::fs::create_dir(&p).is_ok() {
            return TempDir(p);
        }
    }
    TempDir::new(tag)
}

/// Counts the regular files below `root`.
fn count_files(root: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(root).unwrap().flatten() {
        let t = e.file_type().unwrap();
        if t.is_dir() {
            n += count_files(&e.path());
        } else if t.is_file() {
            n += 1;
        }
    }
    n
}

#[test]
fn many_empty_files_round_trip_in_bounded_memory() {
    if child_mode().as_deref() == Some("many") {
        // The child: its peak RSS is this operation's alone.
        let count = many_files_count();
        let dir = memory_backed_dir("many");
        let src = dir.join("src");
        std::fs::create_dir_all(&src).unwrap();
        let t = Instant::now();
        make_empty_files(&src, count);
        let made = t.elapsed();
        let base = vm_hwm_kib();
        let opts = ArchiveOptions::default();
        let archive = dir.join("many.tar.gz");
        let t = Instant::now();
        let created = archive_create(&src, &archive, &opts, &mut Control::none()).unwrap();
        let create_time = t.elapsed();
        let after_create = vm_hwm_kib();
        let dest = dir.join("dest");
        std::fs::create_dir_all(&dest).unwrap();
        let t = Instant::now();
        let extracted = archive_extract(&archive, &dest, &opts, &mut Control::none()).unwrap();
        let extract_time = t.elapsed();
        let after_extract = vm_hwm_kib();
        let restored = count_files(&dest);
        let size = std::fs::metadata(&archive).unwrap().len();
        println!(
            "WBCHILD:{}",
            serde_json::json!({
                "count": count, "restored": restored,
                "create": {"files": created.files, "entries": created.entries, "size": created.size},
                "extract": {"files": extracted.files, "entries": extracted.entries},
                "archive_bytes": size,
                "make_s": made.as_secs_f64(), "create_s": create_time.as_secs_f64(),
                "extract_s": extract_time.as_secs_f64(),
                "hwm_base_kib": base, "hwm_after_create_kib": after_create,
                "hwm_after_extract_kib": after_extract,
            })
        );
        let t = Instant::now();
        drop(dir);
        println!("WBCHILD:cleanup {:?}", t.elapsed());
        return;
    }
    let count = many_files_count();
    let (lines, status, stderr) = run_child(
        "many_empty_files_round_trip_in_bounded_memory",
        &[("WB_HOSTILE_CHILD", OsStr::new("many"))],
        &[],
        Duration::from_secs(600),
    );
    assert!(status.success(), "child failed: {stderr}");
    let report: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    eprintln!(
        "{count} empty files: {report} {}",
        lines.get(1).map_or("", |s| s)
    );
    assert_eq!(report["restored"], count);
    assert_eq!(report["create"]["files"], count);
    assert_eq!(report["extract"]["files"], count);
    let base = report["hwm_base_kib"].as_u64().unwrap();
    let grown = report["hwm_after_extract_kib"].as_u64().unwrap() - base;
    assert!(
        grown < 128 * 1024,
        "peak RSS grew by {grown} KiB for {count} files"
    );
}

#[test]
fn a_reusing_backup_skips_what_it_cannot_read_as_a_fresh_one_does() {
    if child_mode().as_deref() == Some("reuse-unreadable") {
        // The child, without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH: the
        // same tree backed up reusing the old archive, and from scratch.
        let src = PathBuf::from(std::env::var_os("WB_SRC").unwrap());
        let old = PathBuf::from(std::env::var_os("WB_OLD").unwrap());
        for (name, reuse) in [("reused", true), ("fresh", false)] {
            let opts = ArchiveOptions {
                reuse_from: reuse.then(|| old.clone()),
                ..ArchiveOptions::default()
            };
            let archive = old.with_file_name(format!("{name}.tar.gz"));
            match archive_create(&src, &archive, &opts, &mut Control::none()) {
                Ok(summary) => println!("WBCHILD:{name} {}", wire::archive_summary(&summary)),
                Err(e) => println!("WBCHILD:err {e}"),
            }
        }
        return;
    }
    let dir = TempDir::new("reuse-unreadable");
    let src = dir.join("src");
    write_file(&src.join("a.txt"), b"a", 0o644, 1);
    // A large file whose members the second backups copy.
    write_file(&src.join("big.bin"), &noise(3 << 20, 7), 0o644, 1);
    // Two links to one file, and a file on its own, all readable for the
    // first backup and then not.
    write_file(&src.join("h1"), b"linked", 0o644, 1);
    std::fs::hard_link(src.join("h1"), src.join("h2")).unwrap();
    write_file(&src.join("secret.txt"), b"s", 0o644, 1);
    write_file(&src.join("z.txt"), b"z", 0o644, 1);
    let old = dir.join("old.tar.gz");
    archive_create(&src, &old, &ArchiveOptions::default(), &mut Control::none()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    for p in ["h1", "secret.txt"] {
        std::fs::set_permissions(src.join(p), std::fs::Permissions::from_mode(0o000)).unwrap();
    }
    let Some(lines) = run_child_without_dac(
        "a_reusing_backup_skips_what_it_cannot_read_as_a_fresh_one_does",
        &[
            ("WB_HOSTILE_CHILD", OsStr::new("reuse-unreadable")),
            ("WB_SRC", src.as_os_str()),
            ("WB_OLD", old.as_os_str()),
        ],
    ) else {
        return;
    };
    let summary = |name: &str| -> serde_json::Value {
        let line = lines
            .iter()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} backup: {lines:?}"));
        serde_json::from_str(line).unwrap()
    };
    let (reused, fresh) = (summary("reused"), summary("fresh"));
    // Both leave out the unreadable file and both links of the unreadable
    // one (no link points to a path the archive lacks), with the reason.
    for s in [&reused, &fresh] {
        let skipped: BTreeSet<&str> = s["skipped"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["path"].as_str().unwrap())
            .collect();
        assert_eq!(skipped, BTreeSet::from(["h1", "h2", "secret.txt"]), "{s}");
        assert_eq!(s["files"], 3, "{s}");
    }
    assert!(reused["reused_members"].as_u64().unwrap() >= 3, "{reused}");
    assert_eq!(fresh["reused_members"], 0, "{fresh}");
    assert_eq!(
        tar_sha1(&dir.join("reused.tar.gz")),
        tar_sha1(&dir.join("fresh.tar.gz")),
        "the reusing backup's tar stream is not the fresh one's"
    );
}
