//! The S3 adapter and the Panel client against a real S3-compatible server
//! (moto in server mode) behind a Panel stub (`tests/support/panel_stub.py`)
//! that creates multipart uploads, hands out presigned part URLs and
//! completes the upload with the parts reported, as the real Panel does.

mod common;
#[path = "support/panel_stub.rs"]
mod panel_stub;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;
use panel_stub::Stub;
use serde_json::{json, Value};
use wings_backup::config::{AllowEntry, EngineConfig, PanelConfig};
use wings_backup::engine::{BackupDetails, Engine};
use wings_backup::panel::ReportOutcome;
use wings_backup::progress::{Control, Phase, Progress};
use wings_backup::request::{Adapter, CreateRequest, RestoreRequest};
use wings_backup::Status;

impl Stub {
    /// An engine with this Panel and `allowlist` as its restore host allowlist.
    fn engine(&self, node_dir: &TempDir, allowlist: &[&str]) -> Engine {
        self.engine_with_budget(node_dir, allowlist, 3)
    }

    fn engine_with_budget(
        &self,
        node_dir: &TempDir,
        allowlist: &[&str],
        report_retry_s: u64,
    ) -> Engine {
        std::fs::create_dir_all(node_dir.join("data").join(SERVER)).unwrap();
        Engine::new(EngineConfig {
            data_directory: node_dir.join("data"),
            backup_directory: node_dir.join("backups"),
            panel: Some(PanelConfig {
                url: self.url.clone(),
                token_id: self.token_id.clone(),
                token: self.token.clone(),
                report_retry_s,
            }),
            restore_host_allowlist: allowlist
                .iter()
                .map(|h| AllowEntry::parse(h).unwrap())
                .collect(),
            ..EngineConfig::default()
        })
        .unwrap()
    }
}

fn tree(root: &std::path::Path) {
    build_game_tree(root);
    // Enough incompressible data for several 64 KiB parts.
    let noise = noise(600_000, 0x9e37_79b9_7f4a_7c15);
    write_file(&root.join("world/noise.bin"), &noise, 0o644, 1_600_000_000);
}

fn s3_create(uuid: &str) -> CreateRequest {
    CreateRequest {
        adapter: Adapter::S3,
        ..create_request(uuid, "")
    }
}

fn s3_restore(url: &str, truncate: bool) -> RestoreRequest {
    RestoreRequest {
        adapter: Adapter::S3,
        truncate_directory: truncate,
        download_url: Some(url.to_string()),
        paths: Vec::new(),
    }
}

fn create_s3(engine: &Engine, uuid: &str) -> wings_backup::Result<BackupDetails> {
    engine.create_backup(SERVER, &s3_create(uuid), &mut Control::none())
}

fn restore_s3(engine: &Engine, uuid: &str, url: &str, truncate: bool) -> wings_backup::Result<()> {
    engine
        .restore_backup(
            SERVER,
            uuid,
            &s3_restore(url, truncate),
            &mut Control::none(),
        )
        .map(|_| ())
}

/// The restore reports the stub got, once there are `n` (restores report in
/// the background), waiting at most 10 s, and then 300 ms more for any
/// report too many.
fn restore_reports(stub: &Stub, n: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    while stub.state()["restores"].as_array().unwrap().len() < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    stub.state()["restores"].clone()
}

/// The parts of a backup as the Panel's status body lists them.
fn parts_json(details: &BackupDetails) -> Value {
    match &details.report.parts {
        None => Value::Null,
        Some(parts) => parts
            .iter()
            .map(|(etag, n)| json!({"etag": etag, "part_number": n}))
            .collect(),
    }
}

