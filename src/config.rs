//! The engine configuration (docs/api.md section 12): typed, with serde's derive.
//! The C boundary (`ffi::wire`) parses the JSON and turns a failing field's
//! path (from `serde_path_to_error`) and message into an error naming the
//! key.
//!
//! Every check below fails with a message that continues the sentence
//! "configuration key `k`" (or "option `k`" for the archive calls): it is
//! joined with a space, or directly when it starts with a colon. A check of a
//! nested object that concerns one of its keys names it with
//! [`de::Error::missing_field`] ("missing field `k`", meaning "`parent.k` is
//! required") or [`sub_key`] ("`k` ..." for `parent.k`).

use std::fmt;
use std::marker::PhantomData;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::de::{self, value::MapAccessDeserializer, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

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
    /// The level's name in requests and settings.
    pub fn name(self) -> &'static str {
        match self {
            CompressionLevel::None => "none",
            CompressionLevel::BestSpeed => "best_speed",
            CompressionLevel::BestCompression => "best_compression",
        }
    }

    pub fn parse(s: &str) -> Option<CompressionLevel> {
        match s {
            "none" => Some(CompressionLevel::None),
            "best_speed" => Some(CompressionLevel::BestSpeed),
            "best_compression" => Some(CompressionLevel::BestCompression),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for CompressionLevel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = string(d)?;
        CompressionLevel::parse(&s).ok_or_else(|| {
            de::Error::custom(format!(
                ": unknown level {} (expected none, best_speed or best_compression)",
                crate::error::quote_str(&s)
            ))
        })
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

impl<'de> Deserialize<'de> for Owner {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Fields {
            #[serde(default, deserialize_with = "id")]
            uid: Option<u32>,
            #[serde(default, deserialize_with = "id")]
            gid: Option<u32>,
        }
        match object::<D, Fields>(d)? {
            Fields {
                uid: Some(uid),
                gid: Some(gid),
            } => Ok(Owner { uid, gid }),
            _ => Err(de::Error::custom("needs both `uid` and `gid`")),
        }
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

impl<'de> Deserialize<'de> for PanelConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Fields {
            #[serde(default, deserialize_with = "some_string")]
            url: Option<String>,
            #[serde(default, deserialize_with = "some_string")]
            token_id: Option<String>,
            #[serde(default, deserialize_with = "some_string")]
            token: Option<String>,
            #[serde(default = "report_retry_default", deserialize_with = "report_retry")]
            report_retry_s: u64,
        }
        let fields: Fields = object(d)?;
        let url = fields
            .url
            .ok_or_else(|| de::Error::missing_field("url"))?
            .trim_end_matches('/')
            .to_string();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(sub_key("url", "must be an http:// or https:// URL"));
        }
        Ok(PanelConfig {
            url,
            token_id: fields
                .token_id
                .ok_or_else(|| de::Error::missing_field("token_id"))?,
            token: fields
                .token
                .ok_or_else(|| de::Error::missing_field("token"))?,
            report_retry_s: fields.report_retry_s,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    #[serde(deserialize_with = "path")]
    pub data_directory: PathBuf,
    #[serde(deserialize_with = "path")]
    pub backup_directory: PathBuf,
    pub compression_level: CompressionLevel,
    /// MiB/s of archive bytes written (create) or read (restore); 0 = unlimited.
    #[serde(deserialize_with = "write_limit")]
    pub write_limit: u64,
    /// Worker threads per operation; 0 = one per core.
    #[serde(deserialize_with = "threads")]
    pub threads: usize,
    pub owner: Option<Owner>,
    /// Bytes a server's files may take after a restore; 0 = no limit.
    #[serde(deserialize_with = "disk_limit")]
    pub disk_limit: u64,
    #[serde(deserialize_with = "allowlist")]
    pub restore_host_allowlist: Vec<AllowEntry>,
    pub panel: Option<PanelConfig>,
    /// S3 parts in flight at once (a Panel's `max_concurrent_uploads` can lower it).
    #[serde(deserialize_with = "upload_concurrency")]
    pub upload_concurrency: usize,
    /// Backups that run at once; more wait, accepted, for a free slot.
    #[serde(deserialize_with = "max_running_backups")]
    pub max_running_backups: usize,
    /// Whether a local backup may copy the unchanged members of the
    /// server's previous local archive (false: every backup reads every file).
    pub backup_reuse: bool,
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
            backup_reuse: true,
        }
    }
}

impl EngineConfig {
    /// Threads an operation may use, at least 1.
    pub fn worker_threads(&self) -> usize {
        if self.threads > 0 {
            return self.threads;
        }
        std::thread::available_parallelism().map_or(2, |n| n.get())
    }
}

/// The error of a key of a nested object (`k` of `parent`: `parent.k`).
pub fn sub_key<E: de::Error>(key: &str, message: &str) -> E {
    E::custom(format!("`{key}` {message}"))
}

/// A string.
pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    String::deserialize(d).map_err(|_: D::Error| de::Error::custom("must be a string"))
}

