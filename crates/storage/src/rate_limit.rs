//! Token-bucket rate limiting, for bytes and for operations.
//!
//! A [`TokenBucket`] holds up to `size` tokens and refills at `size` tokens per
//! `refill_period`, continuously; it starts full. A one-time burst is an extra allowance
//! spent before the bucket and never refilled (a VM boots faster, then settles at the
//! rate). A request larger than the whole bucket would never fit, so it is let through
//! when the bucket is full and leaves the bucket in debt: the requests after it wait until
//! the debt is paid back, which keeps the long-run rate.
//!
//! A [`RateLimiter`] pairs an optional bytes bucket with an optional operations bucket;
//! [`RateLimiter::consume`] takes one operation and its bytes from both or, if either is
//! short, from neither and says how long to wait. Time comes from a [`Clock`], so tests
//! drive it by hand.

use std::fmt;
use std::time::{Duration, Instant};

/// Where a rate limiter reads the time.
pub trait Clock: Send {
    /// The current instant (monotonic).
    fn now(&self) -> Instant;
}

/// The real monotonic clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct MonotonicClock;

impl Clock for MonotonicClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// Why a token bucket could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RateLimitError {
    /// A bucket must hold at least one token.
    #[error("token bucket size is {size}, it must be at least 1")]
    Size {
        /// The size given.
        size: u64,
    },
    /// A bucket must take some time to refill.
    #[error("token bucket refill period is {period:?}, it must be at least 1 ns")]
    RefillPeriod {
        /// The period given.
        period: Duration,
    },
}

/// A token bucket: `size` tokens, refilled at `size` per `refill_period`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    size: u64,
    refill_ns: u128,
    one_time_burst: u64,
    /// Negative while paying back a request larger than the bucket.
    tokens: i128,
    /// When `tokens` was last brought up to date; `None` before the first use.
    last: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket of `size` tokens refilled every `refill_period`, with `one_time_burst`
    /// extra tokens to spend first.
    pub fn new(
        size: u64,
        one_time_burst: u64,
        refill_period: Duration,
    ) -> Result<Self, RateLimitError> {
        if size == 0 {
            return Err(RateLimitError::Size { size });
        }
        if refill_period.is_zero() {
            return Err(RateLimitError::RefillPeriod {
                period: refill_period,
            });
        }
        Ok(Self {
            size,
            refill_ns: refill_period.as_nanos(),
            one_time_burst,
            tokens: i128::from(size),
            last: None,
        })
    }

    /// `rate` tokens per second, a second's worth of burst in the bucket.
    pub fn per_second(rate: u64) -> Result<Self, RateLimitError> {
        Self::new(rate, 0, Duration::from_secs(1))
    }

    /// Tokens the bucket holds when full.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// What is left of the one-time burst.
    pub fn one_time_burst(&self) -> u64 {
        self.one_time_burst
    }

    /// Time to refill an empty bucket.
    pub fn refill_period(&self) -> Duration {
        Duration::from_nanos(u64::try_from(self.refill_ns).unwrap_or(u64::MAX))
    }

    /// Takes `tokens` at `now` if they are there; otherwise takes nothing and returns how
    /// long to wait before they will be.
    pub fn try_consume(&mut self, tokens: u64, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        match self.wait_for(tokens, now) {
            Some(wait) => Err(wait),
            None => {
                self.take(tokens);
                Ok(())
            }
        }
    }

    /// Adds the tokens that accrued since the last update, up to `size`.
    fn refill(&mut self, now: Instant) {
        let Some(last) = self.last else {
            self.last = Some(now);
            return;
        };
        let size = i128::from(self.size);
        let room = (size - self.tokens) as u128;
        if room == 0 {
            self.last = Some(now);
            return;
        }
        let elapsed = now.saturating_duration_since(last).as_nanos();
        let accrued = elapsed.saturating_mul(u128::from(self.size)) / self.refill_ns;
        if accrued == 0 {
            return;
        }
        if accrued >= room {
            self.tokens = size;
            self.last = Some(now);
        } else {
            self.tokens += accrued as i128;
            // Advance only by the time those whole tokens took, so fractions carry over.
            let used = accrued * self.refill_ns / u128::from(self.size);
            self.last = Some(last + Duration::from_nanos(used as u64));
        }
    }

    /// How long until `tokens` can be taken (after [`Self::refill`] at `now`); `None` if
    /// they can be taken now.
    fn wait_for(&self, tokens: u64, now: Instant) -> Option<Duration> {
        let burst = i128::from(self.one_time_burst);
        let size = i128::from(self.size);
        if i128::from(tokens) <= self.tokens + burst || self.tokens >= size {
            return None;
        }
        let target = i128::from(tokens.saturating_sub(self.one_time_burst)).min(size);
        let needed = (target - self.tokens) as u128;
        let time = (needed * self.refill_ns).div_ceil(u128::from(self.size));
        let since = self
            .last
            .map_or(0, |last| now.saturating_duration_since(last).as_nanos());
        let wait = time.saturating_sub(since).max(1);
        Some(Duration::from_nanos(
            u64::try_from(wait).unwrap_or(u64::MAX),
        ))
    }

    fn take(&mut self, tokens: u64) {
        let from_burst = tokens.min(self.one_time_burst);
        self.one_time_burst -= from_burst;
        self.tokens -= i128::from(tokens - from_burst);
    }
}

