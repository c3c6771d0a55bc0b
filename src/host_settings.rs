//! The settings of the HTTP hosts (examples/go-host, examples/python-host),
//! kept once for both: the table of settings (flag, Wings config.yml keys,
//! environment variable, type, default, help text, whether secret), the
//! resolution of flags over the environment over a Wings `config.yml`
//! (`--config`) over the defaults, the warnings about what that file holds
//! and the hosts do not use, the settings line logged at start, and the
//! data and backup directories prepared at start. The hosts parse their
//! command lines with their own flag parsers, built from [`SETTINGS`], and
//! pass the flags the user set to [`resolve`].

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};

use once_cell::sync::Lazy;
use serde::Serialize;
use serde_json::{Map, Value};
use yaml_rust2::{Yaml, YamlLoader};

use crate::error::{Error, Result, Status};

/// How a setting's value is written on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Text.
    String,
    /// A non-negative integer (Go's flag.Uint64).
    Uint,
    /// A flag without a value (`--async-restore`, or `--async-restore=false`).
    Bool,
    /// A duration; the hosts pass it to [`resolve`] as seconds.
    Duration,
}

/// One setting of the hosts.
#[derive(Debug, Serialize)]
pub struct Setting {
    /// The flag's name, without dashes.
    pub flag: &'static str,
    #[serde(rename = "type")]
    pub kind: Kind,
    /// The default as written on the command line ("" = none).
    pub default: &'static str,
    /// What the flag's value is called in --help ("" for a boolean).
    pub metavar: &'static str,
    /// The help text, without the default.
    pub help: &'static str,
    /// The environment variable read when the flag is not given.
    pub env: Option<&'static str>,
    /// The keys of a Wings config.yml the setting is read from, dotted.
    pub config: &'static [&'static str],
    /// Never logged.
    pub secret: bool,
}

macro_rules! setting {
    ($flag:literal, $kind:ident, $default:literal, $metavar:literal, $help:literal,
     env $env:expr, config [$($key:literal),*], secret $secret:literal) => {
        Setting { flag: $flag, kind: Kind::$kind, default: $default, metavar: $metavar, help: $help,
                  env: $env, config: &[$($key),*], secret: $secret }
    };
}

/// The hosts' settings, in --help order.
#[rustfmt::skip]
pub static SETTINGS: &[Setting] = &[
    setting!("listen", String, "127.0.0.1:8080", "host:port", "address to serve on",
             env None, config ["api.host", "api.port"], secret false),
    setting!("token", String, "", "TOKEN", "node token clients must send as \"Authorization: Bearer TOKEN\"",
             env Some("WINGS_TOKEN"), config ["token"], secret true),
    setting!("data-dir", String, "/var/lib/pterodactyl/volumes", "DIR", "directory of server roots, DIR/<server uuid>",
             env None, config ["system.data"], secret false),
    setting!("backup-dir", String, "/var/lib/pterodactyl/backups", "DIR",
             "directory of local archives, DIR/<backup uuid>.tar.gz",
             env None, config ["system.backup_directory"], secret false),
    setting!("panel-url", String, "", "URL", "Panel base URL to report finished backups and restores to (optional)",
             env None, config ["remote"], secret false),
    setting!("panel-token-id", String, "", "ID", "node token ID for the Panel",
             env None, config ["token_id"], secret false),
    setting!("panel-token", String, "", "TOKEN", "node token for the Panel (default: the --token value)",
             env None, config [], secret true),
    setting!("compression-level", String, "best_speed", "LEVEL", "none, best_speed or best_compression",
             env None, config ["system.backups.compression_level"], secret false),
    setting!("write-limit", Uint, "0", "MiB", "archive write (and restore read) limit in MiB/s, 0 = unlimited",
             env None, config ["system.backups.write_limit"], secret false),
    setting!("no-backup-reuse", Bool, "false", "",
             "make every local backup read every file, copying nothing from the server's previous local archive",
             env None, config [], secret false),
    setting!("disk-limit", Uint, "0", "BYTES", "bytes a server's files may take after a restore, 0 = no limit",
             env None, config [], secret false),
    setting!("max-running-backups", Uint, "4", "N",
             "backups that run at once (N, 1 to 1024); more wait, accepted, for a slot",
             env None, config ["system.backups.max_running_backups"], secret false),
    setting!("owner", String, "", "UID:GID", "UID:GID that owns restored files",
             env None, config ["system.user.uid", "system.user.gid"], secret false),
    setting!("restore-host-allowlist", String, "", "LIST",
             "comma-separated hosts, IPs or CIDRs an s3 restore may download from although private",
             env None, config ["system.backups.restore_host_allowlist"], secret false),
    setting!("async-restore", Bool, "false", "",
             "answer restores with 202 once started and run them in the background (Wings behaviour)",
             env None, config [], secret false),
    setting!("config", String, "", "FILE", "Wings config.yml FILE to read settings from; flags override it",
             env None, config [], secret false),
    setting!("read-header-timeout", Duration, "15s", "DURATION",
             "how long a client may take to send a request's headers (e.g. 15s, 500ms, 2m)",
             env None, config [], secret false),
    setting!("read-timeout", Duration, "30s", "DURATION",
             "how long a client may take to send a whole request, headers and body",
             env None, config [], secret false),
];

