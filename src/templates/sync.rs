//! `templates sync`: upserts the checked templates of the directory into `email_templates`,
//! by name, in one transaction.
//!
//! - New name: inserted at version 1.
//! - Same fields as the files: untouched (not even `updated_at`).
//! - Changed subject, HTML, text or variables: the previous content is appended to
//!   `versions` and `current_version` goes up; other attributes alone change in place.
//! - Edited in the database since the last sync (the row's fields no longer hash to
//!   `metadata.sync.source_hash` at `metadata.sync.synced_version`), or never written by
//!   sync: skipped, with the reason and what `--force` would overwrite, unless forced.
//! - Soft-deleted by an admin (`deleted_at`): skipped, and nothing is created in its place,
//!   unless its name is given to `--force`, which restores it (same row, history kept).

use std::fmt;

use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use super::SyncError;
use super::files::TemplateFile;
use super::store::{self, StoredTemplate, TemplateWrite};

/// Which templates `--force` overwrites.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Force {
    #[default]
    None,
    /// `--force` alone: every live template; deleted ones stay deleted.
    All,
    /// `--force NAME...`: only these, restoring any of them that was deleted.
    Names(Vec<String>),
}

impl Force {
    fn overwrites(&self, name: &str) -> bool {
        match self {
            Force::None => false,
            Force::All => true,
            Force::Names(n) => n.iter().any(|n| n == name),
        }
    }

    fn restores(&self, name: &str) -> bool {
        matches!(self, Force::Names(n) if n.iter().any(|n| n == name))
    }
}

/// What sync did with one template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncOutcome {
    Created,
    NewVersion {
        from: i32,
        to: i32,
    },
    /// Attributes (status, tags, ...) changed; the content and its version did not.
    AttributesUpdated {
        version: i32,
    },
    Unchanged {
        version: i32,
    },
    Skipped {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncEntry {
    pub name: String,
    pub outcome: SyncOutcome,
}

impl fmt::Display for SyncEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = &self.name;
        match &self.outcome {
            SyncOutcome::Created => write!(f, "created {n} (v1)"),
            SyncOutcome::NewVersion { from, to } => write!(f, "updated {n}: v{from} -> v{to}"),
            SyncOutcome::AttributesUpdated { version } => {
                write!(f, "updated {n}: attributes only (still v{version})")
            }
            SyncOutcome::Unchanged { version } => write!(f, "unchanged {n} (v{version})"),
            SyncOutcome::Skipped { reason } => write!(f, "skipped {n}: {reason}"),
        }
    }
}

/// Every template's outcome, in the order they were synced (parents first).
#[derive(Debug, Clone, Default)]
pub struct SyncReport {
    pub entries: Vec<SyncEntry>,
    /// Things an operator should look at (a directory that looks renamed).
    pub notes: Vec<String>,
}

impl SyncReport {
    pub fn count(&self, pred: impl Fn(&SyncOutcome) -> bool) -> usize {
        self.entries.iter().filter(|e| pred(&e.outcome)).count()
    }

    pub fn skipped(&self) -> usize {
        self.count(|o| matches!(o, SyncOutcome::Skipped { .. }))
    }
}

impl fmt::Display for SyncReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} created, {} new version(s), {} attribute update(s), {} unchanged, {} skipped",
            self.count(|o| matches!(o, SyncOutcome::Created)),
            self.count(|o| matches!(o, SyncOutcome::NewVersion { .. })),
            self.count(|o| matches!(o, SyncOutcome::AttributesUpdated { .. })),
            self.count(|o| matches!(o, SyncOutcome::Unchanged { .. })),
            self.skipped(),
        )
    }
}

/// The fields sync owns, in a fixed shape: compared field by field, and hashed (over a
/// canonical JSON form) into `metadata.sync.source_hash`.
#[derive(Debug, Serialize)]
struct Fields<'a> {
    subject: &'a str,
    html_content: &'a str,
    text_content: Option<&'a str>,
    variables: Value,
    description: Option<&'a str>,
    #[serde(rename = "type")]
    template_type: &'a str,
    category: &'a str,
    status: &'a str,
    locale: &'a str,
    parent: Option<&'a str>,
    is_default: bool,
    priority: i32,
    tags: &'a [String],
}

/// The fields whose change makes a new version.
const CONTENT_FIELDS: [&str; 4] = ["subject", "html_content", "text_content", "variables"];

