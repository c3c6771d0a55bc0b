//! The engine configuration (CONTRACT section 8), parsed from JSON with errors
//! that name the offending key.

use std::net::IpAddr;
use std::path::PathBuf;

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Deflate effort, named as in Wings' `system.backups.compression_level`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompressionLevel {
    /// Deflate stored blocks: no compression at all.
    None,
    /// Level 1, the default.
    BestSpeed,
    /// Level 9.
    BestCompression,
}

impl CompressionLevel {
    pub fn parse(s: &str) -> Option<CompressionLevel> {
        match s {
            "none" => Some(CompressionLevel::None),
            "best_speed" => Some(CompressionLevel::BestSpeed),
            "best_compression" => Some(CompressionLevel::BestCompression),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// One `restore_host_allowlist` entry: a host name, an address or a network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllowEntry {
    Host(String),
    Addr(IpAddr),
    Net(IpAddr, u8),
}

impl AllowEntry {
    pub fn parse(s: &str) -> Option<AllowEntry> {
        let s = s.trim().trim_end_matches('.').to_ascii_lowercase();
        if s.is_empty() {
            return None;
        }
        if let Some((addr, bits)) = s.split_once('/') {
            let addr: IpAddr = addr.parse().ok()?;
            let bits: u8 = bits.parse().ok()?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            return (bits <= max).then_some(AllowEntry::Net(addr, bits));
        }
        if let Ok(addr) = s.trim_start_matches('[').trim_end_matches(']').parse() {
            return Some(AllowEntry::Addr(addr));
        }
        let host_ok = s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
        host_ok.then_some(AllowEntry::Host(s))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PanelConfig {
    /// Base URL of the Panel, without `/api/remote`.
    pub url: String,
    pub token_id: String,
    pub token: String,
    /// How long a backup status report is retried before it is parked in
    /// `<backup_directory>/.pending/`.
    pub report_retry_s: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    pub data_directory: PathBuf,
    pub backup_directory: PathBuf,
    pub compression_level: CompressionLevel,
    /// MiB/s of archive bytes written (create) or read (restore); 0 = unlimited.
    pub write_limit: u64,
    /// Worker threads per operation; 0 = one per core.
    pub threads: usize,
    pub owner: Option<Owner>,
    /// Bytes a server's files may take after a restore; 0 = no limit.
    pub disk_limit: u64,
    pub restore_host_allowlist: Vec<AllowEntry>,
    pub panel: Option<PanelConfig>,
    /// S3 parts in flight at once (a Panel's `max_concurrent_uploads` can lower it).
    pub upload_concurrency: usize,
    /// Backups that run at once; more wait, accepted, for a free slot.
    pub max_running_backups: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            data_directory: PathBuf::from("/var/lib/pterodactyl/volumes"),
            backup_directory: PathBuf::from("/var/lib/pterodactyl/backups"),
            compression_level: CompressionLevel::BestSpeed,
            write_limit: 0,
            threads: 0,
            owner: None,
            disk_limit: 0,
            restore_host_allowlist: Vec::new(),
            panel: None,
            upload_concurrency: 4,
            max_running_backups: 4,
        }
    }
}

impl EngineConfig {
    /// Parses the engine's JSON configuration. Unknown keys and values of the
    /// wrong type are errors naming the key.
    pub fn from_json(text: &str) -> Result<EngineConfig> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| Error::invalid(format!("configuration is not valid JSON: {e}")))?;
        let Value::Object(map) = value else {
            return Err(Error::invalid("configuration must be a JSON object"));
        };
        let mut config = EngineConfig::default();
        for (key, value) in &map {
            match key.as_str() {
                "data_directory" => config.data_directory = path(key, value)?,
                "backup_directory" => config.backup_directory = path(key, value)?,
                "compression_level" => {
                    let s = string(key, value)?;
                    config.compression_level = CompressionLevel::parse(s).ok_or_else(|| {
                        Error::invalid(format!(
                            "configuration key `compression_level`: unknown level {s:?} \
                             (expected none, best_speed or best_compression)"
                        ))
                    })?;
                }
                "write_limit" => config.write_limit = unsigned(key, value, 1 << 20)?,
                "threads" => config.threads = unsigned(key, value, 1024)? as usize,
                "disk_limit" => config.disk_limit = unsigned(key, value, u64::MAX)?,
                "upload_concurrency" => {
                    config.upload_concurrency = unsigned(key, value, 64)?.max(1) as usize
                }
                "max_running_backups" => match unsigned(key, value, 1024)? {
                    0 => return Err(type_error(key, "an integer from 1 to 1024")),
                    n => config.max_running_backups = n as usize,
                },
                "owner" => config.owner = owner(value)?,
                "restore_host_allowlist" => config.restore_host_allowlist = allowlist(value)?,
                "panel" => config.panel = panel(value)?,
                _ => {
                    return Err(Error::invalid(format!(
                        "configuration key `{key}` is not known"
                    )))
                }
            }
        }
        Ok(config)
    }

    /// Threads an operation may use, at least 1.
    pub fn worker_threads(&self) -> usize {
        if self.threads > 0 {
            return self.threads;
        }
        std::thread::available_parallelism().map_or(2, |n| n.get())
    }
}

fn type_error(key: &str, expected: &str) -> Error {
    Error::invalid(format!("configuration key `{key}` must be {expected}"))
}

