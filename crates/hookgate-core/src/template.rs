//! Key templates: how a source turns a request into its dedupe, order and
//! coalesce keys, e.g. `"{form.action}:{form.id}"`.
//!
//! A template is parsed once, at config time (so a typo is a config error that
//! names the key), and rendered for every request into the key's bytes: a
//! header or query value that is not UTF-8 stays as it came, so two different
//! values never make the same key. Rendering never fails the
//! request: a missing field yields [`Missing`], and the caller stores the event
//! with that key empty and a warning, because dropping an event over a config
//! mismatch would lose data.

use std::cell::OnceCell;
use std::fmt;
use std::str::FromStr;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{Headers, Key, urlencoded};

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

    /// The header names it reads (lowercase).
    pub fn headers(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Field(Field::Header(name)) => Some(name.as_str()),
            _ => None,
        })
    }

    /// The query parameters it reads.
    pub fn query_params(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Field(Field::Query(name)) => Some(name.as_str()),
            _ => None,
        })
    }

    /// Render for one request: the key (its SHA-256 when over `Key::MAX_BYTES`),
    /// or the first field that was missing.
    pub fn render(&self, request: &RequestView<'_>) -> Result<Key, Missing> {
        let mut out = Vec::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.extend_from_slice(text.as_bytes()),
                Part::Field(field) => request.field(field, &mut out)?,
            }
        }
        Ok(Key::bounded(out))
    }
}

/// What a template can see of one request. Parses a JSON body lazily, at
/// most once however many templates ask; a form body is searched per field,
/// never collected (a body of half a million `a&a&…` would otherwise become
/// half a million allocations).
pub struct RequestView<'a> {
    headers: &'a Headers,
    body: &'a [u8],
    /// The raw query string, without `?`.
    query: &'a [u8],
    /// JSON paths (dotted) removed before `{json.sha256}` is computed.
    json_ignore: &'a [String],
    json: OnceCell<Option<Value>>,
}

impl<'a> RequestView<'a> {
    pub fn new(headers: &'a Headers, body: &'a [u8], query: &'a [u8], json_ignore: &'a [String]) -> Self {
        RequestView { headers, body, query, json_ignore, json: OnceCell::new() }
    }

    /// The JSON value at `path`, for a filter (`None`: missing, null, or not JSON).
    pub(crate) fn json_value(&self, path: &[String]) -> Option<&Value> {
        lookup(self.json().ok()?, path)
    }

    /// A form field's value as text, for a filter.
    pub(crate) fn form_text(&self, name: &str) -> Option<String> {
        urlencoded::find(self.body, name.as_bytes()).map(|v| String::from_utf8_lossy(&v).into_owned())
    }

    /// A header's value as text, for a filter.
    pub(crate) fn header_text(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// A query parameter's value as text, for a filter.
    pub(crate) fn query_text(&self, name: &str) -> Option<String> {
        urlencoded::find(self.query, name.as_bytes()).map(|v| String::from_utf8_lossy(&v).into_owned())
    }

    fn json(&self) -> Result<&Value, Missing> {
        self.json
            .get_or_init(|| serde_json::from_slice(self.body).ok())
            .as_ref()
            .ok_or_else(|| Missing("body is not JSON".into()))
    }

    /// Append the field's bytes to `out`.
    fn field(&self, field: &Field, out: &mut Vec<u8>) -> Result<(), Missing> {
        match field {
            Field::Header(name) => out.extend_from_slice(
                self.headers.get(name).ok_or_else(|| Missing(format!("header {name:?} is missing")))?,
            ),
            Field::Json(path) => {
                let found =
                    lookup(self.json()?, path).ok_or_else(|| Missing(format!("json.{} is missing", path.join("."))))?;
                match found {
                    Value::String(text) => out.extend_from_slice(text.as_bytes()),
                    other => {
                        let mut text = String::new();
                        write_canonical(other, &mut text);
                        out.extend_from_slice(text.as_bytes());
                    }
                }
            }
            Field::Form(name) => out.extend_from_slice(
                &urlencoded::find(self.body, name.as_bytes())
                    .ok_or_else(|| Missing(format!("form field {name:?} is missing")))?,
            ),
            Field::Query(name) => out.extend_from_slice(
                &urlencoded::find(self.query, name.as_bytes())
                    .ok_or_else(|| Missing(format!("query parameter {name:?} is missing")))?,
            ),
            Field::BodySha256 => out.extend_from_slice(hex::encode(Sha256::digest(self.body)).as_bytes()),
            Field::JsonSha256 => {
                let mut value = self.json()?.clone();
                for path in self.json_ignore {
                    remove_path(&mut value, &path.split('.').collect::<Vec<_>>());
                }
                let mut canonical = String::new();
                write_canonical(&value, &mut canonical);
                out.extend_from_slice(hex::encode(Sha256::digest(canonical.as_bytes())).as_bytes());
            }
        }
        Ok(())
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
        let headers: Headers = headers.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
        let ignore = vec!["sent_at".to_string(), "meta.trace".to_string()];
        let view = RequestView::new(&headers, body.as_bytes(), query.as_bytes(), &ignore);
        template.parse::<Template>().unwrap().render(&view).map(|key| String::from_utf8(key.into_bytes()).unwrap())
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
    fn keys_keep_bytes_that_are_not_text() {
        let headers: Headers = [("x-id", b"caf\xe9".as_slice())].into_iter().collect();
        let other: Headers = [("x-id", b"caf\xe8".as_slice())].into_iter().collect();
        let key = |headers: &Headers, query: &[u8], body: &[u8], t: &str| {
            t.parse::<Template>().unwrap().render(&RequestView::new(headers, body, query, &[])).unwrap().into_bytes()
        };
        assert_eq!(key(&headers, b"", b"", "{header.x-id}"), b"caf\xe9");
        assert_ne!(key(&headers, b"", b"", "{header.x-id}"), key(&other, b"", b"", "{header.x-id}"));
        assert_eq!(key(&headers, b"t=%E9%00", b"", "{query.t}"), b"\xe9\x00");
        assert_eq!(key(&headers, b"", b"id=a%00b", "{form.id}"), b"a\x00b");
        assert_eq!(key(&headers, b"", br#"{"id":"a\u0000b"}"#, "{json.id}"), b"a\x00b");
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
            let headers = Headers::new();
            let view = RequestView::new(&headers, &body, &body, &[]);
            for t in ["{json.a.0}", "{form.a}", "{query.a}", "{json.sha256}", "{body.sha256}"] {
                let _ = t.parse::<Template>().unwrap().render(&view);
            }
        }

        #[test]
        fn literal_text_renders_as_itself(text in "[^{}]{1,40}") {
            let headers = Headers::new();
            let view = RequestView::new(&headers, b"", b"", &[]);
            prop_assert_eq!(text.parse::<Template>().unwrap().render(&view).unwrap().into_bytes(), text.into_bytes());
        }
    }
}
