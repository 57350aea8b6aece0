//! The queue operations over JetStream, as async functions on the private
//! runtime. `mod.rs` wraps each in a synchronous call.
//!
//! Invariants:
//! - Every write returns only after the server confirmed it (a publish
//!   ack, or the reply to an ack sent as a request), so `sync` has nothing
//!   outstanding to wait for but the connection's buffer.
//! - A job is completed at most once: its result is published with
//!   "expected last subject sequence 0", which the server refuses when a
//!   result is there already; the refused delivery is acked and reported
//!   stale. This holds across processes and across stale acks.
//! - Deliveries the caller never sees (past `max_deliveries`, past their
//!   deadline, or early for their not-before time) are settled before the
//!   dequeue returns: moved to the dead letters or given back with a
//!   delayed negative ack.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::PullConsumer, stream::Stream};
use async_nats::HeaderMap;
use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::names::{self, JobMeta, Names};
use super::receipts::{Held, Table};
use super::{unavailable, NatsOptions};
use crate::{
    DeadLetter, Delivery, EnqueueOptions, Error, MessageId, MessageStatus, Receipt, Result,
    Timestamp, DEADLINE_MISSED, MAX_DELAY, MAX_KEY_BYTES,
};

/// How often a waiting dequeue looks again when nothing wakes it: an
/// enqueue through lanelog wakes it at once, but a lease running out or a
/// delayed negative ack coming due sends no event.
const POLL: Duration = Duration::from_millis(50);

/// One open queue on a server, shared by every clone of the handle.
pub(crate) struct Inner {
    pub url: String,
    pub names: Names,
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub jobs: Stream,
    pub dead: Stream,
    pub results: Stream,
    pub keys: Stream,
    /// Band consumers, highest band first: the pull order.
    pub bands: Vec<(u8, PullConsumer)>,
    pub max_message_size: usize,
    pub opts: NatsOptions,
    pub table: Mutex<Table>,
    /// Woken by every enqueue through lanelog (any process: the wake
    /// subject) and by `wake_waiters`.
    pub notify: Arc<Notify>,
    /// The wake-up subscription until the listener task takes it.
    pub wake: Mutex<Option<async_nats::Subscriber>>,
    /// Raised by `wake_waiters`: a dequeue that sees it change returns.
    pub wake_epoch: AtomicU64,
    pub closed: AtomicBool,
}

/// One enqueue, checked and with its headers made.
pub(crate) struct Outgoing {
    pub subject: String,
    pub headers: HeaderMap,
    pub payload: Vec<u8>,
    pub key: Option<Vec<u8>>,
}

impl Inner {
    pub(crate) fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    fn band_of(&self, priority: u8) -> u8 {
        // Bands are sorted highest first; the lowest is 0.
        self.bands
            .iter()
            .map(|(b, _)| *b)
            .find(|b| *b <= priority)
            .unwrap_or(0)
    }

    /// Check one enqueue and build what is published.
    pub(crate) fn outgoing(&self, payload: &[u8], opts: &EnqueueOptions) -> Result<Outgoing> {
        if payload.len() > self.max_message_size {
            return Err(Error::TooLarge {
                size: payload.len(),
                max: self.max_message_size,
            });
        }
        let now = Timestamp::now();
        let delay = opts.delay.unwrap_or(Duration::ZERO);
        if delay > MAX_DELAY {
            return Err(Error::InvalidArgument(format!(
                "delay {delay:?} is over the maximum {MAX_DELAY:?}"
            )));
        }
        let ready_at = now.plus(delay);
        if let Some(deadline) = opts.deadline {
            if deadline.0 <= now.0 || deadline.0 < ready_at.0 {
                return Err(Error::InvalidArgument(format!(
                    "deadline {} ms is already past or before the message's delay ends",
                    deadline.0
                )));
            }
        }
        if let Some(key) = &opts.key {
            if key.is_empty() || key.len() > MAX_KEY_BYTES {
                return Err(Error::InvalidArgument(format!(
                    "an idempotency key must be 1 to {MAX_KEY_BYTES} bytes, not {}",
                    key.len()
                )));
            }
        }
        let meta = JobMeta {
            id: 0,
            priority: opts.priority,
            enqueued_at: now,
            not_before: (!delay.is_zero()).then_some(ready_at.0),
            deadline: opts.deadline.map(|d| d.0),
        };
        let mut headers = meta.write(false);
        if let Some(key) = &opts.key {
            headers.insert(
                async_nats::header::NATS_MESSAGE_ID,
                names::dedup_id(key).as_str(),
            );
        }
        Ok(Outgoing {
            subject: self.names.band_subject(self.band_of(opts.priority)),
            headers,
            payload: payload.to_vec(),
            key: opts.key.clone(),
        })
    }

