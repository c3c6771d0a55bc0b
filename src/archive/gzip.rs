//! Gzip members: how the archive writer compresses independent blocks and how
//! the reader recognises them again.
//!
//! An archive is a series of standard gzip members (RFC 1952), each holding one
//! block of the tar stream, as pigz and BGZF do; every gzip reader accepts
//! that. Each member carries an extra field (`FEXTRA`, subfield `WB`) with the
//! member's total length and its uncompressed length, so the reader can cut
//! the stream into members without inflating and inflate them in parallel.
//! Other readers skip the field.

use crate::config::CompressionLevel;
use crate::error::{Error, Result};

/// Uncompressed bytes per member.
pub const BLOCK_SIZE: usize = 1 << 20;

/// Length of our member header: 10 fixed bytes, XLEN, one 12-byte subfield.
pub const HEADER_LEN: usize = 24;
const TRAILER_LEN: usize = 8;
/// Upper bound on what a member may claim before the reader distrusts it.
pub const MAX_MEMBER: usize = 16 << 20;
/// The most deflate can expand its input.
const MAX_RATIO: usize = 1032;

/// Worst-case member size for an input of `len` bytes: stored blocks plus
/// framing, which `encode_member` never exceeds.
pub const fn max_member_len(len: usize) -> usize {
    HEADER_LEN + len + 5 * (len / 65535 + 1) + TRAILER_LEN
}

/// Room a member buffer needs for an input of `len` bytes: the worst case,
/// plus the slack ISA-L wants in its output buffer (zlib-rs needs none,
/// but the member layout is the same in both builds).
pub fn member_buffer_len(len: usize) -> usize {
    max_member_len(len) + len / 16 + 1024
}

/// Compresses `input` into one gzip member at the start of `out` and returns
/// its length. `out` is grown (once) to `member_buffer_len` and then reused
/// as is: nothing is zeroed or copied that the member does not need.
pub fn encode_member(level: CompressionLevel, input: &[u8], out: &mut Vec<u8>) -> Result<usize> {
    let room = member_buffer_len(input.len());
    if out.len() < room {
        out.resize(room, 0);
    }
    let xfl = match level {
        CompressionLevel::BestCompression => 2,
        CompressionLevel::BestSpeed => 4,
        CompressionLevel::None => 0,
    };
    // ID1 ID2 CM FLG(FEXTRA) MTIME(0) XFL OS(Unix) XLEN SI1 SI2 LEN, the
    // member length (patched below) and ISIZE.
    out[..16].copy_from_slice(&[
        0x1f, 0x8b, 8, 4, 0, 0, 0, 0, xfl, 3, 12, 0, b'W', b'B', 8, 0,
    ]);
    out[20..24].copy_from_slice(&(input.len() as u32).to_le_bytes());
    let body = &mut out[HEADER_LEN..room - TRAILER_LEN];
    let stored_len = max_member_len(input.len()) - HEADER_LEN - TRAILER_LEN;
    let compressed = match level {
        CompressionLevel::None => None,
        CompressionLevel::BestSpeed if looks_incompressible(input) => None,
        CompressionLevel::BestSpeed => deflate_fast(input, body),
        CompressionLevel::BestCompression => deflate_zlib(flate2::Compression::best(), input, body),
    };
    // Deflate that does not shrink the data is replaced by stored blocks.
    let body_len = match compressed {
        Some(n) if n < stored_len => n,
        _ => stored_blocks(input, body),
    };
    let end = HEADER_LEN + body_len;
    out[end..end + 4].copy_from_slice(&crc32fast::hash(input).to_le_bytes());
    out[end + 4..end + 8].copy_from_slice(&(input.len() as u32).to_le_bytes());
    let member_len = end + TRAILER_LEN;
    out[16..20].copy_from_slice(&(member_len as u32).to_le_bytes());
    Ok(member_len)
}

