//! Ranged attribute retrieval (Active Directory): a multi-valued attribute
//! with more values than the server's MaxValRange (1,500 by default) comes
//! back as `member;range=0-1499`, and the rest must be asked for, range by
//! range (`member;range=1500-*`, ...), until a range ends in `*`. Read any
//! other way, a large group would look empty or cut short, and its members
//! would count as absent.

use ldap3::{Ldap, SearchEntry};

use super::search::{read_entry, Tally};
use super::LdapError;
use crate::config::LdapSettings;

/// An attribute description with a range option, `NAME;range=LOW-HIGH` or
/// `NAME;range=LOW-*`: (NAME, LOW, HIGH or None for `*`).
pub fn parse_range(description: &str) -> Option<(&str, u32, Option<u32>)> {
    // Most descriptions have no option at all: no allocation for them.
    if !description.contains(';') {
        return None;
    }
    let lower = description.to_ascii_lowercase();
    let at = lower.find(";range=")?;
    let name = &description[..at];
    let range = &description[at + ";range=".len()..];
    // Options after the range are not something AD sends.
    let (low, high) = range.split_once('-')?;
    let low: u32 = low.parse().ok()?;
    let high = match high {
        "*" => None,
        h => Some(h.parse::<u32>().ok()?),
    };
    Some((name, low, high))
}

/// The description asking for values from `low` on: `NAME;range=LOW-*`, or
/// `NAME;range=LOW-(LOW+N-1)` with `range_size: N`.
pub fn range_request(name: &str, low: u32, range_size: Option<u32>) -> String {
    match range_size {
        Some(n) => format!(
            "{name};range={low}-{}",
            low.saturating_add(n.saturating_sub(1))
        ),
        None => format!("{name};range={low}-*"),
    }
}

/// One range of an attribute's values, as bytes (text or binary alike).
struct Chunk {
    name: String,
    low: u32,
    high: Option<u32>,
    values: Vec<Vec<u8>>,
}

/// Takes the ranged description of `name` (any case; None: any attribute)
/// out of the entry, text or binary.
fn take_ranged(entry: &mut SearchEntry, name: Option<&str>) -> Option<Chunk> {
    let matches = |key: &String| {
        parse_range(key).is_some_and(|(n, _, _)| name.is_none_or(|w| n.eq_ignore_ascii_case(w)))
    };
    if let Some(key) = entry.attrs.keys().find(|k| matches(k)).cloned() {
        let values = entry.attrs.remove(&key).unwrap_or_default();
        let (n, low, high) = parse_range(&key)?;
        return Some(Chunk {
            name: n.to_owned(),
            low,
            high,
            values: values.into_iter().map(String::into_bytes).collect(),
        });
    }
    if let Some(key) = entry.bin_attrs.keys().find(|k| matches(k)).cloned() {
        let values = entry.bin_attrs.remove(&key).unwrap_or_default();
        let (n, low, high) = parse_range(&key)?;
        return Some(Chunk {
            name: n.to_owned(),
            low,
            high,
            values,
        });
    }
    None
}

/// Puts the whole of a ranged attribute back under its own name: text when
/// every value is UTF-8, binary otherwise (as ldap3 itself sorts them).
fn put_back(entry: &mut SearchEntry, name: String, values: Vec<Vec<u8>>) {
    match values
        .iter()
        .map(|v| String::from_utf8(v.clone()))
        .collect::<Result<Vec<String>, _>>()
    {
        Ok(text) => entry.attrs.entry(name).or_default().extend(text),
        Err(_) => entry.bin_attrs.entry(name).or_default().extend(values),
    }
}

