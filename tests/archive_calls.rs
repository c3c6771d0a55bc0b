//! The archive-level calls (`wb_archive_create` / `wb_archive_extract`) as a
//! script uses them: what they leave out (sockets, devices, their own
//! output), and the progress they report (STARTED first, archive bytes, a
//! last report of each phase that says where it ended).

mod common;

use std::os::unix::net::UnixListener;
use std::path::Path;

use common::*;
use wings_backup::archive::writer::ArchiveSummary;
use wings_backup::engine::{archive_create, archive_extract, ArchiveOptions};
use wings_backup::progress::{Control, Phase, Progress};
use wings_backup::restore::RestoreSummary;

fn create(
    src: &Path,
    out: &Path,
    opts: &ArchiveOptions,
    reports: &mut Vec<Progress>,
) -> ArchiveSummary {
    let mut cb = |p: &Progress| {
        reports.push(*p);
        true
    };
    let mut ctl = Control::new(None, Some(&mut cb));
    archive_create(src, out, opts, &mut ctl).unwrap()
}

fn extract(archive: &Path, dest: &Path, reports: &mut Vec<Progress>) -> RestoreSummary {
    let opts = ArchiveOptions::default();
    let mut cb = |p: &Progress| {
        reports.push(*p);
        true
    };
    let mut ctl = Control::new(None, Some(&mut cb));
    archive_extract(archive, dest, &opts, &mut ctl).unwrap()
}

