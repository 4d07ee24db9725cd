//! The one function that turns the retry schedule (`[retry]`, [`RetryPolicy`], data in
//! the config) into a delay.
//!
//! [`retry_delay`] is the only code that touches the `backoff` crate, which is flagged
//! unmaintained (RUSTSEC-2025-0012, and its `instant` dependency RUSTSEC-2024-0384). Swapping
//! it for a formula — `min(initial · multiplier^(n-1), max) · (1 ± jitter)` — changes this file
//! only.

use std::time::Duration;

use backoff::backoff::Backoff as _;

use crate::config::MAX_SECS;
pub use crate::config::{MIN_HINT, RetryPolicy};

/// More steps than any real schedule needs; bounds the cost of absurd `retry` values when
/// a multiplier barely above 1.0 takes long to reach the cap.
const MAX_STEPS: u32 = 10_000;

/// Delay before retry number `retry` (1 for the first retry; 0 is treated as 1).
///
/// With a server hint (`SendFailure::retry_after`), the hint wins, clamped to
/// `[1 s, max_hint_secs]` and without jitter: the server knows when it will accept
/// (greylisting windows), a longer backoff would only delay delivery, and a shorter one
/// would spend the retry budget on certain refusals. The retry count still grows, so a
/// server that keeps asking for short delays cannot keep a row alive forever.
///
/// Without a hint: a fresh `backoff::ExponentialBackoff` (no max elapsed time) stepped
/// `retry` times, i.e. `min(initial · multiplier^(retry-1), max)` randomized by ±`jitter`
/// (the jitter applies on top of the cap, as the crate does). Never panics: a policy that
/// fails [`RetryPolicy::validate`] is clamped into range first. Whole milliseconds.
pub fn retry_delay(policy: &RetryPolicy, retry: u32, hint: Option<Duration>) -> Duration {
    let max_hint = secs(policy.max_hint_secs, MIN_HINT.as_secs_f64(), 1.0);
    if let Some(hint) = hint {
        return hint.clamp(MIN_HINT, max_hint);
    }
    let initial = secs(policy.initial_interval_secs, 0.001, 60.0);
    let max = secs(
        policy.max_interval_secs,
        initial.as_secs_f64(),
        initial.as_secs_f64(),
    );
    let multiplier = if policy.multiplier.is_finite() {
        policy.multiplier.max(1.0)
    } else {
        1.0
    };
    let jitter = if policy.jitter.is_nan() {
        0.0
    } else {
        policy.jitter.clamp(0.0, 1.0)
    };

    let mut backoff = backoff::ExponentialBackoffBuilder::new()
        .with_initial_interval(initial)
        .with_multiplier(multiplier)
        .with_max_interval(max)
        .with_randomization_factor(jitter)
        .with_max_elapsed_time(None)
        .build();
    for _ in 1..retry.clamp(1, MAX_STEPS) {
        let before = backoff.current_interval;
        // Once the interval stops growing (cap reached, or multiplier 1.0) every further
        // step would return the same distribution: stop early.
        if before >= max || backoff.next_backoff().is_none() || backoff.current_interval <= before {
            break;
        }
    }
    // `None` only comes from a max elapsed time, which is disabled; fall back to the cap.
    let delay = backoff.next_backoff().unwrap_or(max);
    // Whole milliseconds: the crate adds up to 1 ns of noise even with zero jitter.
    Duration::from_millis(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX))
}

