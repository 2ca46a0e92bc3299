//! Durable processing: the request side stores each verified event in an
//! [`InboxStore`] before answering, and worker tasks run the handlers from
//! there with retries and a failed list.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{watch, Notify};

use crate::event::{EventType, MessageId};
use crate::retry::{Jitter, RetryPolicy, SplitMix64};

use super::inbox::{
    clip, later, ClaimedEntry, DynInbox, EntryStatus, FailedCursor, FailedEntry, InboxClaim,
    InboxEntry, InboxError, Stored,
};
use super::{lock, Accepted, Notice, Rejection, Routing, Shared, Unrouted, DEFAULT_TTL};

/// How a receiver's inbox workers run; see
/// [`ReceiverBuilder::inbox_config`](super::ReceiverBuilder::inbox_config).
///
/// # Default
///
/// | setting | value |
/// | --- | --- |
/// | `workers` | 4 |
/// | `lease` | 5 minutes |
/// | `retry` | [`InboxConfig::default_retry`]: 1 s doubling to at most 10 min, with jitter; 15 runs in all, the last about an hour after the first |
/// | `idle_poll` | 1 second |
/// | `retention` | 8 days ([`DEFAULT_TTL`]) |
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct InboxConfig {
    /// Worker tasks, so handlers running at once. Each claims one entry at
    /// a time, runs its handler and records the result.
    pub workers: usize,
    /// How long a claim lasts before another worker (in this process or
    /// another) may take the entry over. Keep it longer than any handler
    /// runs: a handler still running when its lease ends may run twice,
    /// and its result is then refused as stale.
    pub lease: Duration,
    /// When to run a failed handler again, and when to give up and move
    /// the entry to the failed list. Its age cap counts from the request's
    /// receipt.
    pub retry: RetryPolicy,
    /// The longest an idle worker sleeps before looking again, even if
    /// nothing is due: entries accepted by other processes (a shared
    /// Postgres inbox) and leases of dead workers are found this way.
    /// Entries accepted by this receiver wake a worker at once.
    pub idle_poll: Duration,
    /// How long processed entries are kept, so a redelivery of their ids is
    /// recognised as a duplicate; the workers prune older ones at most once
    /// a minute. Keep it longer than your senders' retry horizon (see
    /// [`DEFAULT_TTL`]). `None` keeps them until
    /// [`Inbox::prune`] removes them. Failed entries are never pruned by
    /// the workers.
    pub retention: Option<Duration>,
}

impl Default for InboxConfig {
    fn default() -> Self {
        Self {
            workers: 4,
            lease: Duration::from_secs(5 * 60),
            retry: Self::default_retry(),
            idle_poll: Duration::from_secs(1),
            retention: Some(DEFAULT_TTL),
        }
    }
}

impl InboxConfig {
    /// The default retry policy of handlers: exponential from 1 second,
    /// doubling, each delay at most 10 minutes, with equal jitter (half to
    /// all of each delay), and 15 runs in all. Nominal delays 1 s, 2 s,
    /// 4 s, … 512 s, then 600 s four times: the last run about 57 minutes
    /// after the first. A handler failing that long usually waits for a
    /// fix; its entry is then on the failed list, to replay.
    pub fn default_retry() -> RetryPolicy {
        RetryPolicy::exponential()
            .with_initial_delay(Duration::from_secs(1))
            .with_factor(2.0)
            .with_max_delay(Duration::from_secs(600))
            .with_max_attempts(15)
            .with_jitter(Jitter::Equal)
            .build()
            // The settings above are valid: the default is never used.
            .unwrap_or_default()
    }

    pub(super) fn check(&self) -> Result<(), &'static str> {
        if self.workers == 0 {
            return Err("at least one worker is needed");
        }
        if self.lease.is_zero() {
            return Err("the lease must be longer than zero");
        }
        if self.idle_poll.is_zero() {
            return Err("the idle poll must be longer than zero");
        }
        Ok(())
    }
}

/// A receiver's durable inbox, from [`Receiver::inbox`](super::Receiver::inbox):
/// the failed list, replay and pruning. Cheap to clone.
#[derive(Clone)]
pub struct Inbox {
    shared: Arc<InboxShared>,
}

impl fmt::Debug for Inbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbox")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl Inbox {
    /// The settings its workers run with.
    pub fn config(&self) -> &InboxConfig {
        &self.shared.config
    }

    /// Up to `limit` entries of the failed list (0 = no limit), oldest
    /// failure first, after `after` (the [`cursor`](FailedEntry::cursor) of
    /// the last entry of the previous page) if given.
    pub async fn failed(
        &self,
        after: Option<&FailedCursor>,
        limit: usize,
    ) -> Result<Vec<FailedEntry>, InboxError> {
        self.shared.store.failed(after, limit).await
    }

    /// Where entry `id` is, if it is in the inbox.
    pub async fn status(&self, id: &MessageId) -> Result<Option<EntryStatus>, InboxError> {
        self.shared.store.status(id).await
    }

    /// Makes the failed entry `id` due now, with its retry schedule started
    /// over, and wakes a worker. Returns whether a failed entry `id` was
    /// found.
    pub async fn replay(&self, id: &MessageId) -> Result<bool, InboxError> {
        let replayed = self.shared.store.replay(id, self.shared.now()).await?;
        if replayed {
            self.shared.wake.notify_one();
        }
        Ok(replayed)
    }

    /// Removes the entries processed before `processed_before`, and those
    /// failed before `failed_before` if given; returns how many went. A
    /// pruned id is stored as new if it arrives again.
    pub async fn prune(
        &self,
        processed_before: OffsetDateTime,
        failed_before: Option<OffsetDateTime>,
    ) -> Result<usize, InboxError> {
        self.shared
            .store
            .prune(processed_before, failed_before)
            .await
    }
}

