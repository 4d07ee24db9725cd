//! `expire-moderation`: active moderator actions past `expires_at` become inactive. A user
//! suspended or banned by such an action goes from `SUSPENDED` back to `ACTIVE` only when no
//! other active, unexpired suspension or ban remains (research §9 B, decision Q3), and is
//! told by email (`account_reinstated`). Audit rows: `MODERATION_ACTION_EXPIRED` per action,
//! `USER_REINSTATED` per user. `reversed_*` are left alone: they record manual reversals.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::{Value, json};
use sqlx::PgConnection;
use tracing::info;
use uuid::Uuid;

use super::support::{self, AuditEntry, TemplateIds, format_datetime, insert_audit, user_zone};
use super::{Done, JobError, Jobs};
use crate::queue::{self, EmailType, NewEmail};

const TEMPLATE: &str = "account_reinstated";

#[derive(Debug, sqlx::FromRow)]
struct ExpiredAction {
    action_id: Uuid,
    action_type: String,
    target_user_id: Option<Uuid>,
    target_entity_type: String,
    target_entity_id: Uuid,
    moderator_id: Uuid,
    reason: String,
    expires_at: NaiveDateTime,
}

#[derive(Debug, sqlx::FromRow)]
struct Reinstated {
    user_id: Uuid,
    email: String,
    first_name: String,
    last_name: String,
    language: Option<String>,
    timezone: Option<String>,
}

#[derive(Debug, Default)]
struct Tally {
    actions: u64,
    reinstated: u64,
    /// Another suspension or ban still applies, the user was not suspended, or was deleted.
    not_reinstated: u64,
    emails: u64,
    no_template: u64,
}

fn restricts_account(action_type: &str) -> bool {
    matches!(action_type, "user_suspended" | "user_banned")
}

pub(super) async fn run(jobs: &Jobs, now: DateTime<Utc>) -> Result<Done, JobError> {
    let mut t = Tally::default();
    let mut templates = TemplateIds::default();
    let batch = i64::from(jobs.settings().batch_size);
    loop {
        let mut tx = jobs.pool().begin().await?;
        let actions = expire_batch(&mut tx, now.naive_utc(), batch).await?;
        for a in &actions {
            audit_action(&mut tx, a, now).await?;
        }
        let template = templates.get(&mut *tx, TEMPLATE).await?;
        reinstate(&mut tx, jobs, &actions, template, now, &mut t).await?;
        tx.commit().await?;
        t.actions += actions.len() as u64;
        if (actions.len() as i64) < batch {
            break;
        }
    }
    let notes = [
        support::counts(&[
            ("actions_expired", t.actions),
            ("users_reinstated", t.reinstated),
            ("users_not_reinstated", t.not_reinstated),
            ("emails", t.emails),
        ]),
        if t.no_template > 0 {
            format!(
                "template {TEMPLATE} not found: {} email(s) skipped",
                t.no_template
            )
        } else {
            String::new()
        },
    ];
    Ok(Done {
        rows_affected: t.actions + t.reinstated,
        detail: support::detail(notes),
        failed: false,
    })
}

async fn expire_batch(
    conn: &mut PgConnection,
    now: NaiveDateTime,
    limit: i64,
) -> Result<Vec<ExpiredAction>, sqlx::Error> {
    sqlx::query_as(
        "WITH batch AS (
             SELECT action_id FROM moderator_actions
             WHERE COALESCE(is_active, true) AND expires_at IS NOT NULL AND expires_at <= $1
             ORDER BY expires_at, action_id
             LIMIT $2
             FOR UPDATE SKIP LOCKED
         )
         UPDATE moderator_actions m SET is_active = false, updated_at = $1
         FROM batch
         WHERE m.action_id = batch.action_id
           AND COALESCE(m.is_active, true) AND m.expires_at <= $1
         RETURNING m.action_id, m.action_type::text AS action_type, m.target_user_id,
                   m.target_entity_type::text AS target_entity_type, m.target_entity_id,
                   m.moderator_id, m.reason, m.expires_at",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(conn)
    .await
}

async fn audit_action(
    conn: &mut PgConnection,
    a: &ExpiredAction,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    insert_audit(
        conn,
        &AuditEntry {
            user_id: a.target_user_id,
            action: "MODERATION_ACTION_EXPIRED",
            category: "moderation",
            at: now.naive_utc(),
            metadata: json!({
                "actionId": a.action_id,
                "actionType": a.action_type,
                "targetEntityType": a.target_entity_type,
                "targetEntityId": a.target_entity_id,
                "targetUserId": a.target_user_id,
                "moderatorId": a.moderator_id,
                "expiresAt": support::rfc3339(a.expires_at),
            }),
        },
    )
    .await
}

