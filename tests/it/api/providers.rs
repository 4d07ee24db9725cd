//! The provider webhooks (docs/bounces.md "Bounces and complaints"): Amazon SES through SNS, SendGrid,
//! Postmark and Mailgun, each with the payload shapes its provider documents, signed in the
//! test with keys made for it, over real HTTP against a real database.

mod mailgun;
mod postmark;
mod sendgrid;
mod ses;

pub use super::*;

/// The Message-ID the worker sets on an email (`<email_id@sender domain>`).
pub fn message_id(id: Uuid) -> String {
    format!("<{id}@adoptdontshop.com>")
}

/// A row the provider accepted: `sent`, its `provider_message_id` as the relay's reply gave
/// it. `email_type` decides its preference category.
pub async fn sent_row(
    api: &Api,
    to: &str,
    email_type: &'static str,
    provider_message_id: Option<&str>,
) -> Uuid {
    let mut e = NewEmail::to(to);
    e.email_type = email_type;
    let id = e.insert(&api.db.pool).await;
    sqlx::query(
        "UPDATE email_queue SET status = 'sent', sent_at = now(),
             provider_message_id = COALESCE($2, '<' || email_id || '@adoptdontshop.com>')
         WHERE email_id = $1",
    )
    .bind(id)
    .bind(provider_message_id)
    .execute(&api.db.pool)
    .await
    .unwrap();
    id
}

/// A user's bookkeeping: blacklisted, why, bounce count, unsubscribed from everything, and
/// the categories turned off.
#[derive(Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Prefs {
    pub blacklisted: bool,
    pub reason: Option<String>,
    pub bounces: i32,
    pub global_unsubscribe: bool,
    pub categories_off: Vec<String>,
}

pub async fn prefs(api: &Api, user: Uuid) -> Option<Prefs> {
    sqlx::query_as(
        "SELECT COALESCE(is_blacklisted, false) AS blacklisted, blacklist_reason AS reason,
                COALESCE(bounce_count, 0) AS bounces,
                COALESCE(global_unsubscribe, false) AS global_unsubscribe,
                ARRAY(SELECT e->>'type' FROM jsonb_array_elements(
                          CASE WHEN jsonb_typeof(preferences) = 'array' THEN preferences
                               ELSE '[]'::jsonb END) e
                      WHERE e->'enabled' = 'false'::jsonb ORDER BY 1) AS categories_off
         FROM email_preferences WHERE user_id = $1",
    )
    .bind(user)
    .fetch_optional(&api.db.pool)
    .await
    .unwrap()
}

/// The outcome of each event of a 200 answer.
pub async fn outcomes(r: reqwest::Response) -> Vec<String> {
    assert_eq!(r.status(), reqwest::StatusCode::OK, "unexpected status");
    let body: Value = r.json().await.unwrap();
    body["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results in {body}"))
        .iter()
        .map(|r| r["outcome"].as_str().unwrap().to_string())
        .collect()
}

/// A provider counter of `/metrics`, e.g.
/// `adopt_worker_provider_webhooks_refused_total{provider="ses",reason="unauthorized"}`.
pub async fn metric(api: &Api, series: &str) -> f64 {
    let text = api
        .http
        .get(api.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series).map(|v| v.trim().parse().unwrap()))
        .unwrap_or(0.0)
}