    /// Publish a batch, pipelined, and wait for every publish ack. A key
    /// seen within the stream's duplicate window is acked as a duplicate
    /// carrying the first publish's sequence: that is the id returned.
    pub(crate) async fn enqueue(&self, batch: Vec<Outgoing>) -> Result<Vec<MessageId>> {
        self.check_open()?;
        let mut pending = Vec::with_capacity(batch.len());
        for m in batch {
            let ack = self
                .js
                .publish_with_headers(m.subject, m.headers, m.payload.into())
                .await
                .map_err(|e| self.publish_error(e))?;
            pending.push((m.key, ack));
        }
        let mut ids = Vec::with_capacity(pending.len());
        let mut fresh_keys = Vec::new();
        for (key, ack) in pending {
            let ack = ack.await.map_err(|e| self.publish_error(e))?;
            ids.push(MessageId(ack.sequence));
            if let (Some(key), false) = (key, ack.duplicate) {
                fresh_keys.push((key, ack.sequence));
            }
        }
        // The key records make `key_id` answer without publishing; the
        // dedup itself is the server's (Nats-Msg-Id).
        for (key, id) in fresh_keys {
            let mut h = HeaderMap::new();
            h.insert(names::KEY_ID, id.to_string().as_str());
            self.publish(self.names.key_subject(&key), h, Vec::new().into())
                .await?;
        }
        self.announce().await;
        Ok(ids)
    }

    /// Publish to a stream and wait for the server's ack.
    async fn publish(
        &self,
        subject: String,
        headers: HeaderMap,
        payload: bytes::Bytes,
    ) -> Result<jetstream::publish::PublishAck> {
        self.js
            .publish_with_headers(subject, headers, payload)
            .await
            .map_err(|e| self.publish_error(e))?
            .await
            .map_err(|e| self.publish_error(e))
    }

    /// Tell waiting dequeues (every process) that work arrived. Best
    /// effort: a lost wake-up costs one poll interval.
    async fn announce(&self) {
        let wake = self
            .client
            .publish(self.names.wake_subject(), Vec::new().into());
        let _ = self.bounded(wake).await;
    }

    fn publish_error(&self, e: jetstream::context::PublishError) -> Error {
        use jetstream::context::PublishErrorKind as K;
        match e.kind() {
            // No stream answering is what a leader election looks like
            // from the client (no responders), so it is transient too.
            K::TimedOut | K::BrokenPipe | K::MaxAckPending | K::StreamNotFound => {
                unavailable(&self.url, format!("publish: {e}"))
            }
            _ => Error::Backend {
                url: self.url.clone(),
                detail: format!("publish: {e}"),
            },
        }
    }