#[test]
fn an_s3_backup_lands_in_the_bucket_with_the_reported_sha1_and_size() {
    let stub = Stub::start();
    let dir = TempDir::new("s3-create");
    let engine = stub.engine(&dir, &[]);
    tree(&dir.join("data").join(SERVER));
    let mut upload_reports: Vec<Progress> = Vec::new();
    let mut cb = |p: &Progress| {
        if p.phase == Phase::Upload {
            upload_reports.push(*p);
        }
        true
    };
    let details = engine
        .create_backup(
            SERVER,
            &s3_create(BACKUP),
            &mut Control::new(None, Some(&mut cb)),
        )
        .unwrap();
    let parts = details.report.parts.as_ref().unwrap();
    assert!(parts.len() >= 3, "several parts: {details:?}");
    for (i, (etag, part_number)) in parts.iter().enumerate() {
        assert_eq!(*part_number, i as u32 + 1);
        assert!(etag.starts_with('"'), "ETag kept verbatim");
    }
    let state = stub.state();
    let completed = &state["completed"][BACKUP];
    assert_eq!(completed["sha1"], details.report.checksum);
    assert_eq!(completed["size"], details.report.size);
    let reports = state["reports"].as_array().unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0]["body"]["successful"], true);
    assert_eq!(reports[0]["body"]["checksum_type"], "sha1");
    assert_eq!(reports[0]["body"]["parts"], parts_json(&details));
    // The local copy is gone; no temporary file is left; the index stays
    // (hidden), for browsing and ranged restores of single files.
    assert_eq!(backup_names(&dir.join("backups")), Vec::<String>::new());
    assert_eq!(
        names(&dir.join("backups/.s3-indexes")),
        vec![format!("{BACKUP}.tar.gz.index")]
    );
    // Headers of every Panel call.
    for r in state["requests"].as_array().unwrap() {
        assert_eq!(
            r["authorization"],
            format!("Bearer {}.{}", stub.token_id, stub.token)
        );
        assert_eq!(r["accept"], "application/vnd.pterodactyl.v1+json");
        assert_eq!(r["content_type"], "application/json");
        assert!(r["user_agent"]
            .as_str()
            .unwrap()
            .starts_with("wings-backup/"));
    }
    let get = &state["requests"][0];
    assert_eq!(get["method"], "GET");
    assert_eq!(get["query"]["size"], details.report.size.to_string());
    // Upload progress: monotonic, ending at the archive's size.
    assert!(!upload_reports.is_empty());
    for w in upload_reports.windows(2) {
        assert!(w[1].bytes_done >= w[0].bytes_done);
    }
    let last = upload_reports.last().unwrap();
    assert_eq!(last.bytes_done, details.report.size);
    assert_eq!(last.bytes_total, last.bytes_done);
}

#[test]
fn a_part_failing_with_500_twice_is_retried_with_the_right_bytes() {
    let stub = Stub::start();
    stub.configure(json!({"part_faults": {"2": [500, 500]}, "max_concurrent_uploads": 2}));
    let dir = TempDir::new("s3-retry");
    let engine = stub.engine(&dir, &[]);
    tree(&dir.join("data").join(SERVER));
    let details = create_s3(&engine, BACKUP).unwrap();
    let state = stub.state();
    assert_eq!(state["part_attempts"]["2"], 3);
    assert_eq!(state["completed"][BACKUP]["sha1"], details.report.checksum);
}

#[test]
fn a_403_part_fails_fast_and_the_panel_is_told() {
    let stub = Stub::start();
    stub.configure(json!({"part_forever": {"2": 403}}));
    let dir = TempDir::new("s3-403");
    let engine = stub.engine(&dir, &[]);
    tree(&dir.join("data").join(SERVER));
    let started = Instant::now();
    let err = create_s3(&engine, BACKUP).unwrap_err();
    assert_eq!(err.status, Status::Remote);
    assert!(err.message.contains("403"), "{}", err.message);
    assert!(started.elapsed() < Duration::from_secs(20));
    let state = stub.state();
    assert_eq!(state["part_attempts"]["2"], 1, "no retry of a 403");
    let reports = state["reports"].as_array().unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!(
        reports[0]["body"],
        json!({"checksum":"","checksum_type":"","size":0,"successful":false,"parts":null})
    );
    assert_eq!(backup_names(&dir.join("backups")), Vec::<String>::new());
}

