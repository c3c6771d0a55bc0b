//! The request bodies of the create and restore endpoints (docs/api.md sections 3 and 4),
//! typed and validated once here so that every host answers alike. Unknown
//! fields are ignored (Wings does). The checks run in a fixed order (adapter,
//! then uuid or truncate_directory, ...), so a body with several faults is
//! always refused for the same one.

use serde::{Deserialize, Deserializer};

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Adapter {
    Wings,
    S3,
}

impl Adapter {
    pub fn parse(value: &str) -> Result<Adapter> {
        match value {
            "wings" => Ok(Adapter::Wings),
            "s3" => Ok(Adapter::S3),
            _ => Err(Error::invalid(format!(
                "provided adapter is not valid: {} (expected \"wings\" or \"s3\")",
                crate::error::quote_str(value)
            ))),
        }
    }

    /// The adapter's name in requests and records.
    pub fn name(self) -> &'static str {
        match self {
            Adapter::Wings => "wings",
            Adapter::S3 => "s3",
        }
    }
}

/// The body of `POST /api/servers/:uuid/backup`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "CreateBody")]
pub struct CreateRequest {
    pub adapter: Adapter,
    /// The backup's UUID (canonical, lower-case, once deserialized; the
    /// engine checks and canonicalizes it again).
    pub uuid: String,
    pub ignore: String,
    /// Answer what the backup would hold instead of making it
    /// (`Engine::dry_run_backup`); false when absent.
    pub dry_run: bool,
    /// Whether unchanged members of the server's previous local archive may
    /// be copied (`"reuse": false` forces every file to be read; default
    /// true).
    pub reuse: bool,
}

/// The body of `POST /api/servers/:uuid/backup/:id/restore`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RestoreBody")]
pub struct RestoreRequest {
    pub adapter: Adapter,
    pub truncate_directory: bool,
    /// Present (and non-empty) when the adapter is `s3`.
    pub download_url: Option<String>,
    /// The entries to restore (a directory with everything under it),
    /// relative to the server directory; empty restores the whole archive.
    /// Checked by `crate::selection::Selection::parse`.
    pub paths: Vec<String>,
}

/// The error of a restore request with the `s3` adapter and no URL.
pub fn download_url_required() -> Error {
    Error::invalid("The download_url field is required when the backup adapter is set to S3.")
}

/// One field of a body as sent, kept whatever its type so that the checks
/// below decide, in their order, which fault is reported.
#[derive(Default)]
enum Field<T> {
    #[default]
    Absent,
    Null,
    Wrong,
    Given(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        if value.is_null() {
            return Ok(Field::Null);
        }
        Ok(T::deserialize(value).map_or(Field::Wrong, Field::Given))
    }
}

impl Field<String> {
    fn required(self, key: &str) -> Result<String> {
        match self {
            Field::Absent => Err(Error::invalid(format!("the field `{key}` is required"))),
            Field::Null | Field::Wrong => Err(not_a_string(key)),
            Field::Given(s) => Ok(s),
        }
    }

    fn optional(self, key: &str) -> Result<Option<String>> {
        match self {
            Field::Absent | Field::Null => Ok(None),
            Field::Wrong => Err(not_a_string(key)),
            Field::Given(s) => Ok(Some(s)),
        }
    }
}

fn not_a_string(key: &str) -> Error {
    Error::invalid(format!("the field `{key}` must be a string"))
}

#[derive(Deserialize)]
struct CreateBody {
    #[serde(default)]
    adapter: Field<String>,
    #[serde(default)]
    uuid: Field<String>,
    #[serde(default)]
    ignore: Field<String>,
    /// The hosts' extension (answer once the backup has ended): only its
    /// type is checked here.
    #[serde(default)]
    wait: Field<bool>,
    #[serde(default)]
    dry_run: Field<bool>,
    #[serde(default)]
    reuse: Field<bool>,
}

