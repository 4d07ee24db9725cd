use std::collections::{BTreeSet, HashMap};

use super::*;
use crate::queue::EmailStatus;

/// Calls every recording function once against a local recorder and renders it.
fn render_everything() -> String {
    let recorder = builder().unwrap().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        describe();
        email_finished(EmailType::Marketing, EmailPriority::High, Outcome::Sent);
        send_attempt(SendClass::Accepted, Duration::from_millis(120));
        retry_scheduled();
        bounce(BounceKind::Hard);
        suppressed(SuppressionReason::Category);
        rendered(Duration::from_micros(800));
        enqueue_to_sent(
            EmailPriority::Urgent,
            Some(chrono::Utc::now().naive_utc() - chrono::Duration::seconds(3)),
        );
        drop(in_flight_guard());
        smtp_pool_size(8);
        lease_reclaims(2);
        job_run(Job::Digest, JobOutcome::Succeeded, Duration::from_secs(2));
        job_interval(Job::Digest, Duration::from_secs(60));
        tracking_event(TrackingEvent::Click);
        unsubscribed(UnsubscribeVia::OneClick);
        dsn_ingested_totals(&[(DsnResult::Unmatched, 3)]);
        queue_sampled(&[PriorityDepth {
            priority: EmailPriority::Normal,
            due: 3,
            scheduled: 1,
            sending: 2,
            oldest_due_age_secs: 4.5,
            created_ahead: 2,
            created_ahead_max_secs: 3600.0,
        }]);
        queue_sample_failed();
        db_pool(4, 1, 10);
        http::record(
            "/v1/emails/{id}".into(),
            "GET",
            axum::http::StatusCode::OK,
            Duration::from_millis(3),
        );
        register_series();
    });
    handle.render()
}

/// `name{a="x",b="y"} 1` → (name, {a, b}).
fn parse_sample(line: &str) -> (String, BTreeSet<String>) {
    let (head, _value) = line.rsplit_once(' ').unwrap();
    let Some((name, labels)) = head.split_once('{') else {
        return (head.to_string(), BTreeSet::new());
    };
    let keys = labels
        .trim_end_matches('}')
        .split("\",")
        .filter(|kv| !kv.is_empty())
        .map(|kv| kv.split_once('=').unwrap().0.to_string())
        .collect();
    (name.to_string(), keys)
}

#[test]
fn every_catalogued_metric_is_rendered_with_its_type_and_help() {
    let out = render_everything();
    for def in CATALOGUE {
        let type_line = format!("# TYPE {} {}", def.name, def.kind.as_str());
        assert!(out.contains(&type_line), "missing {type_line:?} in\n{out}");
        assert!(
            out.contains(&format!("# HELP {} ", def.name)),
            "no help for {}",
            def.name
        );
    }
}

#[test]
fn every_series_carries_exactly_its_catalogued_labels() {
    let out = render_everything();
    let defs: HashMap<&str, &MetricDef> = CATALOGUE.iter().map(|d| (d.name, *d)).collect();
    let mut seen = BTreeSet::new();
    for line in out.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (name, mut keys) = parse_sample(line);
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|b| defs.get(b).is_some_and(|d| d.kind == Kind::Histogram))
            })
            .unwrap_or(&name);
        let def = defs
            .get(base)
            .unwrap_or_else(|| panic!("{name} is not catalogued"));
        keys.remove("le");
        let want: BTreeSet<String> = def.labels.iter().map(|l| l.to_string()).collect();
        assert_eq!(keys, want, "labels of {line}");
        seen.insert(def.name);
    }
    assert_eq!(seen.len(), CATALOGUE.len());
}

#[test]
fn histograms_have_buckets_not_quantiles() {
    let out = render_everything();
    assert!(!out.contains("quantile="), "{out}");
    assert!(out.contains("adopt_worker_send_duration_seconds_bucket{class=\"2xx\",le=\"0.25\"} 1"));
    assert!(
        out.contains(
            "adopt_worker_enqueue_to_sent_seconds_bucket{priority=\"urgent\",le=\"2.5\"} 0"
        )
    );
    assert!(
        out.contains("adopt_worker_enqueue_to_sent_seconds_bucket{priority=\"urgent\",le=\"5\"} 1")
    );
}

