//! `write_limit`: paces a stream of bytes to a rate (MiB/s in the config).

use std::time::{Duration, Instant};

use crate::progress::Shared;

/// Paces bytes to `bytes_per_sec`, measured from the first byte. There is
/// no burst allowance beyond what was already waited for, so short transfers
/// keep to the limit too.
pub struct RateLimit {
    bytes_per_sec: u64,
    start: Option<Instant>,
    done: u64,
}

impl RateLimit {
    /// `mib_per_sec` 0 means unlimited.
    pub fn new(mib_per_sec: u64) -> RateLimit {
        RateLimit {
            bytes_per_sec: mib_per_sec.saturating_mul(1024 * 1024),
            start: None,
            done: 0,
        }
    }

    pub fn is_unlimited(&self) -> bool {
        self.bytes_per_sec == 0
    }

    /// Accounts for `n` bytes and sleeps until they are due, waking early if
    /// the operation is stopped.
    pub fn consume(&mut self, n: u64, shared: &Shared) {
        if self.bytes_per_sec == 0 {
            return;
        }
        let start = *self.start.get_or_insert_with(Instant::now);
        self.done += n;
        let due = Duration::from_secs_f64(self.done as f64 / self.bytes_per_sec as f64);
        while !shared.should_stop() {
            let elapsed = start.elapsed();
            if elapsed >= due {
                return;
            }
            std::thread::sleep((due - elapsed).min(Duration::from_millis(50)));
        }
    }
}

/// A reader paced by a `RateLimit` (restores read the archive at the limit).
pub struct LimitedReader<'a, R> {
    pub inner: R,
    pub limit: RateLimit,
    pub shared: &'a Shared,
}

impl<R: std::io::Read> std::io::Read for LimitedReader<'_, R> {
    /// A source that has nothing yet answers `WouldBlock` (a download, see
    /// `download::Detached`): asked again until it has, unless the work
    /// was stopped meanwhile.
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            match self.inner.read(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if self.shared.should_stop() {
                        return Err(std::io::Error::other(crate::error::Error::cancelled()));
                    }
                }
                result => {
                    let n = result?;
                    self.limit.consume(n as u64, self.shared);
                    return Ok(n);
                }
            }
        }
    }
}