/// The deflate this library was built with: `"isal"` (the default `isal`
/// feature) or `"zlib-rs"` (pure Rust, `--no-default-features`). It does
/// `best_speed` and inflates our own members; `best_compression` and
/// archives from other tools always use zlib-rs.
pub const DEFLATE_BACKEND: &std::ffi::CStr = if cfg!(feature = "isal") {
    c"isal"
} else {
    c"zlib-rs"
};

/// `best_speed`: ISA-L level 1 into `out` (raw deflate); `None` when it
/// does not fit.
#[cfg(feature = "isal")]
fn deflate_fast(input: &[u8], out: &mut [u8]) -> Option<usize> {
    isal::compress_into(
        input,
        out,
        isal::CompressionLevel::One,
        isal::Codec::Deflate,
    )
    .ok()
}

/// `best_speed` without ISA-L: zlib-rs level 1.
#[cfg(not(feature = "isal"))]
fn deflate_fast(input: &[u8], out: &mut [u8]) -> Option<usize> {
    deflate_zlib(flate2::Compression::fast(), input, out)
}

/// Raw deflate with flate2 (zlib-rs) into `out`; `None` when it does not fit.
fn deflate_zlib(level: flate2::Compression, input: &[u8], out: &mut [u8]) -> Option<usize> {
    let mut z = flate2::Compress::new(level, false);
    match z.compress(input, out, flate2::FlushCompress::Finish) {
        Ok(flate2::Status::StreamEnd) => Some(z.total_out() as usize),
        _ => None,
    }
}

/// Inflates the raw deflate `body` into `out` with ISA-L; returns the
/// number of bytes written.
#[cfg(feature = "isal")]
fn inflate_into(body: &[u8], out: &mut [u8]) -> Result<usize> {
    isal::decompress_into(body, out, isal::Codec::Deflate)
        .map_err(|e| Error::corrupt(format!("invalid deflate data: {e}")))
}

/// Inflating without ISA-L.
#[cfg(not(feature = "isal"))]
fn inflate_into(body: &[u8], out: &mut [u8]) -> Result<usize> {
    inflate_zlib(body, out)
}

/// Inflates the raw deflate `body` into `out` with flate2 (zlib-rs); the
/// stream must end within `body` and within `out`. (Compiled in the ISA-L
/// build for its tests.)
#[cfg(any(test, not(feature = "isal")))]
fn inflate_zlib(body: &[u8], out: &mut [u8]) -> Result<usize> {
    let mut z = flate2::Decompress::new(false);
    match z.decompress(body, out, flate2::FlushDecompress::Finish) {
        Ok(flate2::Status::StreamEnd) => Ok(z.total_out() as usize),
        Ok(_) => Err(Error::corrupt("gzip member length mismatch")),
        Err(e) => Err(Error::corrupt(format!("invalid deflate data: {e}"))),
    }
}

/// Whether a block is already-compressed data (zip, jar, region files, media),
/// judged from three small samples so that deflating it is not tried at all.
/// Deflate cannot shrink data whose byte histogram is nearly flat, so a block
/// where every sample looks random is stored.
fn looks_incompressible(input: &[u8]) -> bool {
    const SAMPLE: usize = 4096;
    if input.len() < 4 * SAMPLE {
        return false;
    }
    let offsets = [0, input.len() / 2 - SAMPLE / 2, input.len() - SAMPLE];
    offsets
        .iter()
        .all(|&off| sample_entropy_bits(&input[off..off + SAMPLE]) > 7.8)
}

