pub mod gzip;
pub mod header;
pub mod lookahead;
pub mod reader;
pub mod reuse;
pub mod sha1;
pub mod walk;
pub mod writer;
