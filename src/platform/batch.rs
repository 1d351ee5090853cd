//! Several operations in one GraphQL document (`platform.batch.mutations`,
//! `platform.batch.pages`): each operation's root field under its own alias
//! (`a0_0: createCustomerUser(input: $input_0) { ... }`), its variables
//! renamed to match, fragments once. The platform runs the fields in order
//! and answers each under its alias, with its own payload `errors`.
//!
//! Callers do not change: [`PlatformClient::execute`] hands an operation
//! that may be batched to a [`Batcher`], which gathers what is asked for at
//! the same moment (the operations an apply or a read has in flight: it
//! waits until a document's worth is queued, or the queue has not grown
//! for [`LINGER`]), sends
//! documents of at most its size, and gives each caller its own answer,
//! as if it had been sent alone. A batch of one is sent as the operation's
//! own document, so the default (1) sends exactly what an unbatched client
//! sends.
//!
//! A document the platform refuses whole (HTTP 400 or 413, or top-level
//! errors and no `data`: too large, too complex, too costly) is split in
//! two and each half sent again; the batch size is halved for the rest of
//! the run, and that is logged once. Nothing of a refused document ran, so
//! sending its halves again is safe. A document whose answer is lost is
//! retried whole, as a single operation is; its creates then meet
//! "already exists" and the apply finds them by externalId.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use graphql_parser::query::{
    parse_query, Definition, Document, OperationDefinition, Selection, SelectionSet, Value,
};
use serde_json::{Map, Value as Json};
use tokio::sync::oneshot;

use super::client::{data_or_error, PlatformClient};
use super::error::{PlatformError, StopReason};
use crate::retry::with_retries_or;

/// One operation as a caller gave it: its document and variables.
#[derive(Clone, Debug)]
pub struct Part {
    pub query: &'static str,
    pub variables: Map<String, Json>,
}

/// Several parts as one document.
#[derive(Debug)]
pub struct Composed {
    pub query: String,
    pub variables: Map<String, Json>,
    /// Per part, its root fields: (alias in the composed document, the key
    /// its own document's answer has).
    pub keys: Vec<Vec<(String, String)>>,
}

/// Builds one document from `parts`, all queries or all mutations. An
/// error names the part that cannot be composed (a bug, not the platform's).
pub fn compose(parts: &[Part]) -> Result<Composed, String> {
    let mut kind: Option<bool> = None;
    let mut variable_definitions = Vec::new();
    let mut items = Vec::new();
    let mut fragments: BTreeMap<String, String> = BTreeMap::new();
    let mut variables = Map::new();
    let mut keys = Vec::with_capacity(parts.len());
    for (k, part) in parts.iter().enumerate() {
        let doc: Document<'static, String> = parse_query::<String>(part.query)
            .map_err(|e| format!("part {k}: {e}"))?
            .into_static();
        let rename = |name: &str| format!("{name}_{k}");
        let mut part_keys = Vec::new();
        for definition in doc.definitions {
            match definition {
                Definition::Fragment(f) => {
                    fragments
                        .entry(f.name.clone())
                        .or_insert_with(|| f.to_string());
                }
                Definition::Operation(op) => {
                    let (is_mutation, defs, set) = match op {
                        OperationDefinition::Query(q) => {
                            (false, q.variable_definitions, q.selection_set)
                        }
                        OperationDefinition::Mutation(m) => {
                            (true, m.variable_definitions, m.selection_set)
                        }
                        _ => return Err(format!("part {k}: neither a query nor a mutation")),
                    };
                    if *kind.get_or_insert(is_mutation) != is_mutation {
                        return Err(format!("part {k}: queries and mutations mixed"));
                    }
                    for mut def in defs {
                        if let Some(value) = part.variables.get(&def.name) {
                            variables.insert(rename(&def.name), value.clone());
                        }
                        def.name = rename(&def.name);
                        variable_definitions.push(def);
                    }
                    for (i, selection) in set.items.into_iter().enumerate() {
                        let Selection::Field(mut field) = selection else {
                            return Err(format!("part {k}: a root selection is not a field"));
                        };
                        let key = field.alias.take().unwrap_or_else(|| field.name.clone());
                        let alias = format!("a{k}_{i}");
                        field.alias = Some(alias.clone());
                        for (_, value) in &mut field.arguments {
                            rename_variables(value, &rename);
                        }
                        rename_in_set(&mut field.selection_set, &rename);
                        part_keys.push((alias, key));
                        items.push(Selection::Field(field));
                    }
                }
            }
        }
        keys.push(part_keys);
    }
    let set = SelectionSet {
        span: Default::default(),
        items,
    };
    let operation = if kind.unwrap_or(false) {
        OperationDefinition::Mutation(graphql_parser::query::Mutation {
            position: Default::default(),
            name: Some("Batch".to_owned()),
            variable_definitions,
            directives: Vec::new(),
            selection_set: set,
        })
    } else {
        OperationDefinition::Query(graphql_parser::query::Query {
            position: Default::default(),
            name: Some("Batch".to_owned()),
            variable_definitions,
            directives: Vec::new(),
            selection_set: set,
        })
    };
    let mut query = operation.to_string();
    for f in fragments.values() {
        query.push_str(f);
    }
    Ok(Composed {
        query,
        variables,
        keys,
    })
}

