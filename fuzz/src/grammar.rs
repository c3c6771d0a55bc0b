//! A small grammar that turns fuzzer bytes into a hostile `.tar.gz`, so that
//! the fuzzer spends its time on tar and gzip structure instead of on CRCs
//! and header checksums. Shared by the `restore_structured` target and by
//! `tests/fuzz_regressions.rs` (included by path: std, `flate2` and
//! `wings_backup` only).
//!
//! Every byte string is a valid program. Bytes are read as choices; when
//! they run out every choice reads as 0, and choice 0 is always the most
//! ordinary one (a plain file, a correct size, a single gzip member), so a
//! short input is a small well-formed archive and longer ones add damage.
//!
//! The archive is a sequence of entries, each optionally preceded by
//! extension headers (PAX local or global records, GNU long names and long
//! link names), with names built from a dictionary of path components
//! (`..`, `.`, empty, the reserved `.wings-backup-` prefix, names of
//! 100/101/155/256 bytes, newlines, invalid UTF-8, the names of the scratch
//! root's own symlinks to outside, and absolute paths into the scratch
//! directory's `outside`), every tar type flag, sizes that lie, and numeric
//! fields in octal, base-256 or garbage. The tar stream is then framed as
//! one gzip member, several, the engine's own indexed members, a mix, or
//! not at all, and maybe damaged: a flipped byte, a cut, trailing data, or
//! an indexed member whose length fields lie.

use std::io::Write;

use wings_backup::archive::gzip::encode_member;
use wings_backup::config::CompressionLevel;

/// The fuzzer's bytes, read as choices.
pub struct Src<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Src<'a> {
    pub fn new(data: &'a [u8]) -> Src<'a> {
        Src { data, pos: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    pub fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos = (self.pos + 1).min(self.data.len());
        b
    }

    /// A number in `0..n` (0 when the input is exhausted).
    pub fn below(&mut self, n: usize) -> usize {
        match n {
            0 | 1 => 0,
            2..=256 => self.byte() as usize % n,
            _ => (u16::from_le_bytes([self.byte(), self.byte()]) as usize) % n,
        }
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    /// Up to `n` raw bytes.
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let end = (self.pos + n).min(self.data.len());
        let out = &self.data[self.pos..end];
        self.pos = end;
        out
    }
}

/// What the grammar knows about the scratch directory.
pub struct Ctx {
    /// Absolute path of a directory outside the server root.
    pub outside: Vec<u8>,
}

/// A built archive and how to restore it.
pub struct Built {
    pub archive: Vec<u8>,
    pub truncate: bool,
}

const COMPONENTS: &[&[u8]] = &[
    b"a",
    b"b",
    b"dir",
    b"..",
    b".",
    b"",
    b"f",
    b"link",
    b"out",
    b"abs",
    b"keep.txt",
    b"inner.txt",
    b"nested_out",
    b".wings-backup-restore-x",
    b".wings-backup-",
    b"new\nline",
    b"\xff\xfe bad utf8",
    b"sp ace",
    b"~",
    b"PaxHeaders.0",
    b"././@LongLink",
];

/// Lengths around the ustar field limits.
const LONG: &[usize] = &[99, 100, 101, 154, 155, 156, 255, 256, 1000];

fn component(src: &mut Src<'_>) -> Vec<u8> {
    let i = src.below(COMPONENTS.len() + 2);
    if i < COMPONENTS.len() {
        return COMPONENTS[i].to_vec();
    }
    if i == COMPONENTS.len() {
        let len = src.pick(LONG);
        return vec![b'n'; len];
    }
    // Raw bytes, NUL and `/` included.
    let n = 1 + src.below(8);
    src.bytes(n).to_vec()
}

/// A path: an optional start (absolute, into `outside`, `./`), one to four
/// components, an optional trailing slash.
pub fn name(src: &mut Src<'_>, ctx: &Ctx) -> Vec<u8> {
    let mut out: Vec<u8> = match src.below(10) {
        7 => b"/".to_vec(),
        8 => {
            let mut v = ctx.outside.clone();
            v.push(b'/');
            v
        }
        9 => b"./".to_vec(),
        _ => Vec::new(),
    };
    let n = 1 + src.below(4);
    for i in 0..n {
        if i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(&component(src));
    }
    if src.below(8) == 7 {
        out.push(b'/');
    }
    out
}

/// How a number is written into a header field.
fn put_num(field: &mut [u8], value: u64, src: &mut Src<'_>) {
    field.fill(0);
    let w = field.len();
    match src.below(8) {
        // Octal, NUL-terminated (cut to the field if it does not fit).
        0..=3 => {
            let s = format!("{:0width$o}", value, width = w - 1);
            let s = s.as_bytes();
            let start = s.len().saturating_sub(w - 1);
            field[..w - 1].copy_from_slice(&s[start..]);
        }
        // Octal, space-terminated, no leading zeros.
        4 => {
            let s = format!("{value:o} ");
            let n = s.len().min(w);
            field[..n].copy_from_slice(&s.as_bytes()[..n]);
        }
        // GNU base-256, positive.
        5 => {
            let bytes = value.to_be_bytes();
            field[w - 8..].copy_from_slice(&bytes);
            field[0] |= 0x80;
        }
        // GNU base-256, negative.
        6 => {
            let bytes = (-(value as i64 & 0x7fff_ffff_ffff) - 1).to_be_bytes();
            field.fill(0xff);
            field[w - 8..].copy_from_slice(&bytes);
        }
        // Garbage.
        _ => {
            let g = src.bytes(w);
            field[..g.len()].copy_from_slice(g);
        }
    }
}

#[derive(Clone, Copy)]
enum Format {
    Ustar,
    Gnu,
    V7,
}

/// One 512-byte header block.
struct Header<'n> {
    name: &'n [u8],
    link: &'n [u8],
    typeflag: u8,
    mode: u64,
    size: u64,
    mtime: u64,
    format: Format,
}