/// Order-0 entropy of a sample in bits per byte.
fn sample_entropy_bits(sample: &[u8]) -> f64 {
    let mut counts = [0u32; 256];
    for b in sample {
        counts[*b as usize] += 1;
    }
    let n = sample.len() as f64;
    counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = *c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

/// Deflate "stored" blocks: the data as is, in pieces of at most 65535
/// bytes, written to the start of `out`; returns their length.
fn stored_blocks(input: &[u8], out: &mut [u8]) -> usize {
    if input.is_empty() {
        out[..5].copy_from_slice(&[1, 0, 0, 0xff, 0xff]);
        return 5;
    }
    let mut pos = 0;
    let mut pieces = input.chunks(65535).peekable();
    while let Some(piece) = pieces.next() {
        let last = pieces.peek().is_none();
        let len = piece.len() as u16;
        out[pos] = u8::from(last);
        out[pos + 1..pos + 3].copy_from_slice(&len.to_le_bytes());
        out[pos + 3..pos + 5].copy_from_slice(&(!len).to_le_bytes());
        out[pos + 5..pos + 5 + piece.len()].copy_from_slice(piece);
        pos += 5 + piece.len();
    }
    pos
}

/// What the first bytes of a member say, when it is one of ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberHeader {
    /// Total member length, header and trailer included.
    pub member_len: usize,
    /// Uncompressed length.
    pub data_len: usize,
}

/// Recognises our member header; `None` for any other gzip member (which the
/// reader then inflates as a stream).
pub fn parse_member_header(head: &[u8]) -> Option<MemberHeader> {
    if head.len() < HEADER_LEN {
        return None;
    }
    let fixed = head[0] == 0x1f
        && head[1] == 0x8b
        && head[2] == 8
        && head[3] == 4
        && head[10] == 12
        && head[11] == 0
        && head[12] == b'W'
        && head[13] == b'B'
        && head[14] == 8
        && head[15] == 0;
    if !fixed {
        return None;
    }
    let member_len = u32::from_le_bytes([head[16], head[17], head[18], head[19]]) as usize;
    let data_len = u32::from_le_bytes([head[20], head[21], head[22], head[23]]) as usize;
    // Deflate expands at most 1032 times (258 bytes per two bits): a claim
    // beyond that cannot be true of the bytes the member holds.
    let sane = (HEADER_LEN + TRAILER_LEN..=MAX_MEMBER).contains(&member_len)
        && data_len <= MAX_MEMBER
        && member_len <= max_member_len(data_len)
        && data_len <= MAX_RATIO * (member_len - HEADER_LEN - TRAILER_LEN);
    sane.then_some(MemberHeader {
        member_len,
        data_len,
    })
}

