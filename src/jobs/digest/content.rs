//! What one digest says: the sections of `notification_digest`, read from the seed's
//! tables for one user and one window (research §8), shaped as the template's variables.

use chrono::NaiveDateTime;
use chrono_tz::Tz;
use serde_json::{Map, Value, json};
use sqlx::PgConnection;
use tracing::info;
use uuid::Uuid;

use super::super::support::{application_status_label, format_datetime, link, pet_status_label};
use crate::queue::HeldEmail;

/// Characters of a message preview or summary, before the ellipsis.
const PREVIEW_CHARS: usize = 140;

/// The window and the user the sections are for.
pub(super) struct Window<'a> {
    pub user_id: Uuid,
    pub start: NaiveDateTime,
    pub end: NaiveDateTime,
    pub zone: Tz,
    pub base_url: &'a str,
}

/// A held notification as the template lists it.
pub(super) fn held_item(held: &HeldEmail, w: &Window<'_>) -> Value {
    let str_field = |v: Option<&Value>, key: &str| {
        v.and_then(|v| v.get(key))
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let data = held.template_data.as_ref();
    let subject = Some(held.subject.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| str_field(data, "subject"))
        .or_else(|| held.template_description.clone())
        .unwrap_or_else(|| "Notification".to_string());
    let summary = held
        .text_content
        .as_deref()
        .filter(|t| !t.trim().is_empty())
        .map(|t| preview(t, "plain"))
        .or_else(|| {
            Some(held.html_content.as_str())
                .filter(|h| !h.trim().is_empty())
                .map(|h| preview(h, "html"))
        })
        .or_else(|| str_field(data, "summary").map(|s| preview(&s, "plain")))
        .filter(|s| !s.is_empty() && *s != subject);
    let url = str_field(held.metadata.as_ref(), "url")
        .or_else(|| str_field(data, "url"))
        .filter(|u| u.starts_with("https://") || u.starts_with("http://"));
    let mut item = Map::new();
    item.insert("subject".into(), json!(subject));
    if let Some(s) = summary {
        item.insert("summary".into(), json!(s));
    }
    if let Some(u) = url {
        item.insert("url".into(), json!(u));
    }
    if let Some(at) = held.created_at {
        item.insert("created_at".into(), json!(format_datetime(at, w.zone)));
    }
    Value::Object(item)
}

#[derive(sqlx::FromRow)]
struct UnreadChat {
    chat_id: Uuid,
    rescue_name: String,
    unread: i64,
    last_message_at: NaiveDateTime,
    content: String,
    content_format: Option<String>,
    sender_name: String,
}

/// Chats with messages from others since the later of the user's `last_read_at` and the
/// window start, one entry per chat, latest first.
pub(super) async fn unread_chats(
    conn: &mut PgConnection,
    w: &Window<'_>,
) -> Result<Vec<Value>, sqlx::Error> {
    let rows: Vec<UnreadChat> = sqlx::query_as(
        "SELECT cp.chat_id, r.name AS rescue_name, agg.unread, agg.last_message_at,
                lm.content, lm.content_format::text AS content_format, su.first_name AS sender_name
         FROM chat_participants cp
         JOIN chats c ON c.chat_id = cp.chat_id AND c.status <> 'archived'
         JOIN rescues r ON r.rescue_id = c.rescue_id
         CROSS JOIN LATERAL (
             SELECT count(*) AS unread, max(m.created_at) AS last_message_at
             FROM messages m
             WHERE m.chat_id = cp.chat_id AND m.sender_id <> cp.participant_id
               AND m.created_at > GREATEST(cp.last_read_at, $2) AND m.created_at <= $3
         ) agg
         CROSS JOIN LATERAL (
             SELECT m.content, m.content_format, m.sender_id
             FROM messages m
             WHERE m.chat_id = cp.chat_id AND m.sender_id <> cp.participant_id
               AND m.created_at > GREATEST(cp.last_read_at, $2) AND m.created_at <= $3
             ORDER BY m.created_at DESC LIMIT 1
         ) lm
         JOIN users su ON su.user_id = lm.sender_id
         WHERE cp.participant_id = $1 AND agg.unread > 0
         ORDER BY agg.last_message_at DESC",
    )
    .bind(w.user_id)
    .bind(w.start)
    .bind(w.end)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|c| {
            json!({
                "sender_name": c.sender_name,
                "rescue_name": c.rescue_name,
                "count": c.unread,
                "preview": preview(&c.content, c.content_format.as_deref().unwrap_or("plain")),
                "chat_url": link(w.base_url, &format!("chats/{}", c.chat_id)),
                "last_message_at": format_datetime(c.last_message_at, w.zone),
            })
        })
        .collect())
}

#[derive(sqlx::FromRow)]
struct ApplicationChange {
    application_id: Uuid,
    status: String,
    updated_at: NaiveDateTime,
    pet_name: String,
    pet_deleted: bool,
    rescue_name: String,
}

