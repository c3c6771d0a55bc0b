//! SHA-1 of an archive that can be resumed from a stored state.
//!
//! [`Sha1Stream`] is a streaming SHA-1 whose state (the five words after
//! the whole 64-byte blocks fed so far) can be read and later resumed,
//! which the `sha1` crate's `Sha1` does not offer. It is built on that
//! crate's block function, so it uses the same code (and the CPU's SHA
//! extensions) for the blocks.
//!
//! [`ArchiveHasher`] hashes an archive member by member for the writer. The
//! index records, for each member, the state after the member's last whole
//! block; when the new archive begins with members copied verbatim from the
//! old one at the same offsets, the hasher takes the old state instead of
//! hashing those bytes again (see `docs/design.md`, "The archive's SHA-1
//! across reused members").

use ::sha1::digest::generic_array::GenericArray;

/// SHA-1 bytes per block.
const BLOCK: usize = 64;
/// Blocks handed to the block function at once (see `update`).
const BATCH: usize = 16;
type Block = GenericArray<u8, ::sha1::digest::typenum::U64>;
/// The state before any byte (FIPS 180-4, 5.3.1).
const INITIAL: [u32; 5] = [
    0x6745_2301,
    0xEFCD_AB89,
    0x98BA_DCFE,
    0x1032_5476,
    0xC3D2_E1F0,
];

/// A streaming SHA-1 whose state can be stored and resumed.
#[derive(Clone)]
pub struct Sha1Stream {
    /// The state after the first `blocks` whole blocks.
    state: [u32; 5],
    blocks: u64,
    /// The bytes after those blocks (fewer than 64).
    buf: [u8; BLOCK],
    buf_len: usize,
}

impl Default for Sha1Stream {
    fn default() -> Self {
        Sha1Stream::new()
    }
}

fn compress(state: &mut [u32; 5], block: &[u8]) {
    ::sha1::compress(state, std::slice::from_ref(GenericArray::from_slice(block)));
}

impl Sha1Stream {
    pub fn new() -> Self {
        Sha1Stream {
            state: INITIAL,
            blocks: 0,
            buf: [0; BLOCK],
            buf_len: 0,
        }
    }

    pub fn update(&mut self, mut bytes: &[u8]) {
        if self.buf_len > 0 {
            let n = (BLOCK - self.buf_len).min(bytes.len());
            self.buf[self.buf_len..self.buf_len + n].copy_from_slice(&bytes[..n]);
            self.buf_len += n;
            bytes = &bytes[n..];
            if self.buf_len < BLOCK {
                return;
            }
            compress(&mut self.state, &self.buf);
            self.blocks += 1;
            self.buf_len = 0;
        }
        // Whole blocks from `bytes`, BATCH at a time: one call of the
        // block function for many blocks hashes about a third faster than
        // one call per block, even with the copy into the batch.
        let mut blocks = bytes.chunks_exact(BLOCK);
        let mut batch = [Block::default(); BATCH];
        loop {
            let mut n = 0;
            for (slot, block) in batch.iter_mut().zip(&mut blocks) {
                slot.copy_from_slice(block);
                n += 1;
            }
            if n == 0 {
                break;
            }
            ::sha1::compress(&mut self.state, &batch[..n]);
        }
        self.blocks += (bytes.len() / BLOCK) as u64;
        let rest = blocks.remainder();
        self.buf[..rest.len()].copy_from_slice(rest);
        self.buf_len = rest.len();
    }