/// Inflates one of our members (as recognised by `parse_member_header`)
/// into `out`, checking its length and CRC.
pub fn decode_member(member: &[u8], header: MemberHeader, out: &mut Vec<u8>) -> Result<()> {
    if member.len() != header.member_len {
        return Err(Error::corrupt("truncated gzip member"));
    }
    let trailer = &member[member.len() - TRAILER_LEN..];
    let crc = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
    let isize = u32::from_le_bytes([trailer[4], trailer[5], trailer[6], trailer[7]]) as usize;
    if isize != header.data_len {
        return Err(Error::corrupt("gzip member length mismatch"));
    }
    // A reused buffer is cut to length, not zeroed: inflating overwrites it.
    out.resize(header.data_len, 0);
    let body = &member[HEADER_LEN..member.len() - TRAILER_LEN];
    let n = if header.data_len == 0 && body == [1, 0, 0, 0xff, 0xff] {
        0
    } else {
        inflate_into(body, out)?
    };
    if n != header.data_len {
        return Err(Error::corrupt("gzip member length mismatch"));
    }
    if crc32fast::hash(out) != crc {
        return Err(Error::corrupt("gzip CRC mismatch"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample_data() -> Vec<u8> {
        let mut v = Vec::new();
        for i in 0..200_000u32 {
            v.extend_from_slice(format!("line {i} of some text\n").as_bytes());
        }
        v
    }

    #[test]
    fn members_roundtrip_through_flate2_and_ourselves() {
        let data = sample_data();
        for level in [
            CompressionLevel::None,
            CompressionLevel::BestSpeed,
            CompressionLevel::BestCompression,
        ] {
            let mut out = Vec::new();
            let mut buf = Vec::new();
            for block in data.chunks(BLOCK_SIZE).chain([&[][..]]) {
                let n = encode_member(level, block, &mut buf).unwrap();
                out.extend_from_slice(&buf[..n]);
            }
            let mut back = Vec::new();
            flate2::read::MultiGzDecoder::new(&out[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data, "{level:?}");

            let mut pos = 0;
            let mut ours = Vec::new();
            while pos < out.len() {
                let h = parse_member_header(&out[pos..]).unwrap();
                let mut block = Vec::new();
                decode_member(&out[pos..pos + h.member_len], h, &mut block).unwrap();
                ours.extend_from_slice(&block);
                pos += h.member_len;
            }
            assert_eq!(ours, data);
        }
    }

    /// Archives move between the two builds (a node rebuilt without ISA-L
    /// restores its old backups): each build's `best_speed` members must
    /// inflate with the other's inflate. Only the ISA-L build has both.
    #[test]
    fn both_builds_read_each_others_members() {
        let data = sample_data();
        let block = &data[..BLOCK_SIZE];
        let mut body = vec![0; member_buffer_len(block.len())];
        let mut back = vec![0; block.len()];
        let n = deflate_fast(block, &mut body).unwrap();
        assert!(n < block.len() / 2, "best_speed: {n} bytes");
        assert_eq!(inflate_zlib(&body[..n], &mut back).unwrap(), block.len());
        assert!(back == block);
        let n = deflate_zlib(flate2::Compression::fast(), block, &mut body).unwrap();
        back.fill(0);
        assert_eq!(inflate_into(&body[..n], &mut back).unwrap(), block.len());
        assert!(back == block);
        // Inflating into too small a buffer is an error, not a short block.
        let short = block.len() - 1;
        assert!(inflate_zlib(&body[..n], &mut back[..short]).is_err());
        assert!(inflate_into(&body[..n], &mut back[..short]).is_err());
    }

    #[test]
    fn random_data_is_stored_not_deflated() {
        let mut x = 0x1234_5678_9abc_def0u64;
        let data: Vec<u8> = (0..BLOCK_SIZE)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert!(looks_incompressible(&data));
        assert!(!looks_incompressible(&sample_data()[..BLOCK_SIZE]));
        let mut out = Vec::new();
        let n = encode_member(CompressionLevel::BestSpeed, &data, &mut out).unwrap();
        assert_eq!(n, max_member_len(data.len()), "stored");
    }

    #[test]
    fn claims_deflate_cannot_bear_out_are_not_ours() {
        let mut out = Vec::new();
        let n = encode_member(CompressionLevel::BestSpeed, &[0; BLOCK_SIZE], &mut out).unwrap();
        let h = parse_member_header(&out[..n]).unwrap();
        let body = h.member_len - HEADER_LEN - TRAILER_LEN;
        assert!(h.data_len <= MAX_RATIO * body);
        // 1 KiB of deflate data claiming 16 MiB.
        let mut head = out[..HEADER_LEN].to_vec();
        head[16..20].copy_from_slice(&(1024 + (HEADER_LEN + TRAILER_LEN) as u32).to_le_bytes());
        head[20..24].copy_from_slice(&(MAX_MEMBER as u32).to_le_bytes());
        assert_eq!(parse_member_header(&head), None);
    }

    #[test]
    fn corruption_is_detected() {
        let data = sample_data();
        let mut out = Vec::new();
        let n = encode_member(CompressionLevel::BestSpeed, &data[..BLOCK_SIZE], &mut out).unwrap();
        out.truncate(n);
        let h = parse_member_header(&out).unwrap();
        let mut bad = out.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x55;
        assert!(decode_member(&bad, h, &mut Vec::new()).is_err());
        assert!(decode_member(&out[..out.len() - 1], h, &mut Vec::new()).is_err());
    }
}
