//! Key templates: how a source turns a request into its dedupe, order and
//! coalesce keys, e.g. `"{form.action}:{form.id}"`.
//!
//! A template is parsed once, at config time (so a typo is a config error that
//! names the key), and rendered for every request. Rendering never fails the
//! request: a missing field yields [`Missing`], and the caller stores the event
//! with that key empty and a warning, because dropping an event over a config
//! mismatch would lose data.

use std::cell::OnceCell;
use std::fmt;
use std::str::FromStr;

use serde_json::Value;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Field {
    /// `{header.NAME}`: NAME lowercased, matched case-insensitively.
    Header(String),
    /// `{json.a.b.0.c}`: a dotted path; a numeric segment also indexes arrays.
    Json(Vec<String>),
    /// `{form.NAME}`: from an `application/x-www-form-urlencoded` body.
    Form(String),
    /// `{query.NAME}`: from the request's query string.
    Query(String),
    /// `{body.sha256}`: hex SHA-256 of the raw body.
    BodySha256,
    /// `{json.sha256}`: hex SHA-256 of the canonical JSON body, ignored paths removed.
    JsonSha256,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Field(Field),
}

/// A parsed key template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    text: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    /// Names only the field, as `hookgate check` prints it; the namespaces are
    /// header.NAME, json.PATH, form.NAME, query.NAME, body.sha256, json.sha256.
    #[error("unknown field {0:?}")]
    UnknownField(String),
    #[error("unclosed '{{' in template")]
    Unclosed,
    #[error("unmatched '}}' in template")]
    Unmatched,
    #[error("empty template")]
    Empty,
}

/// Why a template could not be rendered for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing(String);

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Template {
    type Err = TemplateError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.is_empty() {
            return Err(TemplateError::Empty);
        }
        let mut parts = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            match (rest.find('{'), rest.find('}')) {
                (_, Some(close)) if rest.find('{').is_none_or(|open| close < open) => {
                    return Err(TemplateError::Unmatched);
                }
                (Some(open), _) => {
                    if open > 0 {
                        parts.push(Part::Literal(rest[..open].to_owned()));
                    }
                    let after = &rest[open + 1..];
                    let close = after.find('}').ok_or(TemplateError::Unclosed)?;
                    parts.push(Part::Field(parse_field(&after[..close])?));
                    rest = &after[close + 1..];
                }
                (None, _) => {
                    parts.push(Part::Literal(rest.to_owned()));
                    rest = "";
                }
            }
        }
        Ok(Template { text: text.to_owned(), parts })
    }
}

fn parse_field(name: &str) -> Result<Field, TemplateError> {
    let unknown = || TemplateError::UnknownField(name.to_owned());
    let (namespace, rest) = name.split_once('.').ok_or_else(unknown)?;
    if rest.is_empty() || rest.contains('{') {
        return Err(unknown());
    }
    match (namespace, rest) {
        ("body", "sha256") => Ok(Field::BodySha256),
        ("json", "sha256") => Ok(Field::JsonSha256),
        ("header", header) => Ok(Field::Header(header.to_ascii_lowercase())),
        ("json", path) if path.split('.').all(|s| !s.is_empty()) => {
            Ok(Field::Json(path.split('.').map(str::to_owned).collect()))
        }
        ("form", form) => Ok(Field::Form(form.to_owned())),
        ("query", query) => Ok(Field::Query(query.to_owned())),
        _ => Err(unknown()),
    }
}

impl Template {
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Render for one request: the key, or the first field that was missing.
    pub fn render(&self, request: &RequestView<'_>) -> Result<String, Missing> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Field(field) => out.push_str(&request.field(field)?),
            }
        }
        Ok(out)
    }
}

/// What a template can see of one request. Parses the body lazily, at most once
/// per form, however many templates ask.
pub struct RequestView<'a> {
    /// Header names lowercased.
    headers: &'a [(String, String)],
    body: &'a [u8],
    query: &'a str,
    /// JSON paths (dotted) removed before `{json.sha256}` is computed.
    json_ignore: &'a [String],
    json: OnceCell<Option<Value>>,
    form: OnceCell<Vec<(String, String)>>,
}

impl<'a> RequestView<'a> {
    pub fn new(headers: &'a [(String, String)], body: &'a [u8], query: &'a str, json_ignore: &'a [String]) -> Self {
        RequestView { headers, body, query, json_ignore, json: OnceCell::new(), form: OnceCell::new() }
    }

    fn json(&self) -> Result<&Value, Missing> {
        self.json
            .get_or_init(|| serde_json::from_slice(self.body).ok())
            .as_ref()
            .ok_or_else(|| Missing("body is not JSON".into()))
    }

    fn field(&self, field: &Field) -> Result<String, Missing> {
        match field {
            Field::Header(name) => self
                .headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
                .ok_or_else(|| Missing(format!("header {name:?} is missing"))),
            Field::Json(path) => {
                let found =
                    lookup(self.json()?, path).ok_or_else(|| Missing(format!("json.{} is missing", path.join("."))))?;
                Ok(scalar_text(found))
            }
            Field::Form(name) => self
                .form
                .get_or_init(|| {
                    form_urlencoded::parse(self.body).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
                })
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .ok_or_else(|| Missing(format!("form field {name:?} is missing"))),
            Field::Query(name) => form_urlencoded::parse(self.query.as_bytes())
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
                .ok_or_else(|| Missing(format!("query parameter {name:?} is missing"))),
            Field::BodySha256 => Ok(hex::encode(Sha256::digest(self.body))),
            Field::JsonSha256 => {
                let mut value = self.json()?.clone();
                for path in self.json_ignore {
                    remove_path(&mut value, &path.split('.').collect::<Vec<_>>());
                }
                let mut canonical = String::new();
                write_canonical(&value, &mut canonical);
                Ok(hex::encode(Sha256::digest(canonical.as_bytes())))
            }
        }
    }
}

