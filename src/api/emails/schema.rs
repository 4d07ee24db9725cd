//! The OpenAPI schema of the enqueue body, written out by hand because the rules of
//! `request::validate` do not fit a derived one: either rendered content or a template
//! (never both), `html` and/or `text` with something in it, `type` required, and the limits of
//! every header-bound field. A body the schema accepts passes `validate` (but for what only
//! the database and the configuration know: a `user_id` that is the recipient, a `from` at an
//! allowed domain, a template, and the template's variables in `data`), and a body it
//! refuses does not.

use utoipa::openapi::schema::RefBuilder;
use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, KnownFormat, Object, ObjectBuilder, OneOfBuilder,
    SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::{Ref, RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

use super::request::{EnqueueRequest, MAX_LIST, NamedRecipient, Recipient};
use crate::queue::{EmailPriority, EmailType};

/// Characters `char::is_control` is true for (Unicode Cc), as a regex class body.
const CONTROL: &str = r"\x00-\x1F\x7F-\x9F";
/// Characters `str::trim` removes (Unicode White_Space) that are not controls.
const SPACE: &str = r" \xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000";
/// Every White_Space character, controls included.
const ANY_SPACE: &str = r"\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000";

/// No control characters.
fn plain() -> String {
    format!("^[^{CONTROL}]*$")
}

/// No control characters, and something besides white space.
fn plain_non_blank() -> String {
    format!("^[^{CONTROL}]*[^{CONTROL}{SPACE}][^{CONTROL}]*$")
}

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

/// A string or null.
fn nullable(o: ObjectBuilder) -> ObjectBuilder {
    o.schema_type(SchemaType::from_iter([Type::String, Type::Null]))
}

fn null() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::Null)
}

fn or_null(schema: impl Into<RefOr<Schema>>) -> RefOr<Schema> {
    OneOfBuilder::new().item(schema).item(null()).into()
}

/// A header-bound text: no control characters (CR/LF would inject headers), `max` characters.
fn header_text(max: usize) -> ObjectBuilder {
    string().pattern(Some(plain())).max_length(Some(max))
}

/// An email address as `validate` accepts it.
pub struct Address;

impl PartialSchema for Address {
    fn schema() -> RefOr<Schema> {
        header_text(254)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Email)))
            .description(Some("An email address (at most 254 characters)."))
            .into()
    }
}

impl ToSchema for Address {}

impl PartialSchema for NamedRecipient {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .property("email", Ref::from_schema_name(Address::name()))
            .required("email")
            .property("name", nullable(header_text(255)))
            .additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(false)))
            .into()
    }
}

impl ToSchema for NamedRecipient {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((Address::name().into(), Address::schema()));
    }
}

impl PartialSchema for Recipient {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(Ref::from_schema_name(Address::name()))
            .item(Ref::from_schema_name(NamedRecipient::name()))
            .description(Some("An address, or an address with a display name."))
            .into()
    }
}

impl ToSchema for Recipient {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((NamedRecipient::name().into(), NamedRecipient::schema()));
        NamedRecipient::schemas(schemas);
    }
}