impl<'a> Fields<'a> {
    fn of_file(t: &'a TemplateFile) -> Fields<'a> {
        Fields {
            subject: &t.subject,
            html_content: &t.html,
            text_content: t.text.as_deref(),
            variables: serde_json::to_value(&t.variables).unwrap_or(Value::Null),
            description: t.description.as_deref(),
            template_type: &t.template_type,
            category: &t.category,
            status: &t.status,
            locale: &t.locale,
            parent: t.parent.as_deref(),
            is_default: t.is_default,
            priority: t.priority,
            tags: &t.tags,
        }
    }

    fn of_row(r: &'a StoredTemplate) -> Fields<'a> {
        Fields {
            subject: &r.subject,
            html_content: &r.html_content,
            text_content: r.text_content.as_deref(),
            variables: r.variables.clone().unwrap_or_else(|| json!([])),
            description: r.description.as_deref(),
            template_type: &r.template_type,
            category: &r.category,
            status: &r.status,
            locale: r.locale.as_deref().unwrap_or(""),
            parent: r.parent_name.as_deref(),
            is_default: r.is_default.unwrap_or(false),
            priority: r.priority.unwrap_or(0),
            tags: r.tags.as_deref().unwrap_or(&[]),
        }
    }

    fn to_map(&self) -> serde_json::Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        }
    }