/// Limits on bytes and operations, checked together.
pub struct RateLimiter {
    bytes: Option<TokenBucket>,
    ops: Option<TokenBucket>,
    clock: Box<dyn Clock>,
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("bytes", &self.bytes)
            .field("ops", &self.ops)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// A limiter on the real clock; `None` means no limit of that kind.
    pub fn new(bytes: Option<TokenBucket>, ops: Option<TokenBucket>) -> Self {
        Self::with_clock(bytes, ops, Box::new(MonotonicClock))
    }

    /// A limiter reading the time from `clock`.
    pub fn with_clock(
        bytes: Option<TokenBucket>,
        ops: Option<TokenBucket>,
        clock: Box<dyn Clock>,
    ) -> Self {
        Self { bytes, ops, clock }
    }

    /// Takes one operation of `bytes` bytes, or nothing and returns how long to wait
    /// before it would go through.
    pub fn consume(&mut self, bytes: u64) -> Result<(), Duration> {
        let now = self.clock.now();
        let mut wait = None;
        for (bucket, tokens) in [(&mut self.bytes, bytes), (&mut self.ops, 1)] {
            if let Some(bucket) = bucket {
                bucket.refill(now);
                wait = wait.max(bucket.wait_for(tokens, now));
            }
        }
        if let Some(wait) = wait {
            return Err(wait);
        }
        if let Some(bucket) = &mut self.bytes {
            bucket.take(bytes);
        }
        if let Some(bucket) = &mut self.ops {
            bucket.take(1);
        }
        Ok(())
    }

    /// The limiter's current time: a wait from [`RateLimiter::consume`] counts from here.
    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    /// Whether neither bytes nor operations are limited.
    pub fn is_unlimited(&self) -> bool {
        self.bytes.is_none() && self.ops.is_none()
    }

    /// The bytes bucket.
    pub fn bytes(&self) -> Option<&TokenBucket> {
        self.bytes.as_ref()
    }

    /// The operations bucket.
    pub fn ops(&self) -> Option<&TokenBucket> {
        self.ops.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A clock the test moves by hand.
    #[derive(Clone)]
    struct ManualClock(Arc<Mutex<Instant>>);

    impl ManualClock {
        fn new() -> Self {
            Self(Arc::new(Mutex::new(Instant::now())))
        }

        fn advance(&self, by: Duration) {
            *self.0.lock().unwrap() += by;
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> Instant {
            *self.0.lock().unwrap()
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_bucket_starts_full_then_refills_at_its_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(1000, 0, Duration::from_secs(1)).unwrap();

        let first = bucket.try_consume(1000, start);
        let empty = bucket.try_consume(100, start);
        let half_later = bucket.try_consume(500, start + ms(500));
        let again = bucket.try_consume(1, start + ms(500));

        assert_eq!(first, Ok(()));
        assert_eq!(empty, Err(ms(100)));
        assert_eq!(half_later, Ok(()));
        assert_eq!(again, Err(ms(1)));
    }

    #[test]
    fn waiting_the_returned_time_is_enough() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(3, 0, ms(10)).unwrap();
        bucket.try_consume(3, start).unwrap();
        let mut now = start + Duration::from_nanos(1234);

        let wait = bucket.try_consume(2, now).unwrap_err();
        let early = bucket.try_consume(2, now + wait - Duration::from_nanos(1));
        now += wait;
        let on_time = bucket.try_consume(2, now);

        assert!(early.is_err());
        assert_eq!(on_time, Ok(()));
    }

    #[test]
    fn the_one_time_burst_goes_first_and_never_comes_back() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(100, 250, Duration::from_secs(1)).unwrap();

        let big = bucket.try_consume(300, start);
        let rest = bucket.try_consume(50, start);
        let over = bucket.try_consume(1, start);
        let ten_seconds_later = start + Duration::from_secs(10);
        let refilled = bucket.try_consume(100, ten_seconds_later);
        let more = bucket.try_consume(1, ten_seconds_later);

        assert_eq!((big, rest), (Ok(()), Ok(())));
        assert_eq!(bucket.one_time_burst(), 0);
        assert!(over.is_err());
        assert_eq!(refilled, Ok(()));
        assert!(more.is_err(), "the burst did not come back");
    }

    #[test]
    fn a_request_larger_than_the_bucket_passes_when_full_and_leaves_debt() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(100, 0, Duration::from_secs(1)).unwrap();
        bucket.try_consume(10, start).unwrap();

        let not_full = bucket.try_consume(250, start);
        let full_again = start + ms(100);
        let big = bucket.try_consume(250, full_again);
        let after = bucket.try_consume(1, full_again);

        assert_eq!(not_full, Err(ms(100)), "it waits for a full bucket");
        assert_eq!(big, Ok(()));
        assert_eq!(after, Err(ms(1510)), "150 tokens of debt, then one more");
    }