/// Reinstates the suspended users of this batch's suspensions and bans that have no other
/// active, unexpired one; audit row and email for each.
async fn reinstate(
    conn: &mut PgConnection,
    jobs: &Jobs,
    actions: &[ExpiredAction],
    template: Option<Uuid>,
    now: DateTime<Utc>,
    t: &mut Tally,
) -> Result<(), sqlx::Error> {
    // The action each user is told about: their latest-ending suspension or ban here.
    let mut ended: HashMap<Uuid, &ExpiredAction> = HashMap::new();
    for a in actions.iter().filter(|a| restricts_account(&a.action_type)) {
        if let Some(user) = a.target_user_id {
            let e = ended.entry(user).or_insert(a);
            if a.expires_at > e.expires_at {
                *e = a;
            }
        }
    }
    if ended.is_empty() {
        return Ok(());
    }
    let users: Vec<Uuid> = ended.keys().copied().collect();
    let reinstated: Vec<Reinstated> = sqlx::query_as(
        "WITH r AS (
             UPDATE users u SET status = 'ACTIVE', updated_at = $2
             WHERE u.user_id = ANY($1) AND u.status = 'SUSPENDED' AND u.deleted_at IS NULL
               AND NOT EXISTS (
                   SELECT 1 FROM moderator_actions m
                   WHERE m.target_user_id = u.user_id AND COALESCE(m.is_active, true)
                     AND m.action_type IN ('user_suspended', 'user_banned')
                     AND (m.expires_at IS NULL OR m.expires_at > $2))
             RETURNING u.user_id, u.email, u.first_name, u.last_name
         )
         SELECT r.user_id, r.email, r.first_name, r.last_name, ep.language, ep.timezone
         FROM r LEFT JOIN email_preferences ep ON ep.user_id = r.user_id",
    )
    .bind(&users)
    .bind(now.naive_utc())
    .fetch_all(&mut *conn)
    .await?;
    t.not_reinstated += (users.len() - reinstated.len()) as u64;
    for user in &reinstated {
        let Some(action) = ended.get(&user.user_id) else {
            continue;
        };
        t.reinstated += 1;
        let expired_ids: Vec<Uuid> = actions
            .iter()
            .filter(|a| a.target_user_id == Some(user.user_id) && restricts_account(&a.action_type))
            .map(|a| a.action_id)
            .collect();
        insert_audit(
            &mut *conn,
            &AuditEntry {
                user_id: Some(user.user_id),
                action: "USER_REINSTATED",
                category: "moderation",
                at: now.naive_utc(),
                metadata: json!({
                    "previousStatus": "SUSPENDED",
                    "status": "ACTIVE",
                    "expiredActionIds": expired_ids,
                }),
            },
        )
        .await?;
        let Some(template_id) = template else {
            info!(user_id = %user.user_id, "user reinstated; template {TEMPLATE} not found, no email");
            t.no_template += 1;
            continue;
        };
        let app = jobs.app();
        let mut email = NewEmail::from_template(
            &app.from_email,
            Some(&app.from_name),
            &user.email,
            template_id,
            template_data(user, action),
            EmailType::System,
        );
        email.to_name = Some(
            format!("{} {}", user.first_name, user.last_name)
                .trim()
                .to_string(),
        );
        email.user_id = Some(user.user_id);
        email.tags = vec!["account_reinstated".to_string()];
        email.metadata = json!({
            "locale": user.language.as_deref().unwrap_or("en-US"),
            "moderatorActionId": action.action_id,
        });
        queue::enqueue(&mut *conn, &email).await?;
        t.emails += 1;
    }
    Ok(())
}

fn template_data(user: &Reinstated, action: &ExpiredAction) -> Value {
    let zone = user_zone(user.timezone.as_deref()).unwrap_or(chrono_tz::Tz::UTC);
    let label = match action.action_type.as_str() {
        "user_banned" => "Ban",
        _ => "Suspension",
    };
    let mut a = serde_json::Map::new();
    a.insert("type_label".into(), json!(label));
    a.insert(
        "expired_at".into(),
        json!(format_datetime(action.expires_at, zone)),
    );
    if !action.reason.trim().is_empty() {
        a.insert("reason".into(), json!(action.reason));
    }
    json!({
        "user": { "first_name": user.first_name },
        "action": a,
    })
}