/// The fields every kind of enqueue body has.
fn common() -> ObjectBuilder {
    let addresses = || {
        ArrayBuilder::new()
            .items(Ref::from_schema_name(Address::name()))
            .max_items(Some(MAX_LIST))
    };
    ObjectBuilder::new()
        .property("to", Ref::from_schema_name(Recipient::name()))
        .required("to")
        .property("cc", addresses())
        .property("bcc", addresses())
        .property("reply_to", or_null(Ref::from_schema_name(Address::name())))
        .property(
            "from",
            OneOfBuilder::new()
                .item(Ref::from_schema_name(Recipient::name()))
                .item(null())
                .description(Some(
                    "Defaults to the configured `app.from_email` / `app.from_name`. Its domain \
                     must be on `api.allowed_sender_domains` (default: app.from_email's).",
                )),
        )
        .property(
            "type",
            RefBuilder::new()
                .ref_location_from_schema_name(EmailType::name())
                .description(Some(
                    "Decides which opt-outs apply: marketing and notification mail honours \
                 unsubscribes.",
                )),
        )
        .required("type")
        .property(
            "priority",
            OneOfBuilder::new()
                .item(Ref::from_schema_name(EmailPriority::name()))
                .item(null())
                .description(Some("Default `normal`.")),
        )
        .property(
            "scheduled_for",
            nullable(string())
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
                .description(Some(
                    "RFC 3339 with an offset; stored in UTC. Absent: as soon as possible.",
                )),
        )
        .property(
            "tags",
            ArrayBuilder::new()
                .items(
                    string()
                        .pattern(Some(plain_non_blank()))
                        .max_length(Some(100)),
                )
                .max_items(Some(MAX_LIST)),
        )
        .property(
            "metadata",
            ObjectBuilder::new().schema_type(SchemaType::from_iter([Type::Object, Type::Null])),
        )
        .property(
            "user_id",
            nullable(string())
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
                .description(Some(
                    "The platform user this email is for (their preferences apply): a current \
                     user whose email is `to`.",
                )),
        )
        .property(
            "max_retries",
            ObjectBuilder::new()
                .schema_type(SchemaType::from_iter([Type::Integer, Type::Null]))
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int32)))
                .minimum(Some(0))
                .maximum(Some(20))
                .description(Some("Default 3.")),
        )
        .property("campaign_id", nullable(header_text(255)))
        .additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(false)))
}

/// Rendered content: a subject, and `html` with something in it (`text` optional), or `text`
/// with something in it and no `html` to speak of. The template fields are absent or null.
fn rendered(html_given: bool) -> Object {
    let non_blank = string().pattern(Some(format!("[^{ANY_SPACE}]")));
    let blank = nullable(string().pattern(Some(format!("^[{ANY_SPACE}]*$"))));
    let (html, text) = if html_given {
        (non_blank, nullable(string()))
    } else {
        (blank, non_blank)
    };
    let mut o = common()
        .property(
            "subject",
            string()
                .pattern(Some(plain_non_blank()))
                .max_length(Some(500)),
        )
        .required("subject")
        .property("html", html)
        .property("text", text)
        .property("template", null())
        .property("locale", null())
        .property("data", null());
    o = if html_given {
        o.required("html")
    } else {
        o.required("text")
    };
    o.description(Some(if html_given {
        "Rendered content with HTML (and optionally a text part)."
    } else {
        "Rendered content, text only."
    }))
    .build()
}

/// A template, rendered at enqueue to validate `data` and again by the worker at send time.
fn by_template() -> Object {
    common()
        .property(
            "template",
            string()
                .pattern(Some(format!("[^{ANY_SPACE}]")))
                .max_length(Some(255))
                .description(Some("Template name (email_templates.name); must exist.")),
        )
        .required("template")
        .property(
            "locale",
            nullable(header_text(10)).description(Some("Default: the configured locale.")),
        )
        .property(
            "data",
            ObjectBuilder::new()
                .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
                .description(Some(
                    "Template variables; every required one must be given.",
                )),
        )
        .property("subject", null())
        .property("html", null())
        .property("text", null())
        .description(Some("A template email."))
        .build()
}

impl PartialSchema for EnqueueRequest {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(rendered(true))
            .item(rendered(false))
            .item(by_template())
            .description(Some(
                "An email to send: either rendered content (`subject` with `html` and/or \
                 `text`) or a template (`template`, optional `locale`, `data`).",
            ))
            .into()
    }
}

impl ToSchema for EnqueueRequest {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((Address::name().into(), Address::schema()));
        schemas.push((Recipient::name().into(), Recipient::schema()));
        schemas.push((EmailType::name().into(), EmailType::schema()));
        schemas.push((EmailPriority::name().into(), EmailPriority::schema()));
        Recipient::schemas(schemas);
    }
}
