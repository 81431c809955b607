//! Route filters: which events a route takes, by the request's fields.
//!
//! ```toml
//! [routes.filter]                                        # every key must hold
//! "json.data.object.amount_paid" = { gte = 10000 }       # operators
//! "json.data.object.currency" = ["usd", "eur"]           # a list: any of them
//! "header.stripe-account" = { exists = false }
//! any = [ { "json.data.object.status" = "paid" }, { "json.data.object.amount_due" = 0 } ]
//! ```
//!
//! A filter is parsed once, when the config is read, from the table as
//! JSON; every problem is an error naming its path (`"json.amount".gte:
//! expected a number`), never a filter that silently matches nothing or
//! everything. It is evaluated on the parsed request ([`RequestView`]) with
//! no I/O, each condition once, in time linear in the filter's size and the
//! values it reads (regular expressions are the `regex` crate's, linear
//! time, size-capped), and says which condition failed and why.
//!
//! Fields are the key templates' (`json.a.b.0`, `form.x`, `header.x`,
//! `query.x`) and `event_type`. A missing field is false, but for
//! `exists = false`. JSON values compare typed (`1` is not `"1"`); form,
//! header, query and event type values are text, and a number compares with
//! numeric text. An array field holds if any element does.

use std::fmt;

use regex::Regex;
use serde_json::{Map, Value};

use crate::template::RequestView;

/// Nesting of `any`/`all`/`not`, at most.
pub const MAX_DEPTH: usize = 4;
/// Conditions in one filter, at most.
pub const MAX_CONDITIONS: usize = 256;
/// Values in all its lists together, at most.
pub const MAX_LIST_VALUES: usize = 1_000;
/// A regular expression's source, at most (bytes), and its compiled size.
pub const MAX_REGEX_BYTES: usize = 1_000;
const REGEX_SIZE_LIMIT: usize = 256 * 1024;

/// A field a condition reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldRef {
    Json(Vec<String>),
    Form(String),
    Header(String),
    Query(String),
    EventType,
}

impl fmt::Display for FieldRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldRef::Json(path) => write!(f, "json.{}", path.join(".")),
            FieldRef::Form(name) => write!(f, "form.{name}"),
            FieldRef::Header(name) => write!(f, "header.{name}"),
            FieldRef::Query(name) => write!(f, "query.{name}"),
            FieldRef::EventType => f.write_str("event_type"),
        }
    }
}

impl FieldRef {
    fn parse(text: &str) -> Option<FieldRef> {
        if text == "event_type" {
            return Some(FieldRef::EventType);
        }
        let (namespace, rest) = text.split_once('.')?;
        if rest.is_empty() {
            return None;
        }
        match namespace {
            "json" if rest.split('.').all(|s| !s.is_empty()) => {
                Some(FieldRef::Json(rest.split('.').map(str::to_owned).collect()))
            }
            "form" => Some(FieldRef::Form(rest.to_owned())),
            "header" => Some(FieldRef::Header(rest.to_ascii_lowercase())),
            "query" => Some(FieldRef::Query(rest.to_owned())),
            _ => None,
        }
    }
}

/// A literal a condition compares with.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Text(String),
    Number(f64),
    Bool(bool),
}

impl Literal {
    fn from_json(value: &Value) -> Option<Literal> {
        match value {
            Value::String(text) => Some(Literal::Text(text.clone())),
            Value::Number(n) => n.as_f64().filter(|n| n.is_finite()).map(Literal::Number),
            Value::Bool(b) => Some(Literal::Bool(*b)),
            _ => None,
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Literal::Text(text) => Value::String(text.clone()),
            // Whole numbers as integers: `10000`, as written, not `10000.0`.
            Literal::Number(n) if n.fract() == 0.0 && n.abs() < 9.0e15 => Value::from(*n as i64),
            Literal::Number(n) => serde_json::Number::from_f64(*n).map_or(Value::Null, Value::Number),
            Literal::Bool(b) => Value::Bool(*b),
        }
    }
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_json())
    }
}

/// What a condition asks of its field.
#[derive(Debug, Clone)]
pub enum Test {
    Eq(Literal),
    NotEq(Literal),
    In(Vec<Literal>),
    Prefix(String),
    Suffix(String),
    Glob(Glob),
    Contains(Literal),
    Gt(f64),
    Gte(f64),
    Lt(f64),
    Lte(f64),
    Exists(bool),
    Matches(Regex),
}

impl PartialEq for Test {
    fn eq(&self, other: &Self) -> bool {
        self.to_json() == other.to_json()
    }
}

