//! docs/integrating.md, followed as written: its SQL blocks run in order in one session on a
//! fresh database, its Python and Node.js examples run against another, and every row ends
//! as the guide says once `drain` has run.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use chrono::NaiveDateTime;
use sqlx::{Connection, Executor, PgConnection};

use crate::helpers::*;

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn guide() -> String {
    std::fs::read_to_string(repo_file("docs/integrating.md")).expect("docs/integrating.md")
}

/// The fenced blocks of `markdown` whose info string is `lang`, in order (fences may be
/// indented, as in a list item).
fn blocks(markdown: &str, lang: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in markdown.lines() {
        let fence = line.trim();
        match current.as_mut() {
            None if fence.strip_prefix("```") == Some(lang) => current = Some(Vec::new()),
            None => {}
            Some(_) if fence == "```" => {
                out.push(current.take().unwrap_or_default().join("\n"));
            }
            Some(lines) => lines.push(line),
        }
    }
    assert!(current.is_none(), "an unclosed ```{lang} block");
    out
}

/// A fresh database with the shipped templates synced, whose sessions start in `zone`
/// unless they say otherwise.
async fn guide_db(zone: &str) -> TestDb {
    let db = TestDb::new().await;
    app(settings(&db, None, None, &[]))
        .templates
        .sync(&repo_file("templates"), &Default::default())
        .await
        .expect("the shipped templates sync");
    db.pool
        .execute(sqlx::AssertSqlSafe(format!(
            r#"ALTER DATABASE "{}" SET TimeZone = '{zone}'"#,
            db.name
        )))
        .await
        .unwrap();
    db
}

#[derive(Debug, sqlx::FromRow)]
struct Queued {
    email_id: uuid::Uuid,
    to_email: String,
    status: String,
    subject: String,
    failure_reason: Option<String>,
    /// created_at - now, in the database's UTC clock.
    created_ahead_secs: f64,
    /// scheduled_for - now, in the database's UTC clock.
    scheduled_in_secs: Option<f64>,
    scheduled_for: Option<NaiveDateTime>,
}