    /// Bytes fed so far.
    pub fn len(&self) -> u64 {
        self.blocks * BLOCK as u64 + self.buf_len as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The state after the first `len() / 64 * 64` bytes.
    pub fn state(&self) -> [u32; 5] {
        self.state
    }

    /// Resumes a stream that has seen `len` bytes, whose state after the
    /// first `len / 64 * 64` of them is `state`; `tail` is the last
    /// `len % 64` of those bytes (`None` if it is not that many).
    pub fn resume(state: [u32; 5], len: u64, tail: &[u8]) -> Option<Self> {
        if tail.len() as u64 != len % BLOCK as u64 {
            return None;
        }
        let mut buf = [0; BLOCK];
        buf[..tail.len()].copy_from_slice(tail);
        Some(Sha1Stream {
            state,
            blocks: len / BLOCK as u64,
            buf,
            buf_len: tail.len(),
        })
    }

    /// The digest: the standard padding (0x80, zeros, the length in bits
    /// as a big-endian `u64`) and the last block or two.
    pub fn finish(mut self) -> [u8; 20] {
        let bits = self.len().wrapping_mul(8);
        self.buf[self.buf_len] = 0x80;
        self.buf[self.buf_len + 1..].fill(0);
        if self.buf_len + 1 > BLOCK - 8 {
            compress(&mut self.state, &self.buf);
            self.buf.fill(0);
        }
        self.buf[BLOCK - 8..].copy_from_slice(&bits.to_be_bytes());
        compress(&mut self.state, &self.buf);
        let mut out = [0u8; 20];
        for (chunk, word) in out.chunks_exact_mut(4).zip(self.state) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        out
    }
}

/// Where a member of the new archive was copied from: it is a verbatim
/// copy (already checked against `checksum`) of the old archive's member at
/// `offset`, whose index records `sha1_state` (the old archive's SHA-1
/// state at that member's end) and `checksum`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OldPlace {
    pub offset: u64,
    pub sha1_state: Option<[u32; 5]>,
    pub checksum: u64,
}

/// What the index records of a member, from the hasher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hashed {
    /// The archive's SHA-1 state after the member's last whole block.
    pub sha1_state: [u32; 5],
    /// `crate::index::member_checksum` of the member's bytes.
    pub checksum: u64,
}

/// SHA-1 of an archive fed member by member, which skips the members that
/// repeat the start of the old archive.
pub struct ArchiveHasher {
    stream: Sha1Stream,
    /// Whether every member so far was a copy of the old member at the same
    /// offset, so that the archive so far is the old archive's start.
    same_start: bool,
    /// Members whose hashing was skipped, and their bytes.
    skipped_members: u64,
    skipped_bytes: u64,
}

impl Default for ArchiveHasher {
    fn default() -> Self {
        ArchiveHasher::new()
    }
}

impl ArchiveHasher {
    pub fn new() -> Self {
        ArchiveHasher {
            stream: Sha1Stream::new(),
            same_start: true,
            skipped_members: 0,
            skipped_bytes: 0,
        }
    }

    /// Adds the next member (`bytes`); `old` says where it was copied from
    /// when it is a checked copy of an old member.
    pub fn add(&mut self, bytes: &[u8], old: Option<&OldPlace>) -> Hashed {
        let start = self.stream.len();
        let end = start + bytes.len() as u64;
        let resumed = match old {
            Some(&OldPlace {
                offset,
                sha1_state: Some(state),
                ..
            }) if self.same_start && offset == start => {
                if start / BLOCK as u64 == end / BLOCK as u64 {
                    // No block ends within the member: only buffered.
                    self.stream.update(bytes);
                    Some(())
                } else {
                    // A block ends within it, so the last `end % 64` bytes
                    // of the archive are all the member's.
                    let tail = bytes
                        .len()
                        .checked_sub((end % BLOCK as u64) as usize)
                        .map(|from| &bytes[from..]);
                    tail.and_then(|tail| Sha1Stream::resume(state, end, tail))
                        .map(|stream| self.stream = stream)
                }
            }
            _ => None,
        };
        if resumed.is_some() {
            self.skipped_members += 1;
            self.skipped_bytes += bytes.len() as u64;
        } else {
            self.same_start = false;
            self.stream.update(bytes);
        }
        Hashed {
            sha1_state: self.stream.state(),
            checksum: match old {
                Some(old) => old.checksum,
                None => crate::index::member_checksum(bytes),
            },
        }
    }

    /// Members (and their bytes) taken from the old archive's states
    /// instead of hashed.
    pub fn skipped(&self) -> (u64, u64) {
        (self.skipped_members, self.skipped_bytes)
    }