impl Test {
    fn name(&self) -> &'static str {
        match self {
            Test::Eq(_) => "eq",
            Test::NotEq(_) => "not",
            Test::In(_) => "in",
            Test::Prefix(_) => "prefix",
            Test::Suffix(_) => "suffix",
            Test::Glob(_) => "glob",
            Test::Contains(_) => "contains",
            Test::Gt(_) => "gt",
            Test::Gte(_) => "gte",
            Test::Lt(_) => "lt",
            Test::Lte(_) => "lte",
            Test::Exists(_) => "exists",
            Test::Matches(_) => "matches",
        }
    }

    fn operand(&self) -> Value {
        let number = |n: &f64| Literal::Number(*n).to_json();
        match self {
            Test::Eq(l) | Test::NotEq(l) | Test::Contains(l) => l.to_json(),
            Test::In(list) => Value::Array(list.iter().map(Literal::to_json).collect()),
            Test::Prefix(s) | Test::Suffix(s) => Value::String(s.clone()),
            Test::Glob(g) => Value::String(g.0.clone()),
            Test::Gt(n) | Test::Gte(n) | Test::Lt(n) | Test::Lte(n) => number(n),
            Test::Exists(b) => Value::Bool(*b),
            Test::Matches(r) => Value::String(r.as_str().to_owned()),
        }
    }

    fn to_json(&self) -> Value {
        let mut map = Map::new();
        map.insert(self.name().to_owned(), self.operand());
        Value::Object(map)
    }
}

/// A glob: `*` any run of characters, `?` any one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob(String);

impl Glob {
    pub fn new(pattern: &str) -> Glob {
        Glob(pattern.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `text` matches: the classic two-pointer walk, backtracking to
    /// the last `*` only (time bounded by the product of the lengths, both
    /// capped by the config and the body limit).
    pub fn matches(&self, text: &str) -> bool {
        let (p, t): (Vec<char>, Vec<char>) = (self.0.chars().collect(), text.chars().collect());
        let (mut pi, mut ti) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while ti < t.len() {
            if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
                pi += 1;
                ti += 1;
            } else if pi < p.len() && p[pi] == '*' {
                star = Some((pi, ti));
                pi += 1;
            } else if let Some((star_p, star_t)) = star {
                pi = star_p + 1;
                ti = star_t + 1;
                star = Some((star_p, star_t + 1));
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|c| *c == '*')
    }
}

/// One node of a filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    All(Vec<Filter>),
    Any(Vec<Filter>),
    Not(Box<Filter>),
    Test { field: FieldRef, test: Test },
}

/// A problem in a filter's definition, at a path inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError {
    /// Where: `"json.amount".gte`, `any[1]."header.x"` (empty: the filter itself).
    pub path: String,
    pub message: String,
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() { f.write_str(&self.message) } else { write!(f, "{}: {}", self.path, self.message) }
    }
}

/// How a value from the request is seen: typed JSON, or text (bytes that
/// are not UTF-8 replaced: a filter compares text).
#[derive(Clone)]
enum Seen<'v> {
    Json(&'v Value),
    Text(String),
}

impl fmt::Display for Seen<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 80;
        let text = match self {
            Seen::Json(value) => value.to_string(),
            Seen::Text(text) => Value::String(text.clone()).to_string(),
        };
        if text.chars().count() > SHOWN {
            let cut: String = text.chars().take(SHOWN).collect();
            write!(f, "{cut}…")
        } else {
            f.write_str(&text)
        }
    }
}

struct Budget {
    conditions: usize,
    list_values: usize,
}

impl Filter {
    /// Parse a filter table (as JSON: the config's TOML converts to it).
    pub fn parse(table: &Value) -> Result<Filter, FilterError> {
        let mut budget = Budget { conditions: 0, list_values: 0 };
        let filter = parse_node(table, "", 0, &mut budget)?;
        Ok(filter)
    }

    /// The filter as a table again, in canonical form: `parse(print(f)) == f`.
    pub fn to_json(&self) -> Value {
        let single = |key: &str, value: Value| {
            let mut map = Map::new();
            map.insert(key.to_owned(), value);
            Value::Object(map)
        };
        match self {
            Filter::All(items) => single("all", Value::Array(items.iter().map(Filter::to_json).collect())),
            Filter::Any(items) => single("any", Value::Array(items.iter().map(Filter::to_json).collect())),
            Filter::Not(inner) => single("not", inner.to_json()),
            Filter::Test { field, test } => single(&field.to_string(), test.to_json()),
        }
    }