/// Keys of a Wings config.yml read for a warning rather than a setting.
const CONFIG_KEYS_CHECKED: &[&str] = &["api.ssl.enabled"];

const SSL_WARNING: &str =
    "api.ssl in --config is ignored; this host serves plain HTTP (put a TLS proxy in front)";

fn setting(flag: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.flag == flag)
}

/// The table as JSON, with each setting's `usage`: its help text and, when
/// it is not a zero value, its default (what --help prints).
pub static SETTINGS_JSON: Lazy<String> = Lazy::new(|| {
    #[derive(Serialize)]
    struct Entry {
        #[serde(flatten)]
        setting: &'static Setting,
        usage: String,
    }
    let entries: Vec<Entry> = SETTINGS
        .iter()
        .map(|s| Entry {
            setting: s,
            usage: match s.default {
                "" | "0" | "false" => s.help.to_string(),
                d => format!("{} (default {d})", s.help),
            },
        })
        .collect();
    serde_json::to_string(&entries).expect("the settings table serializes")
});

/// A setting's value.
#[derive(Clone, Debug, PartialEq)]
enum Val {
    Str(String),
    Uint(u64),
    Bool(bool),
    Secs(f64),
}

impl Val {
    fn str(&self) -> &str {
        match self {
            Val::Str(s) => s,
            _ => "",
        }
    }
    fn uint(&self) -> u64 {
        match self {
            Val::Uint(n) => *n,
            _ => 0,
        }
    }
    fn secs(&self) -> f64 {
        match self {
            Val::Secs(s) => *s,
            _ => 0.0,
        }
    }
}

/// Where a setting in effect came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Flag,
    Env,
    Config,
    Default,
}

/// The engine configuration the settings describe (`wb_engine_new`'s JSON).
#[derive(Debug, Serialize)]
pub struct EngineSettings {
    pub data_directory: String,
    pub backup_directory: String,
    pub compression_level: String,
    pub write_limit: u64,
    pub disk_limit: u64,
    /// Absent: the engine's default (true).
    #[serde(skip_serializing_if = "is_true")]
    pub backup_reuse: bool,
    /// Absent: the engine's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_running_backups: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<OwnerSettings>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub restore_host_allowlist: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub panel: Option<PanelSettings>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct OwnerSettings {
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Serialize)]
pub struct PanelSettings {
    pub url: String,
    pub token_id: String,
    pub token: String,
}

/// The settings only the host itself uses.
#[derive(Debug, Serialize)]
pub struct HostOnly {
    pub listen: String,
    pub token: String,
    pub async_restore: bool,
    pub read_header_timeout_s: f64,
    pub read_timeout_s: f64,
    /// The --config file ("" = none).
    pub config: String,
}

/// Something the host should log as a warning at start.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Warning {
    pub message: String,
    /// The dotted path of an ignored config.yml key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// What the flags, the environment and --config add up to.
#[derive(Debug, Serialize)]
pub struct Resolved {
    pub engine: EngineSettings,
    pub host: HostOnly,
    /// The start-up "settings" log line's fields, in order, as text: the
    /// settings in effect (no secret; the Panel URL redacted), then
    /// `from_flag`, `from_env` and `from_config`.
    pub settings: Vec<(String, String)>,
    /// Where each setting came from, by flag name.
    pub sources: BTreeMap<&'static str, Source>,
    pub warnings: Vec<Warning>,
    /// The start-up lines as text, for a host that logs text: each warning
    /// (with its key and the --config path), then the settings line.
    pub log: Vec<LogLine>,
}

