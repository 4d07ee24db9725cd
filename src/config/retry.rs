//! `[retry]`: how persisted retries are spaced, as data. `delivery::retry` turns it into
//! a delay.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A server hint is never honoured below this: "try again in 0.1 seconds" must not turn
/// the retry budget into a busy loop.
pub const MIN_HINT: Duration = Duration::from_secs(1);

/// Upper bound for every configurable interval (30 days): keeps `now() + delay` sane.
pub(crate) const MAX_SECS: f64 = 30.0 * 24.0 * 3600.0;

/// How persisted retries are spaced. Every field has a default, so a config may set any subset.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct RetryPolicy {
    /// Delay before the first retry, in seconds.
    pub initial_interval_secs: f64,
    /// Growth factor from one retry to the next (>= 1.0).
    pub multiplier: f64,
    /// Cap on the (un-jittered) delay, in seconds.
    pub max_interval_secs: f64,
    /// Randomization factor in 0.0..=1.0: a delay `d` becomes uniform in `d · (1 ± jitter)`.
    pub jitter: f64,
    /// `max_retries` for rows that do not set their own.
    pub default_max_retries: i32,
    /// Cap on a delay the server asked for ("try again in ..."), in seconds.
    pub max_hint_secs: f64,
}

impl Default for RetryPolicy {
    /// 60 s, ×2, capped at 6 h, ±20 %, 5 retries; server hints honoured up to 6 h.
    fn default() -> Self {
        RetryPolicy {
            initial_interval_secs: 60.0,
            multiplier: 2.0,
            max_interval_secs: 6.0 * 3600.0,
            jitter: 0.2,
            default_max_retries: 5,
            max_hint_secs: 6.0 * 3600.0,
        }
    }
}

impl RetryPolicy {
    /// Every problem at once, `; `-separated, e.g. "retry.multiplier must be >= 1.0, got 0.5".
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, problem: String| {
            if !ok {
                problems.push(problem);
            }
        };
        let in_range = |v: f64, lo: f64| v.is_finite() && v >= lo && v <= MAX_SECS;
        check(
            self.initial_interval_secs.is_finite()
                && self.initial_interval_secs > 0.0
                && self.initial_interval_secs <= MAX_SECS,
            format!(
                "retry.initial_interval_secs must be > 0 and <= {MAX_SECS} (30 days), got {}",
                self.initial_interval_secs
            ),
        );
        check(
            self.multiplier.is_finite() && self.multiplier >= 1.0,
            format!("retry.multiplier must be >= 1.0, got {}", self.multiplier),
        );
        check(
            in_range(self.max_interval_secs, self.initial_interval_secs.max(0.0)),
            format!(
                "retry.max_interval_secs must be >= retry.initial_interval_secs ({}) and <= {MAX_SECS} (30 days), got {}",
                self.initial_interval_secs, self.max_interval_secs
            ),
        );
        check(
            (0.0..=1.0).contains(&self.jitter),
            format!(
                "retry.jitter must be between 0.0 and 1.0, got {}",
                self.jitter
            ),
        );
        check(
            self.default_max_retries >= 0,
            format!(
                "retry.default_max_retries must be >= 0, got {}",
                self.default_max_retries
            ),
        );
        check(
            in_range(self.max_hint_secs, MIN_HINT.as_secs_f64()),
            format!(
                "retry.max_hint_secs must be >= 1 and <= {MAX_SECS} (30 days), got {}",
                self.max_hint_secs
            ),
        );
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}