/// What the request path, the workers and the [`Inbox`] handle share.
pub(super) struct InboxShared {
    store: Box<dyn DynInbox>,
    config: InboxConfig,
    /// Told of each new entry, so an idle worker starts on it at once.
    wake: Notify,
    clock: super::Intake,
    rng: Mutex<SplitMix64>,
    /// Claims whose handlers are running, by a number of this process's:
    /// what a shutdown gives back if it cuts them off.
    running: Mutex<HashMap<u64, (InboxClaim, EventType)>>,
    next_run: AtomicU64,
    last_prune: Mutex<Option<OffsetDateTime>>,
}

impl InboxShared {
    pub(super) fn new(store: Box<dyn DynInbox>, config: InboxConfig, clock: super::Intake) -> Self {
        Self {
            store,
            config,
            wake: Notify::new(),
            clock,
            rng: Mutex::new(SplitMix64::from_entropy()),
            running: Mutex::new(HashMap::new()),
            next_run: AtomicU64::new(0),
            last_prune: Mutex::new(None),
        }
    }

    pub(super) fn handle(self: &Arc<Self>) -> Inbox {
        Inbox {
            shared: Arc::clone(self),
        }
    }

    fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    /// Stores a verified request's entry: 202 once it is stored, 200 for an
    /// id already in the inbox, 503 with `Retry-After` if it could not be
    /// stored.
    pub(super) async fn accept(
        self: Arc<Self>,
        entry: InboxEntry,
        retry_after: Duration,
    ) -> Result<Accepted, Rejection> {
        match self.store.accept(&entry).await {
            Ok(Stored::New) => {
                self.wake.notify_one();
                Ok(Accepted::Queued)
            }
            Ok(Stored::Duplicate) => Ok(Accepted::Duplicate),
            Err(error) => Err(Rejection::Inbox { error, retry_after }),
        }
    }

