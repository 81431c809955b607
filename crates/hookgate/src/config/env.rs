//! The environment as config input: `env:NAME` secrets, and
//! `HOOKGATE_SECTION__KEY` overrides of the file, e.g.
//! `HOOKGATE_SERVER__LISTEN=0.0.0.0:8080` or `HOOKGATE_DESTINATIONS__0__URL=…`.
//! Only names with a `__` are keys, so `HOOKGATE_CONFIG`, `HOOKGATE_URL` and
//! `HOOKGATE_ADMIN_TOKEN` never collide with one.

use std::collections::BTreeMap;

const PREFIX: &str = "HOOKGATE_";

/// A snapshot of environment variables: the process's, or a test's own.
#[derive(Debug, Clone, Default)]
pub struct Env(BTreeMap<String, String>);

impl Env {
    /// The process's environment (variables whose name or value is not UTF-8 are skipped).
    pub fn from_process() -> Env {
        Env(std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect())
    }

    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Env {
        Env(pairs.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// Apply every `HOOKGATE_A__B__0__C=value` to `table` as `a.b[0].c`, in
    /// name order. The value is read as TOML if it parses (numbers, booleans,
    /// arrays), otherwise as a string.
    pub fn overlay(&self, table: &mut toml::Table) -> Result<(), String> {
        for (name, value) in &self.0 {
            let Some(rest) = name.strip_prefix(PREFIX).filter(|rest| rest.contains("__")) else { continue };
            let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
            let parsed = format!("v = {value}")
                .parse::<toml::Table>()
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(value.clone()));
            set_path(table, &path, parsed).map_err(|e| format!("{name}: {e}"))?;
        }
        Ok(())
    }
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let (first, rest) = path.split_first().ok_or("empty key")?;
    if rest.is_empty() {
        table.insert(first.clone(), value);
        return Ok(());
    }
    let node = table.entry(first.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
    set_in_value(node, rest, value)
}

fn set_in_value(node: &mut toml::Value, path: &[String], value: toml::Value) -> Result<(), String> {
    match node {
        toml::Value::Table(table) => set_path(table, path, value),
        toml::Value::Array(items) => {
            let index: usize = path[0].parse().map_err(|_| format!("{:?} is not an index", path[0]))?;
            let item = items.get_mut(index).ok_or_else(|| format!("there is no entry {index}"))?;
            if path.len() == 1 {
                *item = value;
                Ok(())
            } else {
                set_in_value(item, &path[1..], value)
            }
        }
        _ => Err(format!("{:?} is not a table", path[0])),
    }
}
