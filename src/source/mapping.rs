//! From source records to the [`Directory`]: required fields, valid emails,
//! the role table, labels, customers from their own records or from the user
//! records, duplicates, and the cap on refused records. Shared by every
//! source, so CSV, LDAP and HTTP directories follow the same rules.
//!
//! [`DirectoryBuilder`] takes one record at a time, as a [`RecordView`]
//! read by key position: a source may stream its rows into it without
//! holding them (the CSV source does), or hand its [`SourceRecord`]s over
//! at once through [`build_directory`] (LDAP and HTTP). A customer is built
//! from its first record; its later records are checked against it, value
//! by value, without building it again. While records come in, users and
//! customers are kept in arrival order with hash indexes (externalIds, and
//! emails compared caselessly without a lowercased copy of each); the
//! directory's sorted maps are built once, at the end.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasher;
use std::sync::Arc;

use super::SourceError;
use crate::config::{CustomerMapping, Mapping, Policy};
use crate::directory::{
    is_valid_email, normalise_labels, DesiredCustomer, DesiredUser, Directory, Origin,
    RefusedRecord, SourceRecord, UserParts, Users, ValueRule,
};

/// How a source calls its keys in messages: "column", "attribute", "path".
#[derive(Clone, Copy, Debug)]
pub struct KeyKind(pub &'static str);

/// A record as the mapping reads it.
pub trait RecordView {
    /// Where it came from, for messages.
    fn origin(&self) -> &Origin;
    /// The value of the `n`-th key of the list the builder reads this kind
    /// of record by ([`DirectoryBuilder::user_keys`],
    /// [`DirectoryBuilder::customer_keys`]): trimmed, `None` when empty or
    /// absent.
    fn value(&self, n: usize) -> Option<&str>;
    /// Set when the source already knows the record cannot be used (an
    /// LDAP user that matches no customer entry, a CSV row that may be cut
    /// short): the mapping refuses it with this message.
    fn problem(&self) -> Option<&str>;
}

/// A [`SourceRecord`] read through the key list it is mapped with.
pub struct Keyed<'r> {
    pub record: &'r SourceRecord,
    pub keys: &'r [String],
}

impl RecordView for Keyed<'_> {
    fn origin(&self) -> &Origin {
        &self.record.origin
    }

    fn value(&self, n: usize) -> Option<&str> {
        self.keys.get(n).and_then(|key| self.record.get(key))
    }

    fn problem(&self) -> Option<&str> {
        self.record.problem.as_deref()
    }
}

/// The source keys a mapping reads from user records (and, when customers
/// come from the user records, the customer keys too), each once.
pub fn user_keys(mapping: &Mapping, with_customer_fields: bool) -> Vec<String> {
    let mut keys = KeyList::default();
    UserFields::new(mapping, with_customer_fields, &mut keys);
    keys.0
}

/// The source keys a mapping reads from customer records, each once.
pub fn customer_keys(mapping: &Mapping) -> Vec<String> {
    let mut keys = KeyList::default();
    CustomerRecordFields::new(&mapping.customer, &mut keys);
    keys.0
}

/// The keys one kind of record is read by, each once, in the order the
/// fields name them.
#[derive(Default)]
struct KeyList(Vec<String>);

impl KeyList {
    /// The field `name` read from `key`, at the key's position (added when new).
    fn field<'a>(&mut self, name: &'static str, key: &'a str) -> Field<'a> {
        let slot = match self.0.iter().position(|k| k == key) {
            Some(slot) => slot,
            None => {
                self.0.push(key.to_owned());
                self.0.len() - 1
            }
        };
        Field { name, key, slot }
    }
}

/// A mapped field: its name in messages, the source key behind it, and
/// where a record holds that key's value.
#[derive(Clone, Copy, Debug)]
struct Field<'a> {
    name: &'static str,
    key: &'a str,
    slot: usize,
}

/// A customer's fields, in user records or in customer records.
struct CustomerFields<'a> {
    name: Field<'a>,
    description: Option<Field<'a>>,
    labels: Vec<Field<'a>>,
}

impl<'a> CustomerFields<'a> {
    fn new(c: &'a CustomerMapping, keys: &mut KeyList) -> CustomerFields<'a> {
        CustomerFields {
            name: keys.field("customer name", &c.name),
            description: c
                .description
                .as_deref()
                .map(|k| keys.field("customer description", k)),
            labels: c
                .labels
                .iter()
                .map(|k| keys.field("customer label", k))
                .collect(),
        }
    }
}

/// The fields of a customer record: its externalId, then the customer's.
struct CustomerRecordFields<'a> {
    external_id: Field<'a>,
    customer: CustomerFields<'a>,
}

impl<'a> CustomerRecordFields<'a> {
    fn new(c: &'a CustomerMapping, keys: &mut KeyList) -> CustomerRecordFields<'a> {
        CustomerRecordFields {
            external_id: keys.field("customer externalId", &c.external_id),
            customer: CustomerFields::new(c, keys),
        }
    }
}

/// The fields of a user record; the customer's too when customers come
/// from the user records.
struct UserFields<'a> {
    external_id: Field<'a>,
    customer: Field<'a>,
    email: Field<'a>,
    name: Option<Field<'a>>,
    phone: Option<Field<'a>>,
    role: Option<Field<'a>>,
    customer_fields: Option<CustomerFields<'a>>,
}

impl<'a> UserFields<'a> {
    fn new(mapping: &'a Mapping, with_customer_fields: bool, keys: &mut KeyList) -> UserFields<'a> {
        let u = &mapping.user;
        UserFields {
            external_id: keys.field("externalId", &u.external_id),
            customer: keys.field("customer", &u.customer),
            email: keys.field("email", &u.email),
            name: u.name.as_deref().map(|k| keys.field("name", k)),
            phone: u.phone.as_deref().map(|k| keys.field("phone", k)),
            role: u.role.as_deref().map(|k| keys.field("role", k)),
            customer_fields: with_customer_fields
                .then(|| CustomerFields::new(&mapping.customer, keys)),
        }
    }
}

/// Why a record is refused in the end (each record is refused at most once,
/// with its first problem).
struct Refused;

/// The value rules of each field (README, "Values dirsync refuses").
mod rule {
    use crate::directory::{limits, ValueRule};

    pub const EXTERNAL_ID: ValueRule = ValueRule::single_line(limits::EXTERNAL_ID);
    pub const NAME: ValueRule = ValueRule::single_line(limits::NAME);
    pub const EMAIL: ValueRule = ValueRule::single_line(limits::EMAIL);
    pub const PHONE: ValueRule = ValueRule::single_line(limits::PHONE);
    pub const ROLE: ValueRule = ValueRule::single_line(limits::ROLE);
    pub const LABEL: ValueRule = ValueRule::single_line(limits::LABEL);
    pub const DESCRIPTION: ValueRule = ValueRule {
        max_chars: limits::DESCRIPTION,
        multiline: true,
    };
}

/// The most records one build takes (its indexes hold 32-bit positions);
/// past it the whole source is refused.
const MAX_RECORDS: usize = u32::MAX as usize - 1;

/// Why deletes are withheld for a refused record without a usable externalId.
const NO_EXTERNAL_ID: &str =
    "a refused record names no usable externalId, so who is absent from the directory cannot be known";

/// Open-addressing hash indexes of positions in an arena: the keys stay in
/// the arena, so an index holds only positions and hashes, 8 bytes a slot
/// (a million users' emails take 16 MiB). Positions are below
/// [`MAX_RECORDS`](super::MAX_RECORDS), which the builder enforces.
mod index {
    /// One slot: a position (plus one; 0 is empty) and the low half of its
    /// key's hash, which chooses the slot in any table up to 2^32 slots.
    #[derive(Clone, Copy, Default)]
    struct Slot {
        pos: u32,
        tag: u32,
    }

    fn tag(hash: u64) -> u32 {
        hash as u32
    }

    /// Positions by hash, linear probing, at most half full.
    #[derive(Default)]
    pub struct HashIndex {
        slots: Vec<Slot>,
        len: usize,
    }

    impl HashIndex {
        /// The position under `hash` whose key `is_key` accepts, if any.
        pub fn find(&self, hash: u64, mut is_key: impl FnMut(usize) -> bool) -> Option<usize> {
            let mask = self.slots.len().checked_sub(1)?;
            let mut i = tag(hash) as usize & mask;
            loop {
                let slot = self.slots[i];
                if slot.pos == 0 {
                    return None;
                }
                let pos = slot.pos as usize - 1;
                if slot.tag == tag(hash) && is_key(pos) {
                    return Some(pos);
                }
                i = (i + 1) & mask;
            }
        }

        /// Asks the CPU to bring the slot `hash` points at into its cache,
        /// for a [`find`](HashIndex::find) soon after: a million keys'
        /// index is far larger than the cache, and a lookup otherwise waits
        /// on memory.
        pub fn prefetch(&self, hash: u64) {
            let Some(mask) = self.slots.len().checked_sub(1) else {
                return;
            };
            let slot: *const Slot = &self.slots[tag(hash) as usize & mask];
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a prefetch is a hint; it reads nothing and cannot
            // fault (the address is a slot of this index, at that).
            unsafe {
                use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
                _mm_prefetch::<_MM_HINT_T0>(slot.cast());
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = slot;
        }

        /// Adds `pos` (below `MAX_RECORDS`) under `hash` (its key is not
        /// in the index yet).
        pub fn insert(&mut self, hash: u64, pos: usize) {
            if (self.len + 1) * 2 > self.slots.len() {
                self.grow();
            }
            let pos = u32::try_from(pos + 1).unwrap_or(u32::MAX);
            self.place(Slot {
                pos,
                tag: tag(hash),
            });
            self.len += 1;
        }

        /// Puts `slot` at the first free place from where its hash points.
        fn place(&mut self, slot: Slot) {
            let mask = self.slots.len() - 1;
            let mut i = slot.tag as usize & mask;
            while self.slots[i].pos != 0 {
                i = (i + 1) & mask;
            }
            self.slots[i] = slot;
        }

        /// Room for `more` positions without growing again.
        pub fn reserve(&mut self, more: usize) {
            let wanted = (self.len + more).saturating_mul(2);
            if wanted > self.slots.len() {
                self.resize(wanted.next_power_of_two());
            }
        }

        fn grow(&mut self) {
            self.resize((self.slots.len() * 2).max(64));
        }

        fn resize(&mut self, size: usize) {
            let old = std::mem::replace(&mut self.slots, vec![Slot::default(); size]);
            for slot in old.into_iter().filter(|s| s.pos != 0) {
                self.place(slot);
            }
        }
    }
}

use index::HashIndex;

/// The hash every index here uses (fixed: a read does the same work each time).
const HASHER: foldhash::fast::FixedState =
    foldhash::fast::FixedState::with_seed(0x0064_6972_7379_6e63);

fn hash_of(key: &str) -> u64 {
    HASHER.hash_one(key)
}

/// How a build finds users who share an email (the platform needs each
/// email once).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmailCheck {
    /// Each user's email is looked up as the user comes: the second user
    /// with an email is refused, naming the first.
    AsTheyCome,
    /// Only each email's hash is noted, and the hashes are compared at the
    /// end: a million lookups into an index larger than the cache are
    /// saved. When two match, the build is no good (the second user should
    /// have been refused, and the records after it read without it), and
    /// the records are built again, checked as they come.
    AtTheEnd,
}

/// The accepted users' emails (caseless), kept the way the build's
/// [`EmailCheck`] needs them.
enum Emails {
    /// Positions in `users`, by email.
    Index(HashIndex),
    /// The hash of each accepted user's email.
    Hashes(Vec<u64>),
}

impl Default for Emails {
    fn default() -> Emails {
        Emails::new(EmailCheck::AsTheyCome)
    }
}

impl Emails {
    fn new(check: EmailCheck) -> Emails {
        match check {
            EmailCheck::AsTheyCome => Emails::Index(HashIndex::default()),
            EmailCheck::AtTheEnd => Emails::Hashes(Vec::new()),
        }
    }

