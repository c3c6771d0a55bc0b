//! Exponential backoff with jitter, bounded by a time budget, for the calls
//! that go over the network (Panel, S3).

use std::time::{Duration, Instant};

use crate::progress::CancelToken;

pub struct Backoff {
    start: Instant,
    budget: Duration,
    next: Duration,
    max: Duration,
    attempts: u32,
}

impl Backoff {
    /// Waits start at `initial`, double up to `max`, and stop once `budget`
    /// has passed since the first attempt.
    pub fn new(initial: Duration, max: Duration, budget: Duration) -> Backoff {
        Backoff {
            start: Instant::now(),
            budget,
            next: initial,
            max,
            attempts: 0,
        }
    }

    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The wait before the next attempt (counting the attempt that just
    /// failed), or `None` once the budget is spent. Does not sleep: for a
    /// caller that schedules attempts itself (the engine's reporter).
    pub fn next_delay(&mut self) -> Option<Duration> {
        self.attempts += 1;
        let elapsed = self.start.elapsed();
        if elapsed >= self.budget {
            return None;
        }
        // Up to 25 % jitter, from the clock (no need for a good generator).
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let jitter = self.next.mul_f64((nanos % 250) as f64 / 1000.0);
        let wait = (self.next + jitter).min(self.budget - elapsed);
        self.next = (self.next * 2).min(self.max);
        Some(wait)
    }

    /// Sleeps before the next attempt; false when the budget is spent or
    /// `stop` says so (checked while sleeping).
    pub fn wait(&mut self, stop: &dyn Fn() -> bool) -> bool {
        let Some(wait) = self.next_delay() else {
            return false;
        };
        let until = Instant::now() + wait;
        while Instant::now() < until {
            if stop() {
                return false;
            }
            std::thread::sleep((until - Instant::now()).min(Duration::from_millis(50)));
        }
        !stop()
    }
}

/// A stop check for `Backoff::wait` from an optional cancel token.
pub fn cancelled_by(token: Option<&CancelToken>) -> impl Fn() -> bool + '_ {
    move || token.is_some_and(|t| t.is_triggered())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_stop_with_the_budget() {
        let mut b = Backoff::new(
            Duration::from_millis(100),
            Duration::from_millis(300),
            Duration::from_secs(60),
        );
        let d: Vec<Duration> = (0..4).map(|_| b.next_delay().unwrap()).collect();
        let within = |d: Duration, base: u64| {
            d >= Duration::from_millis(base) && d <= Duration::from_millis(base * 5 / 4)
        };
        assert!(within(d[0], 100) && within(d[1], 200), "{d:?}");
        assert!(within(d[2], 300) && within(d[3], 300), "{d:?}");
        assert_eq!(b.attempts(), 4);
        let mut spent = Backoff::new(
            Duration::from_millis(100),
            Duration::from_secs(1),
            Duration::ZERO,
        );
        assert_eq!(spent.next_delay(), None);
        assert!(!spent.wait(&|| false));
    }
}
