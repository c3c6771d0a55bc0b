//! The request bodies of the create and restore endpoints (CONTRACT section 1),
//! validated once here so that every host answers alike.

use serde_json::{Map, Value};

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Adapter {
    Wings,
    S3,
}

impl Adapter {
    fn parse(value: &str) -> Result<Adapter> {
        match value {
            "wings" => Ok(Adapter::Wings),
            "s3" => Ok(Adapter::S3),
            _ => Err(Error::invalid(format!(
                "provided adapter is not valid: {value:?} (expected \"wings\" or \"s3\")"
            ))),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateRequest {
    pub adapter: Adapter,
    /// Canonical lower-case backup UUID.
    pub uuid: String,
    pub ignore: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreRequest {
    pub adapter: Adapter,
    pub truncate_directory: bool,
    /// Present (and non-empty) when the adapter is `s3`.
    pub download_url: Option<String>,
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

fn parse_object(text: &str) -> Result<Map<String, Value>> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Error::invalid("the request body must be a JSON object")),
        Err(e) => Err(Error::invalid(format!(
            "The data passed in the request was not in a parsable format: {e}"
        ))),
    }
}

fn field_str<'a>(
    map: &'a Map<String, Value>,
    key: &str,
    required: bool,
) -> Result<Option<&'a str>> {
    match map.get(key) {
        None if required => Err(Error::invalid(format!("the field `{key}` is required"))),
        None | Some(Value::Null) if !required => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Error::invalid(format!(
            "the field `{key}` must be a string"
        ))),
        None => Ok(None),
    }
}

impl CreateRequest {
    pub fn parse(text: &str) -> Result<CreateRequest> {
        let map = parse_object(text)?;
        let adapter = Adapter::parse(field_str(&map, "adapter", true)?.unwrap_or_default())?;
        let uuid = backup_uuid(field_str(&map, "uuid", true)?.unwrap_or_default())?;
        let ignore = field_str(&map, "ignore", true)?
            .unwrap_or_default()
            .to_string();
        Ok(CreateRequest {
            adapter,
            uuid,
            ignore,
        })
    }
}

impl RestoreRequest {
    pub fn parse(text: &str) -> Result<RestoreRequest> {
        let map = parse_object(text)?;
        let adapter = Adapter::parse(field_str(&map, "adapter", true)?.unwrap_or_default())?;
        let truncate_directory = match map.get("truncate_directory") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(Error::invalid(
                    "the field `truncate_directory` must be a boolean",
                ))
            }
        };
        let download_url = field_str(&map, "download_url", false)?
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        if adapter == Adapter::S3 && download_url.is_none() {
            return Err(Error::invalid(
                "The download_url field is required when the backup adapter is set to S3.",
            ));
        }
        Ok(RestoreRequest {
            adapter,
            truncate_directory,
            download_url,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        for bad in [
            "",
            "[]",
            "{",
            r#"{"adapter":"wings","uuid":"8e2b6c52-7a3f-4e9b-9c1d-0f5a7b3c2d1e"}"#,
            r#"{"adapter":"ftp","uuid":"8e2b6c52-7a3f-4e9b-9c1d-0f5a7b3c2d1e","ignore":""}"#,
            r#"{"adapter":"wings","uuid":"x","ignore":""}"#,
            r#"{"adapter":"wings","uuid":"8e2b6c52-7a3f-4e9b-9c1d-0f5a7b3c2d1e","ignore":1}"#,
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