fn string<'a>(key: &str, value: &'a Value) -> Result<&'a str> {
    value.as_str().ok_or_else(|| type_error(key, "a string"))
}

fn path(key: &str, value: &Value) -> Result<PathBuf> {
    let s = string(key, value)?;
    if s.is_empty() || s.contains('\0') {
        return Err(type_error(key, "a non-empty path"));
    }
    Ok(PathBuf::from(s))
}

fn unsigned(key: &str, value: &Value, max: u64) -> Result<u64> {
    match value.as_u64() {
        Some(n) if n <= max => Ok(n),
        _ => Err(type_error(key, &format!("an integer from 0 to {max}"))),
    }
}

fn object<'a>(key: &str, value: &'a Value) -> Result<&'a Map<String, Value>> {
    value
        .as_object()
        .ok_or_else(|| type_error(key, "an object"))
}

fn owner(value: &Value) -> Result<Option<Owner>> {
    if value.is_null() {
        return Ok(None);
    }
    let map = object("owner", value)?;
    let mut uid = None;
    let mut gid = None;
    for (key, v) in map {
        let full = format!("owner.{key}");
        match key.as_str() {
            "uid" => uid = Some(unsigned(&full, v, u32::MAX as u64 - 1)? as u32),
            "gid" => gid = Some(unsigned(&full, v, u32::MAX as u64 - 1)? as u32),
            _ => {
                return Err(Error::invalid(format!(
                    "configuration key `{full}` is not known"
                )))
            }
        }
    }
    match (uid, gid) {
        (Some(uid), Some(gid)) => Ok(Some(Owner { uid, gid })),
        _ => Err(Error::invalid(
            "configuration key `owner` needs both `uid` and `gid`",
        )),
    }
}

fn allowlist(value: &Value) -> Result<Vec<AllowEntry>> {
    let key = "restore_host_allowlist";
    let items = value
        .as_array()
        .ok_or_else(|| type_error(key, "an array of strings"))?;
    items
        .iter()
        .map(|item| {
            let s = item
                .as_str()
                .ok_or_else(|| type_error(key, "an array of strings"))?;
            AllowEntry::parse(s).ok_or_else(|| {
                Error::invalid(format!(
                    "configuration key `{key}`: {s:?} is not a host name, IP address or CIDR"
                ))
            })
        })
        .collect()
}

fn panel(value: &Value) -> Result<Option<PanelConfig>> {
    if value.is_null() {
        return Ok(None);
    }
    let map = object("panel", value)?;
    let mut url = None;
    let mut token_id = None;
    let mut token = None;
    let mut report_retry_s = 600;
    for (key, v) in map {
        let full = format!("panel.{key}");
        match key.as_str() {
            "url" => url = Some(string(&full, v)?.trim_end_matches('/').to_string()),
            "token_id" => token_id = Some(string(&full, v)?.to_string()),
            "token" => token = Some(string(&full, v)?.to_string()),
            "report_retry_s" => report_retry_s = unsigned(&full, v, 7 * 24 * 3600)?,
            _ => {
                return Err(Error::invalid(format!(
                    "configuration key `{full}` is not known"
                )))
            }
        }
    }
    let url = url.ok_or_else(|| Error::invalid("configuration key `panel.url` is required"))?;
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(Error::invalid(
            "configuration key `panel.url` must be an http:// or https:// URL",
        ));
    }
    Ok(Some(PanelConfig {
        url,
        token_id: token_id
            .ok_or_else(|| Error::invalid("configuration key `panel.token_id` is required"))?,
        token: token
            .ok_or_else(|| Error::invalid("configuration key `panel.token` is required"))?,
        report_retry_s,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_key() {
        let c = EngineConfig::from_json(
            r#"{"data_directory":"/d","backup_directory":"/b","compression_level":"none",
                "write_limit":5,"threads":3,"owner":{"uid":1000,"gid":1001},"disk_limit":10,
                "restore_host_allowlist":["minio.local","10.0.0.0/8","127.0.0.1"],
                "panel":{"url":"http://p/","token_id":"a","token":"b"}}"#,
        )
        .unwrap();
        assert_eq!(c.compression_level, CompressionLevel::None);
        assert_eq!(
            c.owner,
            Some(Owner {
                uid: 1000,
                gid: 1001
            })
        );
        assert_eq!(c.panel.unwrap().url, "http://p");
        assert_eq!(c.restore_host_allowlist.len(), 3);
    }

    #[test]
    fn errors_name_the_key() {
        for (json, key) in [
            (r#"{"nope":1}"#, "nope"),
            (r#"{"write_limit":"x"}"#, "write_limit"),
            (r#"{"threads":-1}"#, "threads"),
            (r#"{"max_running_backups":0}"#, "max_running_backups"),
            (r#"{"compression_level":"fast"}"#, "compression_level"),
            (r#"{"owner":{"uid":1}}"#, "owner"),
            (r#"{"owner":{"uid":1,"gid":2,"x":3}}"#, "owner.x"),
            (
                r#"{"panel":{"url":"ftp://x","token_id":"a","token":"b"}}"#,
                "panel.url",
            ),
            (
                r#"{"restore_host_allowlist":["bad host!"]}"#,
                "restore_host_allowlist",
            ),
        ] {
            let err = EngineConfig::from_json(json).unwrap_err();
            assert!(err.message.contains(key), "{json}: {}", err.message);
        }
    }
}