/// A log line to write as it is.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct LogLine {
    /// "INFO" or "WARN".
    pub level: &'static str,
    pub line: String,
}

/// [`resolve`] over JSON: `flags_json` is an object of the flags the user
/// set (strings, non-negative integers, booleans, durations in seconds; or,
/// for any of them, the text given on the command line, read as Go's flag
/// package reads it),
/// `env_json` an object of environment variables (NULL or `null` = none).
pub fn resolve_json(flags_json: &str, env_json: Option<&str>) -> Result<String> {
    let object = |what: &str, text: &str| -> Result<Map<String, Value>> {
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(_) => Err(Error::invalid(format!("`{what}` is not a JSON object"))),
            Err(e) => Err(Error::invalid(format!("`{what}` is not valid JSON: {e}"))),
        }
    };
    let flags = object("flags_json", flags_json)?;
    let env = match env_json {
        Some(text) if text.trim() != "null" => object("env_json", text)?,
        _ => Map::new(),
    };
    let mut env_vars = BTreeMap::new();
    for (name, value) in env {
        match value {
            Value::String(s) => {
                env_vars.insert(name, s);
            }
            Value::Null => {}
            _ => {
                return Err(Error::invalid(format!(
                    "`env_json`: {name} is not a string"
                )))
            }
        }
    }
    let resolved = resolve(&flags, &env_vars)?;
    Ok(serde_json::to_string(&resolved).expect("the settings serialize"))
}

fn flag_value(s: &Setting, value: &Value) -> Result<Val> {
    let bad = |want: &str| Error::invalid(format!("--{}: want {want}, not {value}", s.flag));
    if let (Some(text), false) = (value.as_str(), s.kind == Kind::String) {
        // The flag as written on the command line, read as Go's flag
        // package reads it.
        return match s.kind {
            Kind::Uint => parse_go_uint(text).map(Val::Uint),
            Kind::Bool => parse_go_bool(text).map(Val::Bool),
            _ => parse_duration(text).map(Val::Secs),
        }
        .ok_or_else(|| {
            bad(match s.kind {
                Kind::Uint => "a non-negative integer",
                Kind::Bool => "true or false",
                _ => "a duration such as 15s, 500ms or 2m",
            })
        });
    }
    Ok(match s.kind {
        Kind::String => Val::Str(value.as_str().ok_or_else(|| bad("a string"))?.to_string()),
        Kind::Uint => Val::Uint(
            value
                .as_u64()
                .ok_or_else(|| bad("a non-negative integer"))?,
        ),
        Kind::Bool => Val::Bool(value.as_bool().ok_or_else(|| bad("true or false"))?),
        Kind::Duration => Val::Secs(value.as_f64().ok_or_else(|| bad("a number of seconds"))?),
    })
}

fn default_value(s: &Setting) -> Val {
    match s.kind {
        Kind::String => Val::Str(s.default.to_string()),
        Kind::Uint => Val::Uint(s.default.parse().unwrap_or(0)),
        Kind::Bool => Val::Bool(s.default == "true"),
        Kind::Duration => Val::Secs(parse_duration(s.default).unwrap_or(0.0)),
    }
}