/// The user's applications changed in the window (there is no status history: the current
/// status is shown). Drafts are left out; an application whose pet was deleted is skipped.
pub(super) async fn application_updates(
    conn: &mut PgConnection,
    w: &Window<'_>,
) -> Result<Vec<Value>, sqlx::Error> {
    let rows: Vec<ApplicationChange> = sqlx::query_as(
        "SELECT a.application_id, a.status::text AS status, a.updated_at, p.name AS pet_name,
                (p.deleted_at IS NOT NULL) AS pet_deleted, r.name AS rescue_name
         FROM applications a
         JOIN pets p ON p.pet_id = a.pet_id
         JOIN rescues r ON r.rescue_id = a.rescue_id
         WHERE a.user_id = $1 AND a.deleted_at IS NULL AND a.status <> 'draft'
           AND a.updated_at > $2 AND a.updated_at <= $3
         ORDER BY a.updated_at DESC",
    )
    .bind(w.user_id)
    .bind(w.start)
    .bind(w.end)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .filter(|a| {
            if a.pet_deleted {
                info!(application_id = %a.application_id, "digest: application's pet was deleted; left out");
            }
            !a.pet_deleted
        })
        .map(|a| {
            json!({
                "pet_name": a.pet_name,
                "rescue_name": a.rescue_name,
                "status_label": application_status_label(&a.status),
                "status": a.status,
                "updated_at": format_datetime(a.updated_at, w.zone),
                "url": link(w.base_url, &format!("applications/{}", a.application_id)),
            })
        })
        .collect())
}

/// Favourited pets whose status changed in the window to something other than available.
pub(super) async fn favourite_changes(
    conn: &mut PgConnection,
    w: &Window<'_>,
) -> Result<Vec<Value>, sqlx::Error> {
    let rows: Vec<(Uuid, String, String)> = sqlx::query_as(
        "SELECT p.pet_id, p.name, p.status::text
         FROM user_favorites uf
         JOIN pets p ON p.pet_id = uf.pet_id
         WHERE uf.user_id = $1 AND p.deleted_at IS NULL AND p.status <> 'AVAILABLE'
           AND p.updated_at > $2 AND p.updated_at <= $3
         ORDER BY p.updated_at DESC",
    )
    .bind(w.user_id)
    .bind(w.start)
    .bind(w.end)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(pet_id, name, status)| {
            json!({
                "pet_name": name,
                "status_label": pet_status_label(&status),
                "url": link(w.base_url, &format!("pets/{pet_id}")),
            })
        })
        .collect())
}

/// A safe one-line preview: plain text (markdown and HTML stripped), whitespace collapsed,
/// cut at [`PREVIEW_CHARS`] characters with an ellipsis. The template escapes it again.
pub(super) fn preview(content: &str, format: &str) -> String {
    let text = match format {
        "html" => html_to_text(content),
        "markdown" => html_to_text(&strip_markdown(content)),
        _ => content.to_string(),
    };
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= PREVIEW_CHARS {
        return flat;
    }
    let cut: String = flat.chars().take(PREVIEW_CHARS).collect();
    let cut = match cut.rfind(' ') {
        Some(i) if i > PREVIEW_CHARS / 2 => &cut[..i],
        _ => cut.as_str(),
    };
    format!("{}…", cut.trim_end_matches([',', '.', ';', ':', ' ']))
}

/// The words of HTML content, without link URLs (the preview is one line).
fn html_to_text(html: &str) -> String {
    crate::delivery::message::html_to_words(html)
}

/// Markdown to its words: `[text](url)` and `![alt](url)` become their text; emphasis,
/// code, heading, quote and list markers go.
fn strip_markdown(md: &str) -> String {
    let mut out = String::with_capacity(md.len());
    for line in md.lines() {
        let line = line.trim_start();
        let line = line.trim_start_matches(['#', '>']).trim_start();
        let line = ["- ", "* ", "+ "]
            .iter()
            .find_map(|m| line.strip_prefix(m))
            .unwrap_or(line);
        out.push_str(&strip_links(line));
        out.push('\n');
    }
    out.chars()
        .filter(|c| !matches!(c, '*' | '_' | '`' | '~'))
        .collect()
}

fn strip_links(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(open) = rest.find('[') {
        let Some(close) = rest[open..].find("](").map(|i| open + i) else {
            break;
        };
        let Some(end) = rest[close..].find(')').map(|i| close + i) else {
            break;
        };
        let before = rest[..open].strip_suffix('!').unwrap_or(&rest[..open]);
        out.push_str(before);
        out.push_str(&rest[open + 1..close]);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previews_are_plain_short_and_stripped() {
        assert_eq!(preview("  Hi\n\nthere  ", "plain"), "Hi there");
        assert_eq!(
            preview(
                "<p>Hello <b>Maya</b> <a href=\"https://x\">see</a><script>alert(1)</script></p>",
                "html"
            ),
            "Hello Maya see"
        );
        assert_eq!(
            preview(
                "# Visit\n**Saturday** at _10_, see [the map](https://m) ![pic](p.png)",
                "markdown"
            ),
            "Visit Saturday at 10, see the map pic"
        );
        let long = "word ".repeat(100);
        let p = preview(&long, "plain");
        assert!(
            p.ends_with('…') && p.chars().count() <= PREVIEW_CHARS + 1,
            "{p}"
        );
        let plain_tags = preview("<b>not html</b>", "plain");
        assert_eq!(
            plain_tags, "<b>not html</b>",
            "plain text is kept; the template escapes it"
        );
    }
}