fn header_block(h: &Header<'_>, src: &mut Src<'_>) -> [u8; 512] {
    let mut b = [0u8; 512];
    let (prefix, name) = split_name(h.name, h.format);
    b[..name.len()].copy_from_slice(name);
    if !prefix.is_empty() {
        b[345..345 + prefix.len()].copy_from_slice(prefix);
    }
    put_num(&mut b[100..108], h.mode, src);
    put_num(
        &mut b[108..116],
        src.pick(&[0, 0, 1000, 0o7777777, 1 << 40]),
        src,
    );
    put_num(
        &mut b[116..124],
        src.pick(&[0, 0, 1000, 0o7777777, 1 << 40]),
        src,
    );
    put_num(&mut b[124..136], h.size, src);
    put_num(&mut b[136..148], h.mtime, src);
    b[156] = h.typeflag;
    let link = &h.link[..h.link.len().min(100)];
    b[157..157 + link.len()].copy_from_slice(link);
    match h.format {
        Format::Ustar => {
            b[257..263].copy_from_slice(b"ustar\0");
            b[263..265].copy_from_slice(b"00");
        }
        Format::Gnu => b[257..265].copy_from_slice(b"ustar  \0"),
        Format::V7 => {}
    }
    // The checksum: right (unsigned or signed sum) or wrong.
    b[148..156].fill(b' ');
    let unsigned: u32 = b.iter().map(|x| *x as u32).sum();
    let signed: i32 = b.iter().map(|x| *x as i8 as i32).sum();
    let sum = match src.below(16) {
        14 => signed as u32,
        15 => unsigned ^ (1 + src.below(255) as u32),
        _ => unsigned,
    };
    let s = format!("{:06o}\0 ", sum & 0o777777);
    b[148..156].copy_from_slice(s.as_bytes());
    b
}