/// Resolves the settings: each one from its flag if the user set it, else
/// its environment variable (if set and not empty), else the --config file
/// (an empty value there counts as absent), else its default; then checks
/// them.
pub fn resolve(flags: &Map<String, Value>, env: &BTreeMap<String, String>) -> Result<Resolved> {
    let mut values: BTreeMap<&'static str, Val> = BTreeMap::new();
    let mut sources: BTreeMap<&'static str, Source> = BTreeMap::new();
    for (name, value) in flags {
        let s = setting(name).ok_or_else(|| Error::invalid(format!("unknown flag --{name}")))?;
        values.insert(s.flag, flag_value(s, value)?);
        sources.insert(s.flag, Source::Flag);
    }
    if values.get("token").is_some_and(|v| v.str().is_empty()) {
        return Err(Error::invalid("--token must not be empty"));
    }
    for s in SETTINGS {
        let Some(var) = s.env else { continue };
        if values.contains_key(s.flag) {
            continue;
        }
        if let Some(v) = env.get(var).filter(|v| !v.is_empty()) {
            values.insert(s.flag, Val::Str(v.clone()));
            sources.insert(s.flag, Source::Env);
        }
    }
    let config_path = values
        .get("config")
        .map(|v| v.str().to_string())
        .unwrap_or_default();
    let mut warnings = Vec::new();
    if !config_path.is_empty() {
        let file = read_wings_config(&config_path)?;
        for (flag, value) in file.values {
            if let std::collections::btree_map::Entry::Vacant(e) = values.entry(flag) {
                e.insert(value);
                sources.insert(flag, Source::Config);
            }
        }
        warnings.extend(file.ignored.into_iter().map(|key| Warning {
            message: "ignored --config key".into(),
            key: Some(key),
        }));
        if file.ssl {
            warnings.push(Warning {
                message: SSL_WARNING.into(),
                key: None,
            });
        }
    }
    for s in SETTINGS {
        if !values.contains_key(s.flag) {
            values.insert(s.flag, default_value(s));
            sources.insert(s.flag, Source::Default);
        }
    }
    let get = |flag: &str| values.get(flag).cloned().unwrap_or(Val::Str(String::new()));
    let text = |flag: &str| get(flag).str().to_string();

    let token = text("token");
    if token.is_empty() {
        return Err(Error::invalid(
            "a node token is required: --token, $WINGS_TOKEN or token: in --config",
        ));
    }
    // A client's `Authorization` value with a comma is refused as ambiguous
    // (two headers joined), so such a token could never be sent.
    if token.contains(',') {
        return Err(Error::invalid("the node token must not contain a comma"));
    }
    for flag in ["listen", "data-dir", "backup-dir", "compression-level"] {
        if text(flag).is_empty() {
            return Err(Error::invalid(format!("--{flag} must not be empty")));
        }
    }
    let max_running = match sources.get("max-running-backups") {
        Some(Source::Default) | None => None,
        Some(_) => Some(get("max-running-backups").uint()),
    };
    if max_running.is_some_and(|n| !(1..=1024).contains(&n)) {
        return Err(Error::invalid(
            "--max-running-backups must be from 1 to 1024",
        ));
    }
    let panel_url = text("panel-url");
    if !panel_url.is_empty() && text("panel-token-id").is_empty() {
        return Err(Error::invalid(
            "--panel-url needs --panel-token-id (or token_id: in --config)",
        ));
    }
    let owner = parse_owner(&text("owner"))?;
    for flag in ["read-header-timeout", "read-timeout"] {
        let secs = get(flag).secs();
        if !(secs > 0.0 && secs.is_finite()) {
            return Err(Error::invalid(format!("--{flag} must be positive")));
        }
    }
    let allowlist: Vec<String> = text("restore-host-allowlist")
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(String::from)
        .collect();
    let panel = (!panel_url.is_empty()).then(|| PanelSettings {
        url: panel_url.clone(),
        token_id: text("panel-token-id"),
        token: Some(text("panel-token"))
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| token.clone()),
    });
    let engine = EngineSettings {
        data_directory: text("data-dir"),
        backup_directory: text("backup-dir"),
        compression_level: text("compression-level"),
        write_limit: get("write-limit").uint(),
        disk_limit: get("disk-limit").uint(),
        backup_reuse: get("no-backup-reuse") != Val::Bool(true),
        max_running_backups: max_running,
        owner,
        restore_host_allowlist: allowlist,
        panel,
    };
    check_engine(&engine, &sources, &config_path)?;
    let host = HostOnly {
        listen: text("listen"),
        token,
        async_restore: get("async-restore") == Val::Bool(true),
        read_header_timeout_s: get("read-header-timeout").secs(),
        read_timeout_s: get("read-timeout").secs(),
        config: config_path,
    };
    let settings = settings_line(&engine, &host, &sources);
    let mut log: Vec<LogLine> = warnings
        .iter()
        .map(|w| {
            let key = w.key.as_deref().map(|k| ("key", k));
            let fields = key.into_iter().chain([("config", host.config.as_str())]);
            LogLine {
                level: "WARN",
                line: crate::log::line(&w.message, fields),
            }
        })
        .collect();
    log.push(LogLine {
        level: "INFO",
        line: crate::log::line("settings", settings.iter().map(|(k, v)| (k, v))),
    });
    Ok(Resolved {
        engine,
        host,
        settings,
        sources,
        warnings,
        log,
    })
}

