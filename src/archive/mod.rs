pub mod gzip;
pub mod header;
pub mod reader;
pub mod reuse;
pub mod walk;
pub mod writer;