    /// Prunes processed entries older than the retention, at most once a
    /// minute (across this receiver's workers).
    async fn prune_if_due(&self, shared: &Shared) {
        let Some(retention) = self.config.retention else {
            return;
        };
        let now = self.now();
        {
            let mut last = lock(&self.last_prune);
            if last.is_some_and(|at| now - at < time::Duration::MINUTE) {
                return;
            }
            *last = Some(now);
        }
        let before =
            now.saturating_sub(time::Duration::try_from(retention).unwrap_or(time::Duration::MAX));
        match self.store.prune(before, None).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(pruned = n, "pruned processed inbox entries"),
            Err(error) => self.store_failed(shared, None, error),
        }
    }

    fn store_failed(&self, shared: &Shared, id: Option<&MessageId>, error: InboxError) {
        match &error {
            InboxError::Conflict(id) => tracing::warn!(
                id = %id,
                "an inbox claim was lost (its lease ended and another worker took the entry over); \
                 its result was not recorded"
            ),
            _ => tracing::warn!(id = ?id.map(MessageId::as_str), %error, "inbox store failed"),
        }
        shared.notify(Notice::InboxFailed {
            id: id.cloned(),
            error: Arc::new(error),
        });
    }

    /// Runs one claimed entry's handler and records the result.
    async fn run(&self, claimed: ClaimedEntry, routing: &Routing, shared: &Shared) {
        let ClaimedEntry { entry, claim } = claimed;
        let key = self.next_run.fetch_add(1, Ordering::Relaxed);
        // Taken off once the result is recorded; a shutdown that aborts the
        // worker first finds it here and gives the claim back.
        lock(&self.running).insert(key, (claim.clone(), entry.event_type.clone()));
        let (id, event_type) = (entry.id.clone(), entry.event_type.clone());
        let recorded = match routing.route(&event_type) {
            None => match routing.unrouted {
                Unrouted::Acknowledge => {
                    tracing::info!(id = %id, event_type = %event_type, "no route for the event type; processed");
                    self.store.complete(&claim, self.now()).await
                }
                Unrouted::Reject(status) => {
                    let reason = format!(
                        "no route for event type {event_type} (unknown types are rejected with {status})"
                    );
                    self.give_up(shared, &claim, &event_type, &reason).await
                }
            },
            Some(route) => {
                let admitted = entry.admitted();
                match route.prepare(admitted.clone(), entry.headers, entry.body) {
                    Err(malformed) => {
                        let reason =
                            format!("the stored payload does not fit its route: {malformed}");
                        self.give_up(shared, &claim, &event_type, &reason).await
                    }
                    Ok(job) => match job.run().await {
                        Ok(()) => self.store.complete(&claim, self.now()).await,
                        Err(error) => self.failed_run(shared, &claim, &admitted, error).await,
                    },
                }
            }
        };
        if let Err(error) = recorded {
            self.store_failed(shared, Some(&id), error);
        }
        lock(&self.running).remove(&key);
    }

    /// A handler run failed: retry per the policy, or give up.
    async fn failed_run(
        &self,
        shared: &Shared,
        claim: &InboxClaim,
        entry: &super::Admitted,
        error: super::HandlerError,
    ) -> Result<(), InboxError> {
        let text = error.to_string();
        tracing::warn!(
            id = %entry.id,
            event_type = %entry.event_type,
            attempt = claim.attempt(),
            error = %text,
            "webhook handler failed"
        );
        shared.notify(Notice::HandlerFailed {
            id: entry.id.clone(),
            event_type: entry.event_type.clone(),
            error: Arc::from(error),
            acknowledged: true,
        });
        let now = self.now();
        let age = Duration::try_from(now - entry.received_at).unwrap_or(Duration::ZERO);
        let delay = {
            let mut rng = lock(&self.rng);
            self.config
                .retry
                .next_retry(claim.attempt(), age, &mut *rng)
        };
        match delay {
            Some(delay) => {
                self.store
                    .retry(claim, later(now, delay), clip(&text))
                    .await
            }
            None => self.give_up(shared, claim, &entry.event_type, &text).await,
        }
    }

    /// Moves a claimed entry to the failed list.
    async fn give_up(
        &self,
        shared: &Shared,
        claim: &InboxClaim,
        event_type: &EventType,
        reason: &str,
    ) -> Result<(), InboxError> {
        let reason = clip(reason);
        self.store.fail(claim, self.now(), reason).await?;
        tracing::error!(
            id = %claim.id(),
            event_type = %event_type,
            attempts = claim.attempt(),
            reason,
            "webhook moved to the inbox's failed list"
        );
        shared.notify(Notice::GaveUp {
            id: claim.id().clone(),
            event_type: event_type.clone(),
            attempts: claim.attempt(),
            error: Arc::from(reason),
        });
        Ok(())
    }

    /// Gives back the claims of handlers a shutdown cut off; returns them.
    pub(super) async fn release_running(&self, shared: &Shared) -> usize {
        let left: Vec<(InboxClaim, EventType)> =
            lock(&self.running).drain().map(|(_, v)| v).collect();
        let now = self.now();
        for (claim, event_type) in &left {
            tracing::warn!(
                id = %claim.id(),
                event_type = %event_type,
                "webhook handler cut off by shutdown; the entry stays in the inbox"
            );
            shared.notify(Notice::Unprocessed {
                id: claim.id().clone(),
                event_type: event_type.clone(),
            });
            match self.store.release(claim, now).await {
                // Recorded after all, or taken over: nothing to give back.
                Ok(()) | Err(InboxError::Conflict(_)) => {}
                Err(error) => self.store_failed(shared, Some(claim.id()), error),
            }
        }
        left.len()
    }
}

/// One inbox worker: claims due entries one at a time and runs them, until
/// told to stop (or the receiver is gone).
pub(super) async fn work(
    inbox: Arc<InboxShared>,
    routing: Arc<Routing>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        if *stop.borrow() {
            return;
        }
        inbox.prune_if_due(&shared).await;
        let notified = inbox.wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let now = inbox.now();
        let mut claim_failed = false;
        match inbox.store.claim_due(now, inbox.config.lease, 1).await {
            Ok(claimed) if !claimed.is_empty() => {
                for claimed in claimed {
                    inbox.run(claimed, &routing, &shared).await;
                }
                continue;
            }
            Ok(_) => {}
            Err(error) => {
                inbox.store_failed(&shared, None, error);
                claim_failed = true;
            }
        }
        let poll = inbox.config.idle_poll;
        let wait = match inbox.store.next_due().await {
            _ if claim_failed => poll,
            Ok(Some(at)) => Duration::try_from(at - inbox.now())
                .unwrap_or(Duration::ZERO)
                .min(poll),
            Ok(None) => poll,
            Err(error) => {
                inbox.store_failed(&shared, None, error);
                poll
            }
        };
        if wait.is_zero() {
            tokio::task::yield_now().await;
            continue;
        }
        let sleep = tokio::time::sleep(wait);
        tokio::pin!(sleep);
        let changed = stop.changed();
        tokio::pin!(changed);
        // Whichever comes first: the wait, a new entry, or a stop.
        let gone = std::future::poll_fn(|cx| {
            if let Poll::Ready(result) = changed.as_mut().poll(cx) {
                // An error: the receiver is gone.
                return Poll::Ready(result.is_err());
            }
            if notified.as_mut().poll(cx).is_ready() || sleep.as_mut().poll(cx).is_ready() {
                return Poll::Ready(false);
            }
            Poll::Pending
        })
        .await;
        if gone {
            return;
        }
    }
}