#[test]
fn names_follow_prometheus_conventions_and_are_unique() {
    let mut names = BTreeSet::new();
    for def in CATALOGUE {
        assert!(names.insert(def.name), "{} defined twice", def.name);
        assert!(def.name.starts_with("adopt_worker_"), "{}", def.name);
        assert!(
            def.name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "{}",
            def.name
        );
        assert_eq!(
            def.kind == Kind::Counter,
            def.name.ends_with("_total"),
            "only counters end in _total: {}",
            def.name
        );
        if def.unit == Unit::Seconds {
            assert!(def.name.ends_with("_seconds"), "{}", def.name);
        }
        assert_eq!(def.kind == Kind::Histogram, !def.buckets.is_empty());
        assert!(def.buckets.windows(2).all(|w| w[0] < w[1]), "{}", def.name);
        assert!(!def.help.is_empty());
        for label in def.labels {
            assert!(
                !matches!(*label, "email_id" | "to" | "address" | "user_id" | "id"),
                "high-cardinality label {label} on {}",
                def.name
            );
        }
    }
}

#[test]
fn in_flight_guard_decrements_on_drop() {
    let recorder = builder().unwrap().build_recorder();
    let handle = recorder.handle();
    let rendered = |h: &PrometheusHandle| {
        h.render()
            .lines()
            .find(|l| l.starts_with("adopt_worker_sends_in_flight "))
            .map(str::to_owned)
    };
    metrics::with_local_recorder(&recorder, || {
        let a = in_flight_guard();
        let b = in_flight_guard();
        assert_eq!(
            rendered(&handle).as_deref(),
            Some("adopt_worker_sends_in_flight 2")
        );
        drop(a);
        assert_eq!(
            rendered(&handle).as_deref(),
            Some("adopt_worker_sends_in_flight 1")
        );
        drop(b);
    });
    assert_eq!(
        rendered(&handle).as_deref(),
        Some("adopt_worker_sends_in_flight 0")
    );
}

#[test]
fn outcome_follows_the_written_status() {
    assert_eq!(
        Outcome::from_status(EmailStatus::Queued),
        Some(Outcome::RetryScheduled)
    );
    assert_eq!(
        Outcome::from_status(EmailStatus::Bounced),
        Some(Outcome::Bounced)
    );
    assert_eq!(Outcome::from_status(EmailStatus::Sending), None);
}

#[test]
fn install_is_idempotent() {
    let first = install().unwrap();
    let second = install().unwrap();
    retry_scheduled();
    for handle in [first, second] {
        let out = handle.render();
        let line = out
            .lines()
            .find(|l| l.starts_with("adopt_worker_retries_scheduled_total "));
        assert_eq!(line, Some("adopt_worker_retries_scheduled_total 1"));
    }
}

#[test]
fn rows_created_ahead_are_summed_over_priorities() {
    let recorder = builder().unwrap().build_recorder();
    let handle = recorder.handle();
    let depth = |priority, created_ahead| PriorityDepth {
        priority,
        due: 0,
        scheduled: 0,
        sending: 0,
        oldest_due_age_secs: 0.0,
        created_ahead,
        created_ahead_max_secs: 0.0,
    };
    metrics::with_local_recorder(&recorder, || {
        queue_sampled(&[
            depth(EmailPriority::Urgent, 1),
            depth(EmailPriority::Normal, 4),
            depth(EmailPriority::Low, 0),
        ]);
    });
    let out = handle.render();
    assert!(
        out.lines()
            .any(|l| l == "adopt_worker_queue_created_ahead 5"),
        "{out}"
    );
}

#[test]
fn the_created_ahead_warning_is_logged_at_most_once_a_minute() {
    let mut warning = AheadWarning::default();
    let t0 = std::time::Instant::now();
    let at = |secs| t0 + Duration::from_secs(secs);
    assert!(!warning.due(at(0), 0), "nothing to say without such rows");
    assert!(warning.due(at(1), 3), "the first sample that sees some");
    assert!(!warning.due(at(16), 3));
    assert!(!warning.due(at(60), 7));
    assert!(warning.due(at(61), 7), "a minute after the last warning");
    assert!(!warning.due(at(200), 0));
    assert!(warning.due(at(215), 1));
}

#[test]
fn the_lead_reads_as_hours_and_minutes() {
    assert_eq!(format_lead(3599.6), "1h 00m");
    assert_eq!(format_lead(7200.0 + 1800.0), "2h 30m");
    assert_eq!(format_lead(150.0), "0h 03m");
    assert_eq!(format_lead(-5.0), "0h 00m");
}