    /// Lease up to `max` messages, highest band first; wait and linger as
    /// asked.
    pub(crate) async fn dequeue(
        &self,
        max: usize,
        wait: Duration,
        linger: Duration,
        linger_within_wait: bool,
    ) -> Result<Vec<Delivery>> {
        self.check_open()?;
        let start = Instant::now();
        let epoch = self.wake_epoch.load(Ordering::SeqCst);
        let wait_end = start + wait;
        let mut fill_end: Option<Instant> = linger_within_wait.then_some(wait_end);
        let mut out = Vec::new();
        let mut first = true;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // The first pass asks every band; a pass made while waiting asks
            // only the bands holding messages, so an idle poll costs one
            // request instead of one per band.
            let skip = if first {
                None
            } else {
                Some(self.empty_bands().await?)
            };
            first = false;
            // Deliveries already leased are handed out even when a later
            // fetch fails: dropping them would hide them for a lease.
            match self.take(max - out.len(), &mut out, skip.as_deref()).await {
                Ok(()) => {}
                Err(_) if !out.is_empty() => break,
                Err(e) => return Err(e),
            }
            if out.len() >= max {
                break;
            }
            let now = Instant::now();
            let end = if out.is_empty() {
                wait_end
            } else {
                *fill_end.get_or_insert(now + linger)
            };
            if now >= end || self.wake_epoch.load(Ordering::SeqCst) != epoch {
                break;
            }
            self.check_open()?;
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep((end - now).min(POLL)) => {}
            }
        }
        Ok(out)
    }

    /// The bands whose subject holds no message at all (none ready, none
    /// leased, none delayed): one stream-info request.
    async fn empty_bands(&self) -> Result<Vec<u8>> {
        let failed =
            |e: jetstream::stream::InfoError| unavailable(&self.url, format!("stream info: {e}"));
        let mut counts = self
            .jobs
            .info_with_subjects(self.names.jobs_subjects())
            .await
            .map_err(failed)?;
        let mut held = Vec::new();
        while let Some(entry) = counts.next().await {
            let (subject, n) = entry.map_err(failed)?;
            if n > 0 {
                held.extend(names::band_of(&subject));
            }
        }
        Ok(self
            .bands
            .iter()
            .map(|(b, _)| *b)
            .filter(|b| !held.contains(b))
            .collect())
    }

    /// `step` within one request timeout, or the reason it was not.
    async fn bounded<F: std::future::Future>(
        &self,
        step: F,
    ) -> std::result::Result<F::Output, String> {
        let limit = self.opts.request_timeout;
        tokio::time::timeout(limit, step)
            .await
            .map_err(|_| format!("no answer within {limit:?}"))
    }

    /// One pass over the bands without waiting, leaving out `skip`.
    async fn take(
        &self,
        mut want: usize,
        out: &mut Vec<Delivery>,
        skip: Option<&[u8]>,
    ) -> Result<()> {
        self.table
            .lock()
            .sweep(Instant::now(), self.opts.visibility_timeout);
        for (band, consumer) in &self.bands {
            if want == 0 {
                break;
            }
            if skip.is_some_and(|s| s.contains(band)) {
                continue;
            }
            let failed = |e: String| unavailable(&self.url, format!("fetch from band {band}: {e}"));
            let mut batch = self
                .bounded(consumer.fetch().max_messages(want).messages())
                .await
                .map_err(&failed)?
                .map_err(|e| failed(e.to_string()))?;
            // A no-wait fetch ends with the server's "no more messages"
            // status; a server lost after the request never sends it (the
            // reconnected client does not resend the pull), so each message
            // is waited for at most one request timeout.
            while let Some(message) = self.bounded(batch.next()).await.map_err(&failed)? {
                let message = message.map_err(|e| failed(e.to_string()))?;
                if let Some(d) = self.admit(*band, message).await? {
                    out.push(d);
                    want -= 1;
                }
            }
        }
        Ok(())
    }

    /// Turn one fetched message into a delivery, or settle it here: too
    /// early (delayed negative ack for the rest of its delay), past its
    /// deadline or past `max_deliveries` (dead letter).
    async fn admit(&self, band: u8, message: jetstream::Message) -> Result<Option<Delivery>> {
        let (seq, delivered) = {
            let info = message.info().map_err(|e| Error::Backend {
                url: self.url.clone(),
                detail: format!("a delivery without JetStream metadata: {e}"),
            })?;
            (info.stream_sequence, info.delivered.max(1) as u64)
        };
        let Some(reply) = message.reply.as_ref().map(|r| r.to_string()) else {
            return Ok(None);
        };
        let meta = JobMeta::read(message.headers.as_ref(), seq, band);
        let now = Timestamp::now().0;
        // The early delivery of a delayed message is not an attempt; it
        // is normally the first (see docs/nats.md on delays).
        let early = u64::from(meta.not_before.is_some() && delivered > 1);
        let attempt = u32::try_from(delivered - early).unwrap_or(u32::MAX);
        if let Some(not_before) = meta.not_before.filter(|t| *t > now) {
            self.settle(&reply, nak(Duration::from_millis(not_before - now)))
                .await?;
            return Ok(None);
        }
        if meta.deadline.is_some_and(|d| d <= now) {
            self.park(
                &meta,
                seq,
                &message.payload,
                attempt - 1,
                DEADLINE_MISSED,
                &reply,
            )
            .await?;
            return Ok(None);
        }
        let limit = self.opts.max_deliveries;
        if limit > 0 && attempt > limit {
            let reason = format!(
                "delivered {} times without an ack (max_deliveries = {limit})",
                attempt - 1
            );
            self.park(&meta, seq, &message.payload, attempt - 1, &reason, &reply)
                .await?;
            return Ok(None);
        }
        let receipt = self.table.lock().insert(Held {
            id: meta.id,
            seq,
            reply,
            attempt,
            lease_end: Instant::now() + self.opts.visibility_timeout,
        });
        Ok(Some(Delivery {
            id: MessageId(meta.id),
            priority: meta.priority,
            attempt,
            payload: message.payload.to_vec(),
            receipt,
            enqueued_at: meta.enqueued_at,
        }))
    }

    /// Dead-letter a delivery: publish it to the dead letters, then
    /// terminate the original. Two steps: a crash between them leaves the
    /// dead letter and a redelivery, which dead-letters again under the
    /// same dead-letter subject (one message per subject), so it is never
    /// parked twice.
    async fn park(
        &self,
        meta: &JobMeta,
        seq: u64,
        payload: &[u8],
        attempts: u32,
        reason: &str,
        reply: &str,
    ) -> Result<()> {
        let mut h = HeaderMap::new();
        h.insert(names::ID, meta.id.to_string().as_str());
        h.insert(names::PRIORITY, meta.priority.to_string().as_str());
        h.insert(names::ENQUEUED, meta.enqueued_at.0.to_string().as_str());
        h.insert(names::ATTEMPTS, attempts.to_string().as_str());
        h.insert(names::DEAD_AT, Timestamp::now().0.to_string().as_str());
        h.insert(names::REASON, names::header_text(reason).as_str());
        h.insert(
            async_nats::header::NATS_MESSAGE_ID,
            format!("dead-{}-{seq}", meta.id).as_str(),
        );
        self.publish(self.names.dead_subject(meta.id), h, payload.to_vec().into())
            .await?;
        self.settle(reply, "+TERM".into()).await
    }

    /// Send an ack verb and wait for the server's reply, so the call
    /// returns only once the server has applied it.
    async fn settle(&self, reply: &str, verb: String) -> Result<()> {
        self.client
            .request(reply.to_string(), verb.into())
            .await
            .map(|_| ())
            .map_err(|e| unavailable(&self.url, format!("settle a delivery: {e}")))
    }

    pub(crate) async fn ack_batch(&self, receipts: &[Receipt]) -> Result<()> {
        self.check_open()?;
        let replies = {
            let table = self.table.lock();
            receipts
                .iter()
                .map(|r| table.get(*r).map(|h| h.reply.clone()))
                .collect::<Result<Vec<_>>>()?
        };
        let acks = replies
            .iter()
            .map(|reply| self.settle(reply, "+ACK".into()));
        for done in futures_util::future::join_all(acks).await {
            done?;
        }
        let mut table = self.table.lock();
        for r in receipts {
            table.remove(*r);
        }
        Ok(())
    }

    pub(crate) async fn complete(&self, receipt: Receipt, result: Vec<u8>) -> Result<()> {
        self.check_open()?;
        if result.len() > self.max_message_size {
            return Err(Error::TooLarge {
                size: result.len(),
                max: self.max_message_size,
            });
        }
        let (id, reply) = {
            let table = self.table.lock();
            let h = table.get(receipt)?;
            (h.id, h.reply.clone())
        };
        let mut h = HeaderMap::new();
        h.insert(async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, "0");
        let stored = self
            .js
            .publish_with_headers(self.names.result_subject(id), h, result.into())
            .await
            .map_err(|e| self.publish_error(e))?
            .await;
        let first = match stored {
            Ok(_) => true,
            Err(e) if e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence => false,
            Err(e) => return Err(self.publish_error(e)),
        };
        // Completed here or elsewhere: either way this delivery is done.
        self.settle(&reply, "+ACK".into()).await?;
        self.table.lock().remove(receipt);
        if first {
            Ok(())
        } else {
            Err(Error::StaleReceipt)
        }
    }

    pub(crate) async fn nack(&self, receipt: Receipt, delay: Duration) -> Result<()> {
        self.check_open()?;
        if delay > MAX_DELAY {
            return Err(Error::InvalidArgument(format!(
                "delay {delay:?} is over the maximum {MAX_DELAY:?}"
            )));
        }
        let reply = self.table.lock().get(receipt)?.reply.clone();
        self.settle(&reply, nak(delay)).await?;
        self.table.lock().remove(receipt);
        if delay.is_zero() {
            self.announce().await;
        }
        Ok(())
    }

    /// An in-progress ack: the server restarts the lease at the consumer's
    /// full ack wait, whatever `extension` asked for.
    pub(crate) async fn extend_lease(&self, receipt: Receipt, extension: Duration) -> Result<()> {
        self.check_open()?;
        if extension.is_zero() {
            return Err(Error::InvalidArgument(
                "a lease extension must be above zero".into(),
            ));
        }
        let reply = self.table.lock().get(receipt)?.reply.clone();
        self.settle(&reply, "+WPI".into()).await?;
        if let Ok(h) = self.table.lock().get_mut(receipt) {
            h.lease_end = Instant::now() + self.opts.visibility_timeout;
        }
        Ok(())
    }

    pub(crate) async fn dead_letter(&self, receipt: Receipt, reason: &str) -> Result<()> {
        self.check_open()?;
        let h = self.table.lock().get(receipt)?.clone();
        let stored = self
            .jobs
            .get_raw_message(h.seq)
            .await
            .map_err(|e| unavailable(&self.url, format!("read job {}: {e}", h.id)))?;
        let meta = JobMeta::read(Some(&stored.headers), h.seq, 0);
        self.park(&meta, h.seq, &stored.payload, h.attempt, reason, &h.reply)
            .await?;
        self.table.lock().remove(receipt);
        Ok(())
    }

    /// A stream's state and (in a cluster) its leader.
    async fn info(&self, stream: &Stream) -> Result<jetstream::stream::Info> {
        stream
            .get_info()
            .await
            .map_err(|e| unavailable(&self.url, format!("stream info: {e}")))
    }

    /// The last message on `subject` of `stream`, `None` when it has none.
    async fn last(
        &self,
        stream: &Stream,
        subject: String,
    ) -> Result<Option<jetstream::message::StreamMessage>> {
        use jetstream::stream::LastRawMessageErrorKind as K;
        match stream.get_last_raw_message_by_subject(&subject).await {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.kind() == K::NoMessageFound => Ok(None),
            Err(e) => Err(unavailable(&self.url, format!("read {subject}: {e}"))),
        }
    }

    /// The message at `seq` of `stream`, `None` when it has none.
    async fn at(
        &self,
        stream: &Stream,
        seq: u64,
    ) -> Result<Option<jetstream::message::StreamMessage>> {
        use jetstream::stream::LastRawMessageErrorKind as K;
        match stream.get_raw_message(seq).await {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.kind() == K::NoMessageFound => Ok(None),
            Err(e) => Err(unavailable(&self.url, format!("read message {seq}: {e}"))),
        }
    }

    pub(crate) async fn result(&self, id: MessageId) -> Result<Option<Vec<u8>>> {
        self.check_open()?;
        Ok(self
            .last(&self.results, self.names.result_subject(id.0))
            .await?
            .map(|m| m.payload.to_vec()))
    }

    /// Where message `id` is. A job leaves the jobs stream only after its
    /// result or dead letter is stored (complete and park write first,
    /// then settle), so the jobs stream is read first: a job absent there
    /// has its result or dead letter stored already, and the reads after
    /// see it. Reading in the other order could report a job completed
    /// between the reads as `Gone`.
    pub(crate) async fn status(&self, id: MessageId) -> Result<MessageStatus> {
        self.check_open()?;
        // A redrive between the two dead-letter reads moves the job to a
        // new sequence; look again then (a redrive is an operator's act,
        // so a few tries suffice).
        for _ in 0..4 {
            let seq = self.redriven_to(id).await?.unwrap_or(id.0);
            let job = self.at(&self.jobs, seq).await?;
            if self
                .last(&self.results, self.names.result_subject(id.0))
                .await?
                .is_some()
            {
                return Ok(MessageStatus::Completed);
            }
            let dead = self.last(&self.dead, self.names.dead_subject(id.0)).await?;
            match dead
                .as_ref()
                .map(|d| (d, names::number(Some(&d.headers), names::REDRIVEN)))
            {
                Some((d, None)) => {
                    let reason = d
                        .headers
                        .get(names::REASON)
                        .map(|v| v.as_str().to_string())
                        .unwrap_or_default();
                    return Ok(MessageStatus::Dead { reason });
                }
                Some((_, Some(moved))) if moved != seq => continue,
                _ => {}
            }
            return Ok(self.job_status(id, seq, job));
        }
        Err(unavailable(
            &self.url,
            format!("message {id} kept moving between dead letters and its lane"),
        ))
    }

    /// The jobs stream sequence a redriven job moved to.
    async fn redriven_to(&self, id: MessageId) -> Result<Option<u64>> {
        Ok(self
            .last(&self.dead, self.names.dead_subject(id.0))
            .await?
            .and_then(|d| names::number(Some(&d.headers), names::REDRIVEN)))
    }

    /// The status of a job by its jobs stream message (`None`: gone).
    fn job_status(
        &self,
        id: MessageId,
        seq: u64,
        job: Option<jetstream::message::StreamMessage>,
    ) -> MessageStatus {
        let Some(m) = job else {
            return MessageStatus::Gone;
        };
        let band = names::band_of(&m.subject).unwrap_or(0);
        let meta = JobMeta::read(Some(&m.headers), seq, band);
        if meta.id != id.0 {
            return MessageStatus::Gone;
        }
        if let Some(attempt) = self.table.lock().holds(id.0, Instant::now()) {
            return MessageStatus::InFlight {
                priority: meta.priority,
                attempt,
            };
        }
        match meta.not_before {
            Some(t) if t > Timestamp::now().0 => MessageStatus::Delayed {
                priority: meta.priority,
                until: Timestamp(t),
            },
            _ => MessageStatus::Ready {
                priority: meta.priority,
            },
        }
    }

    pub(crate) async fn key_id(&self, key: Vec<u8>) -> Result<Option<MessageId>> {
        self.check_open()?;
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            return Ok(None);
        }
        Ok(self
            .last(&self.keys, self.names.key_subject(&key))
            .await?
            .and_then(|m| names::number(Some(&m.headers), names::KEY_ID))
            .map(MessageId))
    }

    pub(crate) async fn sync(&self) -> Result<()> {
        self.check_open()?;
        // A flush waits for a reconnection; it is bounded like a request.
        self.bounded(self.client.flush())
            .await
            .map_err(|e| unavailable(&self.url, format!("flush: {e}")))?
            .map_err(|e| unavailable(&self.url, format!("flush: {e}")))
    }

    pub(crate) async fn dead_letters(&self) -> Result<Vec<DeadLetter>> {
        self.check_open()?;
        let info = self.info(&self.dead).await?;
        let mut out = Vec::new();
        if info.state.messages == 0 {
            return Ok(out);
        }
        for seq in info.state.first_sequence..=info.state.last_sequence {
            let Some(m) = self.at(&self.dead, seq).await? else {
                continue;
            };
            let h = Some(&m.headers);
            if names::number(h, names::REDRIVEN).is_some() {
                continue;
            }
            let Some(id) = names::number(h, names::ID) else {
                continue;
            };
            out.push(DeadLetter {
                id: MessageId(id),
                priority: names::number(h, names::PRIORITY)
                    .and_then(|p| u8::try_from(p).ok())
                    .unwrap_or(0),
                attempts: names::number(h, names::ATTEMPTS)
                    .and_then(|a| u32::try_from(a).ok())
                    .unwrap_or(0),
                reason: m
                    .headers
                    .get(names::REASON)
                    .map(|v| v.as_str().to_string())
                    .unwrap_or_default(),
                enqueued_at: Timestamp(names::number(h, names::ENQUEUED).unwrap_or(0)),
                dead_at: Timestamp(names::number(h, names::DEAD_AT).unwrap_or(0)),
            });
        }
        Ok(out)
    }

    /// Move dead letter `id` back to its band with its id (attempts start
    /// over: it is a new stream message), then replace the dead letter with
    /// a marker naming where it went. The republish carries a message id,
    /// so a retry after a failure between the two steps adds nothing.
    pub(crate) async fn redrive(&self, id: MessageId) -> Result<()> {
        self.check_open()?;
        let Some(dead) = self.last(&self.dead, self.names.dead_subject(id.0)).await? else {
            return Err(Error::Unknown);
        };
        let h = Some(&dead.headers);
        if names::number(h, names::REDRIVEN).is_some() {
            return Err(Error::Unknown);
        }
        let meta = JobMeta {
            id: id.0,
            priority: names::number(h, names::PRIORITY)
                .and_then(|p| u8::try_from(p).ok())
                .unwrap_or(0),
            enqueued_at: Timestamp(names::number(h, names::ENQUEUED).unwrap_or(0)),
            not_before: None,
            deadline: None,
        };
        let mut headers = meta.write(true);
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            format!("redrive-{}-{}", id.0, dead.sequence).as_str(),
        );
        let ack = self
            .publish(
                self.names.band_subject(self.band_of(meta.priority)),
                headers,
                dead.payload.clone(),
            )
            .await?;
        let mut marker = HeaderMap::new();
        marker.insert(names::ID, id.0.to_string().as_str());
        marker.insert(names::REDRIVEN, ack.sequence.to_string().as_str());
        self.publish(self.names.dead_subject(id.0), marker, Vec::new().into())
            .await?;
        self.announce().await;
        Ok(())
    }

    pub(crate) async fn redrive_all(&self) -> Result<u64> {
        let mut n = 0;
        for d in self.dead_letters().await? {
            self.redrive(d.id).await?;
            n += 1;
        }
        Ok(n)
    }

    /// The name of the server leading the jobs stream (its Raft leader in
    /// a cluster; the one server otherwise).
    pub(crate) async fn stream_leader(&self) -> Result<Option<String>> {
        self.check_open()?;
        let info = self.info(&self.jobs).await?;
        Ok(info.cluster.and_then(|c| c.leader))
    }

    pub(crate) fn wake_waiters(&self) {
        self.wake_epoch.fetch_add(1, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    pub(crate) async fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        self.wake_waiters();
        // A flush waits for a reconnection; it is bounded like a request.
        self.bounded(self.client.flush())
            .await
            .map_err(|e| unavailable(&self.url, format!("flush: {e}")))?
            .map_err(|e| unavailable(&self.url, format!("flush: {e}")))
    }
}

/// A negative ack, with the server-side delay when there is one.
fn nak(delay: Duration) -> String {
    if delay.is_zero() {
        "-NAK".to_string()
    } else {
        format!("-NAK {{\"delay\": {}}}", delay.as_nanos())
    }
}