#[derive(Deserialize)]
struct RestoreBody {
    #[serde(default)]
    adapter: Field<String>,
    #[serde(default)]
    truncate_directory: Field<bool>,
    #[serde(default)]
    download_url: Field<String>,
    #[serde(default)]
    paths: Field<Vec<String>>,
}

impl TryFrom<CreateBody> for CreateRequest {
    /// The message (every fault of a body is `WB_INVALID_ARGUMENT`).
    type Error = String;

    fn try_from(body: CreateBody) -> std::result::Result<Self, String> {
        let checked = || -> Result<CreateRequest> {
            let request = CreateRequest {
                adapter: Adapter::parse(&body.adapter.required("adapter")?)?,
                uuid: backup_uuid(&body.uuid.required("uuid")?)?,
                ignore: body.ignore.required("ignore")?,
                dry_run: match body.dry_run {
                    Field::Absent | Field::Null => false,
                    Field::Given(b) => b,
                    // Never taken for false: a real backup would start.
                    Field::Wrong => {
                        return Err(Error::invalid("the field `dry_run` must be a boolean"))
                    }
                },
                reuse: match body.reuse {
                    Field::Absent | Field::Null => true,
                    Field::Given(b) => b,
                    Field::Wrong => {
                        return Err(Error::invalid("the field `reuse` must be a boolean"))
                    }
                },
            };
            if matches!(body.wait, Field::Wrong) {
                return Err(Error::invalid("the field `wait` must be a boolean"));
            }
            Ok(request)
        };
        checked().map_err(|e| e.message)
    }
}

impl TryFrom<RestoreBody> for RestoreRequest {
    /// The message (every fault of a body is `WB_INVALID_ARGUMENT`).
    type Error = String;

    fn try_from(body: RestoreBody) -> std::result::Result<Self, String> {
        let checked = || -> Result<RestoreRequest> {
            let adapter = Adapter::parse(&body.adapter.required("adapter")?)?;
            let truncate_directory = match body.truncate_directory {
                Field::Absent | Field::Null => false,
                Field::Given(b) => b,
                Field::Wrong => {
                    return Err(Error::invalid(
                        "the field `truncate_directory` must be a boolean",
                    ))
                }
            };
            let download_url = body
                .download_url
                .optional("download_url")?
                .filter(|s| !s.is_empty());
            if adapter == Adapter::S3 && download_url.is_none() {
                return Err(download_url_required());
            }
            let paths = match body.paths {
                Field::Absent | Field::Null => Vec::new(),
                Field::Given(p) => p,
                Field::Wrong => {
                    return Err(Error::invalid(
                        "the field `paths` must be an array of strings",
                    ))
                }
            };
            crate::selection::Selection::parse(&paths)?;
            Ok(RestoreRequest {
                adapter,
                truncate_directory,
                download_url,
                paths,
            })
        };
        checked().map_err(|e| e.message)
    }
}

/// Returns the canonical (lower-case, hyphenated) form of a UUID, or `None` if
/// `s` is not a 36-character hyphenated UUID.
pub fn canonical_uuid(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    if bytes.len() != 36 {
        return None;
    }
    for (i, b) in bytes.iter().enumerate() {
        let ok = match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        };
        if !ok {
            return None;
        }
    }
    Some(s.to_ascii_lowercase())
}

/// Validates a backup identifier, with Pelican's message.
pub fn backup_uuid(s: &str) -> Result<String> {
    canonical_uuid(s).ok_or_else(|| Error::invalid("The backup identifier must be a valid UUID."))
}

#[cfg(test)]
mod tests {
    use super::*;

    impl CreateRequest {
        fn parse(text: &str) -> Result<CreateRequest> {
            crate::ffi::wire::create_request(text)
        }
    }

    impl RestoreRequest {
        fn parse(text: &str) -> Result<RestoreRequest> {
            crate::ffi::wire::restore_request(text)
        }
    }

