//! The engine's reporter: a restore returns once the files are in place and
//! its report reaches the Panel in the background, every retry logged at
//! WARN as it happens; a report that cannot be delivered is parked in
//! `.pending/<uuid>.restore.json` (at the end of its budget, or at once when
//! the engine shuts down) and sent by `send_pending_reports`. The Panel is
//! `tests/support/panel_stub.py`, started late on a port the engine has been
//! calling in vain.

mod common;
#[path = "support/panel_stub.rs"]
mod panel_stub;

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use panel_stub::Stub;
use serde_json::Value;
use wings_backup::config::{EngineConfig, PanelConfig};
use wings_backup::engine::Engine;
use wings_backup::log::Level;
use wings_backup::panel::ReportOutcome;
use wings_backup::progress::Control;

const BACKUP2: &str = "5f0c2a61-93d4-4e7b-a1c8-2b6d9e0f3a47";
const BACKUP3: &str = "7a1e4c90-2b5d-4f3a-8c6e-9d0b1f2a3c4d";

type Log = Arc<Mutex<Vec<(Level, String)>>>;

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A node with a backup `BACKUP` of a small tree, made without a Panel.
fn node_with_backup(tag: &str) -> TempDir {
    let dir = TempDir::new(tag);
    let root = dir.join("data").join(SERVER);
    std::fs::create_dir_all(&root).unwrap();
    write_file(
        &root.join("world/level.dat"),
        b"level",
        0o644,
        1_600_000_000,
    );
    write_file(
        &root.join("server.properties"),
        b"motd=x",
        0o644,
        1_600_000_000,
    );
    engine(&dir, None)
        .create_backup(SERVER, &create_request(BACKUP, ""), &mut Control::none())
        .unwrap();
    dir
}

/// An engine on `dir`, reporting to `127.0.0.1:<port>` (with the stub's
/// credentials) with `report_retry_s`, logging into the returned list.
fn engine(dir: &TempDir, panel: Option<(u16, u64)>) -> Engine {
    Engine::new(EngineConfig {
        data_directory: dir.join("data"),
        backup_directory: dir.join("backups"),
        panel: panel.map(|(port, report_retry_s)| PanelConfig {
            url: format!("http://127.0.0.1:{port}"),
            token_id: panel_stub::TOKEN_ID.into(),
            token: panel_stub::TOKEN.into(),
            report_retry_s,
        }),
        ..EngineConfig::default()
    })
    .unwrap()
}

fn logging(engine: &Engine) -> Log {
    let log: Log = Arc::default();
    let sink = Arc::clone(&log);
    engine.set_logger(Some(Box::new(move |level, message| {
        sink.lock().unwrap().push((level, message.to_string()))
    })));
    log
}

fn warnings_about(log: &Log, needle: &str) -> Vec<String> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|(l, m)| *l == Level::Warn && m.contains(needle))
        .map(|(_, m)| m.clone())
        .collect()
}