fn rename_variables(value: &mut Value<'static, String>, rename: &impl Fn(&str) -> String) {
    match value {
        Value::Variable(name) => *name = rename(name),
        Value::List(items) => items.iter_mut().for_each(|v| rename_variables(v, rename)),
        Value::Object(fields) => fields
            .values_mut()
            .for_each(|v| rename_variables(v, rename)),
        _ => {}
    }
}

fn rename_in_set(set: &mut SelectionSet<'static, String>, rename: &impl Fn(&str) -> String) {
    for item in &mut set.items {
        match item {
            Selection::Field(f) => {
                for (_, v) in &mut f.arguments {
                    rename_variables(v, rename);
                }
                rename_in_set(&mut f.selection_set, rename);
            }
            Selection::InlineFragment(f) => rename_in_set(&mut f.selection_set, rename),
            Selection::FragmentSpread(_) => {}
        }
    }
}

/// The composed document's answer, part by part: each part's own `data`
/// (its keys as its own document names them), or the messages of the
/// top-level errors whose path starts at one of its aliases.
pub fn split(
    composed: &Composed,
    answer: graphql_client::Response<Map<String, Json>>,
) -> Vec<Result<Map<String, Json>, Vec<String>>> {
    let mut data = answer.data.unwrap_or_default();
    let mut errors: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut unplaced = Vec::new();
    for e in answer.errors.unwrap_or_default() {
        match e.path.as_ref().and_then(|p| p.first()) {
            Some(graphql_client::PathFragment::Key(alias)) => {
                errors.entry(alias.clone()).or_default().push(e.message)
            }
            _ => unplaced.push(e.message),
        }
    }
    composed
        .keys
        .iter()
        .map(|fields| {
            let mut own = Map::new();
            let mut messages = Vec::new();
            for (alias, key) in fields {
                if let Some(m) = errors.remove(alias) {
                    messages.extend(m);
                }
                match data.remove(alias) {
                    Some(Json::Null) | None if messages.is_empty() => {
                        messages.push(format!("the batched answer has no {key}"))
                    }
                    Some(value) => {
                        own.insert(key.clone(), value);
                    }
                    None => {}
                }
            }
            messages.extend(unplaced.iter().cloned());
            if messages.is_empty() {
                Ok(own)
            } else {
                Err(messages)
            }
        })
        .collect()
}

/// Whether the platform refused a whole document (its size or cost) rather
/// than an operation in it.
pub(super) fn refused_whole(e: &PlatformError) -> bool {
    matches!(
        e,
        PlatformError::UnexpectedStatus {
            status: 400 | 413,
            ..
        }
    ) || matches!(e, PlatformError::RetriesExhausted { last, .. } if refused_whole(last))
}

/// What each member of a document that failed as a whole is told: the
/// run's stop, as it is; anything else, the document's failure by name.
fn member_error(e: &PlatformError, operation: &'static str) -> PlatformError {
    match e {
        PlatformError::Stopped { reason, .. } => PlatformError::Stopped {
            operation,
            reason: *reason,
        },
        PlatformError::Abandoned { reason, .. } => PlatformError::Abandoned {
            operation,
            reason: *reason,
        },
        e if e.is_auth() => PlatformError::Stopped {
            operation,
            reason: StopReason::AuthFailed,
        },
        e => PlatformError::Protocol {
            operation,
            detail: format!("sent in one document with others, which failed: {e}"),
        },
    }
}

