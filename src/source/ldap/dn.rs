//! Distinguished names compared however they were written (RFC 4514).

/// A DN in a form that compares equal however it was written: RDNs split at
/// unescaped `,` (or `;`), attribute values unescaped (`\,` and `\2C` are
/// the same comma) and trimmed of unescaped spaces, attribute types and
/// values lowercased (the attributes used in DNs here match
/// case-insensitively), the values of a multi-valued RDN sorted, then
/// escaped again one way. Only for comparing: messages show DNs as the
/// server wrote them.
pub fn normalize_dn(dn: &str) -> String {
    split_unescaped(dn, &[',', ';'])
        .iter()
        .map(|rdn| {
            let mut avas: Vec<String> = split_unescaped(rdn, &['+'])
                .iter()
                .map(|ava| normalize_ava(ava))
                .collect();
            avas.sort();
            avas.join("+")
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `text` split at the characters of `at` that no backslash escapes.
fn split_unescaped<'a>(text: &'a str, at: &[char]) -> Vec<&'a str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, ch) in text.char_indices() {
        if escaped {
            escaped = false;
        } else if ch == '\\' {
            escaped = true;
        } else if at.contains(&ch) {
            parts.push(&text[start..i]);
            start = i + ch.len_utf8();
        }
    }
    parts.push(&text[start..]);
    parts
}

fn normalize_ava(ava: &str) -> String {
    let (kind, value) = match split_unescaped(ava, &['=']).as_slice() {
        [kind, ..] if kind.len() < ava.len() => (*kind, &ava[kind.len() + 1..]),
        _ => return ava.trim().to_lowercase(),
    };
    let kind = kind.trim().to_lowercase();
    let value = value.trim_start_matches(' ');
    // `#` and hex: the BER encoding of the value, compared as its hex digits.
    if let Some(hex) = value.strip_prefix('#') {
        return format!("{kind}=#{}", hex.trim_end().to_lowercase());
    }
    format!("{kind}={}", escape(&unescape(value).to_lowercase()))
}

/// The value an RFC 4514 string stands for: `\XX` hex pairs are bytes (a
/// multi-byte UTF-8 character is several), `\c` is `c`; unescaped spaces at
/// the end are not part of it.
fn unescape(value: &str) -> String {
    let mut bytes: Vec<u8> = Vec::with_capacity(value.len());
    // Bytes up to here are kept even when they are spaces (escaped ones).
    let mut kept = 0;
    let raw = value.as_bytes();
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'\\' if i + 1 < raw.len() => {
                // (from_str_radix would take a sign: `\+b` is not hex.)
                let hex = raw
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        bytes.push(b);
                        i += 3;
                    }
                    None => {
                        // An escaped character, possibly multi-byte.
                        let len = value[i + 1..].chars().next().map_or(1, char::len_utf8);
                        bytes.extend_from_slice(&raw[i + 1..i + 1 + len]);
                        i += 1 + len;
                    }
                }
                kept = bytes.len();
            }
            b => {
                bytes.push(b);
                if b != b' ' {
                    kept = bytes.len();
                }
                i += 1;
            }
        }
    }
    bytes.truncate(kept);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// One way of escaping a value (RFC 4514 section 2.4).
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, ch) in value.chars().enumerate() {
        let special = matches!(ch, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=')
            || (i == 0 && matches!(ch, '#' | ' '))
            || (i == last && ch == ' ');
        if special {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::normalize_dn;

    #[test]
    fn dns_compare_however_they_are_written() {
        assert_eq!(
            normalize_dn("uid=Ann, OU=Acme ,dc=Example, dc=com"),
            normalize_dn("uid=ann,ou=acme,dc=example,dc=com")
        );
        assert_eq!(
            normalize_dn("cn=Smith\\, John,dc=x"),
            "cn=smith\\, john,dc=x"
        );
        // The same comma escaped two ways, and in hex.
        assert_eq!(
            normalize_dn(r"CN=Beta\2C Inc.,OU=Groups,DC=test"),
            normalize_dn(r"cn=beta\, inc.,ou=groups,dc=test")
        );
        // UTF-8 in hex pairs.
        assert_eq!(
            normalize_dn(r"CN=Jos\C3\A9 M\C3\BCller,DC=test"),
            normalize_dn("cn=José Müller,dc=test")
        );
        // An escaped trailing space is part of the value; an unescaped one is not.
        assert_ne!(normalize_dn(r"cn=a\ ,dc=x"), normalize_dn("cn=a,dc=x"));
        assert_eq!(normalize_dn("cn=a ,dc=x"), normalize_dn("cn=a,dc=x"));
        // Multi-valued RDNs in any order; `;` as the old separator.
        assert_eq!(
            normalize_dn("cn=a+uid=b;dc=x"),
            normalize_dn("UID=b + CN=a,dc=x")
        );
        // Escaped separators stay inside their value.
        assert_eq!(
            normalize_dn(r"cn=a\+b\;c,dc=x"),
            normalize_dn(r"cn=a\2Bb\3Bc,dc=x")
        );
        assert_ne!(normalize_dn(r"cn=a\+b,dc=x"), normalize_dn("cn=a+b,dc=x"));
    }
}