    /// Whether the request matches: `Ok`, or the first condition that did
    /// not hold and why (`json.amount: 500 is not >= 10000`).
    pub fn check(&self, request: &RequestView<'_>, event_type: Option<&str>) -> Result<(), String> {
        match self {
            Filter::All(items) => items.iter().try_for_each(|item| item.check(request, event_type)),
            Filter::Any(items) => {
                let mut why = Vec::with_capacity(items.len());
                for item in items {
                    match item.check(request, event_type) {
                        Ok(()) => return Ok(()),
                        Err(reason) => why.push(reason),
                    }
                }
                Err(format!("none of any held ({})", why.join("; ")))
            }
            Filter::Not(inner) => match inner.check(request, event_type) {
                Ok(()) => Err(format!("not: {} holds", inner.describe())),
                Err(_) => Ok(()),
            },
            Filter::Test { field, test } => check_field(field, test, request, event_type),
        }
    }

    /// The filter in a line, for a reason: `json.amount gte 100`.
    fn describe(&self) -> String {
        match self {
            Filter::Test { field, test } => format!("{field} {} {}", test.name(), test.operand()),
            other => other.to_json().to_string(),
        }
    }
}

fn parse_node(value: &Value, path: &str, depth: usize, budget: &mut Budget) -> Result<Filter, FilterError> {
    let error = |path: &str, message: String| FilterError { path: path.to_owned(), message };
    if depth > MAX_DEPTH {
        return Err(error(path, format!("nested deeper than {MAX_DEPTH} levels of any, all and not")));
    }
    let Value::Object(map) = value else {
        return Err(error(path, format!("expected a table of conditions, found {}", kind(value))));
    };
    if map.is_empty() {
        return Err(error(path, "an empty table: it would hold for everything; leave the filter out instead".into()));
    }
    let mut nodes = Vec::with_capacity(map.len());
    for (key, item) in map {
        let at = join(path, key);
        let node = match key.as_str() {
            "any" | "all" => {
                let Value::Array(items) = item else {
                    return Err(error(&at, format!("expected a list of tables, found {}", kind(item))));
                };
                if items.is_empty() {
                    return Err(error(&at, "an empty list: it would never (any) or always (all) hold".into()));
                }
                let parsed = items
                    .iter()
                    .enumerate()
                    .map(|(n, item)| parse_node(item, &format!("{at}[{n}]"), depth + 1, budget))
                    .collect::<Result<Vec<_>, _>>()?;
                if key == "any" { Filter::Any(parsed) } else { Filter::All(parsed) }
            }
            "not" => Filter::Not(Box::new(parse_node(item, &at, depth + 1, budget)?)),
            field_text => {
                let field = FieldRef::parse(field_text).ok_or_else(|| {
                    error(
                        &at,
                        "unknown field: expected json.PATH, form.NAME, header.NAME, query.NAME or event_type, or any, \
                         all, not"
                            .into(),
                    )
                })?;
                parse_conditions(field, item, &at, budget)?
            }
        };
        nodes.push(node);
    }
    Ok(if nodes.len() == 1 { nodes.pop().expect("one node") } else { Filter::All(nodes) })
}

/// A field's value in the table: a literal, a list (any of), or a table of operators (all of them).
fn parse_conditions(field: FieldRef, value: &Value, path: &str, budget: &mut Budget) -> Result<Filter, FilterError> {
    let error = |path: &str, message: String| FilterError { path: path.to_owned(), message };
    let count = |budget: &mut Budget, path: &str| {
        budget.conditions += 1;
        if budget.conditions > MAX_CONDITIONS {
            return Err(error(path, format!("more than {MAX_CONDITIONS} conditions in one filter")));
        }
        Ok(())
    };
    let test = |field: &FieldRef, test: Test| Filter::Test { field: field.clone(), test };
    match value {
        Value::Object(ops) => {
            if ops.is_empty() {
                return Err(error(path, "an empty table of operators".into()));
            }
            let mut tests = Vec::with_capacity(ops.len());
            for (op, operand) in ops {
                let at = join(path, op);
                count(budget, &at)?;
                tests.push(test(&field, parse_operator(op, operand, &at, budget)?));
            }
            Ok(if tests.len() == 1 { tests.pop().expect("one test") } else { Filter::All(tests) })
        }
        Value::Array(_) => {
            count(budget, path)?;
            Ok(test(&field, parse_operator("in", value, path, budget)?))
        }
        literal => {
            count(budget, path)?;
            Ok(test(&field, parse_operator("eq", literal, path, budget)?))
        }
    }
}