/// Polls `f` every 50 ms until it is true, for at most `secs`.
fn wait_until(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn parked(dir: &TempDir, name: &str) -> PathBuf {
    dir.join("backups/.pending").join(name)
}

/// Restores `BACKUP` into `SERVER`; returns how long the call took.
fn timed_restore(engine: &Engine) -> Duration {
    let began = Instant::now();
    engine
        .restore_backup(SERVER, BACKUP, &local_restore(true), &mut Control::none())
        .unwrap();
    began.elapsed()
}

fn restores(stub: &Stub) -> Vec<Value> {
    stub.state()["restores"].as_array().unwrap().clone()
}

#[test]
fn a_restore_answers_at_once_and_its_report_reaches_a_panel_that_comes_back() {
    let dir = node_with_backup("report-back");
    let port = closed_port();
    let engine = engine(&dir, Some((port, 600)));
    let log = logging(&engine);
    let took = timed_restore(&engine);
    assert!(took < Duration::from_secs(1), "the restore took {took:?}");
    let restore_path = format!("/api/remote/backups/{BACKUP}/restore");
    assert!(
        wait_until(5, || !warnings_about(&log, "attempt 1 failed").is_empty()),
        "the first retry is logged as it happens: {:?}",
        log.lock().unwrap()
    );
    let first = &warnings_about(&log, "attempt 1 failed")[0];
    assert!(
        first.contains(&format!("POST http://127.0.0.1:{port}{restore_path}")),
        "{first}"
    );
    // The Panel comes back within the report's 30 s.
    let stub = Stub::start_on(port);
    assert!(
        wait_until(30, || !restores(&stub).is_empty()),
        "the report never arrived; log: {:?}",
        log.lock().unwrap()
    );
    // Exactly one report, successful, and nothing parked.
    std::thread::sleep(Duration::from_secs(1));
    let got = restores(&stub);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["body"]["successful"], true);
    assert!(!parked(&dir, &format!("{BACKUP}.restore.json")).exists());
    assert!(log
        .lock()
        .unwrap()
        .iter()
        .any(|(l, m)| *l == Level::Info && m.contains("delivered at attempt")));
    // Every attempt logged once, numbered 1, 2, ... in order.
    let attempts: Vec<u32> = warnings_about(&log, "failed, retrying")
        .iter()
        .filter_map(|m| m.split("attempt ").nth(1)?.split(' ').next()?.parse().ok())
        .collect();
    assert_eq!(
        attempts,
        (1..=attempts.len() as u32).collect::<Vec<_>>(),
        "{log:?}"
    );
}

#[test]
fn undelivered_reports_of_both_kinds_are_parked_then_sent_once() {
    let dir = node_with_backup("report-park");
    let port = closed_port();
    // report_retry_s 2: backup reports retry for 2 s, restore reports too
    // (the shorter of 30 s and report_retry_s).
    let engine = engine(&dir, Some((port, 2)));
    let log = logging(&engine);
    let took = timed_restore(&engine);
    assert!(took < Duration::from_secs(1), "the restore took {took:?}");
    let restore_file = parked(&dir, &format!("{BACKUP}.restore.json"));
    let parked_line = format!("parked as .pending/{BACKUP}.restore.json");
    assert!(
        wait_until(10, || restore_file.exists()
            && !warnings_about(&log, &parked_line).is_empty()),
        "parked at the end of its budget, and logged: {:?}",
        log.lock().unwrap()
    );

    // A backup's report retries inside the call, logged as it happens too.
    let details = engine
        .create_backup(SERVER, &create_request(BACKUP2, ""), &mut Control::none())
        .unwrap();
    assert!(matches!(
        details.panel_report,
        Some(ReportOutcome::Pending(_))
    ));
    let backup_retries = warnings_about(
        &log,
        &format!("POST http://127.0.0.1:{port}/api/remote/backups/{BACKUP2} attempt 1 failed"),
    );
    assert_eq!(backup_retries.len(), 1, "{:?}", log.lock().unwrap());
    let backup_file = parked(&dir, &format!("{BACKUP2}.json"));
    assert!(backup_file.exists());

    // The Panel is back: both go out once, and leave `.pending`.
    let stub = Stub::start_on(port);
    assert_eq!(engine.send_pending_reports(None), (2, 0));
    assert!(!restore_file.exists() && !backup_file.exists());
    let got = restores(&stub);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["backup"], BACKUP);
    assert_eq!(got[0]["body"]["successful"], true);
    let reports = stub.state()["reports"].as_array().unwrap().clone();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0]["body"]["checksum"], details.report.checksum);
    assert_eq!(engine.send_pending_reports(None), (0, 0));
}

#[test]
fn shutting_down_parks_a_report_still_being_retried_at_once() {
    let dir = node_with_backup("report-stop");
    let port = closed_port();
    let restore_file = parked(&dir, &format!("{BACKUP}.restore.json"));

    // wb_engine_cancel_all: stops the reporter, parking what it holds.
    let first = engine(&dir, Some((port, 600)));
    let log = logging(&first);
    timed_restore(&first);
    assert!(wait_until(5, || !warnings_about(&log, "attempt 1 failed").is_empty()));
    let began = Instant::now();
    first.cancel_all();
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "{:?}",
        began.elapsed()
    );
    assert!(restore_file.exists(), "parked by cancel_all");
    drop(first);
    std::fs::remove_file(&restore_file).unwrap();

    // wb_engine_free: the same, without a cancel_all first.
    let second = engine(&dir, Some((port, 600)));
    timed_restore(&second);
    let began = Instant::now();
    drop(second);
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "{:?}",
        began.elapsed()
    );
    assert!(restore_file.exists(), "parked when the engine is dropped");
    let text = std::fs::read_to_string(&restore_file).unwrap();
    let parked: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(parked["backup"], BACKUP);
    assert_eq!(parked["body"]["successful"], true);
}

