//! wings-backup: the backup engine of a game-server node.
//!
//! The safe Rust core lives in the modules below; `ffi` is the C ABI over it,
//! and the only module allowed `unsafe` code.

#![deny(unsafe_code)]

pub mod archive;
pub mod backup_store;
pub mod catalog;
pub mod config;
pub mod download;
pub mod engine;
pub mod error;
#[allow(unsafe_code)]
pub mod ffi;
pub mod host_settings;
pub mod http_api;
pub mod ignore;
pub mod index;
pub mod log;
pub mod operations;
pub mod panel;
pub mod progress;
pub mod rate_limit;
pub mod reporter;
pub mod request;
pub mod restore;
pub mod retry;
pub mod s3;
pub mod safe_fs;
pub mod selection;
pub mod space;

pub use error::{Error, Result, Status};