async fn queued_rows(db: &TestDb) -> Vec<Queued> {
    sqlx::query_as(
        "SELECT email_id, to_email, status::text AS status, subject, failure_reason,
                EXTRACT(EPOCH FROM created_at - (now() AT TIME ZONE 'UTC'))::float8
                    AS created_ahead_secs,
                EXTRACT(EPOCH FROM scheduled_for - (now() AT TIME ZONE 'UTC'))::float8
                    AS scheduled_in_secs,
                scheduled_for
         FROM email_queue ORDER BY created_at",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

/// Written "now" in UTC: not ahead (a session east of UTC), not behind (west of it).
fn created_now(r: &Queued) -> bool {
    (-300.0..60.0).contains(&r.created_ahead_secs)
}

/// Due in one hour, in UTC (give or take the test's own run time).
fn due_in_an_hour(r: &Queued) -> bool {
    r.scheduled_in_secs
        .is_some_and(|s| (3600.0 - 300.0..=3600.0 + 5.0).contains(&s))
}

#[tokio::test]
async fn the_sql_of_the_integrating_guide_runs_as_written_and_rows_end_as_it_says() {
    let db = guide_db("Asia/Tokyo").await;
    let smtp = TestSmtp::start().await;
    let sql = blocks(&guide(), "sql");
    assert!(sql.len() >= 12, "the guide's SQL blocks: {}", sql.len());

    // One session, as a person pasting the blocks into psql would have, in the database's
    // default zone, Tokyo (sqlx asks for UTC when it connects, psql would not).
    let mut session = PgConnection::connect(&db.url).await.unwrap();
    session
        .execute("SET TimeZone = 'Asia/Tokyo'")
        .await
        .unwrap();
    let zone: String = sqlx::query_scalar("SHOW TimeZone")
        .fetch_one(&mut session)
        .await
        .unwrap();
    assert_eq!(zone, "Asia/Tokyo");
    for (i, block) in sql.iter().enumerate() {
        if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(block.clone()))
            .execute(&mut session)
            .await
        {
            panic!(
                "SQL block {} of docs/integrating.md fails: {e}\n{block}",
                i + 1
            );
        }
    }
    session.close().await.unwrap();

    let before: BTreeMap<String, Queued> = queued_rows(&db)
        .await
        .into_iter()
        .map(|r| (r.to_email.clone(), r))
        .collect();
    let tally = app(settings(&db, Some(&smtp.url()), None, &[]))
        .drain()
        .await
        .unwrap();
    let after: Vec<Queued> = queued_rows(&db).await;
    let by: BTreeMap<&str, &Queued> = after.iter().map(|r| (r.to_email.as_str(), r)).collect();
    assert_eq!(
        by.len(),
        after.len(),
        "one row per address in the guide: {after:#?}"
    );

    let sent = [
        "maya@example.com",
        "jordan@example.com",
        "sam@example.com",
        "berlin-session@example.com",
    ];
    let failed = [
        ("typo@example.com", "did the template's name match no row?"),
        (
            "locale-string@example.com",
            "the row cannot be sent as stored: metadata must be a JSON object, got a string",
        ),
    ];
    let scheduled = [
        "reminder@example.com",
        "berlin-scheduled@example.com",
        "open-day@example.com",
    ];
    let expected: BTreeSet<&str> = sent
        .iter()
        .copied()
        .chain(failed.iter().map(|(a, _)| *a))
        .chain(scheduled.iter().copied())
        .collect();
    assert_eq!(
        by.keys().copied().collect::<BTreeSet<_>>(),
        expected,
        "the rows the guide inserts (update this test with the guide)"
    );

    for to in sent {
        assert_eq!(by[to].status, "sent", "{:#?}", by[to]);
    }
    for (to, reason) in failed {
        let r = by[to];
        assert_eq!(r.status, "failed", "{r:#?}");
        assert!(
            r.failure_reason.as_deref().unwrap_or("").contains(reason),
            "{r:#?}"
        );
    }
    for to in scheduled {
        assert_eq!(by[to].status, "queued", "{:#?}", by[to]);
    }
    assert_eq!(tally.total(), 6, "{tally}");
    assert_eq!(smtp.message_count(), 4);

    // The template row was rendered and what was sent written back.
    assert!(!by["sam@example.com"].subject.is_empty());
    let cc = smtp
        .messages()
        .into_iter()
        .find(|m| m.rcpt_to.iter().any(|r| r == "jordan@example.com"))
        .expect("jordan's email");
    assert!(cc.rcpt_to.iter().any(|r| r == "partner@example.com"));
    assert!(cc.rcpt_to.iter().any(|r| r == "records@adoptdontshop.com"));

    // Times: every row's created_at is UTC, also the two the guide writes from a Berlin
    // session with created_at defaulted (the worker's trigger, migration 0023); the second's
    // scheduled_for, written with the UTC clock, is right.
    for r in before.values() {
        assert!(created_now(r), "created_at not in UTC: {r:#?}");
    }
    assert!(due_in_an_hour(by["reminder@example.com"]));
    assert!(
        due_in_an_hour(by["berlin-scheduled@example.com"]),
        "scheduled in UTC from a Berlin session: {:#?}",
        by["berlin-scheduled@example.com"]
    );
    assert_eq!(
        by["open-day@example.com"].scheduled_for,
        Some(NaiveDateTime::parse_from_str("2030-03-14 08:00:00", "%Y-%m-%d %H:%M:%S").unwrap()),
        "09:00 in Berlin is 08:00 UTC"
    );
}

/// Runs `examples/integrating/run <lang>`: the ids it printed, or `None` when it skipped
/// the language (interpreter missing).
async fn run_example(db: &TestDb, lang: &str) -> Option<BTreeMap<String, uuid::Uuid>> {
    let out = tokio::process::Command::new("bash")
        .arg(repo_file("examples/integrating/run"))
        .arg(lang)
        .env("DATABASE_URL", &db.url)
        // The machine and the session are not in UTC: the examples must not care.
        .env("TZ", "Asia/Tokyo")
        .env("PGTZ", "America/Chicago")
        .env("PGOPTIONS", "-c TimeZone=Europe/Berlin")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "examples/integrating/run {lang} failed:\n{stdout}\n{stderr}"
    );
    if let Some(note) = stderr.lines().find(|l| l.starts_with("SKIPPED")) {
        eprintln!("{note}");
        return None;
    }
    let last = stdout.lines().last().unwrap_or_default();
    let ids: BTreeMap<String, uuid::Uuid> = serde_json::from_str(last).unwrap_or_else(|e| {
        panic!("the {lang} example's last line is not its ids ({e}):\n{stdout}\n{stderr}")
    });
    Some(ids)
}