    fn reserve(&mut self, more: usize) {
        match self {
            Emails::Index(index) => index.reserve(more),
            Emails::Hashes(hashes) => hashes.reserve_exact(more),
        }
    }

    /// The user who has the email under `hash` (`is_owner` compares), when
    /// emails are checked as they come.
    fn owner(&self, hash: u64, is_owner: impl FnMut(usize) -> bool) -> Option<usize> {
        match self {
            Emails::Index(index) => index.find(hash, is_owner),
            Emails::Hashes(_) => None,
        }
    }

    /// The email under `hash` is now the accepted user's at `pos`.
    fn add(&mut self, hash: u64, pos: usize) {
        match self {
            Emails::Index(index) => index.insert(hash, pos),
            Emails::Hashes(hashes) => hashes.push(hash),
        }
    }

    /// The email under `hash` went unchecked: a record that refuses the
    /// source carries it (it counts as a repeat if another user has it).
    fn note_unchecked(&mut self, hash: u64) {
        if let Emails::Hashes(hashes) = self {
            hashes.push(hash);
        }
    }

    /// Whether two accepted users may share an email (checked at the end:
    /// their emails' hashes match).
    fn may_repeat(self) -> bool {
        match self {
            Emails::Index(_) => false,
            Emails::Hashes(mut hashes) => {
                hashes.sort_unstable();
                hashes.windows(2).any(|w| w[0] == w[1])
            }
        }
    }
}

/// Users in arrival order; the directory's sorted [`Users`] are made from
/// them once, at the end, where they lie. While externalIds come in
/// ascending order (as HR exports often are), one after the last is new
/// without looking; the hash index is built the first time one does not.
#[derive(Default)]
struct Arena {
    entries: Vec<DesiredUser>,
    /// None while the externalIds came in ascending order.
    index: Option<HashIndex>,
}

impl Arena {
    /// Where the user `key` is, if it is here.
    fn position(&mut self, key: &str) -> Option<usize> {
        if self.index.is_none() {
            if self
                .entries
                .last()
                .is_none_or(|last| last.external_id() < key)
            {
                return None;
            }
            self.index = Some(index_of(&self.entries, DesiredUser::external_id));
        }
        let entries = &self.entries;
        self.index
            .as_ref()?
            .find(hash_of(key), |pos| entries[pos].external_id() == key)
    }

    fn value(&self, pos: usize) -> &DesiredUser {
        &self.entries[pos]
    }

    fn reserve(&mut self, more: usize) {
        self.entries.reserve_exact(more);
        if let Some(index) = &mut self.index {
            index.reserve(more);
        }
    }

    /// Adds a user whose externalId [`position`](Arena::position) did not find; its position.
    fn push(&mut self, user: DesiredUser) -> usize {
        let pos = self.entries.len();
        if let Some(index) = &mut self.index {
            index.insert(hash_of(user.external_id()), pos);
        }
        self.entries.push(user);
        pos
    }

    /// The sorted users.
    fn into_users(self) -> Users {
        drop(self.index);
        Users::from_distinct(self.entries)
    }
}

/// A hash index of `entries` by the key `key_of` gives.
fn index_of<T>(entries: &[T], key_of: impl Fn(&T) -> &str) -> HashIndex {
    let mut index = HashIndex::default();
    for (pos, entry) in entries.iter().enumerate() {
        index.insert(hash_of(key_of(entry)), pos);
    }
    index
}

/// What a record says about a customer, word for word: its externalId, then
/// its name, description and label values as the record has them, each
/// length-prefixed (so no two lists of values read alike). Two records
/// with the same signature say the same; with different ones they may
/// still (labels in other capitals), which the customer itself then tells.
#[derive(Default)]
struct Signature(Vec<u8>);

impl Signature {
    fn clear(&mut self) {
        self.0.clear();
    }

    /// A record's raw customer values: its externalId, name and
    /// description (as the checks read them), and each label value.
    fn sign(
        &mut self,
        record: &impl RecordView,
        fields: &CustomerFields<'_>,
        external_id: &str,
        name: Option<&str>,
        description: Option<&str>,
    ) {
        self.clear();
        self.part(Some(external_id));
        self.part(name);
        self.part(description);
        for f in &fields.labels {
            self.part(record.value(f.slot));
        }
    }

    fn part(&mut self, part: Option<&str>) {
        match part {
            None => self.0.push(0),
            Some(text) => {
                self.0.push(1);
                self.0.extend_from_slice(&text.len().to_le_bytes());
                self.0.extend_from_slice(text.as_bytes());
            }
        }
    }
}

/// Whether `signature` is of the customer `key`.
fn signed_by(signature: &[u8], key: &str) -> bool {
    const LEN: usize = std::mem::size_of::<usize>();
    signature.first() == Some(&1)
        && signature.get(1..1 + LEN) == Some(&key.len().to_le_bytes()[..])
        && signature.get(1 + LEN..1 + LEN + key.len()) == Some(key.as_bytes())
}

/// The directory's customers in arrival order, each with the signature of
/// its first record: a later record signed alike (nearly every one) is the
/// same customer without a look at the customer's own values. The
/// signatures lie one after the other, each after its customer's position
/// and its own length, and the index points at them: a lookup reads the
/// index and one signature, nothing else.
#[derive(Default)]
struct Customers {
    /// Each customer under its externalId, which its users share.
    entries: Vec<(Arc<str>, DesiredCustomer)>,
    signatures: Vec<u8>,
    /// Where each customer's signature header starts in `signatures`.
    signature_at: Vec<usize>,
    /// Customers by externalId: their positions.
    index: HashIndex,
    sorted: bool,
}

/// A signature's header: its customer's position, then its length.
const HEADER: usize = 2 * std::mem::size_of::<usize>();

impl Customers {
    /// The customer `key` (its position) and the signature of its first record.
    fn find(&self, key: &str) -> Option<(usize, &[u8])> {
        let pos = self.index.find(hash_of(key), |pos| {
            signed_by(self.signature(self.signature_at[pos]).1, key)
        })?;
        Some(self.signature(self.signature_at[pos]))
    }

    /// The position and the signature whose header is at `at`.
    fn signature(&self, at: usize) -> (usize, &[u8]) {
        let word = |n: usize| {
            let bytes = self.signatures.get(at + n..at + n + HEADER / 2);
            bytes
                .and_then(|b| b.try_into().ok())
                .map_or(0, usize::from_le_bytes)
        };
        let (pos, len) = (word(0), word(HEADER / 2));
        let start = at + HEADER;
        (
            pos,
            self.signatures.get(start..start + len).unwrap_or_default(),
        )
    }

    fn value(&self, pos: usize) -> &DesiredCustomer {
        &self.entries[pos].1
    }

    /// The externalId of the customer at `pos`, for its users to share.
    fn shared_key(&self, pos: usize) -> Arc<str> {
        self.entries[pos].0.clone()
    }

    /// Adds a customer [`find`](Customers::find) did not find; its position.
    fn push(&mut self, customer: DesiredCustomer, signature: &Signature) -> usize {
        let pos = self.entries.len();
        self.sorted = self
            .entries
            .last()
            .is_none_or(|(last, _)| self.sorted && **last < *customer.external_id);
        let at = self.signatures.len();
        self.signatures.extend_from_slice(&pos.to_le_bytes());
        self.signatures
            .extend_from_slice(&signature.0.len().to_le_bytes());
        self.signatures.extend_from_slice(&signature.0);
        self.index.insert(hash_of(&customer.external_id), pos);
        self.signature_at.push(at);
        self.entries
            .push((Arc::from(customer.external_id.as_str()), customer));
        pos
    }

    /// The customers as the directory's sorted map (externalIds distinct).
    fn into_map(mut self) -> BTreeMap<String, DesiredCustomer> {
        if !self.sorted {
            self.entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        }
        self.entries
            .into_iter()
            .map(|(_, c)| (c.external_id.clone(), c))
            .collect()
    }
}

/// An email as the uniqueness check compares it: lowercased, copied only
/// when it has capitals or is not ASCII.
fn email_key(email: &str) -> Cow<'_, str> {
    lowercase(email)
}

/// `s.to_lowercase()`, borrowed when that is `s` itself (ASCII without capitals).
fn lowercase(s: &str) -> Cow<'_, str> {
    // One pass: whether any byte is a capital or not ASCII at all.
    let (capitals, other) = s.bytes().fold((false, false), |(capitals, other), b| {
        (capitals | b.is_ascii_uppercase(), other | !b.is_ascii())
    });
    if other {
        Cow::Owned(s.to_lowercase())
    } else if capitals {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

/// Platform roles for source role values, each looked up in the role table
/// once (a handful of distinct values in a million rows).
#[derive(Default)]
struct RoleCache {
    seen: Vec<(Option<String>, Option<Arc<str>>)>,
}

/// Past this many distinct role values, the table is asked every time.
const ROLE_CACHE_SIZE: usize = 64;

impl RoleCache {
    /// The platform role for a source role value, shared by every user with
    /// that value (while the cache has room).
    fn role_for(&mut self, mapping: &Mapping, value: Option<&str>) -> Option<Arc<str>> {
        if let Some((_, role)) = self.seen.iter().find(|(v, _)| v.as_deref() == value) {
            return role.clone();
        }
        let role = mapping.role_for(value).map(Arc::from);
        if self.seen.len() < ROLE_CACHE_SIZE {
            self.seen.push((value.map(str::to_owned), role.clone()));
        }
        role
    }
}

/// What never changes during a build: the mapping, the policy and where
/// each field is read from.
struct Rules<'a> {
    mapping: &'a Mapping,
    policy: &'a Policy,
    kind: KeyKind,
    user: UserFields<'a>,
    user_keys: Vec<String>,
    customer: CustomerRecordFields<'a>,
    customer_keys: Vec<String>,
}