type Reply = oneshot::Sender<Result<Map<String, Json>, PlatformError>>;

/// How long a document waits for more operations once the queue stops
/// growing: a request's worth of latency is far more.
const LINGER: std::time::Duration = std::time::Duration::from_millis(2);

struct Queued {
    operation: &'static str,
    part: Part,
    reply: Reply,
}

/// Gathers operations into documents of at most `size` (halved when the
/// platform refuses one).
pub struct Batcher {
    /// `mutations` or `pages`, for the log.
    what: &'static str,
    size: AtomicUsize,
    queue: Mutex<Vec<Queued>>,
    flushing: AtomicBool,
    halved_logged: AtomicBool,
}

impl Batcher {
    pub fn new(what: &'static str, size: usize) -> Batcher {
        Batcher {
            what,
            size: AtomicUsize::new(size.max(1)),
            queue: Mutex::new(Vec::new()),
            flushing: AtomicBool::new(false),
            halved_logged: AtomicBool::new(false),
        }
    }

    /// The most operations a document carries now.
    pub fn size(&self) -> usize {
        self.size.load(Ordering::Relaxed)
    }

    /// Operations waiting for a document.
    fn len(&self) -> usize {
        lock(&self.queue).len()
    }

    /// Sends `body` with whatever else is asked for at the same moment and
    /// returns its own answer's `data`.
    pub async fn submit<V, D>(
        &self,
        client: &PlatformClient,
        operation: &'static str,
        body: &graphql_client::QueryBody<V>,
    ) -> Result<D, PlatformError>
    where
        V: serde::Serialize,
        D: serde::de::DeserializeOwned,
    {
        let decode = |detail: String| PlatformError::Decode { operation, detail };
        let variables =
            match serde_json::to_value(&body.variables).map_err(|e| decode(e.to_string()))? {
                Json::Object(map) => map,
                Json::Null => Map::new(),
                other => return Err(decode(format!("variables are not an object: {other}"))),
            };
        let (reply, answer) = oneshot::channel();
        lock(&self.queue).push(Queued {
            operation,
            part: Part {
                query: body.query,
                variables,
            },
            reply,
        });
        if !self.flushing.swap(true, Ordering::AcqRel) {
            let client = client.clone();
            let what = self.what;
            tokio::spawn(async move { client.batcher_flush(what).await });
        }
        let data = answer.await.map_err(|_| PlatformError::Protocol {
            operation,
            detail: "its batched request was dropped".to_owned(),
        })??;
        serde_json::from_value(Json::Object(data)).map_err(|e| decode(e.to_string()))
    }

    /// Takes the next document's worth from the queue; none when it is
    /// empty (and then no flush runs any more, until the next submit).
    fn take(&self) -> Option<Vec<Queued>> {
        let mut queue = lock(&self.queue);
        if queue.is_empty() {
            self.flushing.store(false, Ordering::Release);
            return None;
        }
        let n = self.size().min(queue.len());
        Some(queue.drain(..n).collect())
    }

    fn halve(&self, from: usize, why: &PlatformError) {
        let half = (from / 2).max(1);
        let was = self.size.fetch_min(half, Ordering::AcqRel);
        if was > half && !self.halved_logged.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                batch = self.what,
                from,
                to = half,
                error = %why,
                "The platform refused a document of {from} {} ({why}); sending at most {half} per request from now on.",
                self.what
            );
        }
    }
}