    #[test]
    fn fractions_of_tokens_are_not_lost_between_refills() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(1000, 0, Duration::from_secs(1)).unwrap();
        bucket.try_consume(1000, start).unwrap();
        let mut now = start;
        let mut taken = 0;

        // 1,000 steps of 1.5 ms: 1,500 tokens accrue.
        for _ in 0..1000 {
            now += Duration::from_micros(1500);
            while bucket.try_consume(1, now).is_ok() {
                taken += 1;
            }
        }

        assert_eq!(taken, 1500);
    }

    #[test]
    fn buckets_need_a_size_and_a_period() {
        assert_eq!(
            TokenBucket::new(0, 0, ms(1)).unwrap_err(),
            RateLimitError::Size { size: 0 }
        );
        assert!(matches!(
            TokenBucket::new(1, 0, Duration::ZERO),
            Err(RateLimitError::RefillPeriod { .. })
        ));
        let bucket = TokenBucket::per_second(5).unwrap();
        assert_eq!((bucket.size(), bucket.refill_period()), (5, ms(1000)));
    }

    #[test]
    fn a_limiter_takes_from_both_buckets_or_from_neither() {
        let clock = ManualClock::new();
        let bytes = TokenBucket::new(1000, 0, Duration::from_secs(1)).unwrap();
        let ops = TokenBucket::new(2, 0, Duration::from_secs(1)).unwrap();
        let mut limiter = RateLimiter::with_clock(Some(bytes), Some(ops), Box::new(clock.clone()));

        let first = limiter.consume(100);
        let second = limiter.consume(100);
        let third = limiter.consume(100);
        clock.advance(ms(500));
        let fourth = limiter.consume(800);
        let fifth = limiter.consume(800);

        assert_eq!((first, second), (Ok(()), Ok(())));
        assert_eq!(third, Err(ms(500)), "out of operations");
        assert_eq!(fourth, Ok(()), "the refused request took no bytes");
        assert_eq!(
            fifth,
            Err(ms(600)),
            "now bytes are short: 0 left, 800 - 200 refill"
        );
    }

    #[test]
    fn a_limiter_holds_the_long_run_rate() {
        let clock = ManualClock::new();
        let start = clock.now();
        let bytes = TokenBucket::per_second(1_000_000).unwrap();
        let mut limiter = RateLimiter::with_clock(Some(bytes), None, Box::new(clock.clone()));
        let mut moved = 0u64;

        while clock.now() - start < Duration::from_secs(10) {
            match limiter.consume(64 * 1024) {
                Ok(()) => moved += 64 * 1024,
                Err(wait) => clock.advance(wait),
            }
        }

        // Ten seconds at 1 MB/s plus the bucket it started with, give or take a request.
        let expected = 11_000_000u64;
        assert!(moved.abs_diff(expected) <= 64 * 1024, "moved {moved}");
    }

    #[test]
    fn an_empty_limiter_never_waits() {
        let mut limiter = RateLimiter::new(None, None);

        assert!(limiter.is_unlimited());
        assert!((0..1000).all(|_| limiter.consume(u64::MAX).is_ok()));
    }
}