/// What a build has gathered so far.
#[derive(Default)]
struct State {
    customers: Customers,
    /// The signature of the record at hand (kept: its buffer is reused).
    signature: Signature,
    users: Arena,
    /// Accepted users' emails (caseless).
    emails: Emails,
    /// For a user a later record repeated (same data), that record's origin:
    /// a record that then takes its email is told of the later one.
    repeated: HashMap<usize, Origin>,
    roles: RoleCache,
    /// The externalIds of disabled records, checked; those with a live
    /// record too are dropped at the end.
    disabled: Vec<String>,
    /// Refusals, what they protect, withheld deletes (no users or customers:
    /// those are in the arenas until the end).
    directory: Directory,
    /// User and customer records taken (disabled ones not counted).
    records: usize,
    /// The error that refuses the whole source, once one happened: later
    /// records are not looked at.
    failed: Option<SourceError>,
}

/// Builds a [`Directory`] from records given one at a time: customer
/// records first (when customers have records of their own), then user
/// records and disabled user records in any order, then
/// [`finish`](DirectoryBuilder::finish). An error that refuses the whole
/// source (conflicting duplicates, too many refusals) comes from `finish`;
/// records given after it happened are not looked at.
pub struct DirectoryBuilder<'a> {
    rules: Rules<'a>,
    state: State,
}

impl<'a> DirectoryBuilder<'a> {
    /// A builder for `mapping`; `customers_from_users` when customers come
    /// from the user records (no customer records of their own).
    pub fn new(
        mapping: &'a Mapping,
        policy: &'a Policy,
        kind: KeyKind,
        customers_from_users: bool,
    ) -> DirectoryBuilder<'a> {
        let mut user_keys = KeyList::default();
        let user = UserFields::new(mapping, customers_from_users, &mut user_keys);
        let mut customer_keys = KeyList::default();
        let customer = CustomerRecordFields::new(&mapping.customer, &mut customer_keys);
        DirectoryBuilder {
            rules: Rules {
                mapping,
                policy,
                kind,
                user,
                user_keys: user_keys.0,
                customer,
                customer_keys: customer_keys.0,
            },
            state: State::default(),
        }
    }

    /// Emails checked `check`'s way (as they come unless told).
    pub fn checking_emails(mut self, check: EmailCheck) -> DirectoryBuilder<'a> {
        self.state.emails = Emails::new(check);
        self
    }

    /// The keys user records are read by, in [`RecordView::value`]'s order.
    pub fn user_keys(&self) -> &[String] {
        &self.rules.user_keys
    }

    /// The keys customer records are read by, in [`RecordView::value`]'s order.
    pub fn customer_keys(&self) -> &[String] {
        &self.rules.customer_keys
    }

    /// Room for `records` more user records (a source that knows about how
    /// many will come says so: a million users are then not moved around
    /// while they come in).
    pub fn expect_users(&mut self, records: usize) {
        self.state.users.reserve(records);
        self.state.emails.reserve(records);
    }

    /// A user record that comes soon: what its lookups will read is
    /// fetched into the cache now, while the records before it are taken.
    pub fn look_ahead_user(&self, record: &impl RecordView) {
        let u = &self.rules.user;
        if let (Emails::Index(index), Some(email)) =
            (&self.state.emails, record.value(u.email.slot))
        {
            index.prefetch(hash_of(&email_key(email)));
        }
        if let Some(customer) = record.value(u.customer.slot) {
            self.state.customers.index.prefetch(hash_of(customer));
        }
    }

    /// A customer record (customers with records of their own).
    pub fn add_customer_record(&mut self, record: &impl RecordView) {
        self.step(|m| m.customer_record(record));
    }

    /// A user record: everyone the directory holds.
    pub fn add_user(&mut self, record: &impl RecordView) {
        self.step(|m| m.user_record(record));
    }

    /// A user record the source saw as disabled: only its externalId is
    /// used (`Directory::disabled_users`); it counts toward nothing else.
    pub fn add_disabled_user(&mut self, record: &impl RecordView) {
        if self.state.failed.is_none() {
            Mapper {
                rules: &self.rules,
                state: &mut self.state,
            }
            .disabled_user(record);
        }
    }

    /// The directory, or why the whole source is refused.
    ///
    /// Refused records are kept in `Directory::refused` (their keys in
    /// `Directory::unknown`) while they stay within the policy's cap; past
    /// it the whole source is refused. The cap counts records, each once
    /// however many problems it has. With emails checked at the end, two
    /// users that may share one send the build back ([`Built::Again`]).
    pub fn finish(self) -> Result<Built, SourceError> {
        let State {
            customers,
            users,
            emails,
            repeated,
            disabled,
            mut directory,
            records,
            failed,
            ..
        } = self.state;
        drop(repeated);
        // Before anything else: with two users on one email, what came
        // after the second was read as if it had been accepted.
        if emails.may_repeat() {
            return Ok(Built::Again);
        }
        if let Some(e) = failed {
            return Err(e);
        }
        check_cap(&directory, records, self.rules.policy)?;
        directory.customers = customers.into_map();
        directory.users = users.into_users();
        directory.disabled_users = disabled
            .into_iter()
            .filter(|x| !directory.users.contains_key(x))
            .collect();
        Ok(Built::Directory(directory))
    }

    /// Takes one record, unless the source is already refused.
    fn step(&mut self, take: impl FnOnce(&mut Mapper<'_, 'a>) -> Result<(), SourceError>) {
        if self.state.failed.is_some() {
            return;
        }
        if self.state.records >= MAX_RECORDS {
            self.state.failed = Some(SourceError::TooManyRecords { max: MAX_RECORDS });
            return;
        }
        self.state.records += 1;
        let mut mapper = Mapper {
            rules: &self.rules,
            state: &mut self.state,
        };
        if let Err(e) = take(&mut mapper) {
            self.state.failed = Some(e);
        }
    }
}

/// What a build gave.
#[derive(Debug)]
pub enum Built {
    Directory(Directory),
    /// Emails were checked at the end ([`EmailCheck::AtTheEnd`]) and two
    /// users may share one: build again, checking them as they come.
    Again,
}

/// Past the policy's cap of refused records, the whole source is refused.
fn check_cap(directory: &Directory, total: usize, policy: &Policy) -> Result<(), SourceError> {
    let cap = policy
        .refused_records
        .max_count
        .max((total as f64 * policy.refused_records.max_percent / 100.0).floor() as usize);
    let refused = directory
        .refused
        .iter()
        .map(|r| &r.origin)
        .collect::<BTreeSet<_>>()
        .len();
    if refused > cap {
        return Err(SourceError::TooManyRefused {
            refused,
            total,
            cap,
            examples: directory.refused.iter().take(5).cloned().collect(),
        });
    }
    Ok(())
}

/// A user record's values, checked, borrowed from the record (the role from
/// the mapping's table).
struct UserValues<'r> {
    external_id: &'r str,
    customer: &'r str,
    /// Where the user's customer is in `State::customers`.
    customer_at: usize,
    email: &'r str,
    name: Option<&'r str>,
    phone: Option<&'r str>,
    role: Option<Arc<str>>,
}

impl UserValues<'_> {
    fn to_user(&self, customers: &Customers, origin: &Origin) -> DesiredUser {
        DesiredUser::new(UserParts {
            external_id: self.external_id,
            customer_external_id: customers.shared_key(self.customer_at),
            email: self.email,
            name: self.name,
            phone: self.phone,
            role: self.role.clone(),
            origin: origin.clone(),
        })
    }

    /// Whether a later record of `first` says the same (emails caselessly).
    fn same_as(&self, first: &DesiredUser) -> bool {
        first.customer_external_id() == self.customer
            && first.email().eq_ignore_ascii_case(self.email)
            && first.name() == self.name
            && first.phone() == self.phone
            && first.role() == self.role.as_deref()
    }
}

/// A customer's name and description as one record has them, checked.
struct CustomerValues<'r> {
    name: &'r str,
    description: Option<&'r str>,
}

/// One label as a record (or the mapping's static labels) gives it: the
/// label field it came from (none for a static label), and the text.
struct LabelPiece<'v> {
    field: Option<Field<'v>>,
    text: &'v str,
}

/// Every label a customer's record gives: the static ones, then each label
/// key's value, split on the separator when one is set.
fn label_pieces<'v>(
    c: &'v CustomerMapping,
    fields: &'v [Field<'v>],
    record: &'v impl RecordView,
) -> impl Iterator<Item = LabelPiece<'v>> + Clone + 'v {
    let separator = c.label_separator.as_deref();
    let statics = c.static_labels.iter().map(|l| LabelPiece {
        field: None,
        text: l,
    });
    let from_keys = fields
        .iter()
        .filter_map(move |f| record.value(f.slot).map(|v| (*f, v)))
        .flat_map(move |(f, v)| {
            // Without a separator the value is one label, not split.
            let whole = separator.is_none().then_some(v);
            let split = separator.map(|sep| v.split(sep));
            whole
                .into_iter()
                .chain(split.into_iter().flatten())
                .map(move |text| LabelPiece {
                    field: Some(f),
                    text,
                })
        });
    statics.chain(from_keys)
}

/// Whether the labels a record gives normalise to `labels`
/// ([`normalise_labels`]), without building the set.
fn same_labels<'v>(
    labels: &BTreeSet<String>,
    pieces: impl Iterator<Item = LabelPiece<'v>> + Clone,
) -> bool {
    let normalised = |p: LabelPiece<'v>| {
        let t = p.text.trim();
        (!t.is_empty()).then(|| lowercase(t))
    };
    pieces
        .clone()
        .filter_map(normalised)
        .all(|l| labels.contains(l.as_ref()))
        && labels.iter().all(|l| {
            pieces
                .clone()
                .filter_map(normalised)
                .any(|p| p.as_ref() == l.as_str())
        })
}