/// The engine's own checks of the values the settings give it, each error
/// naming the setting where the user wrote it (the flag, the environment
/// variable, or the key of `--config`), so that a bad value is a bad
/// setting (exit status 2) rather than an engine that cannot start.
fn check_engine(
    engine: &EngineSettings,
    sources: &BTreeMap<&'static str, Source>,
    config_path: &str,
) -> Result<()> {
    let Ok(Value::Object(json)) = serde_json::to_value(engine) else {
        return Err(Error::internal("the engine settings do not serialize"));
    };
    for (key, flag) in [
        ("compression_level", "compression-level"),
        ("write_limit", "write-limit"),
        ("disk_limit", "disk-limit"),
        ("max_running_backups", "max-running-backups"),
        ("owner", "owner"),
        ("restore_host_allowlist", "restore-host-allowlist"),
        ("panel", "panel-url"),
    ] {
        let Some(value) = json.get(key) else { continue };
        let one = Value::Object(Map::from_iter([(key.to_string(), value.clone())]));
        let Err(e) = crate::ffi::wire::engine_config(&one.to_string()) else {
            continue;
        };
        // The Panel's keys are checked together; the one named decides the
        // flag (`panel.token_id`: --panel-token-id).
        let (key, flag) = match ["url", "token_id", "token"].into_iter().find(|k| {
            e.message
                .starts_with(&format!("configuration key `panel.{k}`"))
        }) {
            Some("token_id") => ("panel.token_id", "panel-token-id"),
            Some("token") => ("panel.token", "panel-token"),
            Some(_) => ("panel.url", "panel-url"),
            None => (key, flag),
        };
        let prefix = format!("configuration key `{key}`");
        let rest = e.message.strip_prefix(&prefix).unwrap_or(&e.message);
        let rest = if rest.starts_with(':') || rest.starts_with(' ') {
            rest.to_string()
        } else {
            format!(": {rest}")
        };
        let setting = setting(flag).ok_or_else(|| Error::internal("no such setting"))?;
        let named = match sources.get(flag) {
            Some(Source::Env) => format!("${}", setting.env.unwrap_or(flag)),
            Some(Source::Config) => format!(
                "--config {config_path}: {}",
                setting.config.first().copied().unwrap_or(key)
            ),
            _ => format!("--{flag}"),
        };
        return Err(Error::invalid(format!("{named}{rest}")));
    }
    Ok(())
}

fn is_true(b: &bool) -> bool {
    *b
}

fn parse_owner(text: &str) -> Result<Option<OwnerSettings>> {
    if text.is_empty() {
        return Ok(None);
    }
    let number = |s: &str| -> Option<u32> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match text.split_once(':') {
        Some((u, g)) => match (number(u), number(g)) {
            (Some(uid), Some(gid)) => Ok(Some(OwnerSettings { uid, gid })),
            _ => Err(Error::invalid(format!(
                "--owner {}: want UID:GID, two numbers",
                crate::error::quote_str(text)
            ))),
        },
        None => Err(Error::invalid(format!(
            "--owner {}: want UID:GID, two numbers",
            crate::error::quote_str(text)
        ))),
    }
}

