//! The full read: the platform's whole view (customers, customer users,
//! roles) in as few round trips as the rate allows.
//!
//! A list's later pages wait for its first page's `totalCount`, so a read
//! costs at least two round trips in sequence. At 200 ms of latency those
//! were 0.4 s of a 23-page read's 1.15 s bound (pages / 20 a second). Two
//! things win the time back:
//!
//! - **One document starts the read** (`graphql/first_pages.graphql`): the
//!   users' first page, the customers' first page and the roles, where
//!   three requests used to go. A platform that refuses the document whole
//!   (its size or cost) is read with the three apart, with a warning.
//! - **The users' next pages are asked for while it is on the wire.** Each
//!   time a request leaves and the first document has not come back, the
//!   users' page at the next offset goes into the rate's next slot: slots
//!   that would otherwise idle. Once the count is known, a guessed page the
//!   list needs is read as any other (every check against a shifting list
//!   holds: a page's `totalCount`, length and `hasNextPage`, no repeats);
//!   the others are dropped unsent where still possible. A guess costs a
//!   request only where the list turns out shorter than the guesses; at
//!   most one round trip's worth of slots, never more than the concurrency
//!   cap allows, and never more pages than the users counted by the read
//!   before (the store's) fill, where there was one. Under page batching (`platform.batch.pages` > 1) nothing
//!   is guessed: the batcher fills documents itself.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::task::JoinHandle;
use tracing::Instrument;

use super::batch::refused_whole;
use super::client::{read_remaining_pages, Page, PlatformClient};
use super::error::PlatformError;
use super::operations::{first_pages, FirstPages};
use crate::model::{PlatformCustomer, PlatformUser, Role, Snapshot};

const OPERATION: &str = "FirstPages";

/// A users' page asked for before the count, by its offset.
type Guessed = JoinHandle<Result<Page<PlatformUser>, PlatformError>>;

/// The users' pages asked for before their `totalCount` came back. Those
/// not taken are cancelled when this is dropped.
#[derive(Default)]
struct Guesses {
    pages: Mutex<HashMap<i64, Guessed>>,
    started: usize,
}

impl Guesses {
    /// Asks for the users' page after the last one guessed.
    fn start_next(&mut self, client: &PlatformClient) {
        self.started += 1;
        let size = client.page_size();
        let offset = i64::try_from(self.started).unwrap_or(i64::MAX) * size;
        let reader = client.clone();
        let page = tokio::spawn(
            async move { reader.list_customer_users_page(Some(offset), None).await }
                .instrument(tracing::Span::current()),
        );
        lock(&self.pages).insert(offset, page);
    }

    /// Cancels the guesses the list does not need: past its end, or off
    /// the offsets of the page size the platform served.
    fn keep_only(&self, size: usize, count: usize) {
        lock(&self.pages).retain(|&offset, page| {
            let needed =
                usize::try_from(offset).is_ok_and(|o| size > 0 && o < count && o % size == 0);
            if !needed {
                page.abort();
            }
            needed
        });
    }

    /// The page guessed at `offset`, if one was.
    fn take(&self, offset: Option<i64>) -> Option<Guessed> {
        offset.and_then(|o| lock(&self.pages).remove(&o))
    }
}

impl Drop for Guesses {
    fn drop(&mut self) {
        for page in lock(&self.pages).values() {
            page.abort();
        }
    }
}

/// The first document's three parts.
struct FirstParts {
    users: Page<PlatformUser>,
    customers: Page<PlatformCustomer>,
    roles: Vec<Role>,
}

impl PlatformClient {
    /// The platform's whole view: the first document, the users' pages
    /// guessed meanwhile, then every other page of both lists by offset.
    pub async fn snapshot(&self) -> Result<Snapshot, PlatformError> {
        self.snapshot_expecting(None).await
    }