/// Uploads an archive of a tree to the bucket and returns its key.
fn uploaded_archive(
    stub: &Stub,
    dir: &TempDir,
) -> (String, std::collections::BTreeMap<Vec<u8>, Node2>) {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    tree(&src);
    let archive = dir.join("a.tar.gz");
    wings_backup::engine::archive_create(
        &src,
        &archive,
        &wings_backup::engine::ArchiveOptions::default(),
        &mut Control::none(),
    )
    .unwrap();
    let key = "restore/a.tar.gz".to_string();
    stub.put(&key, &std::fs::read(&archive).unwrap());
    (key, snapshot(&src))
}

/// A restore scene: an engine allowed to download from the stub, an
/// archive of `tree` in the bucket, and a server root holding `old.txt`.
struct RestoreScene {
    engine: Engine,
    key: String,
    expected: std::collections::BTreeMap<Vec<u8>, Node2>,
    root: std::path::PathBuf,
    _dir: TempDir,
    stub: Stub,
}

impl RestoreScene {
    fn new(name: &str) -> RestoreScene {
        let stub = Stub::start();
        let dir = TempDir::new(name);
        let engine = stub.engine(&dir, &["127.0.0.1"]);
        let (key, expected) = uploaded_archive(&stub, &dir);
        let root = dir.join("data").join(SERVER);
        write_file(&root.join("old.txt"), b"old", 0o644, 1);
        RestoreScene {
            engine,
            key,
            expected,
            root,
            _dir: dir,
            stub,
        }
    }
}

#[test]
fn a_restore_from_a_presigned_url_gives_the_tree_back() {
    let scene = RestoreScene::new("s3-restore");
    let (engine, key, root, stub) = (&scene.engine, &scene.key, &scene.root, &scene.stub);
    let url = stub.get(&format!("/_test/presign?key={key}"))["url"]
        .as_str()
        .unwrap()
        .to_string();
    restore_s3(engine, BACKUP, &url, true).unwrap();
    assert_eq!(snapshot(root), scene.expected);
    // The report goes out in the background, once.
    let restores = restore_reports(stub, 1);
    assert_eq!(
        restores,
        json!([{"backup": BACKUP, "body": {"successful": true}}])
    );
}

#[test]
fn a_download_cut_off_midway_leaves_the_old_files() {
    let scene = RestoreScene::new("s3-cut");
    let (engine, key, root, stub) = (&scene.engine, &scene.key, &scene.root, &scene.stub);
    write_file(&root.join("world/level.dat"), b"mine", 0o644, 1);
    let before = snapshot(root);
    let size = stub.get(&format!("/_test/object?key={key}"))["size"]
        .as_u64()
        .unwrap();
    assert!(size > 100_000, "a sizeable archive: {size}");
    let url = format!("{}/_test/cut?key={key}&at={}", stub.url, size / 2);
    let err = restore_s3(engine, BACKUP, &url, true).unwrap_err();
    assert!(
        matches!(err.status, Status::Remote | Status::CorruptArchive),
        "{err}"
    );
    assert_eq!(snapshot(root), before);
    assert_eq!(restore_reports(stub, 1)[0]["body"]["successful"], false);
}

#[test]
fn a_restore_cancelled_while_the_download_stalls_ends_promptly() {
    let scene = RestoreScene::new("s3-stall");
    let (engine, key, root, stub) = (&scene.engine, &scene.key, &scene.root, &scene.stub);
    let before = snapshot(root);
    let url = format!("{}/_test/stall?key={key}&at=50000&secs=30", stub.url);
    let body = s3_restore(&url, true);
    let token = wings_backup::progress::CancelToken::new();
    let started = std::time::Instant::now();
    let result = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(std::time::Duration::from_millis(1500));
            token.trigger();
        });
        engine.restore_backup(SERVER, BACKUP, &body, &mut Control::new(Some(&token), None))
    });
    let took = started.elapsed();
    let err = result.unwrap_err();
    assert_eq!(err.status, Status::Cancelled, "{err}");
    // The server stalls for 30 s; the cancel is not held up by it.
    assert!(took.as_secs() < 15, "the cancelled restore took {took:?}");
    assert_eq!(snapshot(root), before);
}

