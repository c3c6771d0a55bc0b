//! Tar headers: ustar blocks, with PAX extended records for what ustar cannot
//! hold (long names and link targets, sizes of 8 GiB and more, large ids,
//! times outside ustar's range). Built with the `tar` crate's header type.

use tar::{EntryType, Header};

pub const BLOCK: usize = 512;

/// What an archive entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink(Vec<u8>),
    /// A hard link to an earlier entry, named by its path.
    HardLink(Vec<u8>),
    Fifo,
}

impl Kind {
    /// Bytes of the link target it carries (0 for all but links).
    pub fn link_len(&self) -> usize {
        match self {
            Kind::Symlink(t) | Kind::HardLink(t) => t.len(),
            _ => 0,
        }
    }
}

/// An entry's header fields. `path` is relative, `/`-separated, without a
/// trailing slash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryMeta {
    pub path: Vec<u8>,
    pub kind: Kind,
    /// Permission bits including setuid, setgid and sticky.
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    pub size: u64,
}

const MAX_OCTAL_7: u64 = 0o7777777;
const MAX_OCTAL_11: u64 = 0o77777777777;

/// Appends the header blocks (PAX record block first when needed) for `meta`.
pub fn encode(meta: &EntryMeta, out: &mut Vec<u8>) {
    let mut name = meta.path.clone();
    if meta.kind == Kind::Dir {
        name.push(b'/');
    }
    let link: &[u8] = match &meta.kind {
        Kind::Symlink(t) | Kind::HardLink(t) => t,
        _ => b"",
    };
    let mut pax: Vec<(&str, Vec<u8>)> = Vec::new();
    let split = split_ustar_name(&name);
    if split.is_none() {
        pax.push(("path", name.clone()));
    }
    if link.len() > 100 {
        pax.push(("linkpath", link.to_vec()));
    }
    if meta.size > MAX_OCTAL_11 {
        pax.push(("size", meta.size.to_string().into_bytes()));
    }
    if meta.uid > MAX_OCTAL_7 {
        pax.push(("uid", meta.uid.to_string().into_bytes()));
    }
    if meta.gid > MAX_OCTAL_7 {
        pax.push(("gid", meta.gid.to_string().into_bytes()));
    }
    if meta.mtime < 0 || meta.mtime as u64 > MAX_OCTAL_11 {
        pax.push(("mtime", meta.mtime.to_string().into_bytes()));
    }
    if !pax.is_empty() {
        if pax
            .iter()
            .any(|(k, v)| (*k == "path" || *k == "linkpath") && std::str::from_utf8(v).is_err())
        {
            pax.insert(0, ("hdrcharset", b"BINARY".to_vec()));
        }
        let mut records = Vec::new();
        for (key, value) in &pax {
            pax_record(key, value, &mut records);
        }
        let mut h = Header::new_ustar();
        set_name(&mut h, b"PaxHeaders/", &tail(&name, 89));
        h.set_mode(0o644);
        h.set_size(records.len() as u64);
        h.set_mtime(meta.mtime.clamp(0, MAX_OCTAL_11 as i64) as u64);
        h.set_entry_type(EntryType::XHeader);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(&records);
        pad(out);
    }

    let mut h = Header::new_ustar();
    match split {
        Some((prefix, base)) => set_name(&mut h, prefix, base),
        None => set_name(&mut h, b"", &name[..name.len().min(100)]),
    }
    if let Some(ustar) = h.as_ustar_mut() {
        let n = link.len().min(100);
        ustar.linkname[..n].copy_from_slice(&link[..n]);
    }
    h.set_mode(meta.mode & 0o7777);
    h.set_uid(if meta.uid > MAX_OCTAL_7 { 0 } else { meta.uid });
    h.set_gid(if meta.gid > MAX_OCTAL_7 { 0 } else { meta.gid });
    h.set_mtime(meta.mtime.clamp(0, MAX_OCTAL_11 as i64) as u64);
    let size = match meta.kind {
        Kind::File if meta.size <= MAX_OCTAL_11 => meta.size,
        _ => 0,
    };
    h.set_size(size);
    h.set_entry_type(match meta.kind {
        Kind::File => EntryType::Regular,
        Kind::Dir => EntryType::Directory,
        Kind::Symlink(_) => EntryType::Symlink,
        Kind::HardLink(_) => EntryType::Link,
        Kind::Fifo => EntryType::Fifo,
    });
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
}