/// Splits a long name into ustar's prefix and name fields at a `/` when it
/// fits; otherwise the name field gets its first 100 bytes.
fn split_name(name: &[u8], format: Format) -> (&[u8], &[u8]) {
    if name.len() <= 100 {
        return (&[], name);
    }
    if matches!(format, Format::Ustar) {
        for (i, b) in name.iter().enumerate().rev() {
            if *b == b'/' && i <= 155 && name.len() - i - 1 <= 100 && i > 0 {
                return (&name[..i], &name[i + 1..]);
            }
        }
    }
    (&[], &name[..100])
}

fn pad(out: &mut Vec<u8>) {
    let n = (512 - out.len() % 512) % 512;
    out.extend(std::iter::repeat_n(0u8, n));
}

/// Appends a header with `data` (whose header claims `claimed` bytes).
fn push_entry(out: &mut Vec<u8>, h: &Header<'_>, data: &[u8], src: &mut Src<'_>) {
    out.extend_from_slice(&header_block(h, src));
    out.extend_from_slice(data);
    if src.below(16) != 15 {
        pad(out);
    }
}

const NUMBERS: &[&[u8]] = &[
    b"0",
    b"1",
    b"511",
    b"512",
    b"1600000000",
    b"-1",
    b"18446744073709551615",
    b"18446744073709551104",
    b"18446744073709551616",
    b"9223372036854775807",
    b"-9223372036854775808",
    b"99999999999999999999999",
    b"1.5",
    b"abc",
    b"",
    b" 1",
    b"8589934592",
];

const PAX_KEYS: &[&str] = &[
    "path",
    "linkpath",
    "size",
    "mtime",
    "uid",
    "gid",
    "hdrcharset",
    "atime",
    "comment",
    "GNU.sparse.size",
    "GNU.sparse.major",
    "SCHILY.xattr.user.a",
    "",
];

/// The records of a PAX header, with lengths that are right or lie.
fn pax_body(src: &mut Src<'_>, ctx: &Ctx) -> Vec<u8> {
    let mut body = Vec::new();
    let n = 1 + src.below(4);
    for _ in 0..n {
        let key = src.pick(PAX_KEYS);
        let value: Vec<u8> = match key {
            "path" | "linkpath" => name(src, ctx),
            "hdrcharset" => b"BINARY".to_vec(),
            "comment" | "SCHILY.xattr.user.a" | "" => {
                let n = src.below(20);
                src.bytes(n).to_vec()
            }
            _ => src.pick(NUMBERS).to_vec(),
        };
        let base = key.len() + value.len() + 3;
        let mut len = base + 1;
        while len != base + len.to_string().len() {
            len = base + len.to_string().len();
        }
        let (len, newline) = match src.below(10) {
            6 => (len + 1, true),
            7 => (len.saturating_sub(1), true),
            8 => (src.pick(&[0, 1, 5, 99_999, usize::MAX / 2]), true),
            9 => (len, false),
            _ => (len, true),
        };
        body.extend_from_slice(format!("{len} {key}=").as_bytes());
        body.extend_from_slice(&value);
        if newline {
            body.push(b'\n');
        }
    }
    body
}

/// A header type flag, most often an ordinary one.
const TYPES: &[u8] = &[
    b'0', b'0', b'0', b'5', b'2', b'1', b'\0', b'5', b'2', b'1', b'6', b'3', b'4', b'7', b'D',
    b'S', b'x', b'g', b'L', b'K', b'M', b'V', b'N', b'A', b'Z', 0xff,
];