#[test]
fn an_engine_resends_parked_reports_on_its_own_thread_and_logs_it() {
    let dir = node_with_backup("report-resend");
    let port = closed_port();
    let backup_file = parked(&dir, &format!("{BACKUP2}.json"));
    {
        // A backup whose report the Panel does not take is parked.
        let first = engine(&dir, Some((port, 1)));
        let details = first
            .create_backup(SERVER, &create_request(BACKUP2, ""), &mut Control::none())
            .unwrap();
        assert!(matches!(
            details.panel_report,
            Some(ReportOutcome::Pending(_))
        ));
    }
    assert!(backup_file.exists());

    // Still no Panel, and a long retry budget: cancel_all stops the
    // resending at once and the report stays parked.
    let stuck = Arc::new(engine(&dir, Some((port, 600))));
    stuck.resend_parked_reports().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    stuck.cancel_all();
    assert!(stuck.wait_idle(Duration::from_secs(10)));
    assert!(backup_file.exists());
    drop(stuck);

    // The Panel is back: the next engine sends it, and says so.
    let stub = Stub::start_on(port);
    let engine = Arc::new(engine(&dir, Some((port, 600))));
    let log = logging(&engine);
    engine.resend_parked_reports().unwrap();
    assert!(engine.wait_idle(Duration::from_secs(30)));
    assert!(!backup_file.exists());
    let reports = stub.state()["reports"].as_array().unwrap().clone();
    assert_eq!(reports.len(), 1, "{reports:?}");
    // The record says so from then on (it said "pending: ...").
    assert_eq!(
        engine
            .backup_status(SERVER, BACKUP2)
            .unwrap()
            .panel_report
            .as_deref(),
        Some("sent")
    );
    let lines = log.lock().unwrap().clone();
    assert!(
        lines.contains(&(
            Level::Info,
            "parked Panel reports sent=1 still_pending=0".into()
        )),
        "{lines:?}"
    );
}