/// The fields of the start-up "settings" log line.
fn settings_line(
    e: &EngineSettings,
    h: &HostOnly,
    sources: &BTreeMap<&'static str, Source>,
) -> Vec<(String, String)> {
    let none = |s: String| if s.is_empty() { "none".to_string() } else { s };
    let mut out: Vec<(&str, String)> = vec![
        ("listen", h.listen.clone()),
        ("data_dir", e.data_directory.clone()),
        ("backup_dir", e.backup_directory.clone()),
        ("compression_level", e.compression_level.clone()),
        ("write_limit_mib", e.write_limit.to_string()),
        ("disk_limit_bytes", e.disk_limit.to_string()),
        ("backup_reuse", e.backup_reuse.to_string()),
        (
            "max_running_backups",
            e.max_running_backups.unwrap_or(4).to_string(),
        ),
        (
            "owner",
            none(
                e.owner
                    .as_ref()
                    .map(|o| format!("{}:{}", o.uid, o.gid))
                    .unwrap_or_default(),
            ),
        ),
        (
            "panel_url",
            redact_url(e.panel.as_ref().map_or("", |p| p.url.as_str())),
        ),
        (
            "restore_host_allowlist",
            none(e.restore_host_allowlist.join(",")),
        ),
        ("async_restore", h.async_restore.to_string()),
        ("read_header_timeout", go_duration(h.read_header_timeout_s)),
        ("read_timeout", go_duration(h.read_timeout_s)),
        ("config", none(h.config.clone())),
    ];
    for (field, source) in [
        ("from_flag", Source::Flag),
        ("from_env", Source::Env),
        ("from_config", Source::Config),
    ] {
        let names: Vec<&str> = sources
            .iter()
            .filter(|(_, s)| **s == source)
            .map(|(n, _)| *n)
            .collect();
        out.push((field, none(names.join(","))));
    }
    out.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// A URL fit for a log: user information and query replaced by REDACTED,
/// fragment dropped; "none" for no URL, "REDACTED" for one that does not
/// parse.
pub fn redact_url(raw: &str) -> String {
    if raw.is_empty() {
        return "none".into();
    }
    if raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return "REDACTED".into();
    }
    let without_fragment = raw.split_once('#').map_or(raw, |(u, _)| u);
    let (base, query) = match without_fragment.split_once('?') {
        Some((b, _)) => (b, Some("REDACTED")),
        None => (without_fragment, None),
    };
    let mut out = match base.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
            match authority.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://REDACTED@{host}{path}"),
                None => base.to_string(),
            }
        }
        None => base.to_string(),
    };
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// A duration as Go's time.Duration prints it (15s, 500ms, 1m30s, 1h0m0s).
pub fn go_duration(seconds: f64) -> String {
    let ms = (seconds * 1000.0).round() as u64;
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, rest) = (ms / 3_600_000, ms % 3_600_000);
    let (m, rest) = (rest / 60_000, rest % 60_000);
    let sec = format!("{:.3}", rest as f64 / 1000.0);
    let sec = sec.trim_end_matches('0').trim_end_matches('.');
    if h > 0 {
        format!("{h}h{m}m{sec}s")
    } else if m > 0 {
        format!("{m}m{sec}s")
    } else {
        format!("{sec}s")
    }
}

/// Seconds from a duration written as Go's flag package takes it ("15s",
/// "500ms", "1h30m"); None if it is not one.
pub fn parse_duration(text: &str) -> Option<f64> {
    let mut rest = text;
    let mut total = 0.0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let (unit, len) = if rest.starts_with("ms") {
            (0.001, 2)
        } else if rest.starts_with('s') {
            (1.0, 1)
        } else if rest.starts_with('m') {
            (60.0, 1)
        } else if rest.starts_with('h') {
            (3600.0, 1)
        } else {
            return None;
        };
        total += number * unit;
        rest = &rest[len..];
    }
    Some(total)
}

/// An unsigned integer as Go's flag.Uint64 takes it (strconv.ParseUint with
/// base 0): decimal, `0x` hex, `0o` or leading-`0` octal, `0b` binary,
/// underscores between digits; no sign or space, at most 2^64 - 1.
pub fn parse_go_uint(text: &str) -> Option<u64> {
    let prefix = text.get(..2).map(str::to_ascii_lowercase);
    let (radix, digits) = match prefix.as_deref() {
        Some("0x") => (16, &text[2..]),
        Some("0o") => (8, &text[2..]),
        Some("0b") => (2, &text[2..]),
        _ if text.len() > 1 && text.starts_with('0') => (8, &text[1..]),
        _ => (10, text),
    };
    // After a prefix, one underscore may come first ("0x_1f").
    let digits = match radix {
        10 => digits,
        _ => digits.strip_prefix('_').unwrap_or(digits),
    };
    let well_formed = digits
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !digits.starts_with('_')
        && !digits.ends_with('_')
        && !digits.contains("__");
    match well_formed && !digits.is_empty() {
        true => u64::from_str_radix(&digits.replace('_', ""), radix).ok(),
        false => None,
    }
}

/// A boolean as Go's flag package takes it (strconv.ParseBool).
pub fn parse_go_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// What a Wings config.yml gives the hosts.
struct WingsConfig {
    /// Settings found in the file, by flag name.
    values: BTreeMap<&'static str, Val>,
    /// Keys of the file no setting uses, dotted, in file order.
    ignored: Vec<String>,
    /// `api.ssl.enabled: true`.
    ssl: bool,
}