/// One record's trip through the rules: the rules, read only, and the
/// build's state.
struct Mapper<'b, 'a> {
    rules: &'b Rules<'a>,
    state: &'b mut State,
}

impl<'a> Mapper<'_, 'a> {
    fn field(&self, f: Field<'_>) -> String {
        format!("{} ({} {})", f.name, self.rules.kind.0, f.key)
    }

    fn refuse(
        &mut self,
        origin: &Origin,
        field: Option<String>,
        message: impl Into<String>,
    ) -> Refused {
        self.state.directory.refused.push(RefusedRecord {
            origin: origin.clone(),
            field,
            message: message.into(),
        });
        Refused
    }

    /// The values of required fields; one refusal naming every one missing.
    fn required<'r, const N: usize>(
        &mut self,
        record: &'r impl RecordView,
        fields: [Field<'_>; N],
    ) -> Result<[&'r str; N], Refused> {
        let mut values = [""; N];
        let mut missing = Vec::new();
        for (slot, f) in values.iter_mut().zip(fields) {
            match record.value(f.slot) {
                Some(v) => *slot = v,
                None => missing.push(self.field(f)),
            }
        }
        match missing.len() {
            0 => Ok(values),
            1 => Err(self.refuse(record.origin(), missing.pop(), "missing required value")),
            _ => Err(self.refuse(
                record.origin(),
                Some(missing.join(", ")),
                "missing required values",
            )),
        }
    }

    /// Refuses the record when `value` breaks the field's rule.
    fn check(
        &mut self,
        record: &impl RecordView,
        f: Field<'_>,
        value: &str,
        rule: ValueRule,
    ) -> Result<(), Refused> {
        match rule.problem(value) {
            None => Ok(()),
            Some(problem) => {
                let field = self.field(f);
                Err(self.refuse(record.origin(), Some(field), problem))
            }
        }
    }

    /// An optional field's value (`None` when not mapped, "" when empty), checked.
    fn optional<'r>(
        &mut self,
        record: &'r impl RecordView,
        f: Option<Field<'_>>,
        rule: ValueRule,
    ) -> Result<Option<&'r str>, Refused> {
        let Some(f) = f else {
            return Ok(None);
        };
        let value = record
            .value(f.slot)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .unwrap_or_default();
        self.check(record, f, value, rule)?;
        Ok(Some(value))
    }

    fn external_id_in_scope(
        &mut self,
        record: &impl RecordView,
        f: Field<'_>,
        value: &str,
    ) -> Result<(), Refused> {
        let policy = self.rules.policy;
        if policy.in_scope(Some(value)) {
            return Ok(());
        }
        let field = self.field(f);
        let prefix = policy.external_id_prefix.as_deref().unwrap_or_default();
        Err(self.refuse(
            record.origin(),
            Some(field),
            format!("externalId {value:?} does not start with the managed prefix {prefix:?}"),
        ))
    }

    /// A customer's values from a record (its own, or a user record's
    /// customer fields), checked.
    fn customer_values<'r>(
        &mut self,
        record: &'r impl RecordView,
        fields: &CustomerFields<'_>,
    ) -> Result<CustomerValues<'r>, Refused> {
        let [name] = self.required(record, [fields.name])?;
        self.check(record, fields.name, name, rule::NAME)?;
        let description = self.optional(record, fields.description, rule::DESCRIPTION)?;
        let rules = self.rules;
        for piece in label_pieces(&rules.mapping.customer, &fields.labels, record) {
            if let Some(f) = piece.field {
                self.check(record, f, piece.text.trim(), rule::LABEL)?;
            }
        }
        Ok(CustomerValues { name, description })
    }

    /// The customer whose first record had exactly this record's raw
    /// values, if there is one: its position. Nothing is checked again
    /// (the same values were checked then, and passed).
    fn known_customer(
        &mut self,
        record: &impl RecordView,
        fields: &CustomerFields<'_>,
        external_id: &str,
    ) -> Option<usize> {
        // As `customer_values` reads them: a description field always
        // gives a value, empty when the record has none.
        let description = fields.description.map(|f| {
            record
                .value(f.slot)
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .unwrap_or_default()
        });
        let name = record.value(fields.name.slot);
        let signature = &mut self.state.signature;
        signature.sign(record, fields, external_id, name, description);
        let (pos, first) = self.state.customers.find(external_id)?;
        (*first == *signature.0).then_some(pos)
    }

    /// A customer from a record: built from its first record; a later
    /// record with other data refuses the whole source. The customer's
    /// position in `State::customers`.
    fn add_customer(
        &mut self,
        record: &impl RecordView,
        fields: &CustomerFields<'_>,
        external_id: &str,
        values: CustomerValues<'_>,
    ) -> Result<usize, SourceError> {
        let rules = self.rules;
        let c = &rules.mapping.customer;
        let pieces = label_pieces(c, &fields.labels, record);
        self.state.signature.sign(
            record,
            fields,
            external_id,
            Some(values.name),
            values.description,
        );
        let customers = &mut self.state.customers;
        let Some((pos, first_signature)) = customers.find(external_id) else {
            let customer = DesiredCustomer {
                external_id: external_id.to_owned(),
                name: values.name.to_owned(),
                description: values.description.map(str::to_owned),
                labels: c
                    .manages_labels()
                    .then(|| normalise_labels(pieces.map(|p| p.text))),
                origin: record.origin().clone(),
            };
            return Ok(customers.push(customer, &self.state.signature));
        };
        if *first_signature == *self.state.signature.0 {
            return Ok(pos);
        }
        let first = customers.value(pos);
        let same = first.name == values.name
            && first.description.as_deref() == values.description
            && first
                .labels
                .as_ref()
                .is_none_or(|labels| same_labels(labels, pieces));
        if same {
            Ok(pos)
        } else {
            Err(SourceError::Conflict {
                what: "customer",
                external_id: external_id.to_owned(),
                first: first.origin.clone(),
                second: record.origin().clone(),
            })
        }
    }

    fn customer_record(&mut self, record: &impl RecordView) -> Result<(), SourceError> {
        let rules = self.rules;
        let fields = &rules.customer;
        match self.customer_record_values(record) {
            Ok((x, values)) => self
                .add_customer(record, &fields.customer, x, values)
                .map(drop),
            Err(Refused) => {
                match record
                    .value(fields.external_id.slot)
                    .filter(|x| rule::EXTERNAL_ID.problem(x).is_none())
                {
                    Some(x) => {
                        self.state
                            .directory
                            .unknown
                            .customer_external_ids
                            .insert(x.to_owned());
                    }
                    None => self
                        .state
                        .directory
                        .withhold_deletes(record.origin(), NO_EXTERNAL_ID),
                }
                Ok(())
            }
        }
    }

    fn customer_record_values<'r>(
        &mut self,
        record: &'r impl RecordView,
    ) -> Result<(&'r str, CustomerValues<'r>), Refused> {
        let rules = self.rules;
        let fields = &rules.customer;
        if let Some(problem) = record.problem() {
            return Err(self.refuse(record.origin(), None, problem));
        }
        let [x] = self.required(record, [fields.external_id])?;
        self.check(record, fields.external_id, x, rule::EXTERNAL_ID)?;
        self.external_id_in_scope(record, fields.external_id, x)?;
        Ok((x, self.customer_values(record, &fields.customer)?))
    }

    fn user_record(&mut self, record: &impl RecordView) -> Result<(), SourceError> {
        match self.user_values(record) {
            Ok(values) => self.accept_user(record, &values),
            Err(UserError::Refused) => {
                self.mark_unknown(record);
                Ok(())
            }
            Err(UserError::Source(e)) => Err(e),
        }
    }

    /// A checked user joins the directory, unless another user has its
    /// email; a repeated externalId must repeat the same data.
    fn accept_user(
        &mut self,
        record: &impl RecordView,
        values: &UserValues<'_>,
    ) -> Result<(), SourceError> {
        let email = email_key(values.email);
        let email_hash = hash_of(&email);
        let users = &self.state.users;
        let owner = self.state.emails.owner(email_hash, |pos| {
            email_key(users.value(pos).email()) == email
        });
        if let Some(pos) = owner {
            let other = users.value(pos);
            if other.external_id() != values.external_id {
                let seen = self.state.repeated.get(&pos).unwrap_or(other.origin());
                let f = self.field(self.rules.user.email);
                let message = format!(
                    "email {} is also used by externalId {:?} ({seen}); the platform needs unique emails",
                    values.email,
                    other.external_id()
                );
                self.refuse(record.origin(), Some(f), message);
                self.mark_unknown(record);
                return Ok(());
            }
        }
        let Some(pos) = self.state.users.position(values.external_id) else {
            let user = values.to_user(&self.state.customers, record.origin());
            let pos = self.state.users.push(user);
            if owner.is_none() {
                self.state.emails.add(email_hash, pos);
            }
            return Ok(());
        };
        let first = self.state.users.value(pos);
        if values.same_as(first) {
            self.state.repeated.insert(pos, record.origin().clone());
            Ok(())
        } else {
            // Checked as they come, this record's email might have been
            // another user's, refusing it before its externalId was looked at.
            self.state.emails.note_unchecked(email_hash);
            Err(SourceError::Conflict {
                what: "user",
                external_id: values.external_id.to_owned(),
                first: first.origin().clone(),
                second: record.origin().clone(),
            })
        }
    }

    /// The externalId of a user record the source saw as disabled, under
    /// the live records' rules for an externalId (a value a live record
    /// could carry, in scope); a record the source found a problem with, or
    /// without a usable externalId, names nobody. Disabled records are never
    /// refused (they are not in the directory): an unusable one only leaves
    /// its delete, if any, saying "absent". An externalId with a live record
    /// too stays live (settled at the end).
    fn disabled_user(&mut self, record: &impl RecordView) {
        if record.problem().is_some() {
            return;
        }
        let Some(x) = record.value(self.rules.user.external_id.slot) else {
            return;
        };
        if rule::EXTERNAL_ID.problem(x).is_none() && self.rules.policy.in_scope(Some(x)) {
            self.state.disabled.push(x.to_owned());
        }
    }

    /// What a refused user record was about is unknown this run. Without a
    /// usable externalId, who it was is unknown, and so who is absent:
    /// deletes are withheld.
    fn mark_unknown(&mut self, record: &impl RecordView) {
        let rules = self.rules;
        let u = &rules.user;
        let usable = |f: Field<'_>, rule: ValueRule| {
            record
                .value(f.slot)
                .filter(|v| rule.problem(v).is_none())
                .map(str::to_owned)
        };
        let (x, email, customer) = (
            usable(u.external_id, rule::EXTERNAL_ID),
            usable(u.email, rule::EMAIL),
            usable(u.customer, rule::EXTERNAL_ID),
        );
        let directory = &mut self.state.directory;
        if let Some(e) = email {
            directory.unknown.user_emails.insert(e.to_lowercase());
        }
        if let Some(c) = customer {
            directory.unknown.customer_external_ids.insert(c);
        }
        match x {
            Some(x) => {
                directory.unknown.user_external_ids.insert(x);
            }
            None => directory.withhold_deletes(record.origin(), NO_EXTERNAL_ID),
        }
    }

    fn user_values<'r>(
        &mut self,
        record: &'r impl RecordView,
    ) -> Result<UserValues<'r>, UserError> {
        let rules = self.rules;
        let u = &rules.user;
        if let Some(problem) = record.problem() {
            return Err(self.refuse(record.origin(), None, problem).into());
        }
        let [x, customer, email] = self.required(record, [u.external_id, u.customer, u.email])?;
        self.check(record, u.external_id, x, rule::EXTERNAL_ID)?;
        self.check(record, u.customer, customer, rule::EXTERNAL_ID)?;
        self.check(record, u.email, email, rule::EMAIL)?;
        self.external_id_in_scope(record, u.external_id, x)?;
        self.external_id_in_scope(record, u.customer, customer)?;
        if !is_valid_email(email) {
            let f = self.field(u.email);
            return Err(self
                .refuse(record.origin(), Some(f), format!("invalid email {email:?}"))
                .into());
        }
        let name = self.optional(record, u.name, rule::NAME)?;
        let phone = self.optional(record, u.phone, rule::PHONE)?;
        let role = match u.role {
            Some(f) => Some(self.role(record, f)?),
            None => None,
        };
        let customer_at = self.users_customer(record, customer)?;
        Ok(UserValues {
            external_id: x,
            customer,
            customer_at,
            email,
            name,
            phone,
            role,
        })
    }

    /// Only a user that is not refused brings its customer along (customers
    /// from user records); otherwise its customer must be in the customers
    /// file. Where the customer is in `State::customers`.
    fn users_customer(
        &mut self,
        record: &impl RecordView,
        customer: &str,
    ) -> Result<usize, UserError> {
        let rules = self.rules;
        let u = &rules.user;
        if let Some(fields) = &u.customer_fields {
            if let Some(pos) = self.known_customer(record, fields, customer) {
                return Ok(pos);
            }
            let values = self.customer_values(record, fields)?;
            return Ok(self.add_customer(record, fields, customer, values)?);
        }
        if let Some((pos, _)) = self.state.customers.find(customer) {
            return Ok(pos);
        }
        let message = if self
            .state
            .directory
            .unknown
            .customer_external_ids
            .contains(customer)
        {
            format!("customer {customer:?} was refused (see its record)")
        } else {
            format!("customer {customer:?} is not in the customers file")
        };
        let f = self.field(u.customer);
        Err(self.refuse(record.origin(), Some(f), message).into())
    }

    /// The platform role for the record's role value; a value the role
    /// table does not hold is refused unless `mapping.roles.unmapped: default`.
    fn role(&mut self, record: &impl RecordView, f: Field<'_>) -> Result<Arc<str>, Refused> {
        let value = record.value(f.slot);
        if let Some(v) = value {
            self.check(record, f, v, rule::ROLE)?;
        }
        let mapping = self.rules.mapping;
        if let Some(role) = self.state.roles.role_for(mapping, value) {
            return Ok(role);
        }
        let known: Vec<&str> = mapping.roles.map.keys().map(String::as_str).collect();
        let known = if known.is_empty() {
            "it is empty".to_owned()
        } else {
            format!("it holds {}", known.join(", "))
        };
        let field = self.field(f);
        Err(self.refuse(
            record.origin(),
            Some(field),
            format!(
                "role {:?} is not in mapping.roles.map ({known}); add it there, or set mapping.roles.unmapped: default to give such users {:?}",
                value.unwrap_or_default(),
                mapping.roles.default
            ),
        ))
    }
}