/// `value` seconds clamped to `[lo, MAX_SECS]`; `fallback` when not a finite number.
fn secs(value: f64, lo: f64, fallback: f64) -> Duration {
    let value = if value.is_finite() { value } else { fallback };
    Duration::from_secs_f64(value.clamp(lo, MAX_SECS))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn exact() -> RetryPolicy {
        RetryPolicy {
            jitter: 0.0,
            ..RetryPolicy::default()
        }
    }

    fn secs_of(d: Duration) -> f64 {
        d.as_secs_f64()
    }

    #[test]
    fn zero_jitter_gives_the_exact_doubling_schedule() {
        let got: Vec<u64> = (1..=10)
            .map(|n| retry_delay(&exact(), n, None).as_secs())
            .collect();
        assert_eq!(
            got,
            [60, 120, 240, 480, 960, 1920, 3840, 7680, 15360, 21600]
        );
        assert_eq!(retry_delay(&exact(), 1, None), Duration::from_secs(60));
        assert_eq!(
            retry_delay(&exact(), 0, None),
            Duration::from_secs(60),
            "0 is read as the first retry"
        );
    }

    #[test]
    fn jittered_delays_stay_within_bounds_and_grow() {
        let policy = RetryPolicy::default();
        for _ in 0..200 {
            let mut previous = Duration::ZERO;
            for n in 1..=8u32 {
                let base = (60.0 * 2f64.powi(n as i32 - 1)).min(21600.0);
                let d = secs_of(retry_delay(&policy, n, None));
                assert!(
                    d >= base * 0.8 - 1e-6 && d <= base * 1.2 + 1e-6,
                    "retry {n}: {d} not in {base} ± 20 %"
                );
                let d = Duration::from_secs_f64(d);
                assert!(d > previous, "retry {n}: {d:?} <= {previous:?}");
                previous = d;
            }
        }
    }

    #[test]
    fn delays_are_capped_even_for_absurd_retry_numbers() {
        let started = std::time::Instant::now();
        for n in [30, 1_000, u32::MAX] {
            assert_eq!(retry_delay(&exact(), n, None), Duration::from_secs(21600));
            let d = secs_of(retry_delay(&RetryPolicy::default(), n, None));
            assert!((21600.0 * 0.8..=21600.0 * 1.2 + 1e-6).contains(&d), "{d}");
        }
        let slow_growth = RetryPolicy {
            multiplier: 1.000_001,
            ..exact()
        };
        assert!(retry_delay(&slow_growth, u32::MAX, None) >= Duration::from_secs(60));
        let flat = RetryPolicy {
            multiplier: 1.0,
            ..exact()
        };
        assert_eq!(retry_delay(&flat, u32::MAX, None), Duration::from_secs(60));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "took {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn server_hints_win_within_bounds() {
        let policy = RetryPolicy::default();
        let hint = |s: u64| Some(Duration::from_secs(s));
        assert_eq!(retry_delay(&policy, 1, hint(300)), Duration::from_secs(300));
        assert_eq!(
            retry_delay(&policy, 5, hint(60)),
            Duration::from_secs(60),
            "shorter than the backoff"
        );
        assert_eq!(
            retry_delay(&policy, 1, hint(48 * 3600)),
            Duration::from_secs(6 * 3600),
            "capped"
        );
        assert_eq!(retry_delay(&policy, 1, Some(Duration::ZERO)), MIN_HINT);
        assert_eq!(
            retry_delay(&policy, 1, Some(Duration::from_millis(300))),
            MIN_HINT
        );
        let tight = RetryPolicy {
            max_hint_secs: 120.0,
            ..policy
        };
        assert_eq!(retry_delay(&tight, 1, hint(600)), Duration::from_secs(120));
    }

    #[test]
    fn default_policy_is_valid() {
        assert_eq!(RetryPolicy::default().validate(), Ok(()));
    }

    #[test]
    fn validate_explains_each_problem() {
        let cases: &[(RetryPolicy, &str)] = &[
            (
                RetryPolicy {
                    multiplier: 0.5,
                    ..Default::default()
                },
                "retry.multiplier must be >= 1.0, got 0.5",
            ),
            (
                RetryPolicy {
                    jitter: 1.5,
                    ..Default::default()
                },
                "retry.jitter must be between 0.0 and 1.0, got 1.5",
            ),
            (
                RetryPolicy {
                    initial_interval_secs: 0.0,
                    ..Default::default()
                },
                "retry.initial_interval_secs must be > 0 and <= 2592000 (30 days), got 0",
            ),
            (
                RetryPolicy {
                    max_interval_secs: 30.0,
                    ..Default::default()
                },
                "retry.max_interval_secs must be >= retry.initial_interval_secs (60) and <= 2592000 (30 days), got 30",
            ),
            (
                RetryPolicy {
                    default_max_retries: -1,
                    ..Default::default()
                },
                "retry.default_max_retries must be >= 0, got -1",
            ),
            (
                RetryPolicy {
                    max_hint_secs: 0.5,
                    ..Default::default()
                },
                "retry.max_hint_secs must be >= 1 and <= 2592000 (30 days), got 0.5",
            ),
            (
                RetryPolicy {
                    multiplier: f64::NAN,
                    ..Default::default()
                },
                "retry.multiplier must be >= 1.0, got NaN",
            ),
        ];
        for (policy, message) in cases {
            assert_eq!(policy.validate(), Err((*message).to_owned()));
        }
        let both = RetryPolicy {
            multiplier: 0.5,
            jitter: -0.1,
            ..Default::default()
        };
        assert_eq!(
            both.validate(),
            Err("retry.multiplier must be >= 1.0, got 0.5; retry.jitter must be between 0.0 and 1.0, got -0.1".into())
        );
    }

    #[test]
    fn invalid_policies_never_panic() {
        let nonsense = RetryPolicy {
            initial_interval_secs: f64::NAN,
            multiplier: -3.0,
            max_interval_secs: -1.0,
            jitter: f64::INFINITY,
            default_max_retries: -5,
            max_hint_secs: f64::NEG_INFINITY,
        };
        for n in [0, 1, 7, u32::MAX] {
            let d = retry_delay(&nonsense, n, None);
            assert!(
                d > Duration::ZERO && d <= Duration::from_secs_f64(MAX_SECS * 2.0),
                "{d:?}"
            );
        }
        assert_eq!(
            retry_delay(&nonsense, 1, Some(Duration::from_secs(90))),
            MIN_HINT
        );
        let huge = RetryPolicy {
            initial_interval_secs: 1e300,
            max_interval_secs: 1e308,
            ..exact()
        };
        assert_eq!(
            retry_delay(&huge, 3, None),
            Duration::from_secs_f64(MAX_SECS)
        );
    }

    #[test]
    fn config_may_set_any_subset_of_fields() {
        let parsed: RetryPolicy =
            serde_json::from_str(r#"{"multiplier": 3.0, "jitter": 0.0}"#).unwrap();
        assert_eq!(
            parsed,
            RetryPolicy {
                multiplier: 3.0,
                jitter: 0.0,
                ..RetryPolicy::default()
            }
        );
        assert_eq!(retry_delay(&parsed, 3, None), Duration::from_secs(540));
    }
}