/// The data of an entry: a few bytes from the input, or larger
/// generated data (to cross block and member boundaries, or meet the disk
/// limit).
fn entry_data(src: &mut Src<'_>) -> Vec<u8> {
    match src.below(10) {
        0..=5 => {
            let n = src.below(64);
            src.bytes(n).to_vec()
        }
        6 => {
            let n = src.below(1100);
            (0..n).map(|i| (i * 7 % 251) as u8).collect()
        }
        7 => Vec::new(),
        8 => {
            let n = 60_000 + src.below(10_000);
            (0..n).map(|i| (i * 31 % 253) as u8).collect()
        }
        _ => {
            let n = src.pick(&[(1 << 20) - 512, 1 << 20, (1 << 20) + 700, 3 << 20]);
            vec![0u8; n]
        }
    }
}

/// How the size field relates to the data that follows.
fn claimed_size(src: &mut Src<'_>, actual: usize) -> u64 {
    let actual = actual as u64;
    match src.below(12) {
        8 => actual + 1 + src.below(2000) as u64,
        9 => actual.saturating_sub(1 + src.below(2000) as u64),
        10 => src.pick(&[0o77777777777, u64::MAX, i64::MAX as u64, 1 << 33]),
        11 => 0,
        _ => actual,
    }
}

/// One entry, with its extension headers.
fn entry(src: &mut Src<'_>, ctx: &Ctx, out: &mut Vec<u8>) {
    let format = src.pick(&[Format::Ustar, Format::Ustar, Format::Gnu, Format::V7]);
    let ext = |typeflag: u8, hname: &[u8], body: &[u8], src: &mut Src<'_>, out: &mut Vec<u8>| {
        let size = claimed_size(src, body.len());
        let h = Header {
            name: hname,
            link: b"",
            typeflag,
            mode: 0o644,
            size,
            mtime: 0,
            format,
        };
        push_entry(out, &h, body, src);
    };
    match src.below(10) {
        5 | 6 => {
            let body = pax_body(src, ctx);
            ext(b'x', b"PaxHeaders.0/x", &body, src, out);
        }
        7 => {
            let body = pax_body(src, ctx);
            ext(b'g', b"GlobalHead.0.0", &body, src, out);
        }
        8 => {
            let mut long = name(src, ctx);
            if src.below(4) != 3 {
                long.push(0);
            }
            ext(b'L', b"././@LongLink", &long, src, out);
        }
        9 => {
            let mut long = name(src, ctx);
            long.push(0);
            ext(b'K', b"././@LongLink", &long, src, out);
            if src.below(2) == 1 {
                let mut long = name(src, ctx);
                long.push(0);
                ext(b'L', b"././@LongLink", &long, src, out);
            }
        }
        _ => {}
    }
    let entry_name = name(src, ctx);
    let typeflag = src.pick(TYPES);
    let link = if matches!(typeflag, b'1' | b'2') || src.below(8) == 7 {
        name(src, ctx)
    } else {
        Vec::new()
    };
    let data = entry_data(src);
    let size = claimed_size(src, data.len());
    let mode = src.pick(&[0o644, 0o755, 0o4755, 0o2755, 0o1777, 0, 0o7777, 0o600]);
    let mtime = src.pick(&[1_600_000_000, 0, 0o77777777777, u64::MAX, 1 << 40]);
    let h = Header {
        name: &entry_name,
        link: &link,
        typeflag,
        mode,
        size,
        mtime,
        format,
    };
    push_entry(out, &h, &data, src);
}

/// One step of the archive: usually an entry, sometimes a raw or zero block.
fn step(src: &mut Src<'_>, ctx: &Ctx, out: &mut Vec<u8>) {
    match src.below(16) {
        14 => {
            let raw = src.bytes(512);
            out.extend_from_slice(raw);
            pad(out);
        }
        15 => out.extend_from_slice(&[0u8; 512]),
        _ => entry(src, ctx, out),
    }
}

fn level(src: &mut Src<'_>) -> CompressionLevel {
    src.pick(&[
        CompressionLevel::BestSpeed,
        CompressionLevel::None,
        CompressionLevel::BestCompression,
    ])
}