fn parse_operator(op: &str, operand: &Value, path: &str, budget: &mut Budget) -> Result<Test, FilterError> {
    let error = |message: String| FilterError { path: path.to_owned(), message };
    let literal = || {
        Literal::from_json(operand)
            .ok_or_else(|| error(format!("expected a string, a number or a boolean, found {}", kind(operand))))
    };
    let text = || {
        operand.as_str().map(str::to_owned).ok_or_else(|| error(format!("expected a string, found {}", kind(operand))))
    };
    let number = || {
        operand
            .as_f64()
            .filter(|n| n.is_finite())
            .ok_or_else(|| error(format!("expected a number, found {}", kind(operand))))
    };
    Ok(match op {
        "eq" => Test::Eq(literal()?),
        "not" => Test::NotEq(literal()?),
        "in" => {
            let Value::Array(items) = operand else {
                return Err(error(format!("expected a list, found {}", kind(operand))));
            };
            if items.is_empty() {
                return Err(error("an empty list: it would never hold".into()));
            }
            budget.list_values += items.len();
            if budget.list_values > MAX_LIST_VALUES {
                return Err(error(format!("more than {MAX_LIST_VALUES} list values in one filter")));
            }
            let values = items
                .iter()
                .enumerate()
                .map(|(n, item)| {
                    Literal::from_json(item).ok_or_else(|| FilterError {
                        path: format!("{path}[{n}]"),
                        message: format!("expected a string, a number or a boolean, found {}", kind(item)),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Test::In(values)
        }
        "prefix" => Test::Prefix(text()?),
        "suffix" => Test::Suffix(text()?),
        "glob" => Test::Glob(Glob::new(&text()?)),
        "contains" => Test::Contains(literal()?),
        "gt" => Test::Gt(number()?),
        "gte" => Test::Gte(number()?),
        "lt" => Test::Lt(number()?),
        "lte" => Test::Lte(number()?),
        "exists" => Test::Exists(
            operand.as_bool().ok_or_else(|| error(format!("expected true or false, found {}", kind(operand))))?,
        ),
        "matches" => {
            let pattern = text()?;
            if pattern.len() > MAX_REGEX_BYTES {
                return Err(error(format!("the expression is longer than {MAX_REGEX_BYTES} bytes")));
            }
            let regex = regex::RegexBuilder::new(&pattern).size_limit(REGEX_SIZE_LIMIT).build().map_err(|e| {
                error(format!("not a valid regular expression: {}", e.to_string().lines().last().unwrap_or("").trim()))
            })?;
            Test::Matches(regex)
        }
        other => {
            return Err(error(format!(
                "unknown operator {other:?}: expected eq, not, in, prefix, suffix, glob, contains, gt, gte, lt, lte, \
                 exists or matches"
            )));
        }
    })
}

fn join(path: &str, key: &str) -> String {
    let key = if key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        key.to_owned()
    } else {
        Value::String(key.to_owned()).to_string()
    };
    if path.is_empty() { key } else { format!("{path}.{key}") }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a table",
    }
}

/// One condition on one field.
fn check_field(
    field: &FieldRef,
    test: &Test,
    request: &RequestView<'_>,
    event_type: Option<&str>,
) -> Result<(), String> {
    let found: Option<Vec<Seen<'_>>> = match field {
        FieldRef::Json(path) => request.json_value(path).map(|value| match value {
            // An array field holds if any element does.
            Value::Array(items) if !matches!(test, Test::Exists(_)) => items.iter().map(Seen::Json).collect(),
            value => vec![Seen::Json(value)],
        }),
        FieldRef::EventType => event_type.map(|text| vec![Seen::Text(text.to_owned())]),
        FieldRef::Form(name) => request.form_text(name).map(|text| vec![Seen::Text(text)]),
        FieldRef::Header(name) => request.header_text(name).map(|text| vec![Seen::Text(text)]),
        FieldRef::Query(name) => request.query_text(name).map(|text| vec![Seen::Text(text)]),
    };
    let Some(values) = found else {
        return match test {
            Test::Exists(false) => Ok(()),
            _ => Err(format!("{field}: missing")),
        };
    };
    if let Test::Exists(wanted) = test {
        return if *wanted { Ok(()) } else { Err(format!("{field}: present, and wanted absent")) };
    }
    if values.iter().any(|value| holds(test, value)) {
        return Ok(());
    }
    match values.as_slice() {
        [one] => Err(format!("{field}: {one} {}", fails(test))),
        _ => Err(format!("{field}: no element of the list {}", wants(test))),
    }
}

/// What a test wants, for a list none of whose elements has it: "is \"usd\"".
fn wants(test: &Test) -> String {
    match test {
        Test::Eq(l) => format!("is {l}"),
        Test::NotEq(l) => format!("is other than {l}"),
        Test::In(list) => format!("is one of {}", Value::Array(list.iter().map(Literal::to_json).collect())),
        Test::Prefix(p) => format!("starts with {}", Value::String(p.clone())),
        Test::Suffix(s) => format!("ends with {}", Value::String(s.clone())),
        Test::Glob(g) => format!("matches {}", Value::String(g.0.clone())),
        Test::Contains(l) => format!("contains {l}"),
        Test::Gt(n) => format!("is > {}", Literal::Number(*n)),
        Test::Gte(n) => format!("is >= {}", Literal::Number(*n)),
        Test::Lt(n) => format!("is < {}", Literal::Number(*n)),
        Test::Lte(n) => format!("is <= {}", Literal::Number(*n)),
        Test::Matches(r) => format!("matches /{}/", r.as_str()),
        Test::Exists(_) => "is as wanted".to_owned(),
    }
}

/// What a failed test says after the value: "is not >= 10000".
fn fails(test: &Test) -> String {
    match test {
        Test::Eq(l) => format!("is not {l}"),
        Test::NotEq(l) => format!("is {l}"),
        Test::In(list) => format!("is not one of {}", Value::Array(list.iter().map(Literal::to_json).collect())),
        Test::Prefix(p) => format!("does not start with {}", Value::String(p.clone())),
        Test::Suffix(s) => format!("does not end with {}", Value::String(s.clone())),
        Test::Glob(g) => format!("does not match {}", Value::String(g.0.clone())),
        Test::Contains(l) => format!("does not contain {l}"),
        Test::Gt(n) => format!("is not > {}", Literal::Number(*n)),
        Test::Gte(n) => format!("is not >= {}", Literal::Number(*n)),
        Test::Lt(n) => format!("is not < {}", Literal::Number(*n)),
        Test::Lte(n) => format!("is not <= {}", Literal::Number(*n)),
        Test::Matches(r) => format!("does not match /{}/", r.as_str()),
        Test::Exists(_) => "is not as wanted".to_owned(),
    }
}

fn holds(test: &Test, value: &Seen<'_>) -> bool {
    match test {
        Test::Eq(l) => equal(value, l),
        Test::NotEq(l) => !equal(value, l),
        Test::In(list) => list.iter().any(|l| equal(value, l)),
        Test::Prefix(p) => as_text(value).is_some_and(|t| t.starts_with(p.as_str())),
        Test::Suffix(s) => as_text(value).is_some_and(|t| t.ends_with(s.as_str())),
        Test::Glob(g) => as_text(value).is_some_and(|t| g.matches(t)),
        Test::Contains(Literal::Text(needle)) => as_text(value).is_some_and(|t| t.contains(needle.as_str())),
        Test::Contains(l) => equal(value, l),
        Test::Gt(n) => as_number(value).is_some_and(|v| v > *n),
        Test::Gte(n) => as_number(value).is_some_and(|v| v >= *n),
        Test::Lt(n) => as_number(value).is_some_and(|v| v < *n),
        Test::Lte(n) => as_number(value).is_some_and(|v| v <= *n),
        Test::Matches(r) => as_text(value).is_some_and(|t| r.is_match(t)),
        Test::Exists(wanted) => *wanted,
    }
}

/// Typed for JSON (a number is not a string); text compared as text, or as a
/// number or a boolean when the literal is one.
fn equal(value: &Seen<'_>, literal: &Literal) -> bool {
    match (value, literal) {
        (Seen::Json(Value::String(s)), Literal::Text(t)) => s == t,
        (Seen::Json(Value::Number(n)), Literal::Number(m)) => n.as_f64() == Some(*m),
        (Seen::Json(Value::Bool(b)), Literal::Bool(c)) => b == c,
        (Seen::Json(_), _) => false,
        (Seen::Text(s), Literal::Text(t)) => s == t,
        (Seen::Text(s), Literal::Number(m)) => s.trim().parse::<f64>().ok() == Some(*m),
        (Seen::Text(s), Literal::Bool(b)) => s == if *b { "true" } else { "false" },
    }
}

fn as_text<'a>(value: &'a Seen<'_>) -> Option<&'a str> {
    match value {
        Seen::Json(Value::String(s)) => Some(s),
        Seen::Json(_) => None,
        Seen::Text(s) => Some(s),
    }
}

/// Numeric operators take JSON numbers, and numeric text from text fields.
fn as_number(value: &Seen<'_>) -> Option<f64> {
    match value {
        Seen::Json(Value::Number(n)) => n.as_f64(),
        Seen::Json(_) => None,
        Seen::Text(s) => s.trim().parse::<f64>().ok().filter(|n| n.is_finite()),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::Headers;

    fn check(filter: Value, body: &str, headers: &[(&str, &str)], query: &str) -> Result<(), String> {
        let filter = Filter::parse(&filter).unwrap_or_else(|e| panic!("{e}"));
        let headers: Headers = headers.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
        let view = RequestView::new(&headers, body.as_bytes(), query.as_bytes(), &[]);
        filter.check(&view, Some("invoice.paid"))
    }

    const INVOICE: &str = r#"{"type":"invoice.paid","data":{"object":{"amount_paid":500,"currency":"usd",
        "status":"paid","amount_due":0,"lines":[{"sku":"a-1"},{"sku":"b-2"}],"tags":["vip","eu"],"id":"in_1"}}}"#;

    /// One row per operator and kind of field: the filter, and what it says.
    #[test]
    fn every_operator_on_every_kind_of_field() {
        let cases: Vec<(Value, Result<(), &str>)> = vec![
            (
                json!({"json.data.object.amount_paid": {"gte": 10000}}),
                Err("json.data.object.amount_paid: 500 is not >= 10000"),
            ),
            (json!({"json.data.object.amount_paid": {"gte": 500, "lt": 501}}), Ok(())),
            (
                json!({"json.data.object.amount_paid": {"gt": 500}}),
                Err("json.data.object.amount_paid: 500 is not > 500"),
            ),
            (
                json!({"json.data.object.amount_paid": {"lte": 499.5}}),
                Err("json.data.object.amount_paid: 500 is not <= 499.5"),
            ),
            (json!({"json.data.object.amount_paid": 500}), Ok(())),
            (json!({"json.data.object.amount_paid": "500"}), Err("json.data.object.amount_paid: 500 is not \"500\"")),
            (json!({"json.data.object.currency": ["usd", "eur"]}), Ok(())),
            (
                json!({"json.data.object.currency": ["gbp"]}),
                Err("json.data.object.currency: \"usd\" is not one of [\"gbp\"]"),
            ),
            (
                json!({"json.data.object.currency": {"not": "usd"}}),
                Err("json.data.object.currency: \"usd\" is \"usd\""),
            ),
            (json!({"json.data.object.id": {"prefix": "in_", "suffix": "_1"}}), Ok(())),
            (json!({"json.data.object.id": {"glob": "in_?"}}), Ok(())),
            (
                json!({"json.data.object.id": {"glob": "ch_*"}}),
                Err("json.data.object.id: \"in_1\" does not match \"ch_*\""),
            ),
            (json!({"json.data.object.id": {"matches": "^in_[0-9]+$"}}), Ok(())),
            (json!({"json.data.object.id": {"contains": "n_"}}), Ok(())),
            (json!({"json.data.object.tags": "eu"}), Ok(())),
            (json!({"json.data.object.tags": {"contains": "vi"}}), Ok(())),
            (json!({"json.data.object.tags": "us"}), Err("json.data.object.tags: no element of the list is \"us\"")),
            (json!({"json.data.object.lines.1.sku": "b-2"}), Ok(())),
            (json!({"json.data.object.missing": {"exists": false}}), Ok(())),
            (json!({"json.data.object.missing": "x"}), Err("json.data.object.missing: missing")),
            (json!({"json.data.object.id": {"exists": false}}), Err("json.data.object.id: present, and wanted absent")),
            (
                json!({"header.stripe-account": {"exists": false}}),
                Err("header.stripe-account: present, and wanted absent"),
            ),
            (json!({"header.Stripe-Account": "acct_1"}), Ok(())),
            (json!({"query.attempt": {"gte": 2}}), Ok(())),
            (json!({"query.attempt": 3}), Err("query.attempt: \"2\" is not 3")),
            (json!({"form.action": "x"}), Err("form.action: missing")),
            (json!({"event_type": {"glob": "invoice.*"}}), Ok(())),
            (
                json!({"any": [{"json.data.object.status": "open"}, {"json.data.object.amount_due": 1}]}),
                Err(
                    "none of any held (json.data.object.status: \"paid\" is not \"open\"; json.data.object.amount_due: 0 is not 1)",
                ),
            ),
            (json!({"any": [{"json.data.object.status": "open"}, {"json.data.object.amount_due": 0}]}), Ok(())),
            (
                json!({"not": {"json.data.object.currency": "usd"}}),
                Err("not: json.data.object.currency eq \"usd\" holds"),
            ),
            (
                json!({"all": [{"json.type": "invoice.paid"}, {"not": {"json.data.object.amount_paid": {"lt": 100}}}]}),
                Ok(()),
            ),
        ];
        for (filter, expected) in cases {
            let got = check(filter.clone(), INVOICE, &[("stripe-account", "acct_1")], "attempt=2");
            assert_eq!(got.as_ref().map(|_| ()).map_err(String::as_str), expected, "{filter}");
        }
    }

    #[test]
    fn a_body_that_is_not_json_matches_no_json_condition() {
        assert_eq!(check(json!({"json.a": 1}), "a=1", &[], ""), Err("json.a: missing".into()));
        assert_eq!(check(json!({"form.a": 1}), "a=1", &[], ""), Ok(()));
        assert_eq!(check(json!({"json.a": {"exists": false}}), "not json", &[], ""), Ok(()));
    }

    /// Every mistake is refused, at its path: nothing that would silently match nothing or everything.
    #[test]
    fn every_mistake_is_named_at_its_path() {
        let problem = |filter: Value| Filter::parse(&filter).unwrap_err().to_string();
        assert_eq!(
            problem(json!({"jsn.a": 1})),
            "\"jsn.a\": unknown field: expected json.PATH, form.NAME, header.NAME, query.NAME or event_type, or any, all, not"
        );
        assert_eq!(problem(json!({"json.a": {"gte": "ten"}})), "\"json.a\".gte: expected a number, found a string");
        assert!(
            problem(json!({"json.a": {"between": [1, 2]}}))
                .starts_with("\"json.a\".between: unknown operator \"between\"")
        );
        assert_eq!(problem(json!({"json.a": {"matches": "("}})).split(':').next(), Some("\"json.a\".matches"));
        assert!(problem(json!({"json.a": {"matches": "a".repeat(2_000)}})).contains("longer than 1000 bytes"));
        assert_eq!(problem(json!({})), "an empty table: it would hold for everything; leave the filter out instead");
        assert_eq!(problem(json!({"any": []})), "any: an empty list: it would never (any) or always (all) hold");
        assert_eq!(problem(json!({"json.a": []})), "\"json.a\": an empty list: it would never hold");
        assert_eq!(
            problem(json!({"json.a": [1, {"x": 1}]})),
            "\"json.a\"[1]: expected a string, a number or a boolean, found a table"
        );
        assert_eq!(
            problem(json!({"any": [{"json.a": 1}, 2]})),
            "any[1]: expected a table of conditions, found a number"
        );
        let deep = json!({"not": {"not": {"not": {"not": {"not": {"json.a": 1}}}}}});
        assert_eq!(problem(deep), "not.not.not.not.not: nested deeper than 4 levels of any, all and not");
        let many: Map<String, Value> = (0..300).map(|n| (format!("json.f{n}"), json!(n))).collect();
        assert!(problem(Value::Object(many)).contains("more than 256 conditions"));
        let long: Vec<Value> = (0..1_001).map(|n| json!(n)).collect();
        assert!(problem(json!({"json.a": long})).contains("more than 1000 list values"));
    }

    #[test]
    fn globs_match_as_shells_do() {
        for (pattern, text, matched) in [
            ("invoice.*", "invoice.paid", true),
            ("invoice.*", "invoice.", true),
            ("invoice.*", "customer.created", false),
            ("*.updated", "customer.subscription.updated", true),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
            ("?", "", false),
            ("*", "", true),
        ] {
            assert_eq!(Glob::new(pattern).matches(text), matched, "{pattern} {text}");
        }
    }

    /// Fields over a small alphabet, so that generated bodies hold them often.
    fn field() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-c]{1,2}(\\.([a-c]{1,2}|[0-2])){0,2}".prop_map(|p| format!("json.{p}")),
            "[a-c]{1,2}".prop_map(|p| format!("form.{p}")),
            "[a-c-]{1,3}".prop_map(|p| format!("header.{p}")),
            "[a-c]{1,2}".prop_map(|p| format!("query.{p}")),
            Just("event_type".to_owned()),
        ]
    }

    fn literal() -> impl Strategy<Value = Value> {
        prop_oneof![
            "[a-c0-9]{0,3}".prop_map(Value::from),
            "\\PC{0,4}".prop_map(Value::from),
            (-1000i64..1000).prop_map(Value::from),
            (-1.0e6f64..1.0e6).prop_map(Value::from),
            Just(Value::from(1.0e20)),
            any::<bool>().prop_map(Value::from),
        ]
    }

    fn number() -> impl Strategy<Value = Value> {
        prop_oneof![(-100i64..100).prop_map(Value::from), (-100.0f64..100.0).prop_map(Value::from)]
    }

    fn condition() -> impl Strategy<Value = Value> {
        let operator = prop_oneof![
            literal(),
            proptest::collection::vec(literal(), 1..4).prop_map(Value::from),
            literal().prop_map(|l| json!({"eq": l})),
            literal().prop_map(|l| json!({"not": l})),
            proptest::collection::vec(literal(), 1..4).prop_map(|l| json!({"in": l})),
            "[a-c]{0,3}".prop_map(|p| json!({"prefix": p})),
            "[a-c]{0,3}".prop_map(|p| json!({"suffix": p})),
            "[a-c*?]{0,4}".prop_map(|p| json!({"glob": p})),
            literal().prop_map(|l| json!({"contains": l})),
            number().prop_map(|n| json!({"gt": n})),
            number().prop_map(|n| json!({"gte": n})),
            number().prop_map(|n| json!({"lt": n})),
            number().prop_map(|n| json!({"lte": n})),
            any::<bool>().prop_map(|b| json!({"exists": b})),
            prop_oneof![Just("^[a-c]+$"), Just("b"), Just("^-?[0-9]+(\\.[0-9]+)?$"), Just("(?i)A|c$")]
                .prop_map(|r| json!({"matches": r})),
        ];
        (field(), operator).prop_map(|(f, op)| {
            let mut map = Map::new();
            map.insert(f, op);
            Value::Object(map)
        })
    }

    fn filter() -> impl Strategy<Value = Value> {
        condition().prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 1..4).prop_map(|items| json!({"any": items})),
                proptest::collection::vec(inner.clone(), 1..4).prop_map(|items| json!({"all": items})),
                inner.prop_map(|item| json!({"not": item})),
            ]
        })
    }

    /// JSON documents over the fields' alphabet: objects, arrays, every kind of value.
    fn document() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![Just(Value::Null), literal(), number()];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                proptest::collection::btree_map("[a-c]{1,2}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A request's parts: body, headers, query, event type.
    type Parts = (Vec<u8>, Vec<(String, Vec<u8>)>, Vec<u8>, Option<String>);

    /// A request's parts: JSON, a form, or any bytes as the body; headers and a query over the alphabet.
    fn request() -> impl Strategy<Value = Parts> {
        let pairs = || proptest::collection::vec(("[a-c]{1,2}", "[a-c0-9.\\-]{0,4}"), 0..4);
        let form = || pairs().prop_map(|p| p.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&"));
        let body = prop_oneof![
            document().prop_map(|d| d.to_string().into_bytes()),
            form().prop_map(String::into_bytes),
            proptest::collection::vec(any::<u8>(), 0..80),
        ];
        let headers = proptest::collection::vec(("[a-c-]{1,3}", proptest::collection::vec(any::<u8>(), 0..6)), 0..4);
        let event_type = proptest::option::of("[a-c.]{0,4}");
        (body, headers, form().prop_map(String::into_bytes), event_type)
    }

    proptest! {
        /// Parse, print, parse: the same filter.
        #[test]
        fn printing_is_parsed_back_the_same(table in filter()) {
            let once = Filter::parse(&table).unwrap();
            let twice = Filter::parse(&once.to_json()).unwrap();
            prop_assert_eq!(once, twice);
        }

        /// No request, however odd, makes a filter panic; and `all`, `any`
        /// and `not` are the logic they name, whatever their parts find.
        #[test]
        fn a_filter_never_panics_and_combines_as_logic(
            a in filter(),
            b in filter(),
            (body, headers, query, event_type) in request(),
        ) {
            let headers: Headers = headers.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
            let view = RequestView::new(&headers, &body, &query, &[]);
            let event_type = event_type.as_deref();
            let holds = |table: &Value| Filter::parse(table).unwrap().check(&view, event_type).is_ok();
            let (x, y) = (holds(&a), holds(&b));
            prop_assert_eq!(holds(&json!({"all": [a, b]})), x && y);
            prop_assert_eq!(holds(&json!({"any": [a, b]})), x || y);
            prop_assert_eq!(holds(&json!({"not": a})), !x);
        }

        /// Nor does any table make parsing panic.
        #[test]
        fn parsing_never_panics(text in "[\\[\\]{}:,\"a-z0-9. ]{0,60}") {
            if let Ok(value) = serde_json::from_str::<Value>(&text) {
                let _ = Filter::parse(&value);
            }
        }
    }
}