/// The most of a --config file read: a Wings config.yml is a few KiB, and
/// this bounds what a wrong path (a huge log, say) can make a host load.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The bytes of the --config file: a regular file (a FIFO, a device such as
/// /dev/zero or a directory is refused before anything is read, the open not
/// waiting for a FIFO's writer) of at most [`MAX_CONFIG_BYTES`].
fn read_config_file(path: &str) -> std::result::Result<Vec<u8>, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;

    let cannot = |e: io::Error| format!("cannot read: {}", reason(&e));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(cannot)?;
    let meta = file.metadata().map_err(cannot)?;
    if !meta.is_file() {
        return Err("cannot read: not a regular file".into());
    }
    let too_big = || format!("cannot read: larger than {} MiB", MAX_CONFIG_BYTES >> 20);
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(too_big());
    }
    let mut raw = Vec::with_capacity(meta.len() as usize);
    // One byte past the cap: a file that grew since the fstat is caught too.
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut raw)
        .map_err(cannot)?;
    if raw.len() as u64 > MAX_CONFIG_BYTES {
        return Err(too_big());
    }
    Ok(raw)
}

fn read_wings_config(path: &str) -> Result<WingsConfig> {
    let fail = |what: String| Error::invalid(format!("--config {path}: {what}"));
    let raw = read_config_file(path).map_err(fail)?;
    let text = String::from_utf8(raw).map_err(|_| fail("cannot read: not UTF-8".into()))?;
    let docs = YamlLoader::load_from_str(&text).map_err(|e| {
        fail(format!(
            "invalid YAML: line {}: {}",
            e.marker().line(),
            e.info()
        ))
    })?;
    let empty = Yaml::Hash(Default::default());
    let doc = match docs.first() {
        None | Some(Yaml::Null) => &empty,
        Some(d @ Yaml::Hash(_)) => d,
        Some(_) => return Err(fail("the document is not a mapping".into())),
    };
    let type_error = |key: &str, want: &str| fail(format!("`{key}` must be {want}"));
    let lookup = |key: &str| -> Option<&Yaml> {
        let mut node = doc;
        for part in key.split('.') {
            node = match node {
                Yaml::Hash(h) => h.get(&Yaml::String(part.to_string()))?,
                _ => return None,
            };
        }
        (!matches!(node, Yaml::Null)).then_some(node)
    };
    // Text: any scalar, as written; "" counts as absent.
    let string = |key: &str| -> Result<Option<String>> {
        match lookup(key) {
            None => Ok(None),
            Some(y) => scalar_text(y)
                .map(|s| (!s.is_empty()).then_some(s))
                .ok_or_else(|| type_error(key, "a string")),
        }
    };
    let uint = |key: &str| -> Result<Option<u64>> {
        match lookup(key) {
            None => Ok(None),
            Some(Yaml::Integer(n)) if *n >= 0 => Ok(Some(*n as u64)),
            Some(_) => Err(type_error(key, "a non-negative integer")),
        }
    };
    let mut values = BTreeMap::new();
    for s in SETTINGS {
        if let [key] = s.config {
            let value = match s.kind {
                Kind::Uint => uint(key)?.map(Val::Uint),
                _ if s.flag == "restore-host-allowlist" => match lookup(key) {
                    None => None,
                    Some(Yaml::Array(items)) => {
                        let hosts: Option<Vec<String>> = items.iter().map(scalar_text).collect();
                        let hosts = hosts.ok_or_else(|| type_error(key, "a list of hosts"))?;
                        (!hosts.is_empty()).then(|| Val::Str(hosts.join(",")))
                    }
                    Some(_) => return Err(type_error(key, "a list of hosts")),
                },
                _ => string(key)?.map(Val::Str),
            };
            if let Some(v) = value {
                values.insert(s.flag, v);
            }
        }
    }
    let (host, port) = (string("api.host")?, uint("api.port")?.filter(|p| *p != 0));
    if host.is_some() || port.is_some() {
        let host = host.unwrap_or_else(|| "127.0.0.1".into());
        let port = port.unwrap_or(8080);
        let listen = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        values.insert("listen", Val::Str(listen));
    }
    if let (Some(uid), Some(gid)) = (uint("system.user.uid")?, uint("system.user.gid")?) {
        values.insert("owner", Val::Str(format!("{uid}:{gid}")));
    }
    let ssl = match lookup("api.ssl.enabled") {
        None => false,
        Some(Yaml::Boolean(b)) => *b,
        Some(_) => return Err(type_error("api.ssl.enabled", "true or false")),
    };
    Ok(WingsConfig {
        values,
        ignored: ignored_config_keys(doc),
        ssl,
    })
}