impl PlatformClient {
    /// Runs while operations wait: lets every caller that is ready enqueue,
    /// then sends documents until the queue is empty, each on its own task
    /// (the client's concurrency cap and pacer still apply).
    async fn batcher_flush(&self, what: &'static str) {
        let Some(batcher) = self.batcher(what) else {
            return;
        };
        loop {
            // Linger until the queue holds a document's worth, or stops
            // growing and the pacer has a slot: callers started together
            // (an apply's next operations, the pages after the first)
            // enqueue within microseconds of each other, and what arrives
            // before the document could leave anyway rides in it. (Without
            // the slot, an apply descheduled for 2 ms on a loaded machine
            // made part-filled documents.)
            // It waits for one slot at most: other requests keep taking
            // slots, and a document must not wait behind all of them.
            let mut queued = batcher.len();
            let mut waited_for_a_slot = false;
            while queued < batcher.size() {
                tokio::time::sleep(LINGER).await;
                let now = batcher.len();
                if now == queued {
                    let slot = self.next_slot();
                    if waited_for_a_slot || slot <= tokio::time::Instant::now() {
                        break;
                    }
                    tokio::time::sleep_until(slot).await;
                    waited_for_a_slot = true;
                }
                queued = batcher.len();
            }
            let Some(batch) = batcher.take() else {
                return;
            };
            let client = self.clone();
            tokio::spawn(async move { client.send_batch(what, batch).await });
        }
    }

    /// Sends one document and answers each member; a refused document is
    /// split in two.
    fn send_batch(
        &self,
        what: &'static str,
        batch: Vec<Queued>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            let Some(batcher) = self.batcher(what) else {
                return;
            };
            if batch.len() == 1 {
                let Some(q) = batch.into_iter().next() else {
                    return;
                };
                let answer = self.send_alone(q.operation, &q.part).await;
                let _ = q.reply.send(answer);
                return;
            }
            let parts: Vec<Part> = batch.iter().map(|q| q.part.clone()).collect();
            let composed = match compose(&parts) {
                Ok(c) => c,
                Err(detail) => {
                    for q in batch {
                        let _ = q.reply.send(Err(PlatformError::Protocol {
                            operation: q.operation,
                            detail: format!("cannot batch it: {detail}"),
                        }));
                    }
                    return;
                }
            };
            let body = serde_json::json!({
                "query": composed.query,
                "variables": composed.variables,
                "operationName": "Batch",
            });
            let retry = self.retry_policy();
            let answer = with_retries_or(
                &retry,
                "Batch",
                || self.attempt_paced("Batch", &body, whole_answer),
                || async move {
                    PlatformError::Stopped {
                        operation: "Batch",
                        reason: self.interrupted().await,
                    }
                },
            )
            .await;
            let answer = match answer {
                Ok(a) if a.data.is_none() && a.errors.as_ref().is_some_and(|e| !e.is_empty()) => {
                    Err(PlatformError::GraphQl {
                        operation: "Batch",
                        messages: a
                            .errors
                            .unwrap_or_default()
                            .into_iter()
                            .map(|e| e.message)
                            .collect(),
                    })
                }
                other => other,
            };
            match answer {
                Ok(answer) => {
                    for (q, result) in batch.into_iter().zip(split(&composed, answer)) {
                        let result = result.map_err(|messages| PlatformError::GraphQl {
                            operation: q.operation,
                            messages,
                        });
                        let _ = q.reply.send(result);
                    }
                }
                Err(e) if refused_whole(&e) || matches!(e, PlatformError::GraphQl { .. }) => {
                    // Nothing of it ran: its halves go again.
                    batcher.halve(batch.len(), &e);
                    let mut first = batch;
                    let second = first.split_off(first.len() / 2);
                    tokio::join!(self.send_batch(what, first), self.send_batch(what, second));
                }
                Err(e) => {
                    for q in batch {
                        let _ = q.reply.send(Err(member_error(&e, q.operation)));
                    }
                }
            }
        })
    }

    /// One operation in its own document, as an unbatched client sends it.
    async fn send_alone(
        &self,
        operation: &'static str,
        part: &Part,
    ) -> Result<Map<String, Json>, PlatformError> {
        let body = serde_json::json!({
            "query": part.query,
            "variables": part.variables,
            "operationName": operation,
        });
        let retry = self.retry_policy();
        with_retries_or(
            &retry,
            operation,
            || self.attempt_paced(operation, &body, data_or_error::<Map<String, Json>>),
            || async move {
                PlatformError::Stopped {
                    operation,
                    reason: self.interrupted().await,
                }
            },
        )
        .await
    }
}

/// A batched document's answer, data and errors both kept.
fn whole_answer(
    _: &'static str,
    answer: graphql_client::Response<Map<String, Json>>,
) -> Result<graphql_client::Response<Map<String, Json>>, PlatformError> {
    Ok(answer)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests;