fn some_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    string(d).map(Some)
}

/// A boolean.
pub fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    bool::deserialize(d).map_err(|_: D::Error| de::Error::custom("must be a boolean"))
}

fn path<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    let s = string(d)?;
    if s.is_empty() || s.contains('\0') {
        return Err(de::Error::custom("must be a non-empty path"));
    }
    Ok(PathBuf::from(s))
}

/// An integer from 0 to `max`.
fn bounded<'de, D: Deserializer<'de>>(d: D, max: u64) -> Result<u64, D::Error> {
    match u64::deserialize(d) {
        Ok(n) if n <= max => Ok(n),
        _ => Err(de::Error::custom(format!(
            "must be an integer from 0 to {max}"
        ))),
    }
}

pub fn write_limit<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    bounded(d, 1 << 20)
}

pub fn threads<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    bounded(d, 1024).map(|n| n as usize)
}

pub fn disk_limit<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    bounded(d, u64::MAX)
}

fn upload_concurrency<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    bounded(d, 64).map(|n| n.max(1) as usize)
}

fn max_running_backups<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    match u64::deserialize(d) {
        Ok(n) if (1..=1024).contains(&n) => Ok(n as usize),
        _ => Err(de::Error::custom("must be an integer from 1 to 1024")),
    }
}

fn id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    bounded(d, u32::MAX as u64 - 1).map(|n| Some(n as u32))
}

fn report_retry_default() -> u64 {
    600
}

fn report_retry<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    bounded(d, 7 * 24 * 3600)
}

fn allowlist<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<AllowEntry>, D::Error> {
    let not_strings = || de::Error::custom("must be an array of strings");
    // Deserialized whole first, so that an error names the key, not an item.
    let serde_json::Value::Array(items) = serde_json::Value::deserialize(d)? else {
        return Err(not_strings());
    };
    items
        .iter()
        .map(|item| {
            let s = item.as_str().ok_or_else(not_strings)?;
            AllowEntry::parse(s).ok_or_else(|| {
                de::Error::custom(format!(
                    ": {} is not a host name, IP address or CIDR",
                    crate::error::quote_str(s)
                ))
            })
        })
        .collect()
}

/// A JSON object deserialized as `T` (keeping the paths of its keys), or
/// "must be an object".
fn object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    struct ObjectVisitor<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object")
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(MapAccessDeserializer::new(map))
        }

        fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<T, A::Error> {
            Err(not_object())
        }

        fn visit_bool<E: de::Error>(self, _: bool) -> Result<T, E> {
            Err(not_object())
        }

        fn visit_i64<E: de::Error>(self, _: i64) -> Result<T, E> {
            Err(not_object())
        }

        fn visit_u64<E: de::Error>(self, _: u64) -> Result<T, E> {
            Err(not_object())
        }

        fn visit_f64<E: de::Error>(self, _: f64) -> Result<T, E> {
            Err(not_object())
        }

        fn visit_str<E: de::Error>(self, _: &str) -> Result<T, E> {
            Err(not_object())
        }

        fn visit_unit<E: de::Error>(self) -> Result<T, E> {
            Err(not_object())
        }
    }

    d.deserialize_any(ObjectVisitor(PhantomData))
}

fn not_object<E: de::Error>() -> E {
    E::custom("must be an object")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parsed as the C ABI parses it, with its messages.
    fn parse(json: &str) -> Result<EngineConfig, String> {
        crate::ffi::wire::engine_config(json).map_err(|e| e.message)
    }

    #[test]
    fn parses_every_key() {
        let c = parse(
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
            let err = parse(json).unwrap_err();
            assert!(err.contains(key), "{json}: {err}");
        }
    }
}