fn gzip_member(data: &[u8], out: &mut Vec<u8>, src: &mut Src<'_>) {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::new(src.pick(&[1, 6, 0, 9])),
    );
    enc.write_all(data).expect("gzip into memory");
    out.extend_from_slice(&enc.finish().expect("gzip into memory"));
}

/// Cut points for splitting `len` bytes into pieces.
fn cuts(src: &mut Src<'_>, len: usize, piece: usize) -> Vec<(usize, usize)> {
    let mut v = Vec::new();
    let mut at = 0;
    while at < len {
        let n = piece.min(len - at);
        v.push((at, at + n));
        at += n;
    }
    if v.is_empty() || src.below(4) == 3 {
        v.push((len, len));
    }
    v
}

/// Frames the tar stream as gzip and maybe damages it.
fn frame(tar: &[u8], src: &mut Src<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    // Offsets of the engine-format members, for tampering with them.
    let mut ours: Vec<usize> = Vec::new();
    match src.below(6) {
        0 | 1 => gzip_member(tar, &mut out, src),
        2 => {
            let piece = src.pick(&[512, 1000, 10_000, 65_536, 1 << 20]);
            for (a, b) in cuts(src, tar.len(), piece) {
                gzip_member(&tar[a..b], &mut out, src);
            }
        }
        3 | 4 => {
            let piece = src.pick(&[1 << 20, 512, 4096, 65_536, 100_000]);
            let level = level(src);
            for (a, b) in cuts(src, tar.len(), piece) {
                ours.push(out.len());
                encode_member(level, &tar[a..b], &mut out).expect("encoding a member");
            }
        }
        _ => {
            // A mix of the engine's members and foreign ones.
            let piece = src.pick(&[4096, 65_536, 1000]);
            for (a, b) in cuts(src, tar.len(), piece) {
                if src.below(2) == 0 {
                    ours.push(out.len());
                    encode_member(CompressionLevel::BestSpeed, &tar[a..b], &mut out)
                        .expect("encoding a member");
                } else {
                    gzip_member(&tar[a..b], &mut out, src);
                }
            }
        }
    }
    match src.below(12) {
        6 if !out.is_empty() => {
            let at = src.below(out.len());
            out[at] ^= 1 << src.below(8);
        }
        7 if !out.is_empty() => {
            let at = src.below(out.len());
            out.truncate(at);
        }
        8 => out.extend(std::iter::repeat_n(0u8, 1 + src.below(2000))),
        9 => {
            let n = 1 + src.below(40);
            out.extend_from_slice(src.bytes(n));
        }
        10 if !ours.is_empty() => {
            // A member whose length fields lie.
            let at = ours[src.below(ours.len())];
            let field = at + src.pick(&[16, 20]);
            let value: u32 = src.pick(&[0, 32, 33, 1 << 20, 16 << 20, (16 << 20) + 1, u32::MAX]);
            if field + 4 <= out.len() {
                out[field..field + 4].copy_from_slice(&value.to_le_bytes());
            }
        }
        11 => return tar.to_vec(),
        _ => {}
    }
    out
}

/// Builds the archive the input describes.
pub fn build(data: &[u8], ctx: &Ctx) -> Built {
    let mut src = Src::new(data);
    let truncate = src.below(2) == 1;
    let mut tar = Vec::new();
    let steps = 1 + src.below(16);
    for _ in 0..steps {
        step(&mut src, ctx, &mut tar);
        if src.is_empty() {
            break;
        }
    }
    match src.below(5) {
        1 => tar.extend_from_slice(&[0u8; 512]),
        2 => {}
        3 => {
            tar.extend_from_slice(&[0u8; 1024]);
            let n = src.below(600);
            tar.extend_from_slice(src.bytes(n));
        }
        4 => {
            let at = src.below(tar.len() + 1);
            tar.truncate(at);
        }
        _ => tar.extend_from_slice(&[0u8; 1024]),
    }
    Built {
        archive: frame(&tar, &mut src),
        truncate,
    }
}