#[tokio::test]
async fn the_python_and_node_examples_write_utc_rows_that_drain_sends() {
    let db = guide_db("America/New_York").await;
    let mut ran = BTreeMap::new();
    for lang in ["python", "node"] {
        if let Some(ids) = run_example(&db, lang).await {
            ran.insert(lang, ids);
        }
    }
    if ran.is_empty() {
        eprintln!("SKIPPED the integrating examples: neither python3 nor node is installed");
        return;
    }
    let before: BTreeMap<uuid::Uuid, Queued> = queued_rows(&db)
        .await
        .into_iter()
        .map(|r| (r.email_id, r))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    app(settings(&db, None, Some(dir.path()), &[]))
        .drain()
        .await
        .unwrap();
    let after: BTreeMap<uuid::Uuid, Queued> = queued_rows(&db)
        .await
        .into_iter()
        .map(|r| (r.email_id, r))
        .collect();
    assert_eq!(after.len(), 4 * ran.len(), "{after:#?}");
    for (lang, ids) in &ran {
        let labels: BTreeSet<&str> = ids.keys().map(String::as_str).collect();
        assert_eq!(
            labels,
            BTreeSet::from(["rendered", "template", "scheduled", "lists"]),
            "{lang}"
        );
        for (label, id) in ids {
            let (was, now) = (&before[id], &after[id]);
            assert!(
                created_now(was),
                "{lang} {label}: created_at not UTC: {was:#?}"
            );
            if label == "scheduled" {
                assert!(due_in_an_hour(now), "{lang} {label}: {now:#?}");
                assert_eq!(now.status, "queued", "{lang} {label}");
            } else {
                assert_eq!(now.scheduled_for, None, "{lang} {label}");
                assert_eq!(now.status, "sent", "{lang} {label}: {now:#?}");
                let eml = dir.path().join(format!("{id}.eml"));
                assert!(eml.exists(), "{lang} {label}: no {}", eml.display());
            }
        }
        // The template row went out rendered.
        assert!(!after[&ids["template"]].subject.is_empty(), "{lang}");
    }
}

#[test]
fn the_guide_s_python_and_js_snippets_are_excerpts_of_the_runnable_examples() {
    let guide = guide();
    let trimmed = |text: &str| -> Vec<String> {
        text.lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect()
    };
    for (lang, file) in [
        ("python", "examples/integrating/python/enqueue.py"),
        ("js", "examples/integrating/node/enqueue.mjs"),
    ] {
        let source = trimmed(&std::fs::read_to_string(repo_file(file)).unwrap());
        let snippets = blocks(&guide, lang);
        assert!(!snippets.is_empty(), "no ```{lang} block in the guide");
        for snippet in snippets {
            let lines = trimmed(&snippet);
            assert!(
                source.windows(lines.len()).any(|w| w == lines.as_slice()),
                "this ```{lang} block of docs/integrating.md is not in {file}:\n{snippet}"
            );
        }
    }
}

/// The anchors GitHub gives a Markdown file's headings: lower case, punctuation dropped,
/// spaces as hyphens.
fn heading_anchors(markdown: &str) -> Vec<String> {
    let mut in_code = false;
    markdown
        .lines()
        .filter(|l| {
            if l.starts_with("```") {
                in_code = !in_code;
            }
            !in_code && l.starts_with('#')
        })
        .map(|l| {
            l.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
                .map(|c| if c == ' ' { '-' } else { c })
                .collect()
        })
        .collect()
}

#[test]
fn readme_and_docs_link_only_to_files_that_exist() {
    let mut checked = 0;
    let mut docs = vec!["README.md".to_string()];
    for e in std::fs::read_dir(repo_file("docs")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".md") {
            docs.push(format!("docs/{name}"));
        }
    }
    for doc in &docs {
        let text = std::fs::read_to_string(repo_file(doc)).unwrap();
        let base = repo_file(doc).parent().unwrap().to_path_buf();
        for (at, _) in text.match_indices("](") {
            let Some(target) = text[at + 2..].split(')').next() else {
                continue;
            };
            let (path, fragment) = target.split_once('#').unwrap_or((target, ""));
            if path.contains("://") || path.contains(' ') || target.starts_with("mailto:") {
                continue;
            }
            let file = if path.is_empty() {
                repo_file(doc)
            } else {
                base.join(path)
            };
            assert!(
                file.exists(),
                "{doc} links to {target}, which does not exist"
            );
            if !fragment.is_empty() {
                let anchors = heading_anchors(&std::fs::read_to_string(&file).unwrap());
                assert!(
                    anchors.iter().any(|a| a == fragment),
                    "{doc} links to {target}: no such heading in {}",
                    file.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 5, "{checked} links checked");
    let readme = std::fs::read_to_string(repo_file("README.md")).unwrap();
    assert!(readme.contains("](docs/integrating.md)"));
}