fn scalar_text(y: &Yaml) -> Option<String> {
    match y {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(n) => Some(n.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The dotted paths of the Wings config.yml keys the hosts use.
pub fn config_keys() -> Vec<&'static str> {
    SETTINGS
        .iter()
        .flat_map(|s| s.config.iter().copied())
        .chain(CONFIG_KEYS_CHECKED.iter().copied())
        .collect()
}

/// The dotted path of every key of the document that no setting uses, in
/// file order: a leaf (a value that is not a mapping, or an empty one) under
/// an unknown key is named in full, so a misplaced block names each of its
/// keys (backups.compression_level).
pub fn ignored_config_keys(doc: &Yaml) -> Vec<String> {
    let known: BTreeSet<&str> = config_keys().into_iter().collect();
    let sections: BTreeSet<&str> = known
        .iter()
        .flat_map(|k| k.match_indices('.').map(move |(i, _)| &k[..i]))
        .collect();
    fn walk(
        node: &Yaml,
        prefix: &str,
        known: &BTreeSet<&str>,
        sections: &BTreeSet<&str>,
        out: &mut Vec<String>,
    ) {
        let Yaml::Hash(h) = node else { return };
        for (key, value) in h {
            let path = format!(
                "{prefix}{}",
                scalar_text(key).unwrap_or_else(|| "null".into())
            );
            // A known section (or an empty one) and any non-empty mapping
            // are walked into; anything else is a leaf.
            let walk_into = match value {
                Yaml::Hash(m) => !m.is_empty() || sections.contains(path.as_str()),
                Yaml::Null => sections.contains(path.as_str()),
                _ => false,
            };
            if known.contains(path.as_str()) {
                continue;
            } else if walk_into {
                walk(value, &format!("{path}."), known, sections, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(doc, "", &known, &sections, &mut out);
    out
}

/// An OS error without its code, worded as the C library words it in lower
/// case ("not a directory").
fn reason(e: &io::Error) -> String {
    let text = e.to_string();
    let text = match text.find(" (os error") {
        Some(i) => &text[..i],
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// A directory [`prepare_directories`] created.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct CreatedDirectory {
    /// "--data-dir" or "--backup-dir".
    pub flag: String,
    pub path: String,
    /// Octal, as "0755".
    pub mode: String,
    /// The log line, for a host that logs text.
    pub line: String,
}

/// Creates the data and backup directories if they are missing (as Wings
/// does: 0755 and 0700) and checks that they are directories and that the
/// backup directory is writable, so that a start-up error names its flag
/// and path (`WB_IO`). Returns the directories it created.
pub fn prepare_directories(data_dir: &str, backup_dir: &str) -> Result<Vec<CreatedDirectory>> {
    let mut created = Vec::new();
    for (flag, path, mode) in [
        ("--data-dir", data_dir, 0o755),
        ("--backup-dir", backup_dir, 0o700),
    ] {
        let fail = |what: String| Error::new(Status::Io, format!("{flag} {path}: {what}"));
        match std::fs::metadata(path) {
            Ok(m) if !m.is_dir() => return Err(fail("not a directory".into())),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(path)
                    .map_err(|e| fail(format!("cannot create it: {}", reason(&e))))?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                    .map_err(|e| fail(reason(&e)))?;
                let mode = format!("{mode:04o}");
                let fields = [("flag", flag), ("path", path), ("mode", &mode)];
                created.push(CreatedDirectory {
                    line: crate::log::line("created directory", fields),
                    flag: flag.into(),
                    path: path.into(),
                    mode,
                });
            }
            Err(e) => return Err(fail(reason(&e))),
        }
    }
    let access = rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK;
    rustix::fs::access(backup_dir, access).map_err(|e| {
        Error::new(
            Status::Io,
            format!(
                "--backup-dir {backup_dir}: not writable: {}",
                reason(&io::Error::from(e))
            ),
        )
    })?;
    Ok(created)
}

#[cfg(test)]
mod tests;
