//! Parameters bound by name. PostgreSQL numbers its parameters (`$1`,
//! `$2`…), and a statement that unnests fourteen arrays bound them by
//! position: swap two lines of the binding and two arrays of one type trade
//! places without an error. Here the SQL says `$order_keys`, the binding says
//! `("order_keys", &order)`, and both are numbered from one list of names;
//! a name unbound, bound twice or never used panics at the first call (and
//! in the tests), never misbinds.

use tokio_postgres::types::ToSql;

/// `template` with each `$name` replaced by `$n`, `n` its place in `names`.
pub fn numbered(template: &str, names: &[&str]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut used = vec![false; names.len()];
    let mut rest = template;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let len = after.bytes().take_while(|b| b.is_ascii_alphanumeric() || *b == b'_').count();
        let name = &after[..len];
        let place = names.iter().position(|n| *n == name).unwrap_or_else(|| panic!("${name} is not a bound name"));
        used[place] = true;
        out.push_str(&format!("${}", place + 1));
        rest = &after[len..];
    }
    out.push_str(rest);
    if let Some(unused) = used.iter().position(|u| !u) {
        panic!("${} is bound but the statement never uses it", names[unused]);
    }
    out
}

/// The values of `binds` in the order of `names`: each name bound exactly once.
pub fn by_name<'a>(names: &[&str], binds: &[(&str, &'a (dyn ToSql + Sync))]) -> Vec<&'a (dyn ToSql + Sync)> {
    assert_eq!(binds.len(), names.len(), "every name bound once: {names:?}");
    names
        .iter()
        .map(|name| {
            let mut found = binds.iter().filter(|(n, _)| n == name);
            let (_, value) = found.next().unwrap_or_else(|| panic!("${name} is not bound"));
            assert!(found.next().is_none(), "${name} is bound twice");
            *value
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_numbers_and_values_follow_their_names() {
        let names = ["ids", "keys"];
        assert_eq!(
            numbered("unnest($ids::text[], $keys::bytea[]) WHERE x::int = 1", &names),
            "unnest($1::text[], $2::bytea[]) WHERE x::int = 1"
        );
        let (ids, keys) = (vec!["a"], vec![b"k".to_vec()]);
        let values = by_name(&names, &[("keys", &keys), ("ids", &ids)]);
        assert_eq!(format!("{values:?}"), format!("{:?}", [&ids as &(dyn ToSql + Sync), &keys]));
    }

    #[test]
    #[should_panic(expected = "$keys is bound but the statement never uses it")]
    fn an_unused_name_is_refused() {
        numbered("$ids", &["ids", "keys"]);
    }

    #[test]
    #[should_panic(expected = "$other is not a bound name")]
    fn an_unknown_name_is_refused() {
        numbered("$ids, $other", &["ids"]);
    }

    #[test]
    #[should_panic(expected = "$ids is bound twice")]
    fn a_name_bound_twice_is_refused() {
        let ids = vec!["a"];
        by_name(&["ids", "keys"], &[("ids", &ids), ("ids", &ids)]);
    }
}