/// A user record is refused, or the whole source is.
enum UserError {
    Refused,
    Source(SourceError),
}

impl From<Refused> for UserError {
    fn from(_: Refused) -> Self {
        UserError::Refused
    }
}

impl From<SourceError> for UserError {
    fn from(e: SourceError) -> Self {
        UserError::Source(e)
    }
}

/// Builds the directory from user records and, when the customers have a
/// file of their own, customer records, all at once (LDAP and HTTP; the
/// CSV source streams its rows into a [`DirectoryBuilder`] instead).
/// `disabled_user_records` are the user records the source saw as disabled
/// and left out of `user_records`: their externalIds land in
/// `Directory::disabled_users` (see there); they count toward nothing else.
///
/// Refused records are kept in `Directory::refused` (their keys in
/// `Directory::unknown`) while they stay within the policy's cap; past it the
/// whole source is refused. The cap counts records, each once however many
/// problems it has. A refused record without a usable externalId withholds
/// deletes (`Directory::deletes_withheld`).
pub fn build_directory(
    customer_records: Option<&[SourceRecord]>,
    user_records: &[SourceRecord],
    disabled_user_records: &[SourceRecord],
    mapping: &Mapping,
    policy: &Policy,
    kind: KeyKind,
) -> Result<Directory, SourceError> {
    build_in_one_or_two_passes(|check| {
        build_checking(
            customer_records,
            user_records,
            disabled_user_records,
            mapping,
            policy,
            kind,
            check,
        )
    })
}

/// [`build_directory`], one pass, emails checked `check`'s way.
fn build_checking(
    customer_records: Option<&[SourceRecord]>,
    user_records: &[SourceRecord],
    disabled_user_records: &[SourceRecord],
    mapping: &Mapping,
    policy: &Policy,
    kind: KeyKind,
    check: EmailCheck,
) -> Result<Built, SourceError> {
    let mut b = DirectoryBuilder::new(mapping, policy, kind, customer_records.is_none())
        .checking_emails(check);
    if let Some(records) = customer_records {
        let keys = b.customer_keys().to_vec();
        for record in records {
            b.add_customer_record(&Keyed {
                record,
                keys: &keys,
            });
        }
    }
    let keys = b.user_keys().to_vec();
    for record in user_records {
        b.add_user(&Keyed {
            record,
            keys: &keys,
        });
    }
    for record in disabled_user_records {
        b.add_disabled_user(&Keyed {
            record,
            keys: &keys,
        });
    }
    b.finish()
}