/// Reads every ranged attribute of every entry to its end, in place: after
/// it, each holds all its values under its plain name.
pub(super) async fn complete_ranges(
    ldap: &mut Ldap,
    settings: &LdapSettings,
    entries: &mut [SearchEntry],
    tally: &mut Tally,
) -> Result<(), LdapError> {
    for entry in entries.iter_mut() {
        while let Some(Chunk {
            name,
            low,
            high,
            mut values,
        }) = take_ranged(entry, None)
        {
            let mut next = match high {
                None => {
                    put_back(entry, name, values);
                    continue;
                }
                Some(high) => checked_next(&entry.dn, &name, low, high)?,
            };
            loop {
                let request = range_request(&name, next, settings.range_size);
                tally.range_requests += 1;
                let mut more = read_entry(ldap, settings, &entry.dn, &[request])
                    .await?
                    .ok_or_else(|| LdapError::Range {
                        dn: entry.dn.clone(),
                        attribute: name.clone(),
                        detail: format!(
                            "the entry was gone when values from {next} on were asked for"
                        ),
                    })?;
                let Some(chunk) = take_ranged(&mut more, Some(&name)) else {
                    return Err(LdapError::Range {
                        dn: entry.dn.clone(),
                        attribute: name.clone(),
                        detail: format!(
                            "the server answered no range when values from {next} on were asked for"
                        ),
                    });
                };
                if chunk.low != next {
                    return Err(LdapError::Range {
                        dn: entry.dn.clone(),
                        attribute: name.clone(),
                        detail: format!(
                            "values from {next} on were asked for and the server answered a range from {}",
                            chunk.low
                        ),
                    });
                }
                values.extend(chunk.values);
                match chunk.high {
                    None => break,
                    Some(high) => next = checked_next(&entry.dn, &name, chunk.low, high)?,
                }
            }
            tracing::debug!(dn = %entry.dn, attribute = %name, values = values.len(), "Ranged attribute read to its end.");
            put_back(entry, name, values);
        }
    }
    Ok(())
}

/// The first value after the range LOW-HIGH, which must move forward.
fn checked_next(dn: &str, name: &str, low: u32, high: u32) -> Result<u32, LdapError> {
    match high.checked_add(1) {
        Some(next) if high >= low => Ok(next),
        _ => Err(LdapError::Range {
            dn: dn.to_owned(),
            attribute: name.to_owned(),
            detail: format!("the server answered the range {low}-{high}, which does not move on"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_options_parse_as_ad_writes_them() {
        assert_eq!(
            parse_range("member;range=0-1499"),
            Some(("member", 0, Some(1499)))
        );
        assert_eq!(
            parse_range("member;Range=1500-*"),
            Some(("member", 1500, None))
        );
        assert_eq!(
            parse_range("memberOf;range=3000-4499"),
            Some(("memberOf", 3000, Some(4499)))
        );
        assert_eq!(parse_range("member"), None);
        assert_eq!(parse_range("member;range=x-*"), None);
        assert_eq!(parse_range("member;binary"), None);
        assert_eq!(range_request("member", 1500, None), "member;range=1500-*");
        assert_eq!(
            range_request("member", 1500, Some(500)),
            "member;range=1500-1999"
        );
        assert_eq!(range_request("member", 0, Some(1)), "member;range=0-0");
    }

    #[test]
    fn a_last_range_is_put_back_under_the_plain_name() {
        let mut entry = SearchEntry {
            dn: "CN=G,DC=x".to_owned(),
            attrs: [("member;range=0-*".to_owned(), vec!["CN=A,DC=x".to_owned()])]
                .into_iter()
                .collect(),
            bin_attrs: Default::default(),
        };
        let chunk = take_ranged(&mut entry, None).unwrap();
        assert_eq!(
            (chunk.name.as_str(), chunk.low, chunk.high),
            ("member", 0, None)
        );
        put_back(&mut entry, chunk.name, chunk.values);
        assert_eq!(entry.attrs["member"], vec!["CN=A,DC=x".to_owned()]);
        assert!(take_ranged(&mut entry, None).is_none());
    }

    #[test]
    fn a_range_that_does_not_move_on_is_an_error() {
        assert_eq!(checked_next("dn", "member", 0, 1499).unwrap(), 1500);
        assert!(checked_next("dn", "member", 1500, 1499).is_err());
        assert!(checked_next("dn", "member", 0, u32::MAX).is_err());
    }
}
