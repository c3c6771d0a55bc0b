//! A buffered reader that can look ahead: the restore's reader and the
//! index scan both need a whole gzip member header, or a whole member,
//! before they decide how to read on. What differs between them (counting
//! bytes as they arrive, hashing them as they are passed, what a failed read
//! of the source becomes) is an [`Observe`].

use std::io::{BufRead, Read};

use crate::error::{Error, Result};

/// What a [`Lookahead`] tells its owner about the bytes it passes on.
pub trait Observe {
    /// Bytes as they arrive from the source.
    fn arrived(&mut self, _bytes: &[u8]) {}
    /// Bytes as the reader moves past them, in order.
    fn consumed(&mut self, _bytes: &[u8]) {}
    /// The error a failed read of the source becomes.
    fn source_error(&self, e: std::io::Error) -> Error;
}

pub struct Lookahead<'a, S: Read + ?Sized, O: Observe> {
    src: &'a mut S,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    pub observer: O,
}

impl<'a, S: Read + ?Sized, O: Observe> Lookahead<'a, S, O> {
    /// Reads `src` through a buffer of `capacity` bytes (grown when a
    /// `peek` asks for more).
    pub fn new(src: &'a mut S, capacity: usize, observer: O) -> Lookahead<'a, S, O> {
        Lookahead {
            src,
            buf: vec![0; capacity.max(1)],
            start: 0,
            end: 0,
            eof: false,
            observer,
        }
    }

    /// Makes at least `n` bytes available if the source has them, and
    /// returns what is available (fewer than `n` only at its end).
    pub fn peek(&mut self, n: usize) -> Result<&[u8]> {
        while self.end - self.start < n && !self.eof {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.end == self.buf.len() {
                self.buf.resize(self.buf.len().max(n), 0);
            }
            match self.src.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(k) => {
                    self.observer.arrived(&self.buf[self.end..self.end + k]);
                    self.end += k;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.observer.source_error(e)),
            }
        }
        Ok(&self.buf[self.start..self.end])
    }

    /// Appends up to `n` bytes to `out`: all `n` unless the source ends
    /// first. Returns how many.
    pub fn take_into(&mut self, n: usize, out: &mut Vec<u8>) -> Result<usize> {
        let mut left = n;
        while left > 0 {
            if self.start == self.end {
                self.peek(1)?;
                if self.start == self.end {
                    break;
                }
            }
            let k = left.min(self.end - self.start);
            out.extend_from_slice(&self.buf[self.start..self.start + k]);
            self.consume(k);
            left -= k;
        }
        Ok(n - left)
    }
}

impl<S: Read + ?Sized, O: Observe> Read for Lookahead<'_, S, O> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(out.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<S: Read + ?Sized, O: Observe> BufRead for Lookahead<'_, S, O> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        if self.start == self.end {
            self.peek(1).map_err(std::io::Error::other)?;
        }
        Ok(&self.buf[self.start..self.end])
    }

    fn consume(&mut self, n: usize) {
        let n = n.min(self.end - self.start);
        self.observer
            .consumed(&self.buf[self.start..self.start + n]);
        self.start += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Log {
        arrived: Vec<u8>,
        consumed: Vec<u8>,
    }

    impl Observe for Log {
        fn arrived(&mut self, bytes: &[u8]) {
            self.arrived.extend_from_slice(bytes);
        }
        fn consumed(&mut self, bytes: &[u8]) {
            self.consumed.extend_from_slice(bytes);
        }
        fn source_error(&self, e: std::io::Error) -> Error {
            Error::io("reading", e)
        }
    }

    /// A source that hands out at most 3 bytes per read.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = out.len().min(3).min(self.0.len());
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn peeks_past_its_buffer_and_reports_bytes_in_order() {
        let data: Vec<u8> = (0..100u8).collect();
        let mut src = Trickle(&data);
        let mut r = Lookahead::new(&mut src, 8, Log::default());
        // More than the buffer holds, from a source of 3-byte reads.
        assert_eq!(r.peek(20).unwrap()[..20], data[..20]);
        let mut out = Vec::new();
        assert_eq!(r.take_into(30, &mut out).unwrap(), 30);
        assert_eq!(out, data[..30]);
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, data[30..]);
        // At the end: fewer than asked.
        assert!(r.peek(5).unwrap().is_empty());
        assert_eq!(r.take_into(5, &mut out).unwrap(), 0);
        assert_eq!(r.observer.arrived, data);
        assert_eq!(r.observer.consumed, data);
    }
}