    fn hash(&self) -> String {
        let mut canonical = String::new();
        write_canonical(&Value::Object(self.to_map()), &mut canonical);
        let digest = Sha256::digest(canonical.as_bytes());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// JSON with object keys sorted at every level, so equal values hash equally however they
/// were stored (jsonb reorders keys).
fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&m[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// What to do with one template, decided before anything is written.
#[derive(Debug, PartialEq, Eq)]
enum Plan {
    Create,
    Unchanged {
        version: i32,
    },
    Update {
        id: uuid::Uuid,
        from: i32,
        new_version: bool,
        old_notes: String,
    },
    Skip(String),
}

fn plan(file: &Fields<'_>, row: Option<&StoredTemplate>, force: bool) -> Plan {
    let Some(row) = row else {
        return Plan::Create;
    };
    let stored = Fields::of_row(row);
    let (want, have) = (file.to_map(), stored.to_map());
    let differing: Vec<&str> = want
        .iter()
        .filter(|(k, v)| have.get(*k) != Some(*v))
        .map(|(k, _)| k.as_str())
        .collect();
    if row.deleted {
        // Only reached when the name was forced: restore it, a new version if content differs.
        return Plan::Update {
            id: row.template_id,
            from: row.current_version,
            new_version: differing.iter().any(|f| CONTENT_FIELDS.contains(f)),
            old_notes: "deleted in the database; restored by templates sync --force".to_string(),
        };
    }
    if differing.is_empty() {
        return Plan::Unchanged {
            version: row.current_version,
        };
    }
    let sync = row
        .metadata
        .as_ref()
        .and_then(|m| m.get("sync"))
        .filter(|s| s.is_object());
    let stored_hash = stored.hash();
    let as_last_synced = sync.is_some_and(|s| {
        s.get("source_hash").and_then(Value::as_str) == Some(stored_hash.as_str())
            && s.get("synced_version").and_then(Value::as_i64)
                == Some(i64::from(row.current_version))
    });
    if !as_last_synced && !force {
        let why = if sync.is_none() {
            "it was not written by templates sync (no metadata.sync)"
        } else {
            "it was edited in the database since the last sync"
        };
        let content_differs = differing.iter().any(|f| CONTENT_FIELDS.contains(f));
        let kept = if content_differs {
            "its current content is kept in versions".to_string()
        } else {
            // Attribute changes make no version: say what would be lost.
            let old: Vec<String> = differing
                .iter()
                .map(|k| format!("{k} = {}", have.get(*k).unwrap_or(&Value::Null)))
                .collect();
            format!(
                "attributes keep no copy in versions; now {}",
                old.join(", ")
            )
        };
        return Plan::Skip(format!(
            "{why}; it differs from the files in {}; use --force {} to overwrite them ({kept})",
            differing.join(", "),
            row.name
        ));
    }
    let new_version = differing.iter().any(|f| CONTENT_FIELDS.contains(f));
    let old_notes = if as_last_synced {
        format!("templates sync (source sha256 {})", &stored_hash[..12])
    } else {
        "edited in the database; replaced by templates sync --force".to_string()
    };
    Plan::Update {
        id: row.template_id,
        from: row.current_version,
        new_version,
        old_notes,
    }
}

/// Syncs the (already checked) templates in one transaction.
pub async fn sync_templates(
    pool: &PgPool,
    templates: &[TemplateFile],
    force: &Force,
) -> Result<SyncReport, SyncError> {
    let mut tx = pool.begin().await?;
    store::lock_for_sync(&mut tx).await?;
    store::ensure_system_user(&mut tx).await?;
    let names: Vec<String> = templates.iter().map(|t| t.name.clone()).collect();
    let rows = store::rows_for_sync(&mut tx, &names).await?;
    let others = store::live_rows_except(&mut tx, &names).await?;
    let taken: Vec<String> = templates
        .iter()
        .filter(|t| t.is_default && t.status == "active")
        .filter_map(|t| {
            let other = others.iter().find(|o| {
                o.is_default && o.category == t.category && o.locale.eq_ignore_ascii_case(&t.locale)
            })?;
            Some(format!(
                "{}: is_default = true, but {:?} (not in this directory: was the directory renamed?) is already the active default of category {} in locale {}; set is_default = false on one of them, or delete or deactivate {:?}",
                t.path(super::files::MANIFEST).display(),
                other.name,
                t.category,
                t.locale,
                other.name
            ))
        })
        .collect();
    if !taken.is_empty() {
        return Err(SyncError::DefaultTaken(taken.join("\n")));
    }
    let mut report = SyncReport::default();
    let mut deleted_parents: Vec<String> = Vec::new();
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for t in templates {
        let row = rows.iter().find(|r| r.name.eq_ignore_ascii_case(&t.name));
        // A parent left deleted leaves its variants skipped too: written now, they would lose
        // their parent (and read as edited at the next sync).
        if let Some(parent) = t
            .parent
            .as_deref()
            .filter(|p| deleted_parents.iter().any(|d| d.eq_ignore_ascii_case(p)))
        {
            report.entries.push(SyncEntry {
                name: t.name.clone(),
                outcome: SyncOutcome::Skipped {
                    reason: format!(
                        "its parent {parent} is deleted in the database and was skipped; restore it with --force {parent}, or remove parent from template.toml"
                    ),
                },
            });
            deleted_parents.push(t.name.clone());
            continue;
        }
        if let Some(r) = row.filter(|r| r.deleted && !force.restores(&t.name)) {
            deleted_parents.push(t.name.clone());
            report.entries.push(SyncEntry {
                name: t.name.clone(),
                outcome: SyncOutcome::Skipped {
                    reason: format!(
                        "it was deleted in the database (deleted_at is set); sync does not bring it back; use --force {} to restore it (same row, history and usage kept)",
                        r.name
                    ),
                },
            });
            continue;
        }
        let fields = Fields::of_file(t);
        let write = TemplateWrite {
            name: &t.name,
            description: t.description.as_deref(),
            template_type: &t.template_type,
            category: &t.category,
            status: &t.status,
            subject: &t.subject,
            html_content: &t.html,
            text_content: t.text.as_deref(),
            variables: fields.variables.clone(),
            locale: &t.locale,
            parent: t.parent.as_deref(),
            is_default: t.is_default,
            priority: t.priority,
            tags: &t.tags,
        };
        let sync_meta = |version: i32| {
            json!({
                "source_hash": fields.hash(),
                "synced_version": version,
                "synced_at": now,
                "source": t.dir.display().to_string(),
            })
        };
        let outcome = match plan(&fields, row, force.overwrites(&t.name)) {
            Plan::Create => {
                store::insert_template(&mut tx, &write, &sync_meta(1)).await?;
                let digest = Sha256::digest(format!("{}\u{1f}{}", t.subject, t.html));
                let hash: String = digest.iter().map(|b| format!("{b:02x}")).collect();
                if let Some(old) = others.iter().find(|o| o.content_sha256 == hash) {
                    report.notes.push(format!(
                        "{} is new, but {:?} has the same subject and HTML and is not in this directory: if the directory was renamed, {:?} is still active (delete it or set its status to inactive)",
                        t.name, old.name, old.name
                    ));
                }
                SyncOutcome::Created
            }
            Plan::Unchanged { version } => SyncOutcome::Unchanged { version },
            Plan::Skip(reason) => SyncOutcome::Skipped { reason },
            Plan::Update {
                id,
                from,
                new_version,
                old_notes,
            } => {
                let to = if new_version { from + 1 } else { from };
                store::update_template(
                    &mut tx,
                    id,
                    &write,
                    new_version,
                    &old_notes,
                    &sync_meta(to),
                )
                .await?;
                if new_version {
                    SyncOutcome::NewVersion { from, to }
                } else {
                    SyncOutcome::AttributesUpdated { version: to }
                }
            }
        };
        report.entries.push(SyncEntry {
            name: t.name.clone(),
            outcome,
        });
    }
    tx.commit().await?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> TemplateFile {
        TemplateFile {
            dir: "templates/welcome".into(),
            name: "welcome".into(),
            description: Some("d".into()),
            template_type: "transactional".into(),
            category: "welcome".into(),
            locale: "en-US".into(),
            is_default: true,
            priority: 0,
            tags: vec!["a".into()],
            status: "active".into(),
            parent: None,
            layout: true,
            variables: serde_json::from_value(json!([
                {"name": "user", "type": "object", "required": true, "example": {"first_name": "Maya", "n": 1}}
            ]))
            .unwrap(),
            example_at: Vec::new(),
            subject: "Hi".into(),
            html: "<p>Hi</p>".into(),
            text: None,
        }
    }

    /// The row as the last sync of `f` left it, read back from the database (jsonb reorders keys).
    fn row_of(f: &TemplateFile, version: i32) -> StoredTemplate {
        let fields = Fields::of_file(f);
        let mut variables = serde_json::to_string(&fields.variables).unwrap();
        variables = variables.replace(r#"{"name":"user","type":"object","required":true,"example":{"first_name":"Maya","n":1}}"#, r#"{"example":{"n":1,"first_name":"Maya"},"name":"user","required":true,"type":"object"}"#);
        StoredTemplate {
            template_id: uuid::Uuid::nil(),
            name: f.name.clone(),
            description: f.description.clone(),
            template_type: f.template_type.clone(),
            category: f.category.clone(),
            status: f.status.clone(),
            subject: f.subject.clone(),
            html_content: f.html.clone(),
            text_content: f.text.clone(),
            variables: Some(serde_json::from_str(&variables).unwrap()),
            metadata: Some(
                json!({"sync": {"source_hash": fields.hash(), "synced_version": version}, "other": 1}),
            ),
            locale: Some(f.locale.clone()),
            parent_name: None,
            current_version: version,
            is_default: Some(f.is_default),
            priority: Some(f.priority),
            tags: Some(f.tags.clone()),
            deleted: false,
        }
    }

    #[test]
    fn hash_ignores_key_order() {
        let f = file();
        let r = row_of(&f, 1);
        assert_eq!(Fields::of_file(&f).hash(), Fields::of_row(&r).hash());
    }

    #[test]
    fn new_and_unchanged() {
        let f = file();
        assert_eq!(plan(&Fields::of_file(&f), None, false), Plan::Create);
        assert_eq!(
            plan(&Fields::of_file(&f), Some(&row_of(&f, 3)), false),
            Plan::Unchanged { version: 3 }
        );
    }

    #[test]
    fn changed_content_makes_a_new_version_and_attributes_do_not() {
        let old = file();
        let row = row_of(&old, 1);
        let mut f = file();
        f.html = "<p>Hello</p>".into();
        assert!(matches!(
            plan(&Fields::of_file(&f), Some(&row), false),
            Plan::Update {
                new_version: true,
                ..
            }
        ));
        let mut f = file();
        f.tags = vec!["b".into()];
        assert!(matches!(
            plan(&Fields::of_file(&f), Some(&row), false),
            Plan::Update {
                new_version: false,
                ..
            }
        ));
    }

    #[test]
    fn admin_edits_are_skipped_unless_forced() {
        let f = file();
        let mut row = row_of(&f, 2);
        row.html_content = "<p>Edited by an admin</p>".into();
        let mut newer = file();
        newer.subject = "Hello".into();
        match plan(&Fields::of_file(&newer), Some(&row), false) {
            Plan::Skip(reason) => {
                assert!(reason.contains("edited in the database"), "{reason}");
                assert!(
                    reason.contains("html_content") && reason.contains("subject"),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            plan(&Fields::of_file(&newer), Some(&row), true),
            Plan::Update {
                new_version: true,
                ..
            }
        ));
        // A version bump without a sync also counts as an edit.
        let mut row = row_of(&f, 2);
        row.current_version = 3;
        assert!(matches!(
            plan(&Fields::of_file(&newer), Some(&row), false),
            Plan::Skip(_)
        ));
        // Never synced.
        let mut row = row_of(&f, 1);
        row.metadata = Some(json!({}));
        match plan(&Fields::of_file(&newer), Some(&row), false) {
            Plan::Skip(reason) => {
                assert!(reason.contains("not written by templates sync"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }
}
