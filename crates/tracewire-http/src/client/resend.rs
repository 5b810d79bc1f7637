use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use http::Extensions;

/// A count of the physical attempts made for one logical request, shared by every copy of
/// that request through its [`Extensions`].
///
/// The client layer reads it from each request it sends: the number of attempts already made
/// becomes `http.request.resend_count` (omitted on the first attempt), and the count goes up by
/// one. Whoever makes a copy of a request to send it again carries the counter over:
/// [`RetryPolicy`](super::RetryPolicy), [`CountResends`](super::CountResends) (any other
/// `tower::retry` policy), [`CountRedirects`](super::CountRedirects) (tower-http's `FollowRedirect`) and the `reqwest`
/// adapter do it for you; [`ResendCounter::carry_over`] is what they call.
#[derive(Debug, Clone, Default)]
pub struct ResendCounter(Arc<AtomicU32>);

impl ResendCounter {
    /// A counter for a request not sent yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A counter for a request already sent `attempts` times.
    pub fn with_attempts(attempts: u32) -> Self {
        Self(Arc::new(AtomicU32::new(attempts)))
    }

    /// How many attempts have been made so far.
    pub fn attempts(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }

    /// Counts one more attempt and returns its resend count (attempts made before it).
    pub(crate) fn next_attempt(&self) -> u32 {
        self.0.fetch_add(1, Ordering::Relaxed)
    }

    /// Puts into `copy` the counter of the request `original` is a copy source of, so `copy`'s
    /// attempt is numbered after `original`'s. When `original` carries no counter yet, it is
    /// (or was) sent once without one, so `copy` gets a new counter that starts at one attempt.
    pub fn carry_over(original: &Extensions, copy: &mut Extensions) {
        let counter = original
            .get::<ResendCounter>()
            .cloned()
            .unwrap_or_else(|| ResendCounter::with_attempts(1));
        copy.insert(counter);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_share_one_count() {
        let first = Extensions::new();
        let mut second = Extensions::new();
        ResendCounter::carry_over(&first, &mut second);
        let mut third = second.clone();
        ResendCounter::carry_over(&second, &mut third);
        assert_eq!(second.get::<ResendCounter>().unwrap().next_attempt(), 1);
        assert_eq!(third.get::<ResendCounter>().unwrap().next_attempt(), 2);
        assert_eq!(second.get::<ResendCounter>().unwrap().attempts(), 3);
    }
}