    /// [`Self::snapshot`], guessing no more users' pages than
    /// `expected_users` (the count an earlier read found) fill: a list
    /// known to be short costs no guess. With no count known, guesses go
    /// up to the concurrency cap.
    pub async fn snapshot_expecting(
        &self,
        expected_users: Option<usize>,
    ) -> Result<Snapshot, PlatformError> {
        let mut guesses = Guesses::default();
        let first = self
            .first_parts_guessing(&mut guesses, expected_users)
            .await;
        let first = match first {
            Ok(first) => first,
            Err(e) if refused_whole(&e) || matches!(e, PlatformError::GraphQl { .. }) => {
                tracing::warn!(error = %e, "The platform refused the full read's first document ({e}); reading its parts apart.");
                let (users, customers, roles) = tokio::try_join!(
                    self.list_customer_users_page(None, None),
                    self.list_customers_page(None, None),
                    self.customer_roles()
                )?;
                FirstParts {
                    users,
                    customers,
                    roles,
                }
            }
            Err(e) => return Err(e),
        };
        let (customers, users) = tokio::try_join!(
            self.more_customers(first.customers, None),
            self.users_with_guesses(first.users, &guesses),
        )?;
        Ok(Snapshot {
            customers,
            users,
            roles: first.roles,
            holdings: Default::default(),
        })
    }

    /// The first document; meanwhile, each time a request leaves, the
    /// users' next page is asked for (up to the concurrency cap, and to the
    /// pages `expected_users` fill when that is known).
    async fn first_parts_guessing(
        &self,
        guesses: &mut Guesses,
        expected_users: Option<usize>,
    ) -> Result<FirstParts, PlatformError> {
        let most = if self.batcher("pages").is_some() {
            0
        } else {
            let cap = self.page_concurrency().saturating_sub(1);
            let size = usize::try_from(self.page_size())
                .unwrap_or(usize::MAX)
                .max(1);
            expected_users.map_or(cap, |n| cap.min(n.div_ceil(size).saturating_sub(1)))
        };
        let mut sends = self.sends();
        let first = self.first_parts();
        tokio::pin!(first);
        loop {
            tokio::select! {
                biased;
                first = &mut first => return first,
                Ok(()) = sends.changed(), if guesses.started < most => guesses.start_next(self),
            }
        }
    }

    /// The users' first page, the customers' first page and the roles, in
    /// one request.
    async fn first_parts(&self) -> Result<FirstParts, PlatformError> {
        let data = self
            .execute::<FirstPages>(first_pages::Variables {
                first: self.page_size(),
            })
            .await?;
        let (u, c) = (data.users, data.customers);
        Ok(FirstParts {
            users: Page::of(u.nodes, u.page_info.has_next_page, u.total_count)?,
            customers: Page::of(c.nodes, c.page_info.has_next_page, c.total_count)?,
            roles: data
                .customer_roles
                .into_iter()
                .flatten()
                .map(Role::from)
                .collect(),
        })
    }

    /// The whole users' list given its first page: the pages guessed where
    /// they fit, the others asked for now.
    async fn users_with_guesses(
        &self,
        first: Page<PlatformUser>,
        guesses: &Guesses,
    ) -> Result<Vec<PlatformUser>, PlatformError> {
        let count = usize::try_from(first.total_count).unwrap_or(0);
        guesses.keep_only(first.items.len(), count);
        self.announce_pages(&first);
        read_remaining_pages(
            "ListCustomerUsers",
            self.page_concurrency(),
            first,
            |offset| async move {
                match guesses.take(offset) {
                    Some(page) => page.await.unwrap_or_else(|e| match e.try_into_panic() {
                        Ok(panic) => std::panic::resume_unwind(panic),
                        Err(_) => Err(PlatformError::Protocol {
                            operation: OPERATION,
                            detail: format!("the users' page at offset {offset:?} was cancelled"),
                        }),
                    }),
                    None => self.list_customer_users_page(offset, None).await,
                }
            },
        )
        .await
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