    /// Bytes of the archive so far.
    pub fn len(&self) -> u64 {
        self.stream.len()
    }

    pub fn is_empty(&self) -> bool {
        self.stream.is_empty()
    }

    /// The SHA-1 of the whole archive.
    pub fn finish(self) -> [u8; 20] {
        self.stream.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::writer::hex;
    use ::sha1::{Digest, Sha1};

    fn one_shot(bytes: &[u8]) -> [u8; 20] {
        Sha1::digest(bytes).into()
    }

    /// Deterministic bytes (xorshift), different per seed.
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn the_known_vectors() {
        let mut s = Sha1Stream::new();
        s.update(b"abc");
        assert_eq!(hex(&s.finish()), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(
            hex(&Sha1Stream::new().finish()),
            "da39a3ee5e6b4b0d3255bfef95601890afd80709"
        );
        let mut s = Sha1Stream::new();
        s.update(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq");
        assert_eq!(hex(&s.finish()), "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
    }

    #[test]
    fn equals_the_sha1_crate_for_every_length_up_to_200() {
        let data = noise(200, 1);
        for len in 0..=200 {
            let mut s = Sha1Stream::new();
            s.update(&data[..len]);
            assert_eq!(s.len(), len as u64);
            assert_eq!(s.finish(), one_shot(&data[..len]), "length {len}");
            // Byte by byte, and in two pieces cut at every place.
            let mut s = Sha1Stream::new();
            for b in &data[..len] {
                s.update(std::slice::from_ref(b));
            }
            assert_eq!(s.finish(), one_shot(&data[..len]), "length {len}, bytewise");
        }
        for len in [55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129] {
            for cut in 0..=len {
                let mut s = Sha1Stream::new();
                s.update(&data[..cut]);
                s.update(&data[cut..len]);
                assert_eq!(s.finish(), one_shot(&data[..len]), "{len} cut at {cut}");
            }
        }
    }

    #[test]
    fn equals_the_sha1_crate_on_megabytes_in_odd_pieces() {
        let data = noise((5 << 20) + 333, 2);
        let mut s = Sha1Stream::new();
        let mut at = 0;
        let pieces = [1usize, 63, 64, 65, 4097, 100_003, 1 << 20, 7, 0, 999_999];
        for i in 0.. {
            if at == data.len() {
                break;
            }
            let n = pieces[i % pieces.len()].min(data.len() - at);
            s.update(&data[at..at + n]);
            at += n;
        }
        assert_eq!(s.len(), data.len() as u64);
        assert_eq!(s.finish(), one_shot(&data));
    }

    #[test]
    fn resumes_at_every_split() {
        for (len, seed) in [(0usize, 3u64), (64, 4), (131, 5), (300, 6)] {
            let data = noise(len, seed);
            let whole = one_shot(&data);
            for split in 0..=len {
                let mut s = Sha1Stream::new();
                s.update(&data[..split]);
                let (state, at) = (s.state(), s.len());
                assert_eq!(at, split as u64);
                let tail = &data[split / 64 * 64..split];
                let mut r = Sha1Stream::resume(state, at, tail).unwrap();
                r.update(&data[split..]);
                assert_eq!(r.finish(), whole, "{len} bytes, split at {split}");
                // A tail of the wrong length is refused.
                assert!(Sha1Stream::resume(state, at, &[0; 64][..tail.len() + 1]).is_none());
                if !tail.is_empty() {
                    assert!(Sha1Stream::resume(state, at, &tail[1..]).is_none());
                }
            }
        }
    }

    /// Cuts `data` into members of random lengths (some under 64 bytes).
    fn cut(data: &[u8], seed: u64) -> Vec<std::ops::Range<usize>> {
        let lens = noise(2 * data.len() + 2, seed);
        let mut out = Vec::new();
        let mut at = 0;
        let mut i = 0;
        while at < data.len() {
            let n = match lens[i] % 4 {
                0 => 1 + lens[i + 1] as usize % 63,
                1 => 64,
                2 => 65 + lens[i + 1] as usize * 3,
                _ => 1 + lens[i + 1] as usize * 40,
            }
            .min(data.len() - at);
            out.push(at..at + n);
            at += n;
            i += 2;
        }
        out
    }

    #[test]
    fn an_archive_resumed_from_an_old_ones_states_has_its_own_sha1() {
        let old = noise(60_000, 7);
        let members = cut(&old, 8);
        assert!(members.iter().filter(|m| m.len() < 64).count() >= 5);
        let mut h = ArchiveHasher::new();
        let mut places = Vec::new();
        for m in &members {
            let hashed = h.add(&old[m.clone()], None);
            assert_eq!(
                hashed.checksum,
                crate::index::member_checksum(&old[m.clone()])
            );
            places.push(OldPlace {
                offset: m.start as u64,
                sha1_state: Some(hashed.sha1_state),
                checksum: hashed.checksum,
            });
        }
        assert_eq!(h.skipped(), (0, 0));
        assert_eq!(h.finish(), one_shot(&old));

        for k in 0..=members.len() {
            // The new archive: the old one's first k members, then other
            // bytes (none when k is all of them: the same archive).
            let mut new = old[..members.get(k).map_or(old.len(), |m| m.start)].to_vec();
            let mut new_members = members[..k].to_vec();
            if k < members.len() {
                let more = noise(1000 + k * 7, 100 + k as u64);
                for m in cut(&more, 200 + k as u64) {
                    new_members.push(new.len() + m.start..new.len() + m.end);
                }
                new.extend_from_slice(&more);
            }
            let mut h = ArchiveHasher::new();
            let mut states = Vec::new();
            for (i, m) in new_members.iter().enumerate() {
                let old = if i < k { Some(&places[i]) } else { None };
                states.push(h.add(&new[m.clone()], old).sha1_state);
            }
            let skipped = members[..k].iter().map(|m| m.len() as u64).sum();
            assert_eq!(h.skipped(), (k as u64, skipped), "k = {k}");
            assert_eq!(h.finish(), one_shot(&new), "k = {k}");
            // The states it records are those of hashing the new bytes.
            for (m, state) in new_members.iter().zip(states) {
                let mut s = Sha1Stream::new();
                s.update(&new[..m.end]);
                assert_eq!(s.state(), state, "k = {k}, member at {}", m.start);
            }
        }
    }

    #[test]
    fn a_copy_at_another_offset_or_without_a_state_is_hashed() {
        let old = noise(5_000, 9);
        let members = cut(&old, 10);
        let mut h = ArchiveHasher::new();
        let places: Vec<OldPlace> = members
            .iter()
            .map(|m| OldPlace {
                offset: m.start as u64,
                sha1_state: Some(h.add(&old[m.clone()], None).sha1_state),
                checksum: crate::index::member_checksum(&old[m.clone()]),
            })
            .collect();

        // A new first member, then old members 1.. one byte further on:
        // their states are of the wrong place; all are hashed.
        let mut new = vec![0x55u8];
        new.extend_from_slice(&old[..members[0].end]);
        let mut h = ArchiveHasher::new();
        h.add(&new, None);
        for (m, place) in members.iter().zip(&places).skip(1) {
            h.add(&old[m.clone()], Some(place));
            new.extend_from_slice(&old[m.clone()]);
        }
        assert_eq!(h.skipped(), (0, 0));
        assert_eq!(h.finish(), one_shot(&new));

        // The first member without a state (an old index of version 1):
        // nothing after it is skipped either.
        let mut h = ArchiveHasher::new();
        for (i, (m, place)) in members.iter().zip(&places).enumerate() {
            let place = OldPlace {
                sha1_state: if i == 0 { None } else { place.sha1_state },
                ..*place
            };
            // Its checksum is the one checked on copy.
            assert_eq!(
                h.add(&old[m.clone()], Some(&place)).checksum,
                place.checksum
            );
        }
        assert_eq!(h.skipped(), (0, 0));
        assert_eq!(h.finish(), one_shot(&old));
    }
}