#[test]
fn loopback_and_private_urls_are_refused_unless_allowlisted() {
    let stub = Stub::start();
    let dir = TempDir::new("s3-ssrf");
    let engine = stub.engine(&dir, &[]);
    let (key, _) = uploaded_archive(&stub, &dir);
    let url = stub.get(&format!("/_test/presign?key={key}"))["url"]
        .as_str()
        .unwrap()
        .to_string();
    let body = s3_restore(&url, true);
    let err = engine.check_restore(SERVER, BACKUP, &body).unwrap_err();
    assert_eq!(err.status, Status::InvalidArgument);
    assert!(err.message.contains("blocked"), "{}", err.message);
    let err = restore_s3(&engine, BACKUP, &url, true).unwrap_err();
    assert_eq!(err.status, Status::InvalidArgument);
    for bad in [
        "ftp://127.0.0.1/x",
        "http://10.0.0.1/x",
        "http://169.254.169.254/latest/meta-data",
        "nonsense",
    ] {
        let body = s3_restore(bad, false);
        assert_eq!(
            engine
                .check_restore(SERVER, BACKUP, &body)
                .unwrap_err()
                .status,
            Status::InvalidArgument,
            "{bad}"
        );
    }
    // Allowlisted by name only: a redirect to the bare address is checked again.
    let dir2 = TempDir::new("s3-ssrf2");
    let engine2 = stub.engine(&dir2, &["localhost"]);
    let port = stub.url.rsplit(':').next().unwrap();
    let target = format!("http://127.0.0.1:{port}/_test/serve?key={key}");
    let hop = format!(
        "http://localhost:{port}/_test/redirect?to={}",
        target
            .replace('&', "%26")
            .replace('?', "%3F")
            .replace('=', "%3D")
    );
    let err = restore_s3(&engine2, BACKUP, &hop, true).unwrap_err();
    assert_eq!(err.status, Status::InvalidArgument);
    assert!(err.message.contains("blocked"), "{}", err.message);
}

#[test]
fn bad_status_content_type_and_redirect_loops_are_refused() {
    let scene = RestoreScene::new("s3-http");
    let (engine, key, root, stub) = (&scene.engine, &scene.key, &scene.root, &scene.stub);
    let before = snapshot(root);
    let cases = [
        (
            format!("{}/_test/serve?key={key}&status=404", stub.url),
            "invalid response status: 404",
        ),
        (
            format!("{}/_test/serve?key={key}&type=text/html", stub.url),
            "not a supported content type",
        ),
        (
            format!("{}/_test/loop", stub.url),
            "redirects too many times",
        ),
        // Last, as it succeeds: parameters after the media type are fine.
        (
            format!(
                "{}/_test/serve?key={key}&type=application/gzip;%20charset=binary",
                stub.url
            ),
            "",
        ),
    ];
    for (url, part) in cases {
        let result = restore_s3(engine, BACKUP, &url, true);
        if part.is_empty() {
            result.unwrap();
            continue;
        }
        let err = result.unwrap_err();
        assert_eq!(
            err.status,
            Status::InvalidArgument,
            "{url}: {}",
            err.message
        );
        assert!(err.message.contains(part), "{url}: {}", err.message);
        assert!(
            snapshot(root) == before,
            "{url}: the server's files changed"
        );
    }
}

