//! The indexes the planner builds once per run, and the key and map types
//! that keep them cheap at 1M users: foldhash maps, and emails keyed
//! case-insensitively by borrowing instead of lowercased copies.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};

use crate::config::Policy;

/// An email as a map key: compared and hashed trimmed and ASCII
/// case-insensitively, the way `same_email` compares, without allocating.
#[derive(Clone, Copy)]
pub(super) struct Caseless<'a>(pub(super) &'a str);

impl PartialEq for Caseless<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.0.trim().eq_ignore_ascii_case(other.0.trim())
    }
}

impl Eq for Caseless<'_> {}

impl Hash for Caseless<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Lowercased a chunk at a time: one hasher call per 64 bytes.
        let mut buf = [0u8; 64];
        for chunk in self.0.trim().as_bytes().chunks(buf.len()) {
            let out = &mut buf[..chunk.len()];
            out.copy_from_slice(chunk);
            out.make_ascii_lowercase();
            state.write(out);
        }
        state.write_u8(0xff);
    }
}

/// Hash maps for the large per-run indexes: foldhash (fast, randomly seeded).
pub(super) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

pub(super) fn fast_map<K, V>(capacity: usize) -> FastMap<K, V> {
    HashMap::with_capacity_and_hasher(capacity, foldhash::fast::RandomState::default())
}

/// Hash sets of the same kind.
pub(super) type FastSet<K> = HashSet<K, foldhash::fast::RandomState>;

pub(super) fn fast_set<K>(capacity: usize) -> FastSet<K> {
    HashSet::with_capacity_and_hasher(capacity, foldhash::fast::RandomState::default())
}

/// Groups platform records by managed externalId; an externalId carried by
/// more than one record is ambiguous and set aside. Hash maps: the plan's
/// order comes from the final sort, never from these indexes.
pub(super) fn index_managed<'a, T>(
    records: &'a [T],
    external_id: impl Fn(&T) -> Option<&str>,
    policy: &Policy,
) -> (FastMap<&'a str, &'a T>, BTreeSet<&'a str>)
where
    T: 'a,
{
    let mut by_id: FastMap<&str, &T> = fast_map(records.len());
    let mut ambiguous = BTreeSet::new();
    for r in records {
        let Some(x) = external_id(r).filter(|x| policy.in_scope(Some(x))) else {
            continue;
        };
        if by_id.insert(x, r).is_some() {
            ambiguous.insert(x);
        }
    }
    for x in &ambiguous {
        by_id.remove(x);
    }
    (by_id, ambiguous)
}