/// Builds with emails checked at the end (`pass`), and when two users may
/// share one, builds again checking them as they come: the quick pass
/// gives the same directory whenever no email repeats, and the second is
/// the one that says who is refused for it.
pub fn build_in_one_or_two_passes(
    mut pass: impl FnMut(EmailCheck) -> Result<Built, SourceError>,
) -> Result<Directory, SourceError> {
    if let Built::Directory(directory) = pass(EmailCheck::AtTheEnd)? {
        return Ok(directory);
    }
    tracing::info!("Two users in the source may share an email: reading it again, checking each email as it comes.");
    match pass(EmailCheck::AsTheyCome)? {
        Built::Directory(directory) => Ok(directory),
        // Emails checked as they come never send a build back.
        Built::Again => Err(SourceError::Task(
            "a build checking emails as they came was sent back".to_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use proptest::prelude::*;
    use proptest::test_runner::Config as ProptestConfig;

    use super::*;
    use crate::config::tests::{parse, MINIMAL};
    use crate::config::Config;

    fn config(extra: &str) -> Config {
        let text = MINIMAL.replace(
            "    email: email\n",
            "    email: email\n    name: name\n    role: role\n",
        );
        parse(&format!("{text}{extra}")).unwrap()
    }

    const ROLES: &str = "  roles:\n    map: { admin: Admin, staff: Member }\n    default: Member\n";

    fn record(line: u64, values: &[(&str, &str)]) -> SourceRecord {
        SourceRecord {
            origin: Origin::Line {
                file: Path::new("users.csv").into(),
                line,
            },
            values: values
                .iter()
                .map(|(k, v)| (Arc::<str>::from(*k), (*v).to_owned()))
                .collect(),
            problem: None,
        }
    }

    fn user(line: u64, id: &str) -> SourceRecord {
        record(
            line,
            &[
                ("id", id),
                ("customer_id", "acme"),
                ("customer_name", "Acme"),
                ("email", &format!("{id}@acme.example")),
                ("name", "Some One"),
                ("role", "staff"),
            ],
        )
    }

    fn build(config: &Config, records: &[SourceRecord]) -> Result<Directory, SourceError> {
        build_directory(
            None,
            records,
            &[],
            &config.mapping,
            &config.policy,
            KeyKind("column"),
        )
    }

    fn refusals(d: &Directory) -> Vec<String> {
        d.refused.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn users_share_their_customers_external_id_and_their_role_not_a_copy_each() {
        let c = config(ROLES);
        let d = build(&c, &[user(2, "u1"), user(3, "u2"), user(4, "u3")]).unwrap();
        let users: Vec<&DesiredUser> = d.users.values().collect();
        assert_eq!(users.len(), 3);
        for u in &users[1..] {
            assert_eq!(u.customer_external_id(), "acme");
            assert_eq!(
                u.customer_external_id().as_ptr(),
                users[0].customer_external_id().as_ptr(),
                "one allocation for the customer's externalId"
            );
            let (role, first) = (u.role().unwrap(), users[0].role().unwrap());
            assert_eq!(
                (role, role.as_ptr()),
                (first, first.as_ptr()),
                "one for the role"
            );
        }
    }

    /// The passes [`build_directory`] makes of `records`, with what it gave.
    fn passes(
        c: &Config,
        records: &[SourceRecord],
    ) -> (Vec<EmailCheck>, Result<Directory, SourceError>) {
        let mut made = Vec::new();
        let built = build_in_one_or_two_passes(|check| {
            made.push(check);
            build_checking(
                None,
                records,
                &[],
                &c.mapping,
                &c.policy,
                KeyKind("column"),
                check,
            )
        });
        (made, built)
    }

    fn with_email(mut record: SourceRecord, email: &str) -> SourceRecord {
        record.values.insert(Arc::from("email"), email.to_owned());
        record
    }

    #[test]
    fn emails_that_never_repeat_are_checked_once_at_the_end_in_one_pass() {
        let c = config(ROLES);
        let records: Vec<SourceRecord> = (0..200).map(|n| user(n + 2, &format!("u{n}"))).collect();
        let (made, built) = passes(&c, &records);
        assert_eq!(made, [EmailCheck::AtTheEnd]);
        assert_eq!(built.unwrap().users.len(), 200);
    }

    #[test]
    fn a_repeated_email_sends_the_build_back_and_the_second_pass_refuses_the_later_user() {
        let c = config(ROLES);
        let records = [
            user(2, "u1"),
            with_email(user(3, "u2"), "U1@Acme.Example"),
            user(4, "u3"),
        ];
        let (made, built) = passes(&c, &records);
        assert_eq!(made, [EmailCheck::AtTheEnd, EmailCheck::AsTheyCome]);
        let d = built.unwrap();
        assert_eq!(d.users.keys().collect::<Vec<_>>(), ["u1", "u3"]);
        assert_eq!(refusals(&d).len(), 1);
        assert!(
            refusals(&d)[0].contains("also used by externalId \"u1\""),
            "{:?}",
            refusals(&d)
        );
    }

    #[test]
    fn a_conflict_from_a_record_that_should_have_been_refused_for_its_email_is_not_the_answer() {
        let c = config(ROLES);
        // Line 4 repeats u2 with other data, but its email is u1's: checked
        // as they come it is refused for the email, and nothing conflicts.
        let records = [
            user(2, "u1"),
            user(3, "u2"),
            with_email(user(4, "u2"), "u1@acme.example"),
        ];
        let (made, built) = passes(&c, &records);
        assert_eq!(made, [EmailCheck::AtTheEnd, EmailCheck::AsTheyCome]);
        let d = built.unwrap();
        assert_eq!(d.users.len(), 2);
        assert_eq!(refusals(&d).len(), 1, "{:?}", refusals(&d));
    }

    #[test]
    fn a_customers_later_row_without_its_description_conflicts_though_rows_alike_pass_unchecked() {
        let text = MINIMAL.replace(
            "    name: customer_name\n",
            "    name: customer_name\n    description: customer_notes\n    labels: [tier]\n",
        );
        let c = parse(&text).unwrap();
        let row = |line: u64, id: &str, notes: &str, tier: &str| {
            record(
                line,
                &[
                    ("id", id),
                    ("customer_id", "acme"),
                    ("customer_name", "Acme"),
                    ("customer_notes", notes),
                    ("tier", tier),
                    ("email", &format!("{id}@acme.example")),
                ],
            )
        };
        let alike = [
            row(2, "u1", "", "Gold"),
            row(3, "u2", " ", "Gold"),
            row(4, "u3", "", "Gold"),
        ];
        let d = build(&c, &alike).unwrap();
        assert_eq!((d.users.len(), d.customers.len()), (3, 1));
        for later in [row(3, "u2", "notes", "Gold"), row(3, "u2", "", "Silver")] {
            let err = build(&c, &[row(2, "u1", "", "Gold"), later]).unwrap_err();
            assert!(
                matches!(
                    err,
                    SourceError::Conflict {
                        what: "customer",
                        ..
                    }
                ),
                "{err}"
            );
        }
    }

    #[test]
    fn a_record_missing_three_fields_is_one_refusal_naming_all_three() {
        let c = config(&format!(
            "{ROLES}policy:\n  refused_records: {{ max_count: 1, max_percent: 0 }}\n"
        ));
        let d = build(&c, &[user(2, "u1"), record(3, &[("name", "Lost")])]).unwrap();
        assert_eq!(
            refusals(&d),
            ["users.csv:3: externalId (column id), customer (column customer_id), email (column email): missing required values"]
        );
        assert_eq!(d.users.len(), 1);
    }

    #[test]
    fn a_refused_record_without_an_external_id_withholds_deletes_and_one_with_one_does_not() {
        let c = config(ROLES);
        let mut empty = record(3, &[]);
        empty.problem = Some("every field of the row is empty".to_owned());
        let d = build(&c, &[user(2, "u1"), empty]).unwrap();
        assert_eq!(d.deletes_withheld.len(), 1);
        assert_eq!(
            d.deletes_withheld[0].to_string(),
            format!("users.csv:3: {NO_EXTERNAL_ID}")
        );

        let mut bad_email = user(3, "u2");
        bad_email.values.insert("email".into(), "nope".to_owned());
        let d = build(&c, &[user(2, "u1"), bad_email]).unwrap();
        assert!(d.deletes_withheld.is_empty());
        assert!(d.unknown.user_external_ids.contains("u2"));

        // An externalId that is itself refused (a NUL in it) is no externalId.
        let d = build(&c, &[user(2, "u1"), user(3, "u\0 2")]).unwrap();
        assert_eq!(d.deletes_withheld.len(), 1);
        assert!(d.unknown.user_external_ids.is_empty());
    }

    #[test]
    fn disabled_records_name_their_users_under_the_live_rules_and_a_live_record_wins() {
        let c = config(&format!("{ROLES}policy:\n  external_id_prefix: \"hr-\"\n"));
        let mut back = user(2, "hr-back");
        back.values
            .insert("customer_id".into(), "hr-acme".to_owned());
        let mut cut = user(7, "hr-cut");
        cut.problem = Some("the row may be cut short".to_owned());
        let mut no_id = user(8, "hr-none");
        no_id.values.remove("id");
        let disabled = [
            user(3, "hr-gone"),
            user(4, "hr-back"),
            user(5, "crm-other"),
            user(6, "hr-\0nul"),
            cut,
            no_id,
            // Disabled records are never refused: a bad email does not matter.
            record(9, &[("id", "hr-bare")]),
        ];
        let d = build_directory(
            None,
            &[back],
            &disabled,
            &c.mapping,
            &c.policy,
            KeyKind("column"),
        )
        .unwrap();
        assert_eq!(
            d.disabled_users.iter().collect::<Vec<_>>(),
            ["hr-bare", "hr-gone"],
            "hr-back has a live record; out of scope, unusable or cut: nobody"
        );
        assert!(d.users.contains_key("hr-back"));
        assert!(!d.users.contains_key("hr-gone"));
        assert!(d.refused.is_empty(), "{:?}", d.refused);
        assert!(d.unknown.user_external_ids.is_empty());
        assert!(!d.withholds_deletes());
    }

    #[test]
    fn an_unmapped_role_is_refused_unless_asked_for_and_an_absent_one_is_the_default() {
        let mut typo = user(3, "u2");
        typo.values.insert("role".into(), "Admn".to_owned());
        let mut absent = user(4, "u3");
        absent.values.remove("role");
        let records = [user(2, "u1"), typo, absent];

        let d = build(&config(ROLES), &records).unwrap();
        assert_eq!(
            refusals(&d),
            ["users.csv:3: role (column role): role \"Admn\" is not in mapping.roles.map (it holds admin, staff); add it there, or set mapping.roles.unmapped: default to give such users \"Member\""]
        );
        assert!(d.unknown.user_external_ids.contains("u2"));
        assert_eq!(d.users.get("u3").and_then(|u| u.role()), Some("Member"));
        assert!(!d.users.contains_key("u2"));

        let d = build(
            &config(&format!("{ROLES}    unmapped: default\n")),
            &records,
        )
        .unwrap();
        assert!(d.refused.is_empty());
        assert_eq!(d.users.get("u2").and_then(|u| u.role()), Some("Member"));
    }

    #[test]
    fn values_no_platform_field_should_hold_are_refused_by_record_for_every_source() {
        let mut nul = user(3, "u2");
        nul.values.insert("name".into(), "Ada\0Lovelace".to_owned());
        let mut huge = user(4, "u3");
        huge.values.insert("name".into(), "A".repeat(1 << 20));
        let mut tab = user(5, "u4");
        tab.values
            .insert("customer_name".into(), "Acme\tRockets".to_owned());
        let mut long_id = user(6, &"x".repeat(256));
        long_id
            .values
            .insert("email".into(), "x@acme.example".to_owned());
        let c = config(ROLES);
        let d = build(&c, &[user(2, "u1"), nul, huge, tab, long_id]).unwrap();
        assert_eq!(
            refusals(&d),
            [
                "users.csv:3: name (column name): contains NUL (U+0000) at character 4; control characters are refused",
                "users.csv:4: name (column name): is 1048576 characters long, over the limit of 255 for this field",
                "users.csv:5: customer name (column customer_name): contains a tab (U+0009) at character 5; control characters are refused",
                "users.csv:6: externalId (column id): is 256 characters long, over the limit of 255 for this field",
            ]
        );
        assert_eq!(d.users.len(), 1);
        assert_eq!(
            d.customers["acme"].name, "Acme",
            "the refused row's customer data is not used"
        );
        // The same rule for an HTTP or LDAP source: it is the mapping's.
        let mut http = user(0, "u5");
        http.origin = Origin::Record {
            url: "https://hr.example/users".to_owned(),
            index: 7,
        };
        http.values.insert("name".into(), "Eve\u{1b}[2J".to_owned());
        let d =
            build_directory(None, &[http], &[], &c.mapping, &c.policy, KeyKind("path")).unwrap();
        assert_eq!(
            refusals(&d),
            ["https://hr.example/users record 7: name (path name): contains a control character (U+001B) at character 4; control characters are refused"]
        );
    }

    /// The mapping as it was before rows were streamed (every record a
    /// `SourceRecord`, B-tree maps, each row building its customer again),
    /// kept word for word as the reference the builder is checked against.
    mod before {
        use std::collections::btree_map::Entry;
        use std::collections::{BTreeMap, BTreeSet};

        use crate::config::{Mapping, Policy};
        use crate::directory::{
            clean, is_valid_email, normalise_labels, DesiredCustomer, DesiredUser, Directory,
            Origin, RefusedRecord, SourceRecord, UserParts, ValueRule,
        };
        use crate::source::mapping::KeyKind;
        use crate::source::SourceError;

        /// Why a record is refused in the end (each record is refused at most once,
        /// with its first problem).
        struct Refused;

        /// The value rules of each field (README, "Values dirsync refuses").
        mod rule {
            use crate::directory::{limits, ValueRule};

            pub const EXTERNAL_ID: ValueRule = ValueRule::single_line(limits::EXTERNAL_ID);
            pub const NAME: ValueRule = ValueRule::single_line(limits::NAME);
            pub const EMAIL: ValueRule = ValueRule::single_line(limits::EMAIL);
            pub const PHONE: ValueRule = ValueRule::single_line(limits::PHONE);
            pub const ROLE: ValueRule = ValueRule::single_line(limits::ROLE);
            pub const LABEL: ValueRule = ValueRule::single_line(limits::LABEL);
            pub const DESCRIPTION: ValueRule = ValueRule {
                max_chars: limits::DESCRIPTION,
                multiline: true,
            };
        }

        /// Why deletes are withheld for a refused record without a usable externalId.
        const NO_EXTERNAL_ID: &str =
            "a refused record names no usable externalId, so who is absent from the directory cannot be known";

        struct Builder<'a> {
            mapping: &'a Mapping,
            policy: &'a Policy,
            kind: KeyKind,
            directory: Directory,
        }

        impl Builder<'_> {
            fn field(&self, field: &str, key: &str) -> String {
                format!("{field} ({} {key})", self.kind.0)
            }

            fn refuse(
                &mut self,
                origin: &Origin,
                field: Option<String>,
                message: impl Into<String>,
            ) -> Refused {
                self.directory.refused.push(RefusedRecord {
                    origin: origin.clone(),
                    field,
                    message: message.into(),
                });
                Refused
            }

            /// The values of required fields; one refusal naming every one missing.
            fn required<'r, const N: usize>(
                &mut self,
                record: &'r SourceRecord,
                fields: [(&str, &str); N],
            ) -> Result<[&'r str; N], Refused> {
                let mut values = [""; N];
                let mut missing = Vec::new();
                for (slot, (field, key)) in values.iter_mut().zip(fields) {
                    match record.get(key) {
                        Some(v) => *slot = v,
                        None => missing.push(self.field(field, key)),
                    }
                }
                match missing.len() {
                    0 => Ok(values),
                    1 => Err(self.refuse(&record.origin, missing.pop(), "missing required value")),
                    _ => Err(self.refuse(
                        &record.origin,
                        Some(missing.join(", ")),
                        "missing required values",
                    )),
                }
            }

            /// Refuses the record when `value` breaks the field's rule.
            fn check(
                &mut self,
                record: &SourceRecord,
                field: &str,
                key: &str,
                value: &str,
                rule: ValueRule,
            ) -> Result<(), Refused> {
                match rule.problem(value) {
                    None => Ok(()),
                    Some(problem) => {
                        let f = self.field(field, key);
                        Err(self.refuse(&record.origin, Some(f), problem))
                    }
                }
            }

            /// An optional field's value (`None` when not mapped), checked.
            fn optional(
                &mut self,
                record: &SourceRecord,
                field: &str,
                key: Option<&String>,
                rule: ValueRule,
            ) -> Result<Option<String>, Refused> {
                let Some(key) = key else {
                    return Ok(None);
                };
                let value = record.get(key).and_then(clean).unwrap_or_default();
                self.check(record, field, key, &value, rule)?;
                Ok(Some(value))
            }

            fn external_id_in_scope(
                &mut self,
                record: &SourceRecord,
                field: &str,
                key: &str,
                value: &str,
            ) -> Result<(), Refused> {
                if self.policy.in_scope(Some(value)) {
                    return Ok(());
                }
                let f = self.field(field, key);
                let prefix = self.policy.external_id_prefix.clone().unwrap_or_default();
                Err(self.refuse(
                    &record.origin,
                    Some(f),
                    format!(
                        "externalId {value:?} does not start with the managed prefix {prefix:?}"
                    ),
                ))
            }

            /// A customer from a record (its own, or a user record's customer columns).
            fn customer(
                &mut self,
                record: &SourceRecord,
                external_id: &str,
            ) -> Result<DesiredCustomer, Refused> {
                let mapping = self.mapping;
                let c = &mapping.customer;
                let [name] = self.required(record, [("customer name", &c.name)])?;
                self.check(record, "customer name", &c.name, name, rule::NAME)?;
                let description = self.optional(
                    record,
                    "customer description",
                    c.description.as_ref(),
                    rule::DESCRIPTION,
                )?;
                let labels = if c.manages_labels() {
                    let mut values: Vec<&str> =
                        c.static_labels.iter().map(String::as_str).collect();
                    for key in &c.labels {
                        if let Some(v) = record.get(key) {
                            let from_key: Vec<&str> = match &c.label_separator {
                                Some(sep) => v.split(sep.as_str()).collect(),
                                None => vec![v],
                            };
                            for label in &from_key {
                                self.check(
                                    record,
                                    "customer label",
                                    key,
                                    label.trim(),
                                    rule::LABEL,
                                )?;
                            }
                            values.extend(from_key);
                        }
                    }
                    Some(normalise_labels(values))
                } else {
                    None
                };
                Ok(DesiredCustomer {
                    external_id: external_id.to_owned(),
                    name: name.to_owned(),
                    description,
                    labels,
                    origin: record.origin.clone(),
                })
            }

            /// Adds a customer; the same externalId twice with other data refuses the whole source.
            fn add_customer(&mut self, customer: DesiredCustomer) -> Result<(), SourceError> {
                match self.directory.customers.entry(customer.external_id.clone()) {
                    Entry::Vacant(v) => {
                        v.insert(customer);
                        Ok(())
                    }
                    Entry::Occupied(o) => {
                        let first = o.get();
                        let same = first.name == customer.name
                            && first.description == customer.description
                            && first.labels == customer.labels;
                        if same {
                            Ok(())
                        } else {
                            Err(SourceError::Conflict {
                                what: "customer",
                                external_id: customer.external_id.clone(),
                                first: first.origin.clone(),
                                second: customer.origin,
                            })
                        }
                    }
                }
            }

            fn customer_records(&mut self, records: &[SourceRecord]) -> Result<(), SourceError> {
                let key = self.mapping.customer.external_id.clone();
                for record in records {
                    match self.customer_record(record, &key) {
                        Ok(customer) => self.add_customer(customer)?,
                        Err(Refused) => match record
                            .get(&key)
                            .filter(|x| rule::EXTERNAL_ID.problem(x).is_none())
                        {
                            Some(x) => {
                                self.directory
                                    .unknown
                                    .customer_external_ids
                                    .insert(x.to_owned());
                            }
                            None => self
                                .directory
                                .withhold_deletes(&record.origin, NO_EXTERNAL_ID),
                        },
                    }
                }
                Ok(())
            }

            fn customer_record(
                &mut self,
                record: &SourceRecord,
                key: &str,
            ) -> Result<DesiredCustomer, Refused> {
                if let Some(problem) = &record.problem {
                    return Err(self.refuse(&record.origin, None, problem.clone()));
                }
                let [x] = self.required(record, [("customer externalId", key)])?;
                self.check(record, "customer externalId", key, x, rule::EXTERNAL_ID)?;
                self.external_id_in_scope(record, "customer externalId", key, x)?;
                self.customer(record, x)
            }

            fn user_records(
                &mut self,
                records: &[SourceRecord],
                customers_from_users: bool,
            ) -> Result<(), SourceError> {
                let mapping = self.mapping;
                let u = &mapping.user;
                let mut email_owner: BTreeMap<String, (String, Origin)> = BTreeMap::new();
                for record in records {
                    let user = match self.user(record, u, customers_from_users) {
                        Ok(user) => user,
                        Err(UserError::Refused) => {
                            self.mark_unknown(record);
                            continue;
                        }
                        Err(UserError::Source(e)) => return Err(e),
                    };
                    let email_key = user.email().to_lowercase();
                    if let Some((other, origin)) = email_owner.get(&email_key) {
                        if *other != user.external_id() {
                            let f = self.field("email", &u.email);
                            let message = format!(
                                "email {} is also used by externalId {other:?} ({origin}); the platform needs unique emails",
                                user.email()
                            );
                            self.refuse(&record.origin, Some(f), message);
                            self.mark_unknown(record);
                            continue;
                        }
                    }
                    email_owner.insert(
                        email_key,
                        (user.external_id().to_owned(), user.origin().clone()),
                    );
                    self.add_user(user)?;
                }
                Ok(())
            }

            /// The externalIds of user records the source saw as disabled, under the
            /// live records' rules for an externalId (a value a live record could
            /// carry, in scope); a record the source found a problem with, or
            /// without a usable externalId, names nobody. Disabled records are never
            /// refused (they are not in the directory): an unusable one only leaves
            /// its delete, if any, saying "absent". An externalId with a live record
            /// too stays live. Runs after the live records.
            fn disabled_users(&mut self, records: &[SourceRecord]) {
                let key = &self.mapping.user.external_id;
                for record in records.iter().filter(|r| r.problem.is_none()) {
                    let Some(x) = record.get(key) else {
                        continue;
                    };
                    if rule::EXTERNAL_ID.problem(x).is_none()
                        && self.policy.in_scope(Some(x))
                        && !self.directory.users.contains_key(x)
                    {
                        self.directory.disabled_users.insert(x.to_owned());
                    }
                }
            }

            /// What a refused user record was about is unknown this run. Without a
            /// usable externalId, who it was is unknown, and so who is absent:
            /// deletes are withheld.
            fn mark_unknown(&mut self, record: &SourceRecord) {
                let u = &self.mapping.user;
                let usable = |key: &str, rule: ValueRule| {
                    record
                        .get(key)
                        .filter(|v| rule.problem(v).is_none())
                        .map(str::to_owned)
                };
                let (x, email, customer) = (
                    usable(&u.external_id, rule::EXTERNAL_ID),
                    usable(&u.email, rule::EMAIL),
                    usable(&u.customer, rule::EXTERNAL_ID),
                );
                let unknown = &mut self.directory.unknown;
                if let Some(e) = email {
                    unknown.user_emails.insert(e.to_lowercase());
                }
                if let Some(c) = customer {
                    unknown.customer_external_ids.insert(c);
                }
                match x {
                    Some(x) => {
                        unknown.user_external_ids.insert(x);
                    }
                    None => self
                        .directory
                        .withhold_deletes(&record.origin, NO_EXTERNAL_ID),
                }
            }

            fn user(
                &mut self,
                record: &SourceRecord,
                u: &crate::config::UserMapping,
                customers_from_users: bool,
            ) -> Result<DesiredUser, UserError> {
                if let Some(problem) = &record.problem {
                    return Err(self.refuse(&record.origin, None, problem.clone()).into());
                }
                let [x, customer, email] = self.required(
                    record,
                    [
                        ("externalId", &u.external_id),
                        ("customer", &u.customer),
                        ("email", &u.email),
                    ],
                )?;
                self.check(record, "externalId", &u.external_id, x, rule::EXTERNAL_ID)?;
                self.check(record, "customer", &u.customer, customer, rule::EXTERNAL_ID)?;
                self.check(record, "email", &u.email, email, rule::EMAIL)?;
                self.external_id_in_scope(record, "externalId", &u.external_id, x)?;
                self.external_id_in_scope(record, "customer", &u.customer, customer)?;
                if !is_valid_email(email) {
                    let f = self.field("email", &u.email);
                    return Err(self
                        .refuse(&record.origin, Some(f), format!("invalid email {email:?}"))
                        .into());
                }
                let name = self.optional(record, "name", u.name.as_ref(), rule::NAME)?;
                let phone = self.optional(record, "phone", u.phone.as_ref(), rule::PHONE)?;
                let role = match &u.role {
                    Some(key) => Some(self.role(record, key)?),
                    None => None,
                };
                // Only a user that is not refused brings its customer along.
                if customers_from_users {
                    let c = self.customer(record, customer)?;
                    self.add_customer(c)?;
                } else if !self.directory.customers.contains_key(customer) {
                    let message = if self
                        .directory
                        .unknown
                        .customer_external_ids
                        .contains(customer)
                    {
                        format!("customer {customer:?} was refused (see its record)")
                    } else {
                        format!("customer {customer:?} is not in the customers file")
                    };
                    let f = self.field("customer", &u.customer);
                    return Err(self.refuse(&record.origin, Some(f), message).into());
                }
                Ok(DesiredUser::new(UserParts {
                    external_id: x,
                    customer_external_id: customer.into(),
                    email,
                    name: name.as_deref(),
                    phone: phone.as_deref(),
                    role: role.map(Into::into),
                    origin: record.origin.clone(),
                }))
            }

            /// The platform role for the record's role value; a value the role
            /// table does not hold is refused unless `mapping.roles.unmapped: default`.
            fn role(&mut self, record: &SourceRecord, key: &str) -> Result<String, Refused> {
                let value = record.get(key);
                if let Some(v) = value {
                    self.check(record, "role", key, v, rule::ROLE)?;
                }
                let mapping = self.mapping;
                match mapping.role_for(value) {
                    Some(role) => Ok(role.to_owned()),
                    None => {
                        let known: Vec<&str> =
                            mapping.roles.map.keys().map(String::as_str).collect();
                        let known = if known.is_empty() {
                            "it is empty".to_owned()
                        } else {
                            format!("it holds {}", known.join(", "))
                        };
                        let f = self.field("role", key);
                        Err(self.refuse(
                            &record.origin,
                            Some(f),
                            format!(
                                "role {:?} is not in mapping.roles.map ({known}); add it there, or set mapping.roles.unmapped: default to give such users {:?}",
                                value.unwrap_or_default(),
                                mapping.roles.default
                            ),
                        ))
                    }
                }
            }

            fn add_user(&mut self, user: DesiredUser) -> Result<(), SourceError> {
                match self.directory.users.get(user.external_id()) {
                    None => {
                        self.directory.users.insert(user);
                        Ok(())
                    }
                    Some(first) => {
                        let same = first.customer_external_id() == user.customer_external_id()
                            && first.email().eq_ignore_ascii_case(user.email())
                            && first.name() == user.name()
                            && first.phone() == user.phone()
                            && first.role() == user.role();
                        if same {
                            Ok(())
                        } else {
                            Err(SourceError::Conflict {
                                what: "user",
                                external_id: user.external_id().to_owned(),
                                first: first.origin().clone(),
                                second: user.origin().clone(),
                            })
                        }
                    }
                }
            }
        }

        /// A user record is refused, or the whole source is.
        enum UserError {
            Refused,
            Source(SourceError),
        }

        impl From<Refused> for UserError {
            fn from(_: Refused) -> Self {
                UserError::Refused
            }
        }

        impl From<SourceError> for UserError {
            fn from(e: SourceError) -> Self {
                UserError::Source(e)
            }
        }

        /// Builds the directory from user records and, when the customers have a
        /// file of their own, customer records. `disabled_user_records` are the user
        /// records the source saw as disabled and left out of `user_records`: their
        /// externalIds land in `Directory::disabled_users` (see there); they count
        /// toward nothing else.
        ///
        /// Refused records are kept in `Directory::refused` (their keys in
        /// `Directory::unknown`) while they stay within the policy's cap; past it the
        /// whole source is refused. The cap counts records, each once however many
        /// problems it has. A refused record without a usable externalId withholds
        /// deletes (`Directory::deletes_withheld`).
        pub fn build_directory(
            customer_records: Option<&[SourceRecord]>,
            user_records: &[SourceRecord],
            disabled_user_records: &[SourceRecord],
            mapping: &Mapping,
            policy: &Policy,
            kind: KeyKind,
        ) -> Result<Directory, SourceError> {
            let mut b = Builder {
                mapping,
                policy,
                kind,
                directory: Directory::default(),
            };
            if let Some(records) = customer_records {
                b.customer_records(records)?;
            }
            b.user_records(user_records, customer_records.is_none())?;
            b.disabled_users(disabled_user_records);

            let total = user_records.len() + customer_records.map_or(0, <[_]>::len);
            let cap = policy
                .refused_records
                .max_count
                .max((total as f64 * policy.refused_records.max_percent / 100.0).floor() as usize);
            let refused = b
                .directory
                .refused
                .iter()
                .map(|r| &r.origin)
                .collect::<BTreeSet<_>>()
                .len();
            if refused > cap {
                return Err(SourceError::TooManyRefused {
                    refused,
                    total,
                    cap,
                    examples: b.directory.refused.iter().take(5).cloned().collect(),
                });
            }
            Ok(b.directory)
        }
    }

    /// A user record: mostly one of a few people (records repeat with the
    /// same data; u3 takes u1's email in other capitals), else values from
    /// small pools (externalIds, emails and customers repeat with other
    /// data, values break rules now and then); a few carry a source's problem.
    fn arbitrary_user(line: u64) -> impl Strategy<Value = SourceRecord> {
        let pick = |values: &[&'static str]| prop::sample::select(values.to_vec());
        let people = prop::sample::select(vec![
            ["u1", "acme", "Acme", "gold", "a@x.io", "staff", "Ann"],
            ["u2", "acme", "Acme", "Gold", "b@x.io", "admin", "Bob"],
            ["u3", "beta", "Beta", "eu; gold", "A@X.io", "staff", ""],
            [
                "hr-u4",
                "hr-gamma",
                "Beta",
                "gold;EU",
                "\u{c4}@x.io",
                "Admn",
                "Ann",
            ],
        ]);
        let mixed = (
            pick(&["u1", "u2", "u3", "hr-u4", "hr-u5", "", "u\u{0}6"]),
            pick(&["acme", "beta", "hr-gamma", ""]),
            pick(&["Acme", "Beta", "", "Bad\tName"]),
            pick(&["gold", "Gold", "gold;EU", "eu; gold", " ;", ""]),
            pick(&[
                "a@x.io",
                "A@X.io",
                "b@x.io",
                "nope",
                "",
                "\u{c4}@x.io",
                "\u{e4}@x.io",
            ]),
            pick(&["staff", "admin", "Admn", ""]),
            pick(&["Ann", "Bob", ""]),
        )
            .prop_map(|(x, c, cn, t, e, r, n)| [x, c, cn, t, e, r, n]);
        (
            prop_oneof![3 => people, 2 => mixed],
            proptest::bool::weighted(0.05),
        )
            .prop_map(move |(v, problem)| {
                let keys = [
                    "id",
                    "customer_id",
                    "customer_name",
                    "tier",
                    "email",
                    "role",
                    "name",
                ];
                let pairs: Vec<(&str, &str)> = keys.into_iter().zip(v).collect();
                let mut rec = record(line, &pairs);
                rec.values.retain(|_, v| !v.is_empty());
                rec.problem = problem.then(|| "the row may be cut short".to_owned());
                rec
            })
    }

    /// A customer record: externalId, name, tier.
    fn arbitrary_customer(line: u64) -> impl Strategy<Value = SourceRecord> {
        let pick = |values: &[&'static str]| prop::sample::select(values.to_vec());
        (
            pick(&["acme", "beta", "hr-gamma", ""]),
            pick(&["Acme", "Beta", ""]),
            pick(&["gold", "GOLD;eu", ""]),
        )
            .prop_map(move |(x, n, t)| {
                let mut rec = record(
                    line,
                    &[("customer_id", x), ("customer_name", n), ("tier", t)],
                );
                rec.values.retain(|_, v| !v.is_empty());
                rec
            })
    }

    fn records(
        count: usize,
        first_line: u64,
        each: fn(u64) -> proptest::strategy::BoxedStrategy<SourceRecord>,
    ) -> impl Strategy<Value = Vec<SourceRecord>> {
        (0..count)
            .map(|n| each(first_line + n as u64))
            .collect::<Vec<_>>()
    }

    fn mapping_config(unmapped_default: bool, prefix: bool, cap: usize) -> Config {
        let unmapped = if unmapped_default {
            "    unmapped: default\n"
        } else {
            ""
        };
        let prefix = if prefix {
            "  external_id_prefix: \"hr-\"\n"
        } else {
            ""
        };
        parse(&format!(
            "{}  roles:\n    map: {{ admin: Admin, staff: Member }}\n{unmapped}policy:\n{prefix}  refused_records: {{ max_count: {cap}, max_percent: 0 }}\n",
            MINIMAL
                .replace("    name: customer_name\n", "    name: customer_name\n    labels: [tier]\n    label_separator: \";\"\n    static_labels: [dirsync]\n")
                .replace("    email: email\n", "    email: email\n    name: name\n    role: role\n")
        ))
        .unwrap()
    }

    /// `build_directory`'s signature, then and now.
    type BuildFn = fn(
        Option<&[SourceRecord]>,
        &[SourceRecord],
        &[SourceRecord],
        &Mapping,
        &Policy,
        KeyKind,
    ) -> Result<Directory, SourceError>;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// The builder gives what the mapping gave before it (the same
        /// directory, or the same error), for any records.
        #[test]
        fn the_builder_maps_records_as_the_mapping_did_before(
            (users, customers, disabled) in (0usize..40, proptest::option::of(0usize..6), 0usize..6)
                .prop_flat_map(|(u, c, d)| (
                    records(u, 2, |l| arbitrary_user(l).boxed()),
                    match c {
                        Some(c) => records(c, 2, |l| arbitrary_customer(l).boxed()).prop_map(Some).boxed(),
                        None => Just(None).boxed(),
                    },
                    records(d, 100, |l| arbitrary_user(l).boxed()),
                )),
            unmapped_default in proptest::bool::ANY,
            prefix in proptest::bool::weighted(0.2),
            cap in 0usize..30,
        ) {
            let c = mapping_config(unmapped_default, prefix, cap);
            let build = |f: BuildFn| {
                f(customers.as_deref(), &users, &disabled, &c.mapping, &c.policy, KeyKind("column"))
                    .map_err(|e| e.to_string())
            };
            prop_assert_eq!(build(build_directory), build(before::build_directory));
        }
    }
}