#[test]
fn a_redirect_to_another_scheme_is_refused_as_not_http() {
    // A redirect's target gets the first URL's rule: http(s) only, said as
    // such (not "not a valid URL", which `file:///...` would otherwise be).
    let stub = Stub::start();
    let dir = TempDir::new("s3-redirect-scheme");
    let engine = stub.engine(&dir, &["127.0.0.1"]);
    let root = dir.join("data").join(SERVER);
    write_file(&root.join("old.txt"), b"old", 0o644, 1);
    let before = snapshot(&root);
    for to in [
        "file:///etc/passwd",
        "FILE:/etc/passwd",
        "ftp://127.0.0.1/x.tar.gz",
    ] {
        let url = format!("{}/_test/redirect?to={to}", stub.url);
        let err = restore_s3(&engine, BACKUP, &url, true).unwrap_err();
        assert_eq!(err.status, Status::InvalidArgument, "{to}: {err}");
        assert!(
            err.message.contains("must use HTTP or HTTPS"),
            "{to}: {}",
            err.message
        );
        assert!(
            snapshot(&root) == before,
            "{to}: the server's files changed"
        );
    }
}

#[test]
fn a_panel_answering_503_three_times_gets_exactly_one_success() {
    let stub = Stub::start();
    stub.configure(json!({"report_statuses": [503, 503, 503]}));
    let dir = TempDir::new("panel-503");
    let engine = stub.engine_with_budget(&dir, &[], 60);
    write_file(&dir.join("data").join(SERVER).join("f"), b"data", 0o644, 1);
    std::fs::create_dir_all(dir.join("data").join(SERVER)).unwrap();
    let details = engine
        .create_backup(SERVER, &create_request(BACKUP, ""), &mut Control::none())
        .unwrap();
    assert_eq!(details.panel_report, Some(ReportOutcome::Sent));
    let reports = stub.state()["reports"].as_array().unwrap().clone();
    let answered: Vec<u64> = reports
        .iter()
        .map(|r| r["answered"].as_u64().unwrap())
        .collect();
    assert_eq!(answered, vec![503, 503, 503, 204]);
    for r in &reports {
        assert_eq!(r["body"]["checksum"], details.report.checksum);
        assert!(r["body"]["parts"].is_null());
    }
    let archive = std::fs::read(dir.join("backups").join(format!("{BACKUP}.tar.gz"))).unwrap();
    assert_eq!(details.report.checksum, sha1_hex(&archive));
}

#[test]
fn a_panel_answering_404_forever_keeps_the_archive_and_parks_the_report() {
    let stub = Stub::start();
    stub.configure(json!({"report_status_forever": 404}));
    let dir = TempDir::new("panel-404");
    let engine = stub.engine(&dir, &[]);
    write_file(&dir.join("data").join(SERVER).join("f"), b"data", 0o644, 1);
    let details = engine
        .create_backup(SERVER, &create_request(BACKUP, ""), &mut Control::none())
        .unwrap();
    assert!(
        matches!(details.panel_report, Some(ReportOutcome::Pending(_))),
        "{details:?}"
    );
    assert!(dir
        .join("backups")
        .join(format!("{BACKUP}.tar.gz"))
        .exists());
    let parked = dir.join("backups/.pending").join(format!("{BACKUP}.json"));
    assert!(parked.exists());
    // The Panel is back: the parked report goes out once and is removed.
    stub.configure(json!({"report_status_forever": null, "reset": true}));
    assert_eq!(engine.send_pending_reports(None), (1, 0));
    assert!(!parked.exists());
    let reports = stub.state()["reports"].as_array().unwrap().clone();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0]["body"]["checksum"], details.report.checksum);
    assert_eq!(engine.send_pending_reports(None), (0, 0));
}

#[test]
fn the_s3_adapter_without_a_panel_is_an_invalid_argument() {
    let node = Node::new();
    let err = node
        .engine
        .check_create(SERVER, &s3_create(BACKUP))
        .unwrap_err();
    assert_eq!(err.status, Status::InvalidArgument);
    let _ = std::io::stdout().flush();
}