fn lookup<'v>(value: &'v Value, path: &[String]) -> Option<&'v Value> {
    path.iter()
        .try_fold(value, |node, segment| match node {
            Value::Object(map) => map.get(segment),
            Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        })
        .filter(|found| !found.is_null())
}

/// A key's text: strings as they are (no quotes), anything else as compact JSON.
fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => {
            let mut out = String::new();
            write_canonical(other, &mut out);
            out
        }
    }
}

fn remove_path(value: &mut Value, path: &[&str]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut node = value;
    for segment in parents {
        node = match node {
            Value::Object(map) => match map.get_mut(*segment) {
                Some(next) => next,
                None => return,
            },
            Value::Array(items) => match segment.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                Some(next) => next,
                None => return,
            },
            _ => return,
        };
    }
    if let Value::Object(map) = node {
        map.remove(*last);
    }
}

/// Canonical JSON: object keys sorted by their UTF-8 bytes, no insignificant
/// white space. Written here rather than relying on serde_json's map order,
/// which a feature flag anywhere in the build could change.
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn render(template: &str, headers: &[(&str, &str)], body: &str, query: &str) -> Result<String, Missing> {
        let headers: Vec<(String, String)> =
            headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.to_string())).collect();
        let ignore = vec!["sent_at".to_string(), "meta.trace".to_string()];
        let view = RequestView::new(&headers, body.as_bytes(), query, &ignore);
        template.parse::<Template>().unwrap().render(&view)
    }

    #[test]
    fn renders_every_namespace() {
        let body = r#"{"id":"evt_1","data":{"object":{"id":"cus_9","n":7,"tags":["a","b"]}}}"#;
        assert_eq!(render("{json.id}", &[], body, "").unwrap(), "evt_1");
        assert_eq!(render("obj:{json.data.object.id}", &[], body, "").unwrap(), "obj:cus_9");
        assert_eq!(render("{json.data.object.n}", &[], body, "").unwrap(), "7");
        assert_eq!(render("{json.data.object.tags.1}", &[], body, "").unwrap(), "b");
        assert_eq!(render("{header.X-Event-Id}", &[("x-event-id", "abc")], "", "").unwrap(), "abc");
        assert_eq!(render("{form.action}:{form.id}", &[], "action=changed&id=42", "").unwrap(), "changed:42");
        assert_eq!(render("{query.tenant}", &[], "", "tenant=acme%20co&x=1").unwrap(), "acme co");
        assert_eq!(
            render("{body.sha256}", &[], "abc", "").unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn json_hash_is_canonical_and_skips_ignored_paths() {
        let a = render("{json.sha256}", &[], r#"{"b":1,"a":{"y":2,"x":1},"sent_at":"t1"}"#, "").unwrap();
        let b = render("{json.sha256}", &[], r#"{ "a": {"x":1, "y":2}, "b":1, "sent_at":"t2" }"#, "").unwrap();
        let c = render("{json.sha256}", &[], r#"{"a":{"x":1,"y":3},"b":1}"#, "").unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn missing_fields_say_what_is_missing() {
        assert_eq!(render("{json.id}", &[], "not json", "").unwrap_err().to_string(), "body is not JSON");
        assert_eq!(
            render("{json.data.id}", &[], r#"{"data":{}}"#, "").unwrap_err().to_string(),
            "json.data.id is missing"
        );
        assert!(render("{json.id}", &[], r#"{"id":null}"#, "").is_err());
        assert!(render("{header.x-id}", &[], "", "").is_err());
        assert!(render("{form.id}", &[], "action=changed", "").is_err());
    }

    #[test]
    fn parse_errors_name_the_field() {
        assert_eq!("{jsn.id}".parse::<Template>().unwrap_err().to_string(), r#"unknown field "jsn.id""#);
        assert_eq!("{json.id".parse::<Template>(), Err(TemplateError::Unclosed));
        assert_eq!("json.id}".parse::<Template>(), Err(TemplateError::Unmatched));
        assert_eq!("".parse::<Template>(), Err(TemplateError::Empty));
        assert!("{json..id}".parse::<Template>().is_err());
        assert!("{body.md5}".parse::<Template>().is_err());
        assert!("{header}".parse::<Template>().is_err());
    }

    proptest! {
        #[test]
        fn parsing_never_panics(text in ".{0,40}") {
            let _ = text.parse::<Template>();
        }

        #[test]
        fn rendering_never_panics(body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let view = RequestView::new(&[], &body, "", &[]);
            for t in ["{json.a.0}", "{form.a}", "{json.sha256}", "{body.sha256}"] {
                let _ = t.parse::<Template>().unwrap().render(&view);
            }
        }

        #[test]
        fn literal_text_renders_as_itself(text in "[^{}]{1,40}") {
            let view = RequestView::new(&[], b"", "", &[]);
            prop_assert_eq!(text.parse::<Template>().unwrap().render(&view).unwrap(), text);
        }
    }
}