/// Entry names of a `.tar.gz`, as GNU tar lists them.
fn tar_names(archive: &Path) -> Vec<String> {
    let out = std::process::Command::new("tar")
        .arg("-tzf")
        .arg(archive)
        .output()
        .expect("GNU tar runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim_end_matches('/').to_string())
        .collect()
}

fn skipped(summary: &ArchiveSummary) -> Vec<(String, String)> {
    summary
        .skipped
        .iter()
        .map(|s| {
            (
                String::from_utf8_lossy(&s.path).into_owned(),
                s.reason.clone(),
            )
        })
        .collect()
}

#[test]
fn sockets_and_device_nodes_are_listed_as_skipped_with_a_reason() {
    let dir = TempDir::new("sockets");
    let src = dir.join("src");
    write_file(&src.join("a.txt"), b"a", 0o644, 1);
    std::fs::create_dir_all(src.join("run")).unwrap();
    let _listener = UnixListener::bind(src.join("run/server.sock")).unwrap();
    let _ignored = UnixListener::bind(src.join("ignored.sock")).unwrap();
    // A device node needs CAP_MKNOD; where it cannot be made, sockets alone
    // are checked.
    let null = src.join("dev-null");
    let device = rustix::fs::mknodat(
        rustix::fs::CWD,
        null.as_path(),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .is_ok();
    let out = dir.join("out.tar.gz");
    let summary = create(
        &src,
        &out,
        &ArchiveOptions {
            ignore: "ignored.sock".into(),
            ..ArchiveOptions::default()
        },
        &mut Vec::new(),
    );
    let list = skipped(&summary);
    let reason = |path: &str| {
        list.iter()
            .find(|(p, _)| p == path)
            .map(|(_, r)| r.clone())
            .unwrap_or_else(|| panic!("{path} not in skipped: {summary:?}"))
    };
    assert!(reason("run/server.sock").contains("socket"), "{summary:?}");
    assert!(
        !list.iter().any(|(p, _)| p == "ignored.sock"),
        "an ignored socket is left out silently: {summary:?}"
    );
    let expected = if device { 2 } else { 1 };
    if device {
        assert!(
            reason("dev-null").contains("character device"),
            "{summary:?}"
        );
    } else {
        eprintln!("no CAP_MKNOD here: device nodes not checked");
    }
    assert_eq!(summary.skipped_count, expected, "{summary:?}");
    let mut names = tar_names(&out);
    names.sort();
    assert_eq!(names, ["a.txt", "run"]);
}

#[test]
fn an_archive_written_inside_its_source_leaves_itself_out() {
    let dir = TempDir::new("inside");
    let src = dir.join("src");
    write_file(&src.join("a.txt"), b"alpha", 0o644, 1);
    write_file(&src.join("sub/b.txt"), b"beta", 0o644, 1);
    // An earlier archive at the output path, which the new one replaces.
    write_file(&src.join("here.tar.gz"), b"old archive", 0o644, 1);
    // The source named through a symlink and `./`, the output plainly.
    std::os::unix::fs::symlink(&src, dir.join("link")).unwrap();
    let out = src.join("here.tar.gz");
    let mut reports = Vec::new();
    let summary = create(
        &dir.join("link/./"),
        &out,
        &ArchiveOptions {
            threads: 1,
            ..ArchiveOptions::default()
        },
        &mut reports,
    );
    let mut names = tar_names(&out);
    names.sort();
    assert_eq!(names, ["a.txt", "sub", "sub/b.txt"], "{summary:?}");
    assert_eq!(summary.files, 2);
    assert_eq!(summary.skipped_count, 0, "{summary:?}");
    // The progress total counts only what is archived.
    let last = reports
        .iter()
        .rev()
        .find(|p| p.phase == Phase::Archive)
        .unwrap();
    assert_eq!(last.bytes_total, 9, "{last:?}");

    // Restored, it leaves no stray temporary file behind.
    let dest = dir.join("dest");
    std::fs::create_dir_all(&dest).unwrap();
    extract(&out, &dest, &mut Vec::new());
    assert_eq!(names_in(&dest), ["a.txt", "sub"]);
    // Beside the archive, its index (left out of the archive too).
    assert_eq!(
        names_in(&src),
        ["a.txt", "here.tar.gz", "here.tar.gz.index", "sub"]
    );
}

#[test]
fn an_archive_path_that_is_a_directory_is_refused_before_anything_is_read() {
    let dir = TempDir::new("into-dir");
    let src = dir.join("src");
    write_file(&src.join("a.txt"), b"alpha", 0o644, 1);
    let out = dir.join("out.tar.gz");
    write_file(&out.join("inside.txt"), b"kept", 0o644, 1);
    let mut reports = Vec::new();
    let mut cb = |p: &Progress| {
        reports.push(*p);
        true
    };
    let mut ctl = Control::new(None, Some(&mut cb));
    let err = archive_create(&src, &out, &ArchiveOptions::default(), &mut ctl).unwrap_err();
    assert_eq!(
        err.status,
        wings_backup::error::Status::InvalidArgument,
        "{err:?}"
    );
    assert_eq!(
        err.message,
        format!("the archive path {} is a directory", out.display())
    );
    // Nothing was started, read or written: no temporary file, no index.
    assert!(reports.is_empty(), "{reports:?}");
    assert_eq!(names_in(dir.path()), ["out.tar.gz", "src"]);
    assert_eq!(names_in(&out), ["inside.txt"]);
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn create_and_extract_report_started_first_then_where_each_phase_ended() {
    let dir = TempDir::new("phases");
    let src = dir.join("src");
    let data = noise(3 << 20, 7);
    write_file(&src.join("big.bin"), &data, 0o644, 1);
    write_file(&src.join("small.txt"), b"hi", 0o644, 1);
    let out = dir.join("out.tar.gz");
    let mut reports = Vec::new();
    let summary = create(&src, &out, &ArchiveOptions::default(), &mut reports);
    let size = std::fs::metadata(&out).unwrap().len();
    assert_eq!(reports.first().map(|p| p.phase), Some(Phase::Started));
    assert_eq!(reports.last().map(|p| p.phase), Some(Phase::Done));
    // The last ARCHIVE report: all source bytes read, all archive bytes written.
    let last = reports
        .iter()
        .rev()
        .find(|p| p.phase == Phase::Archive)
        .expect("an archive report");
    let source = data.len() as u64 + 2;
    assert_eq!(summary.source_bytes, source);
    assert_eq!((last.bytes_done, last.bytes_total), (source, source));
    assert_eq!(last.archive_bytes, size, "{last:?}");
    assert_eq!(reports.last().unwrap().archive_bytes, size);
    // archive_bytes never decreases within the phase.
    let written: Vec<u64> = reports
        .iter()
        .filter(|p| p.phase == Phase::Archive)
        .map(|p| p.archive_bytes)
        .collect();
    assert!(written.windows(2).all(|w| w[0] <= w[1]), "{written:?}");

    let dest = dir.join("dest");
    std::fs::create_dir_all(&dest).unwrap();
    let mut reports = Vec::new();
    extract(&out, &dest, &mut reports);
    assert_eq!(reports.first().map(|p| p.phase), Some(Phase::Started));
    assert_eq!(reports.last().map(|p| p.phase), Some(Phase::Done));
    let last = reports
        .iter()
        .rev()
        .find(|p| p.phase == Phase::Extract)
        .expect("an extract report");
    assert_eq!(last.archive_bytes, size, "{last:?}");
    assert_eq!(std::fs::read(dest.join("big.bin")).unwrap(), data);
}

/// An archive that is a FIFO is read as a stream; the call's cancel token
/// stops it while no writer has come, and while a writer holds the FIFO
/// open without sending anything (header: "a call given it stops promptly").
#[test]
fn a_fifo_archive_is_read_and_its_wait_is_cancelled() {
    use std::io::Write;
    use std::sync::Arc;
    use wings_backup::progress::CancelToken;
    let dir = TempDir::new("fifo-extract");
    write_file(&dir.join("src/a.txt"), b"from a pipe", 0o644, 1_600_000_000);
    let made = dir.join("made.tar.gz");
    create(
        &dir.join("src"),
        &made,
        &ArchiveOptions::default(),
        &mut Vec::new(),
    );
    let bytes = std::fs::read(&made).unwrap();
    let fifo = dir.join("pipe");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    // A writer that sends the archive: read whole.
    let writer = std::thread::spawn({
        let (fifo, bytes) = (fifo.clone(), bytes.clone());
        move || {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&fifo)
                .unwrap()
                .write_all(&bytes)
        }
    });
    let dest = dir.join("dest");
    std::fs::create_dir_all(&dest).unwrap();
    archive_extract(
        &fifo,
        &dest,
        &ArchiveOptions::default(),
        &mut Control::none(),
    )
    .unwrap();
    writer.join().unwrap().unwrap();
    assert_eq!(std::fs::read(dest.join("a.txt")).unwrap(), b"from a pipe");
    // No writer at all, then a writer that sends 50 bytes and waits: a
    // cancel 300 ms in ends the call at once in both.
    for stalled in [false, true] {
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let holder = stalled.then(|| {
            let (fifo, bytes) = (fifo.clone(), bytes.clone());
            std::thread::spawn(move || {
                let mut w = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
                w.write_all(&bytes[..50]).unwrap();
                let _ = stop_rx.recv_timeout(std::time::Duration::from_secs(30));
            })
        });
        let token = Arc::new(CancelToken::new());
        let trigger = std::thread::spawn({
            let token = Arc::clone(&token);
            move || {
                std::thread::sleep(std::time::Duration::from_millis(300));
                token.trigger();
            }
        });
        let began = std::time::Instant::now();
        let dest = dir.join(format!("dest-{stalled}"));
        std::fs::create_dir_all(&dest).unwrap();
        // On a thread of its own, so that a call that never returns fails
        // the test instead of hanging it.
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn({
            let (fifo, dest, token) = (fifo.clone(), dest.clone(), Arc::clone(&token));
            move || {
                let mut ctl = Control::new(Some(&token), None);
                let opts = ArchiveOptions::default();
                let _ = done_tx.send(archive_extract(&fifo, &dest, &opts, &mut ctl));
            }
        });
        let err = done_rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the cancelled call returned")
            .unwrap_err();
        assert_eq!(
            err.status,
            wings_backup::Status::Cancelled,
            "stalled={stalled}: {err}"
        );
        assert!(
            began.elapsed() < std::time::Duration::from_secs(3),
            "{:?}",
            began.elapsed()
        );
        trigger.join().unwrap();
        let _ = stop_tx.send(());
        if let Some(h) = holder {
            h.join().unwrap();
        }
        assert_eq!(
            std::fs::read_dir(&dest).unwrap().count(),
            0,
            "stalled={stalled}"
        );
    }
}
