//! `application/x-www-form-urlencoded` (form bodies and query strings), byte
//! for byte. `form_urlencoded` decodes to `String`, replacing bytes that are
//! not UTF-8; keys rendered from such values would then collide (`%E9` and
//! `%E8` both become U+FFFD) and dedupe would drop a real event. Here values
//! stay bytes.

use std::borrow::Cow;

use percent_encoding::percent_decode;

/// Every `name=value` pair, in order, `+` and `%XX` decoded. A pair without
/// `=` has an empty value; empty pairs (`a=1&&b=2`) are skipped.
pub fn pairs(input: &[u8]) -> impl Iterator<Item = (Vec<u8>, Vec<u8>)> + '_ {
    input.split(|b| *b == b'&').filter(|pair| !pair.is_empty()).map(|pair| {
        let (name, value) = match pair.iter().position(|b| *b == b'=') {
            Some(at) => (&pair[..at], &pair[at + 1..]),
            None => (pair, &pair[pair.len()..]),
        };
        (decode(name), decode(value))
    })
}

/// The first value of `name`.
pub fn find(input: &[u8], name: &[u8]) -> Option<Vec<u8>> {
    pairs(input).find(|(n, _)| n == name).map(|(_, v)| v)
}

fn decode(part: &[u8]) -> Vec<u8> {
    let spaced: Cow<[u8]> = if part.contains(&b'+') {
        Cow::Owned(part.iter().map(|b| if *b == b'+' { b' ' } else { *b }).collect())
    } else {
        Cow::Borrowed(part)
    };
    percent_decode(&spaced).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decodes_like_a_form_but_keeps_bytes() {
        let got: Vec<_> = pairs(b"a=1&b=x+y%21&c&&d=%E9%00&e=%zz").collect();
        assert_eq!(
            got,
            vec![
                (b"a".to_vec(), b"1".to_vec()),
                (b"b".to_vec(), b"x y!".to_vec()),
                (b"c".to_vec(), b"".to_vec()),
                (b"d".to_vec(), b"\xe9\x00".to_vec()),
                (b"e".to_vec(), b"%zz".to_vec()),
            ]
        );
        assert_eq!(find(b"x=%E9&x=%E8", b"x"), Some(b"\xe9".to_vec()));
        assert_ne!(find(b"x=%E9", b"x"), find(b"x=%E8", b"x"), "distinct bytes stay distinct");
    }

    proptest! {
        /// Same answers as the form_urlencoded crate wherever the input decodes to UTF-8.
        #[test]
        fn agrees_with_form_urlencoded_on_text(input in "[a-z0-9=&+%]{0,40}") {
            let ours: Vec<(Vec<u8>, Vec<u8>)> = pairs(input.as_bytes()).collect();
            if ours.iter().all(|(n, v)| std::str::from_utf8(n).is_ok() && std::str::from_utf8(v).is_ok()) {
                let theirs: Vec<(Vec<u8>, Vec<u8>)> = form_urlencoded::parse(input.as_bytes())
                    .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
                    .collect();
                prop_assert_eq!(ours, theirs);
            }
        }
    }
}