#[test]
fn deleting_a_backup_whose_report_is_in_flight_does_not_wait_for_the_panel() {
    // Backups whose archives are written while the Panel holds each report
    // for 6 s before answering (a call in flight is not interrupted; its
    // timeout is 15 s). DELETE and delete-all take the archives at once,
    // and the records do not come back when the calls end.
    let dir = node_with_backup("report-delete");
    let port = closed_port();
    let stub = Stub::start_on(port);
    stub.configure(serde_json::json!({"report_delay": 6}));
    let engine = Arc::new(engine(&dir, Some((port, 600))));
    for uuid in [BACKUP2, BACKUP3] {
        engine
            .start_backup(SERVER, &create_request(uuid, ""))
            .unwrap();
        assert!(
            wait_until(10, || engine
                .backup_status(SERVER, uuid)
                .is_ok_and(|r| r.phase == "report")),
            "{:?}",
            engine.backup_status(SERVER, uuid)
        );
        assert!(dir.join(format!("backups/{uuid}.tar.gz")).exists());
    }

    // Nothing is left to cancel: the archives are written.
    assert_eq!(
        engine.cancel_backup(SERVER, BACKUP2).unwrap_err().status,
        wings_backup::Status::Conflict
    );
    let began = Instant::now();
    engine.delete_backup(SERVER, BACKUP2).unwrap();
    assert_eq!(engine.delete_all_backups(SERVER).unwrap(), 2);
    let took = began.elapsed();
    assert!(took < Duration::from_secs(2), "the deletes took {took:?}");
    assert!(!dir.join(format!("backups/{BACKUP2}.tar.gz")).exists());
    assert!(!dir.join(format!("backups/{BACKUP3}.tar.gz")).exists());
    assert_eq!(
        engine.delete_backup(SERVER, BACKUP2).unwrap_err().status,
        wings_backup::Status::NotFound
    );
    assert!(engine.list_backups(SERVER).unwrap().is_empty());

    // The reports in flight are answered and end; the records stay gone.
    engine.cancel_all();
    assert!(engine.wait_idle(Duration::from_secs(20)));
    let reported: Vec<Value> = stub.state()["reports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["backup"].clone())
        .collect();
    assert_eq!(reported, [BACKUP2, BACKUP3]);
    for uuid in [BACKUP, BACKUP2, BACKUP3] {
        assert_eq!(
            engine.backup_status(SERVER, uuid).unwrap_err().status,
            wings_backup::Status::NotFound,
            "{uuid}"
        );
    }
    assert!(engine.list_backups(SERVER).unwrap().is_empty());
}

/// The reports of BACKUP2 the stub saw: (successful, status it answered).
fn reports_of(stub: &Stub, uuid: &str) -> Vec<(bool, u64)> {
    stub.state()["reports"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["backup"] == uuid)
        .map(|r| {
            (
                r["body"]["successful"].as_bool().unwrap(),
                r["answered"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_cancelled_backups_report_is_retried_until_the_panel_takes_it() {
    // A backup held back by a write limit, cancelled while it runs; the
    // Panel refuses the first report. Only a shutdown parks a report at
    // once: a cancel or a delete does not, or the Panel's row (and an s3
    // upload) would stay open until the node's next start.
    let dir = node_with_backup("report-cancel");
    write_file(
        &dir.join("data").join(SERVER).join("big.bin"),
        &noise(8 << 20, 5),
        0o644,
        1_600_000_000,
    );
    let port = closed_port();
    let stub = Stub::start_on(port);
    stub.configure(serde_json::json!({"report_statuses": [503]}));
    let engine = Arc::new(
        Engine::new(EngineConfig {
            write_limit: 1,
            ..engine(&dir, Some((port, 600))).config().clone()
        })
        .unwrap(),
    );
    engine
        .start_backup(SERVER, &create_request(BACKUP2, ""))
        .unwrap();
    assert!(wait_until(10, || engine
        .backup_status(SERVER, BACKUP2)
        .is_ok_and(|r| r.phase == "archive")));
    engine.cancel_backup(SERVER, BACKUP2).unwrap();
    assert!(
        wait_until(20, || reports_of(&stub, BACKUP2).len() == 2),
        "{:?}",
        reports_of(&stub, BACKUP2)
    );
    assert_eq!(reports_of(&stub, BACKUP2), [(false, 503), (false, 204)]);
    assert!(wait_until(10, || engine
        .backup_status(SERVER, BACKUP2)
        .is_ok_and(|r| r.panel_report.as_deref() == Some("sent"))));
    assert!(!parked(&dir, &format!("{BACKUP2}.json")).exists());
    engine.cancel_all();
    assert!(engine.wait_idle(Duration::from_secs(10)));
}

#[test]
fn a_backup_the_nodes_stop_interrupted_is_reported_failed_at_the_next_start() {
    // A record left running by a process that is gone (a child killed in
    // the middle of the backup): the next engine fails it, parks its failure
    // report, sends it, and the record then says so.
    let dir = node_with_backup("report-interrupted");
    let port = closed_port();
    let stub = Stub::start_on(port);
    {
        let catalog = wings_backup::catalog::Catalog::open(&dir.join("backups"));
        let mut record = wings_backup::catalog::OperationRecord::new(
            wings_backup::catalog::OpKind::Create,
            BACKUP2,
            SERVER,
            "s3",
        );
        record.state = wings_backup::catalog::OpState::Running;
        catalog.upsert(&record);
        // Dropped without finishing it: its owner is gone.
    }
    // Its index went in place, its archive never followed.
    let orphan = dir.join("backups").join(format!("{BACKUP2}.tar.gz.index"));
    let kept = dir.join("backups").join(format!("{BACKUP}.tar.gz.index"));
    std::fs::copy(&kept, &orphan).unwrap();
    let engine = Arc::new(engine(&dir, Some((port, 600))));
    assert!(parked(&dir, &format!("{BACKUP2}.json")).exists());
    assert!(!orphan.exists() && kept.exists());
    engine.resend_parked_reports().unwrap();
    assert!(engine.wait_idle(Duration::from_secs(30)));
    assert_eq!(reports_of(&stub, BACKUP2), [(false, 204)]);
    let record = engine.backup_status(SERVER, BACKUP2).unwrap();
    assert_eq!(record.state, wings_backup::catalog::OpState::Failed);
    assert_eq!(record.panel_report.as_deref(), Some("sent"));
}

#[test]
fn a_backup_killed_while_it_reported_is_reported_succeeded_at_the_next_start() {
    // The child: a backup whose archive is written, reporting to a Panel
    // that is down, until the parent kills it.
    if let (Some(dir), Some(port)) = (
        std::env::var_os("WB_REPORT_CHILD_DIR"),
        std::env::var("WB_REPORT_CHILD_PORT").ok(),
    ) {
        let dir = std::mem::ManuallyDrop::new(TempDir(PathBuf::from(dir)));
        let engine = engine(&dir, Some((port.parse().unwrap(), 600)));
        let done = engine.create_backup(SERVER, &create_request(BACKUP2, ""), &mut Control::none());
        panic!("the report ended within 600 s: {:?}", done.map(|_| ()));
    }
    let dir = node_with_backup("report-killed");
    let port = closed_port();
    let child = spawn_test_child(
        "a_backup_killed_while_it_reported_is_reported_succeeded_at_the_next_start",
        &[
            ("WB_REPORT_CHILD_DIR", dir.0.as_os_str()),
            ("WB_REPORT_CHILD_PORT", port.to_string().as_ref()),
        ],
    );
    let mut child = KillOnDrop(child);
    let sending = parked(&dir, &format!(".{BACKUP2}.json.sending"));
    let archive = dir.join("backups").join(format!("{BACKUP2}.tar.gz"));
    // The report is written ahead of the archive; once both are there the
    // backup has ended.
    let seen = wait_until(60, || sending.exists() && archive.exists());
    let _ = child.0.kill();
    let _ = child.0.wait();
    assert!(seen, "the child did not start reporting");

    let stub = Stub::start_on(port);
    let engine = Arc::new(engine(&dir, Some((port, 600))));
    let checksum = sha1_hex(&std::fs::read(&archive).unwrap());
    let record = engine.backup_status(SERVER, BACKUP2).unwrap();
    assert_eq!(record.state, wings_backup::catalog::OpState::Succeeded);
    assert_eq!(record.checksum, checksum);
    assert!(!sending.exists());
    assert!(parked(&dir, &format!("{BACKUP2}.json")).exists());
    engine.resend_parked_reports().unwrap();
    assert!(engine.wait_idle(Duration::from_secs(30)));
    assert_eq!(reports_of(&stub, BACKUP2), [(true, 204)]);
    let body = stub.state()["reports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["backup"] == BACKUP2)
        .unwrap()["body"]
        .clone();
    assert_eq!(body["checksum"], checksum.as_str());
    assert_eq!(body["size"], std::fs::metadata(&archive).unwrap().len());
    let record = engine.backup_status(SERVER, BACKUP2).unwrap();
    assert_eq!(record.panel_report.as_deref(), Some("sent"));
}

/// A child process killed when dropped (a failed assertion kills it too).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The regular files under `root` (relative path, content), stages included.
fn files(root: &std::path::Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut found = std::collections::BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                dirs.push(path);
            } else if meta.is_file() {
                let name = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                found.insert(name, std::fs::read(&path).unwrap());
            }
        }
    }
    found
}

/// The restore stages in `root`, and whether each has its `commit` marker.
fn stages(root: &std::path::Path) -> Vec<bool> {
    names(root)
        .into_iter()
        .filter(|n| n.starts_with(".wings-backup-restore-"))
        .map(|n| root.join(n).join("commit").exists())
        .collect()
}

/// The child of the kill tests: a truncating restore of `BACKUP` held
/// (for at most 120 s) in its extract or right after its commit marker is
/// written, until the parent kills it.
fn held_restore_child() -> bool {
    let (Some(dir), Some(port), Some(at)) = (
        std::env::var_os("WB_RESTORE_KILL_DIR"),
        std::env::var("WB_RESTORE_KILL_PORT").ok(),
        std::env::var("WB_RESTORE_KILL_AT").ok(),
    ) else {
        return false;
    };
    let dir = std::mem::ManuallyDrop::new(TempDir(PathBuf::from(dir)));
    let engine = engine(&dir, Some((port.parse().unwrap(), 600)));
    if at == "commit" {
        wings_backup::restore::journal::AFTER_COMMIT_START
            .set(|| std::thread::sleep(Duration::from_secs(120)))
            .unwrap();
    }
    let signal = dir.join("at-extract");
    let mut held = false;
    let mut cb = |p: &wings_backup::progress::Progress| {
        if at == "extract" && p.phase == wings_backup::progress::Phase::Extract && !held {
            held = true;
            std::fs::write(&signal, b"").unwrap();
            std::thread::sleep(Duration::from_secs(120));
        }
        true
    };
    let mut ctl = Control::new(None, Some(&mut cb));
    let done = engine.restore_backup(SERVER, BACKUP, &local_restore(true), &mut ctl);
    if at == "reporting" && done.is_ok() {
        // Its report is with the reporter, which the Panel keeps waiting.
        std::fs::write(dir.join("restored"), b"").unwrap();
        std::thread::sleep(Duration::from_secs(120));
    }
    panic!("the restore was not killed: {:?}", done.map(|_| ()));
}

/// A node whose server holds other files than its backup `BACKUP`: (the
/// node, the backup's files, the server's files now).
type Files = std::collections::BTreeMap<String, Vec<u8>>;
fn node_with_changed_files(tag: &str) -> (TempDir, Files, Files) {
    let dir = node_with_backup(tag);
    let root = dir.join("data").join(SERVER);
    let backup = files(&root);
    write_file(
        &root.join("world/level.dat"),
        b"a later level",
        0o644,
        1_700_000_000,
    );
    write_file(&root.join("world/new.dat"), b"new", 0o644, 1_700_000_000);
    std::fs::remove_file(root.join("server.properties")).unwrap();
    let now = files(&root);
    assert_ne!(now, backup);
    (dir, backup, now)
}

/// Runs the restore child held at `at` over `dir`, waits (at most 60 s)
/// until `reached` holds, and kills it.
fn kill_restore_child(
    test: &str,
    dir: &TempDir,
    port: u16,
    at: &str,
    reached: impl FnMut() -> bool,
) {
    let child = spawn_test_child(
        test,
        &[
            ("WB_RESTORE_KILL_DIR", dir.0.as_os_str()),
            ("WB_RESTORE_KILL_PORT", port.to_string().as_ref()),
            ("WB_RESTORE_KILL_AT", at.as_ref()),
        ],
    );
    let mut child = KillOnDrop(child);
    let seen = wait_until(60, reached);
    let _ = child.0.kill();
    let _ = child.0.wait();
    assert!(seen, "the child's restore did not reach its {at}");
}

/// The restore reports the stub saw, as (backup, successful).
fn restore_reports(stub: &Stub) -> Vec<(String, bool)> {
    restores(stub)
        .iter()
        .map(|r| {
            (
                r["backup"].as_str().unwrap().to_string(),
                r["body"]["successful"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn parked_restore(dir: &TempDir) -> Option<bool> {
    let text = std::fs::read_to_string(parked(dir, &format!("{BACKUP}.restore.json"))).ok()?;
    let v: Value = serde_json::from_str(&text).unwrap();
    v["body"]["successful"].as_bool()
}

#[test]
fn a_restore_killed_during_its_extract_is_reported_failed_at_the_next_start() {
    if held_restore_child() {
        return;
    }
    let (dir, _, before) = node_with_changed_files("restore-killed-extract");
    let root = dir.join("data").join(SERVER);
    let port = closed_port();
    let signal = dir.join("at-extract");
    kill_restore_child(
        "a_restore_killed_during_its_extract_is_reported_failed_at_the_next_start",
        &dir,
        port,
        "extract",
        || signal.exists(),
    );
    // Killed with its stage there, not committed.
    assert_eq!(stages(&root), [false]);

    let (stub, engine, logged, record) = start_after_killed_restore(&dir, port, false);
    assert_eq!(files(&root), before, "the server's files are as they were");
    assert_eq!(record.state, wings_backup::catalog::OpState::Failed);
    assert!(
        record
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("node stopped"),
        "{record:?}"
    );
    assert_eq!(parked_restore(&dir), Some(false));
    assert_logged(
        &logged,
        Level::Warn,
        &["interrupted", &format!("backup={BACKUP}")],
    );
    resend_parked_restore(&engine, &stub, &dir, false);
}

#[test]
fn a_restore_killed_after_its_commit_began_is_finished_and_reported_succeeded_at_the_next_start() {
    if held_restore_child() {
        return;
    }
    let (dir, backup, _) = node_with_changed_files("restore-killed-commit");
    let root = dir.join("data").join(SERVER);
    let port = closed_port();
    kill_restore_child(
        "a_restore_killed_after_its_commit_began_is_finished_and_reported_succeeded_at_the_next_start",
        &dir,
        port,
        "commit",
        || stages(&root) == [true],
    );
    assert_eq!(stages(&root), [true]);

    let (stub, engine, logged, record) = start_after_killed_restore(&dir, port, true);
    assert_eq!(files(&root), backup, "every file is the backup's");
    assert_eq!(record.state, wings_backup::catalog::OpState::Succeeded);
    assert_eq!(record.phase, "done");
    assert_eq!(record.error, None);
    assert_eq!(parked_restore(&dir), Some(true));
    assert_logged(
        &logged,
        Level::Info,
        &["finished at start", &format!("backup={BACKUP}")],
    );
    resend_parked_restore(&engine, &stub, &dir, true);
    // A restart changes nothing more: the record stays, nothing is parked again.
    drop(engine);
    let engine = self::engine(&dir, Some((port, 600)));
    assert_eq!(parked_restore(&dir), None);
    let record = engine.backup_status(SERVER, BACKUP).unwrap();
    assert_eq!(record.state, wings_backup::catalog::OpState::Succeeded);
}

#[test]
fn a_restore_still_running_in_another_process_is_left_alone_at_start() {
    if held_restore_child() {
        return;
    }
    let (dir, _, before) = node_with_changed_files("restore-live");
    let root = dir.join("data").join(SERVER);
    let port = closed_port();
    let signal = dir.join("at-extract");
    let child = spawn_test_child(
        "a_restore_still_running_in_another_process_is_left_alone_at_start",
        &[
            ("WB_RESTORE_KILL_DIR", dir.0.as_os_str()),
            ("WB_RESTORE_KILL_PORT", port.to_string().as_ref()),
            ("WB_RESTORE_KILL_AT", "extract".as_ref()),
        ],
    );
    let mut child = KillOnDrop(child);
    assert!(
        wait_until(60, || signal.exists()),
        "the child's restore did not start"
    );
    // Another engine starts on the same directories while the child's
    // restore runs: its stage, record and report are the child's.
    let engine = engine(&dir, Some((port, 600)));
    let log = logging(&engine);
    assert_eq!(
        stages(&root),
        [false],
        "the running restore's stage is kept"
    );
    let record = engine.backup_status(SERVER, BACKUP).unwrap();
    assert_eq!(record.kind, wings_backup::catalog::OpKind::Restore);
    assert!(record.state.is_active(), "{record:?}");
    assert_eq!(parked_restore(&dir), None);
    let logged = log.lock().unwrap().clone();
    assert!(
        logged
            .iter()
            .any(|(_, m)| m.contains("finished=0 removed=0 running=1")),
        "{logged:?}"
    );
    assert!(
        !logged.iter().any(|(_, m)| m.contains("backup=")),
        "{logged:?}"
    );
    drop(engine);
    let _ = child.0.kill();
    let _ = child.0.wait();
    // Once its process is gone, the next start settles it.
    let next = self::engine(&dir, Some((port, 600)));
    assert_eq!(stages(&root), Vec::<bool>::new());
    assert_eq!(files(&root), before);
    assert_eq!(parked_restore(&dir), Some(false));
    drop(next);
}

#[test]
fn a_restore_report_a_killed_process_still_held_is_parked_and_sent_at_the_next_start() {
    if held_restore_child() {
        return;
    }
    let (dir, backup, _) = node_with_changed_files("restore-killed-reporting");
    let root = dir.join("data").join(SERVER);
    let port = closed_port();
    let (restored, sending) = (
        dir.join("restored"),
        parked(&dir, &format!(".{BACKUP}.restore.json.sending")),
    );
    kill_restore_child(
        "a_restore_report_a_killed_process_still_held_is_parked_and_sent_at_the_next_start",
        &dir,
        port,
        "reporting",
        || restored.exists() && sending.exists(),
    );
    assert_eq!(files(&root), backup);
    assert_eq!(parked_restore(&dir), None, "not parked while it was held");

    let stub = Stub::start_on(port);
    let engine = Arc::new(engine(&dir, Some((port, 600))));
    assert!(!sending.exists());
    assert_eq!(parked_restore(&dir), Some(true));
    let record = engine.backup_status(SERVER, BACKUP).unwrap();
    assert_eq!(record.state, wings_backup::catalog::OpState::Succeeded);
    resend_parked_restore(&engine, &stub, &dir, true);
}

/// Asserts that `logged` has a line at `level` holding every one of `parts`.
fn assert_logged(logged: &[(Level, String)], level: Level, parts: &[&str]) {
    assert!(
        logged
            .iter()
            .any(|(l, m)| *l == level && parts.iter().all(|p| m.contains(p))),
        "no {level:?} line with {parts:?} in {logged:?}"
    );
}

/// Sends the parked reports; the stub then has exactly one restore report
/// of `BACKUP`, `successful`, and none is parked any more.
fn resend_parked_restore(engine: &Arc<Engine>, stub: &Stub, dir: &TempDir, successful: bool) {
    engine.resend_parked_reports().unwrap();
    assert!(engine.wait_idle(Duration::from_secs(30)));
    assert_eq!(restore_reports(stub), [(BACKUP.to_string(), successful)]);
    assert_eq!(parked_restore(dir), None);
}

/// After a restore child was killed: a Panel stub on `port` and an engine
/// on `dir`, which has dealt with the restore's stage (`finished` its
/// commit, else removed it) and logged so; with what it logged and the
/// restore's record.
fn start_after_killed_restore(
    dir: &TempDir,
    port: u16,
    finished: bool,
) -> (
    Stub,
    Arc<Engine>,
    Vec<(Level, String)>,
    wings_backup::operations::OperationRecord,
) {
    let stub = Stub::start_on(port);
    let engine = Arc::new(engine(dir, Some((port, 600))));
    let log = logging(&engine);
    assert_eq!(stages(&dir.join("data").join(SERVER)), Vec::<bool>::new());
    let logged = log.lock().unwrap().clone();
    let counts = if finished {
        "finished=1 removed=0"
    } else {
        "finished=0 removed=1"
    };
    assert_logged(
        &logged,
        Level::Info,
        &[
            "interrupted restores recovered",
            &format!("server={SERVER}"),
            counts,
        ],
    );
    let record = engine.backup_status(SERVER, BACKUP).unwrap();
    assert_eq!(record.kind, wings_backup::catalog::OpKind::Restore);
    (stub, engine, logged, record)
}

/// A backup that leaves entries out (here a socket) says so in the log at
/// WARN, with their count and the first of them: an HTTP client's state of
/// the backup does not list them.
#[test]
fn a_backup_that_leaves_entries_out_says_so_in_the_log() {
    let dir = node_with_backup("report-skipped");
    let root = dir.join("data").join(SERVER);
    let _socket = std::os::unix::net::UnixListener::bind(root.join("server.sock")).unwrap();
    let engine = engine(&dir, None);
    let log = logging(&engine);
    engine
        .create_backup(SERVER, &create_request(BACKUP2, ""), &mut Control::none())
        .unwrap();
    let lines = warnings_about(&log, "backup left entries out");
    assert_eq!(lines.len(), 1, "{lines:?}");
    for part in [
        format!("backup={BACKUP2}"),
        "skipped=1".into(),
        "first=server.sock".into(),
    ] {
        assert!(lines[0].contains(&part), "{part} in {lines:?}");
    }
}
