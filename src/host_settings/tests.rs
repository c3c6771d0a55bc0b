//! The hosts' settings, tested once here for both hosts (the HTTP
//! behaviour they lead to is tested against each host in tests/conformance).

use super::*;
use serde_json::json;
use std::path::Path;

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn flags(v: Value) -> Map<String, Value> {
    v.as_object().expect("an object").clone()
}

fn resolved(f: Value) -> Resolved {
    resolve(&flags(f), &env(&[])).expect("resolves")
}

fn engine_json(r: &Resolved) -> Value {
    serde_json::to_value(&r.engine).unwrap()
}

fn error(f: Value, e: &[(&str, &str)]) -> String {
    let err = resolve(&flags(f), &env(e)).expect_err("an error");
    assert_eq!(err.status, Status::InvalidArgument);
    err.message
}

fn field<'a>(r: &'a Resolved, name: &str) -> &'a str {
    &r.settings
        .iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("no {name}"))
        .1
}

fn write(dir: &Path, text: &str) -> String {
    let path = dir.join("config.yml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "wb-host-settings-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn defaults() {
    let r = resolved(json!({"token": "t"}));
    assert_eq!(r.host.listen, "127.0.0.1:8080");
    assert_eq!(r.host.token, "t");
    assert_eq!(
        engine_json(&r),
        json!({"data_directory": "/var/lib/pterodactyl/volumes",
               "backup_directory": "/var/lib/pterodactyl/backups",
               "compression_level": "best_speed", "write_limit": 0, "disk_limit": 0})
    );
    assert!(!r.host.async_restore);
    assert_eq!(
        (r.host.read_header_timeout_s, r.host.read_timeout_s),
        (15.0, 30.0)
    );
    assert_eq!(r.sources["data-dir"], Source::Default);
    assert_eq!(field(&r, "max_running_backups"), "4");
    assert_eq!(field(&r, "from_flag"), "token");
    assert_eq!(field(&r, "from_config"), "none");
    assert!(r.warnings.is_empty());
}

#[test]
fn every_flag() {
    let r = resolved(json!({
        "listen": "127.0.0.1:9", "token": "t", "data-dir": "/d", "backup-dir": "/b",
        "panel-url": "http://panel", "panel-token-id": "id", "panel-token": "pt",
        "compression-level": "none", "write-limit": 5, "disk-limit": 1000,
        "owner": "1000:1001", "restore-host-allowlist": "minio.local, 10.0.0.0/8,,",
        "async-restore": true, "max-running-backups": 2, "no-backup-reuse": true,
        "read-header-timeout": 0.5, "read-timeout": 90}));
    assert_eq!(r.host.listen, "127.0.0.1:9");
    assert!(r.host.async_restore);
    assert_eq!(
        engine_json(&r),
        json!({"data_directory": "/d", "backup_directory": "/b", "compression_level": "none",
               "write_limit": 5, "disk_limit": 1000, "max_running_backups": 2, "backup_reuse": false,
               "owner": {"uid": 1000, "gid": 1001},
               "restore_host_allowlist": ["minio.local", "10.0.0.0/8"],
               "panel": {"url": "http://panel", "token_id": "id", "token": "pt"}})
    );
    assert_eq!(field(&r, "read_header_timeout"), "500ms");
    assert_eq!(field(&r, "read_timeout"), "1m30s");
    assert_eq!(field(&r, "async_restore"), "true");
    assert_eq!(field(&r, "backup_reuse"), "false");
    assert_eq!(
        field(&r, "restore_host_allowlist"),
        "minio.local,10.0.0.0/8"
    );
    // Neither token is a field of the settings line.
    assert!(
        r.settings.iter().all(|(_, v)| v != "pt" && v != "t"),
        "{:?}",
        r.settings
    );
}

const WINGS_CONFIG: &str = "
debug: false
uuid: 5b8b4a8e-0000-4000-8000-000000000000
token_id: abcdEFGH
token: node-secret
api:
  host: 0.0.0.0
  port: 8443
  ssl:
    enabled: false
system:
  data: /srv/volumes
  backup_directory: /srv/backups
  user:
    uid: 988
    gid: 988
  backups:
    write_limit: 20
    compression_level: best_compression
    restore_host_allowlist: [minio.internal, 10.1.0.0/16]
remote: https://panel.example.com
";

#[test]
fn wings_config_file_with_flags_over_it() {
    let dir = tempdir();
    let cfg = write(&dir, WINGS_CONFIG);
    let r = resolved(json!({"config": cfg}));
    assert_eq!(
        (r.host.listen.as_str(), r.host.token.as_str()),
        ("0.0.0.0:8443", "node-secret")
    );
    assert_eq!(
        engine_json(&r),
        json!({"data_directory": "/srv/volumes", "backup_directory": "/srv/backups",
               "compression_level": "best_compression", "write_limit": 20, "disk_limit": 0,
               "owner": {"uid": 988, "gid": 988},
               "restore_host_allowlist": ["minio.internal", "10.1.0.0/16"],
               "panel": {"url": "https://panel.example.com", "token_id": "abcdEFGH", "token": "node-secret"}})
    );
    assert_eq!(
        r.warnings,
        vec![
            Warning {
                message: "ignored --config key".into(),
                key: Some("debug".into())
            },
            Warning {
                message: "ignored --config key".into(),
                key: Some("uuid".into())
            },
        ]
    );
    assert_eq!(field(&r, "from_config"), "backup-dir,compression-level,data-dir,listen,owner,panel-token-id,panel-url,restore-host-allowlist,token,write-limit");
    assert_eq!(field(&r, "from_flag"), "config");

    let r = resolved(
        json!({"config": cfg, "listen": "127.0.0.1:1", "token": "flag",
                            "write-limit": 0, "data-dir": "/x"}),
    );
    assert_eq!(
        (r.host.listen.as_str(), r.host.token.as_str()),
        ("127.0.0.1:1", "flag")
    );
    assert_eq!(
        (r.engine.write_limit, r.engine.data_directory.as_str()),
        (0, "/x")
    );
    // One token, as in Wings: the one in effect.
    assert_eq!(r.engine.panel.as_ref().unwrap().token, "flag");
    assert_eq!(r.sources["write-limit"], Source::Flag);

    let r = resolve(
        &flags(json!({"config": cfg})),
        &env(&[("WINGS_TOKEN", "from-env")]),
    )
    .unwrap();
    assert_eq!(r.host.token, "from-env");
    assert_eq!(field(&r, "from_env"), "token");
    assert!(!field(&r, "from_config").contains("token,"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn only_a_port_or_a_host_in_the_config() {
    let dir = tempdir();
    let cfg = write(&dir, "token: t\napi:\n  port: 9000\n");
    assert_eq!(
        resolved(json!({"config": cfg})).host.listen,
        "127.0.0.1:9000"
    );
    let cfg = write(&dir, "token: t\napi:\n  host: \"::1\"\n");
    assert_eq!(resolved(json!({"config": cfg})).host.listen, "[::1]:8080");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_settings_name_the_flag() {
    for (f, message) in [
        (json!({}), "a node token is required"),
        (
            json!({"token": "t", "owner": "root"}),
            "--owner \"root\": want UID:GID",
        ),
        (json!({"token": "t", "owner": "1:-2"}), "want UID:GID"),
        (
            json!({"token": "t", "panel-url": "http://p"}),
            "--panel-url needs --panel-token-id",
        ),
        (
            json!({"token": "t", "config": "/nonexistent/config.yml"}),
            "--config /nonexistent/config.yml: cannot read: no such file or directory",
        ),
        (json!({"token": ""}), "--token must not be empty"),
        (
            json!({"token": "a,b"}),
            "the node token must not contain a comma",
        ),
        (
            json!({"token": "t", "data-dir": ""}),
            "--data-dir must not be empty",
        ),
        (
            json!({"token": "t", "backup-dir": ""}),
            "--backup-dir must not be empty",
        ),
        (
            json!({"token": "t", "compression-level": ""}),
            "--compression-level must not be empty",
        ),
        (
            json!({"token": "t", "listen": ""}),
            "--listen must not be empty",
        ),
        (
            json!({"token": "t", "max-running-backups": 0}),
            "--max-running-backups must be from 1 to 1024",
        ),
        (
            json!({"token": "t", "max-running-backups": 1025}),
            "--max-running-backups must be from 1 to 1024",
        ),
        (
            json!({"token": "t", "read-timeout": 0}),
            "--read-timeout must be positive",
        ),
        (
            json!({"token": "t", "write-limit": -1}),
            "--write-limit: want a non-negative integer",
        ),
        (json!({"token": "t", "tok": "t"}), "unknown flag --tok"),
    ] {
        let got = error(f.clone(), &[]);
        assert!(got.contains(message), "{f}: {got:?} lacks {message:?}");
    }
    // An empty --token is refused even with a token in the environment.
    assert!(
        error(json!({"token": ""}), &[("WINGS_TOKEN", "e")]).contains("--token must not be empty")
    );
}

#[test]
fn the_config_file_must_be_a_regular_file() {
    for path in ["/dev/zero", "/dev/null", "/"] {
        assert_eq!(
            error(json!({"token": "t", "config": path}), &[]),
            format!("--config {path}: cannot read: not a regular file")
        );
    }
}

#[test]
fn a_config_fifo_is_refused_without_waiting_for_a_writer() {
    let dir = tempdir();
    let fifo = dir.join("config.yml");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let cfg = fifo.to_str().unwrap().to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    let flags_json = json!({"token": "t", "config": cfg});
    std::thread::spawn(move || {
        let _ = tx.send(error(flags_json, &[]));
    });
    let got = rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("a --config FIFO hangs the resolve");
    assert_eq!(
        got,
        format!("--config {cfg}: cannot read: not a regular file")
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_config_file_is_at_most_1_mib() {
    let dir = tempdir();
    // At the cap: read (a comment padding a valid file).
    let mut text = String::from("token: t\n#");
    text.push_str(&"x".repeat(MAX_CONFIG_BYTES as usize - text.len() - 1));
    text.push('\n');
    assert_eq!(text.len() as u64, MAX_CONFIG_BYTES);
    let cfg = write(&dir, &text);
    assert_eq!(resolved(json!({"config": cfg})).host.token, "t");
    // One byte more: refused, saying the cap.
    text.push('\n');
    let cfg = write(&dir, &text);
    assert_eq!(
        error(json!({"config": cfg}), &[]),
        format!("--config {cfg}: cannot read: larger than 1 MiB")
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn config_errors_name_the_path_and_line() {
    let dir = tempdir();
    let cfg = write(&dir, "token: t\napi: [\n");
    let got = error(json!({"config": cfg}), &[]);
    assert!(
        got.starts_with(&format!("--config {cfg}: invalid YAML: line 3: ")),
        "{got}"
    );
    let cfg = write(
        &dir,
        "token: t\nsystem:\n  backups:\n    write_limit: fast\n",
    );
    let got = error(json!({"config": cfg}), &[]);
    assert_eq!(
        got,
        format!("--config {cfg}: `system.backups.write_limit` must be a non-negative integer")
    );
    let cfg = write(&dir, "- a list\n");
    assert_eq!(
        error(json!({"config": cfg}), &[]),
        format!("--config {cfg}: the document is not a mapping")
    );
    std::fs::write(dir.join("config.yml"), b"token: \xff\n").unwrap();
    assert!(error(json!({"config": cfg}), &[]).ends_with("cannot read: not UTF-8"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn empty_values_in_the_config_file_are_unset() {
    let dir = tempdir();
    let cfg = write(
        &dir,
        "token: t\nsystem:\n  data: \"\"\n  backups:\n    compression_level: \"\"\n",
    );
    let r = resolved(json!({"config": cfg}));
    assert_eq!(r.engine.data_directory, "/var/lib/pterodactyl/volumes");
    assert_eq!(r.engine.compression_level, "best_speed");
    assert_eq!(r.sources["data-dir"], Source::Default);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn api_ssl_is_a_warning() {
    let dir = tempdir();
    let cfg = write(&dir, "token: t\napi:\n  ssl:\n    enabled: true\n");
    let r = resolved(json!({"config": cfg}));
    assert_eq!(
        r.warnings,
        vec![Warning {
            message: SSL_WARNING.into(),
            key: None
        }]
    );
    std::fs::remove_dir_all(dir).unwrap();
}

fn ignored(text: &str) -> Vec<String> {
    ignored_config_keys(&YamlLoader::load_from_str(text).unwrap()[0])
}

#[test]
fn ignored_config_keys_are_named_in_full_in_file_order() {
    let yml = "
debug: false
token: t
api:
  port: 8080
  upload_limit: 100
backups:
  compression_level: best_compression
system:
  data: /srv
  sftp: {bind_port: 2022}
  user: {uid: 1, gid: 1, rootless: {enabled: false}}
  backups:
    compresion_level: none
    write_limit: 3
docker: {}
allowed_mounts: []
empty:
";
    assert_eq!(
        ignored(yml),
        [
            "debug",
            "api.upload_limit",
            "backups.compression_level",
            "system.sftp.bind_port",
            "system.user.rootless.enabled",
            "system.backups.compresion_level",
            "docker",
            "allowed_mounts",
            "empty"
        ]
    );
    // An empty known section names nothing.
    assert!(ignored("token: t\nsystem:\n").is_empty());
    // A used key's value is not walked into; an alias is read as its anchor.
    assert!(
        ignored("token: t\nsystem: &s\n  data: /srv\napi:\n  ssl: {enabled: false}\n").is_empty()
    );
    assert_eq!(
        ignored("base: &b {x: 1}\nsystem:\n  sftp: *b\n"),
        ["base.x", "system.sftp.x"]
    );
}

#[test]
fn the_settings_line_holds_no_secret() {
    let dir = tempdir();
    let cfg = write(
        &dir,
        "token: file-secret\ntoken_id: id\nremote: https://u:pw@panel/\ndebug: true\n",
    );
    let r = resolved(json!({"config": cfg, "panel-token": "panel-secret"}));
    let line =
        serde_json::to_string(&r.settings).unwrap() + &serde_json::to_string(&r.warnings).unwrap();
    for secret in ["file-secret", "panel-secret", "pw"] {
        assert!(!line.contains(secret), "{line}");
    }
    assert_eq!(field(&r, "panel_url"), "https://REDACTED@panel/");
    assert_eq!(field(&r, "from_config"), "panel-token-id,panel-url,token");
    assert_eq!(field(&r, "from_flag"), "config,panel-token");
    assert_eq!(r.warnings[0].key.as_deref(), Some("debug"));
    // The same as text lines, for a host that logs text.
    let text = serde_json::to_string(&r.log).unwrap();
    for secret in ["file-secret", "panel-secret", "pw"] {
        assert!(!text.contains(secret), "{text}");
    }
    assert_eq!(
        r.log[0],
        LogLine {
            level: "WARN",
            line: format!("ignored --config key key=debug config={cfg}")
        }
    );
    let last = r.log.last().unwrap();
    assert_eq!(last.level, "INFO");
    for want in [
        "settings listen=127.0.0.1:8080 ",
        " panel_url=https://REDACTED@panel/ ",
        " from_config=panel-token-id,panel-url,token",
        " from_flag=config,panel-token ",
    ] {
        assert!(last.line.contains(want), "{want}: {}", last.line);
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn redacted_urls() {
    for (url, want) in [
        ("", "none"),
        ("https://panel.example.com/", "https://panel.example.com/"),
        (
            "https://u:p@panel.example.com",
            "https://REDACTED@panel.example.com",
        ),
        (
            "http://127.0.0.1:9/p?key=s#frag",
            "http://127.0.0.1:9/p?REDACTED",
        ),
        (
            "http://panel-user:pw@127.0.0.1:9/panel?key=qs",
            "http://REDACTED@127.0.0.1:9/panel?REDACTED",
        ),
        ("http://a b/", "REDACTED"),
    ] {
        assert_eq!(redact_url(url), want, "{url}");
    }
}

#[test]
fn flags_as_written_are_read_as_go_reads_them() {
    // strconv.ParseUint with base 0, as Go's flag.Uint64.
    for (text, value) in [
        ("010", 8),
        ("0x10", 16),
        ("0b101", 5),
        ("1_000", 1000),
        ("0", 0),
    ] {
        assert_eq!(parse_go_uint(text), Some(value), "{text}");
        let r = resolved(json!({"token": "t", "write-limit": text}));
        assert_eq!(engine_json(&r)["write_limit"], value, "{text}");
    }
    let too_big = (1u128 << 64).to_string();
    for text in [
        "+5", " 5", "08", &too_big, "-1", "", "1__0", "_1", "1_", "0x",
    ] {
        assert_eq!(parse_go_uint(text), None, "{text}");
    }
    for (flag, text) in [("write-limit", "-1"), ("disk-limit", "-5")] {
        let e = error(json!({"token": "t", flag: text}), &[]);
        assert!(
            e.contains(&format!("--{flag}")) && e.contains("non-negative"),
            "{e}"
        );
    }
    // strconv.ParseBool.
    for (text, value) in [
        ("true", true),
        ("t", true),
        ("1", true),
        ("false", false),
        ("F", false),
    ] {
        let r = resolved(json!({"token": "t", "async-restore": text}));
        assert_eq!(r.host.async_restore, value, "{text}");
    }
    let e = error(json!({"token": "t", "async-restore": "maybe"}), &[]);
    assert!(
        e.contains("--async-restore") && e.contains("true or false"),
        "{e}"
    );
    // Durations as Go's flag.Duration, and positive.
    for (text, secs) in [
        ("15s", 15.0),
        ("500ms", 0.5),
        ("2m", 120.0),
        ("1h30m", 5400.0),
        ("1.5s", 1.5),
        ("2m0.5s", 120.5),
    ] {
        let r = resolved(json!({"token": "t", "read-header-timeout": text, "read-timeout": text}));
        assert_eq!(
            (r.host.read_header_timeout_s, r.host.read_timeout_s),
            (secs, secs),
            "{text}"
        );
    }
    for text in [
        "", "0", "0s", "-1s", "fast", "15 s", "s", "1d", "15sx", "30",
    ] {
        let e = error(json!({"token": "t", "read-timeout": text}), &[]);
        assert!(e.starts_with("--read-timeout"), "{text}: {e}");
    }
}

#[test]
fn durations() {
    for (text, secs) in [
        ("15s", 15.0),
        ("500ms", 0.5),
        ("2m", 120.0),
        ("1h30m", 5400.0),
        ("2m0.5s", 120.5),
    ] {
        assert_eq!(parse_duration(text), Some(secs), "{text}");
    }
    for text in ["", "15", "1d", "15 s", "s", "x"] {
        assert_eq!(parse_duration(text), None, "{text}");
    }
    for (secs, text) in [
        (15.0, "15s"),
        (0.5, "500ms"),
        (90.0, "1m30s"),
        (3600.0, "1h0m0s"),
        (1.5, "1.5s"),
    ] {
        assert_eq!(go_duration(secs), text);
    }
}

#[test]
fn the_table_as_json() {
    let table: Vec<Value> = serde_json::from_str(&SETTINGS_JSON).unwrap();
    assert_eq!(table.len(), SETTINGS.len());
    let listen = &table[0];
    assert_eq!(listen["flag"], "listen");
    assert_eq!(listen["type"], "string");
    assert_eq!(
        listen["usage"],
        "address to serve on (default 127.0.0.1:8080)"
    );
    assert_eq!(listen["config"], json!(["api.host", "api.port"]));
    let token = table.iter().find(|s| s["flag"] == "token").unwrap();
    assert_eq!(
        (token["env"].as_str(), token["secret"].as_bool()),
        (Some("WINGS_TOKEN"), Some(true))
    );
    let write_limit = table.iter().find(|s| s["flag"] == "write-limit").unwrap();
    assert_eq!(
        (write_limit["type"].as_str(), write_limit["usage"].as_str()),
        (Some("uint"), write_limit["help"].as_str())
    );
}

#[test]
fn prepare_directories_names_the_path() {
    let dir = tempdir();
    let file = dir.join("file");
    std::fs::write(&file, "").unwrap();
    let (f, d) = (file.to_str().unwrap(), dir.to_str().unwrap());
    for (data, backups, want) in [
        (
            format!("{f}/v"),
            format!("{d}/b"),
            format!("--data-dir {f}/v: not a directory"),
        ),
        (
            format!("{d}/v"),
            f.to_string(),
            format!("--backup-dir {f}: not a directory"),
        ),
        (
            format!("{d}/v"),
            format!("{f}/b"),
            format!("--backup-dir {f}/b: not a directory"),
        ),
    ] {
        let err = prepare_directories(&data, &backups).expect_err("an error");
        assert_eq!((err.status, err.message), (Status::Io, want));
    }
    let created = prepare_directories(&format!("{d}/a/v"), &format!("{d}/a/b")).unwrap();
    assert_eq!(
        created,
        vec![
            CreatedDirectory {
                flag: "--data-dir".into(),
                path: format!("{d}/a/v"),
                mode: "0755".into(),
                line: format!("created directory flag=--data-dir path={d}/a/v mode=0755"),
            },
            CreatedDirectory {
                flag: "--backup-dir".into(),
                path: format!("{d}/a/b"),
                mode: "0700".into(),
                line: format!("created directory flag=--backup-dir path={d}/a/b mode=0700"),
            },
        ]
    );
    let mode = |p: &str| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        (mode(&format!("{d}/a/v")), mode(&format!("{d}/a/b"))),
        (0o755, 0o700)
    );
    // Existing directories are left as they are.
    assert!(
        prepare_directories(&format!("{d}/a/v"), &format!("{d}/a/b"))
            .unwrap()
            .is_empty()
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn resolve_json_reads_flags_and_env_objects() {
    let out: Value = serde_json::from_str(
        &resolve_json(
            r#"{"listen": ":7"}"#,
            Some(r#"{"WINGS_TOKEN": "e", "HOME": "/root"}"#),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(out["host"]["listen"], ":7");
    assert_eq!(out["host"]["token"], "e");
    assert_eq!(out["sources"]["token"], "env");
    assert_eq!(out["settings"][0], json!(["listen", ":7"]));
    assert!(resolve_json("[]", None)
        .unwrap_err()
        .message
        .contains("not a JSON object"));
}
