//! A per-callsite budget of log events per second, for storms of identical events.
//!
//! Each callsite (one `tracing::info!(..)` in the source) gets `limit` events per one-second
//! interval; the rest of that interval is suppressed and counted
//! (`tracewire.telemetry.dropped{signal="logs", reason="rate_limited"}`). Once the interval is
//! over, one summary line per callsite says how many were suppressed: it is written with the
//! next event of any callsite.
//!
//! The hot path is a read lock on the callsite map and a few relaxed atomics; a callsite seen
//! for the first time takes the write lock once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use tracing::Metadata;
use tracing::callsite::Identifier;

use crate::dropped::{self, Reason, Signal};

/// A storm summary to write: what was suppressed at one callsite in one interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Suppressed {
    pub(crate) metadata: &'static Metadata<'static>,
    pub(crate) count: u64,
}

#[derive(Debug)]
struct Window {
    metadata: &'static Metadata<'static>,
    /// The interval (seconds since the limiter started) `count` belongs to.
    interval: AtomicU64,
    count: AtomicU64,
    suppressed: AtomicU64,
}

/// The per-callsite limiter; `limit == 0` lets everything through.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    limit: u64,
    started: Instant,
    windows: RwLock<HashMap<Identifier, Arc<Window>>>,
    last_sweep: AtomicU64,
}

impl RateLimiter {
    pub(crate) fn new(limit: u64) -> Self {
        Self {
            limit,
            started: Instant::now(),
            windows: RwLock::new(HashMap::new()),
            last_sweep: AtomicU64::new(0),
        }
    }

    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }

    fn interval(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Whether an event from `metadata`'s callsite may be written now. Summaries of intervals
    /// that ended are pushed to `summaries`.
    pub(crate) fn admit(
        &self,
        metadata: &'static Metadata<'static>,
        summaries: &mut Vec<Suppressed>,
    ) -> bool {
        if self.limit == 0 {
            return true;
        }
        let now = self.interval();
        self.sweep(now, summaries);
        let window = self.window(metadata, now);
        let seen = window.interval.load(Ordering::Acquire);
        if seen != now
            && window
                .interval
                .compare_exchange(seen, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            // This thread opened the new interval: close the old one.
            window.count.store(0, Ordering::Release);
            take_summary(&window, summaries);
        }
        if window.count.fetch_add(1, Ordering::AcqRel) < self.limit {
            return true;
        }
        window.suppressed.fetch_add(1, Ordering::AcqRel);
        dropped::record(Signal::Logs, Reason::RateLimited, 1);
        false
    }

    fn window(&self, metadata: &'static Metadata<'static>, now: u64) -> Arc<Window> {
        let id = metadata.callsite();
        if let Ok(windows) = self.windows.read()
            && let Some(w) = windows.get(&id)
        {
            return w.clone();
        }
        let mut windows = match self.windows.write() {
            Ok(w) => w,
            Err(poisoned) => poisoned.into_inner(),
        };
        windows
            .entry(id)
            .or_insert_with(|| {
                Arc::new(Window {
                    metadata,
                    interval: AtomicU64::new(now),
                    count: AtomicU64::new(0),
                    suppressed: AtomicU64::new(0),
                })
            })
            .clone()
    }

    /// Once per interval, collects the summaries of callsites that went quiet after a storm.
    fn sweep(&self, now: u64, summaries: &mut Vec<Suppressed>) {
        let last = self.last_sweep.load(Ordering::Acquire);
        if last >= now
            || self
                .last_sweep
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return;
        }
        let Ok(windows) = self.windows.read() else {
            return;
        };
        for window in windows.values() {
            let seen = window.interval.load(Ordering::Acquire);
            if seen < now && window.suppressed.load(Ordering::Acquire) > 0 {
                take_summary(window, summaries);
            }
        }
    }
}

fn take_summary(window: &Window, summaries: &mut Vec<Suppressed>) {
    let count = window.suppressed.swap(0, Ordering::AcqRel);
    if count > 0 {
        summaries.push(Suppressed {
            metadata: window.metadata,
            count,
        });
    }
}

/// The budget from `TRACEWIRE_LOG_RATE_LIMIT` (events per second per callsite; 0 turns the
/// limit off); `None` when unset, `Err` with the text when it is not a number.
pub fn limit_from_env() -> Result<Option<u64>, String> {
    match std::env::var(ENV) {
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => v.trim().parse::<u64>().map(Some).map_err(|_| v),
        Err(_) => Ok(None),
    }
}

/// The variable holding the log rate limit.
pub const ENV: &str = "TRACEWIRE_LOG_RATE_LIMIT";

/// The default budget: events per second per callsite.
pub const DEFAULT_LIMIT: u64 = 100;