/// The two end-of-archive blocks.
pub fn end_of_archive(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0u8; 2 * BLOCK]);
}

/// Zero bytes that bring `len` bytes of data to a block boundary.
pub fn padding(len: u64) -> usize {
    ((BLOCK as u64 - len % BLOCK as u64) % BLOCK as u64) as usize
}

fn pad(out: &mut Vec<u8>) {
    let n = padding(out.len() as u64);
    out.resize(out.len() + n, 0);
}

fn tail(name: &[u8], max: usize) -> Vec<u8> {
    let base = name
        .strip_suffix(b"/")
        .unwrap_or(name)
        .rsplit(|b| *b == b'/')
        .next()
        .unwrap_or(b"");
    let clean: Vec<u8> = base
        .iter()
        .map(|b| if b.is_ascii_graphic() { *b } else { b'_' })
        .take(max)
        .collect();
    if clean.is_empty() {
        b"entry".to_vec()
    } else {
        clean
    }
}

fn set_name(h: &mut Header, prefix: &[u8], name: &[u8]) {
    if let Some(ustar) = h.as_ustar_mut() {
        ustar.name[..name.len()].copy_from_slice(name);
        ustar.prefix[..prefix.len()].copy_from_slice(prefix);
    }
}

/// Splits a name into ustar's prefix (at most 155 bytes) and name (at most
/// 100) at a `/`, or `None` if it cannot be.
fn split_ustar_name(name: &[u8]) -> Option<(&[u8], &[u8])> {
    if name.len() <= 100 {
        return Some((b"", name));
    }
    let first = name.len().saturating_sub(101);
    // The slash must leave a non-empty name part.
    (first..name.len().min(156))
        .filter(|i| *i <= 155 && name[*i] == b'/' && *i + 1 < name.len())
        .find(|i| name.len() - i - 1 <= 100)
        .map(|i| (&name[..i], &name[i + 1..]))
}

/// Appends one `"<len> key=value\n"` record, where `<len>` counts itself.
fn pax_record(key: &str, value: &[u8], out: &mut Vec<u8>) {
    let body = key.len() + value.len() + 3;
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(path: &[u8], kind: Kind) -> EntryMeta {
        EntryMeta {
            path: path.to_vec(),
            kind,
            mode: 0o4755,
            uid: 1000,
            gid: 1000,
            mtime: 1_700_000_000,
            size: 0,
        }
    }

    #[test]
    fn short_names_are_plain_ustar() {
        let mut out = Vec::new();
        encode(&meta(b"world/level.dat", Kind::File), &mut out);
        assert_eq!(out.len(), BLOCK);
        let h = Header::from_byte_slice(&out);
        assert_eq!(&*h.path_bytes(), b"world/level.dat");
        assert_eq!(h.mode().unwrap(), 0o4755);
        assert_eq!(h.cksum().unwrap(), {
            let mut c = h.clone();
            c.set_cksum();
            c.cksum().unwrap()
        });
    }

    #[test]
    fn long_names_split_or_use_pax() {
        let long_dir = [b"d".repeat(120), b"/f.txt".to_vec()].concat();
        let mut out = Vec::new();
        encode(&meta(&long_dir, Kind::File), &mut out);
        assert_eq!(out.len(), BLOCK, "splits into prefix and name");
        assert_eq!(&*Header::from_byte_slice(&out).path_bytes(), &long_dir[..]);

        let long = b"x".repeat(300);
        let mut out = Vec::new();
        encode(&meta(&long, Kind::Symlink(b"t".repeat(150))), &mut out);
        let records = String::from_utf8_lossy(&out[BLOCK..2 * BLOCK]).to_string();
        assert!(records.starts_with("310 path=xxx"), "{records}");
        assert!(records.contains("164 linkpath=ttt"), "{records}");
    }

    #[test]
    fn pax_record_lengths_count_themselves() {
        for n in [0, 1, 5, 90, 91, 92, 995, 996, 997] {
            let mut out = Vec::new();
            pax_record("path", &vec![b'a'; n], &mut out);
            let len: usize = String::from_utf8_lossy(&out)
                .split(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(len, out.len(), "value length {n}");
        }
    }
}
