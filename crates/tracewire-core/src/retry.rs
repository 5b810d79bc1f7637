//! The retry policy every broker's retry helper follows (RabbitMQ's `RetryQueue`, Kafka's
//! `RetryTopics`): how many attempts a message gets, how long it waits before each retry, and
//! where it goes once the attempts are used up.
//!
//! ```
//! use std::time::Duration;
//! use tracewire_core::retry::{RetryPolicy, RetryStep};
//!
//! let policy = RetryPolicy::new()
//!     .max_attempts(3)
//!     .backoff(Duration::from_millis(100), Duration::from_secs(1))
//!     .dead_letter("orders.dead");
//! assert_eq!(
//!     policy.next(1),
//!     RetryStep::Retry { attempt: 2, delay: Duration::from_millis(100) }
//! );
//! assert_eq!(
//!     policy.next(2),
//!     RetryStep::Retry { attempt: 3, delay: Duration::from_millis(200) }
//! );
//! assert_eq!(policy.next(3), RetryStep::DeadLetter { attempts: 3 });
//! ```

use std::time::Duration;

/// Attempt limit, exponential backoff and dead-letter destination of failed messages.
///
/// The defaults bound every failure: 5 attempts in all, waits of 1 s, 2 s, 4 s, 8 s (doubling,
/// at most 60 s), then the dead-letter destination — so one persistent failure costs a
/// handful of tries, never a redelivery loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    max_attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    dead_letter: Option<String>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::new()
    }
}

/// What happens to a message whose attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryStep {
    /// Try again: the copy carries attempt number `attempt` and waits `delay` first.
    Retry {
        /// The attempt number the retried message carries (the failed one plus one).
        attempt: u32,
        /// How long it waits before that attempt.
        delay: Duration,
    },
    /// The attempts are used up: dead-letter it (to the policy's destination, if any).
    DeadLetter {
        /// How many attempts were made.
        attempts: u32,
    },
}

impl RetryPolicy {
    /// 5 attempts, backoff from 1 s doubling up to 60 s, no dead-letter destination.
    pub fn new() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            dead_letter: None,
        }
    }

    /// How many attempts a message gets, the first included (at least 1).
    #[must_use]
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts.max(1);
        self
    }

    /// The wait before the first retry, doubled for every further retry, capped at `max`.
    #[must_use]
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max.max(initial);
        self
    }

    /// Where messages go once their attempts are used up (a queue, a topic).
    #[must_use]
    pub fn dead_letter(mut self, destination: impl Into<String>) -> Self {
        self.dead_letter = Some(destination.into());
        self
    }

    /// The attempt limit.
    pub fn attempt_limit(&self) -> u32 {
        self.max_attempts
    }

    /// The dead-letter destination, if one is set.
    pub fn dead_letter_destination(&self) -> Option<&str> {
        self.dead_letter.as_deref()
    }

    /// The wait before attempt `attempt` (2 for the first retry): the initial backoff doubled
    /// `attempt - 2` times, at most the maximum.
    pub fn delay_before(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(2).min(31);
        self.initial_backoff
            .checked_mul(1u32 << doublings)
            .map_or(self.max_backoff, |d| d.min(self.max_backoff))
    }

    /// What to do after attempt `failed_attempt` (1 for the first delivery) failed.
    pub fn next(&self, failed_attempt: u32) -> RetryStep {
        let failed_attempt = failed_attempt.max(1);
        if failed_attempt >= self.max_attempts {
            RetryStep::DeadLetter {
                attempts: failed_attempt,
            }
        } else {
            let attempt = failed_attempt + 1;
            RetryStep::Retry {
                attempt,
                delay: self.delay_before(attempt),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_attempts_are_bounded() {
        let policy = RetryPolicy::new();
        let delays: Vec<u64> = (2..=9).map(|a| policy.delay_before(a).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(policy.delay_before(u32::MAX), Duration::from_secs(60));
        assert_eq!(policy.next(5), RetryStep::DeadLetter { attempts: 5 });
        assert_eq!(policy.next(50), RetryStep::DeadLetter { attempts: 50 });
        assert_eq!(
            RetryPolicy::new().max_attempts(0).next(1),
            RetryStep::DeadLetter { attempts: 1 }
        );
    }
}