    #[test]
    fn uuids() {
        assert_eq!(
            canonical_uuid("8E2B6C52-7A3F-4E9B-9C1D-0F5A7B3C2D1E").as_deref(),
            Some("8e2b6c52-7a3f-4e9b-9c1d-0f5a7b3c2d1e")
        );
        for bad in [
            "",
            "../../etc/passwd",
            "8e2b6c527a3f4e9b9c1d0f5a7b3c2d1e",
            "{8e2b6c52-7a3f-4e9b-9c1d-0f5a7b3c2d1e}",
            "8e2b6c52-7a3f-4e9b-9c1d-0f5a7b3c2d1g",
            "8e2b6c52-7a3f-4e9b-9c1d_0f5a7b3c2d1e",
        ] {
            assert!(canonical_uuid(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn create_bodies() {
        let ok = CreateRequest::parse(
            r#"{"adapter":"wings","uuid":"8e2b6c52-7a3f-4e9b-9c1d-0f5a7b3c2d1e","ignore":"","extra":1}"#,
        )
        .unwrap();
        assert_eq!(ok.adapter, Adapter::Wings);
        assert!(!ok.dry_run);
        let dry = CreateRequest::parse(
            r#"{"adapter":"wings","uuid":"8e2b6c52-7a3f-4e9b-9c1d-0f5a7b3c2d1e","ignore":"","dry_run":true}"#,
        )
        .unwrap();
        assert!(dry.dry_run);
        for wait in ["true", "false", "null"] {
            let body = format!(
                r#"{{"adapter":"wings","uuid":"8e2b6c52-7a3f-4e9b-9c1d-0f5a7b3c2d1e","ignore":"","wait":{wait}}}"#
            );
            assert!(CreateRequest::parse(&body).is_ok(), "{body}");
        }
        for bad in [
            "",
            "[]",
            "{",
            r#"{"adapter":"wings","uuid":"8e2b6c52-7a3f-4e9b-9c1d-0f5a7b3c2d1e"}"#,
            r#"{"adapter":"ftp","uuid":"8e2b6c52-7a3f-4e9b-9c1d-0f5a7b3c2d1e","ignore":""}"#,
            r#"{"adapter":"wings","uuid":"x","ignore":""}"#,
            r#"{"adapter":"wings","uuid":"8e2b6c52-7a3f-4e9b-9c1d-0f5a7b3c2d1e","ignore":1}"#,
            r#"{"adapter":"wings","uuid":"8e2b6c52-7a3f-4e9b-9c1d-0f5a7b3c2d1e","ignore":"","wait":{}}"#,
            r#"{"adapter":"wings","uuid":"8e2b6c52-7a3f-4e9b-9c1d-0f5a7b3c2d1e","ignore":"","wait":"yes"}"#,
            r#"{"adapter":"wings","uuid":"8e2b6c52-7a3f-4e9b-9c1d-0f5a7b3c2d1e","ignore":"","dry_run":"yes"}"#,
        ] {
            assert_eq!(
                CreateRequest::parse(bad).unwrap_err().status,
                crate::Status::InvalidArgument,
                "{bad}"
            );
        }
    }

    #[test]
    fn restore_bodies() {
        let r = RestoreRequest::parse(r#"{"adapter":"wings","truncate_directory":true}"#).unwrap();
        assert!(r.truncate_directory);
        assert!(RestoreRequest::parse(r#"{"adapter":"s3","truncate_directory":true}"#).is_err());
        assert!(RestoreRequest::parse(r#"{"adapter":"s3","download_url":""}"#).is_err());
        assert!(
            RestoreRequest::parse(r#"{"adapter":"wings","truncate_directory":"yes"}"#).is_err()
        );
        let s3 = RestoreRequest::parse(r#"{"adapter":"s3","download_url":"https://x/y"}"#).unwrap();
        assert_eq!(s3.download_url.as_deref(), Some("https://x/y"));
    }
}
