//! Opening a queue on a server: connect (bounded in time), check the
//! server's version, and create or find the streams and consumers.
//!
//! Invariant: an open either returns a queue whose every stream and band
//! consumer exists with the options asked for, or an error naming the URL;
//! it never waits longer than the connect timeout plus one request timeout
//! per stream and consumer.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;

use async_nats::jetstream::{self, consumer, stream};
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::names::Names;
use super::ops::Inner;
use super::receipts::Table;
use super::{unavailable, NatsOptions};
use crate::{Error, Result};

/// Headroom under the server's `max_payload` for the headers the backend
/// adds to a job (ids, times, a key): a payload that fits the limit must
/// fit with them.
pub(crate) const HEADER_ROOM: usize = 1024;

/// The oldest server with `sync_interval` (fsync per write when set to
/// `always`) and `filter_subjects`; older ones fsync on a timer.
const MIN_SERVER: (u64, u64) = (2, 10);

pub(crate) async fn open(url: String, opts: NatsOptions) -> Result<Inner> {
    let names = Names::new(&opts.prefix)?;
    let addrs = server_addrs(&url)?;
    let connect = async_nats::ConnectOptions::new()
        .name("lanelog")
        .connection_timeout(opts.connect_timeout)
        .request_timeout(Some(opts.request_timeout))
        .connect(addrs);
    let client = match tokio::time::timeout(opts.connect_timeout, connect).await {
        Ok(Ok(client)) => client,
        Ok(Err(e)) => return Err(unavailable(&url, format!("cannot connect: {e}"))),
        Err(_) => {
            return Err(unavailable(
                &url,
                format!("no answer within {:?}", opts.connect_timeout),
            ))
        }
    };
    let info = client.server_info();
    check_version(&url, &info.version)?;
    let max_payload = info.max_payload;
    let max_message_size = match opts.max_message_size {
        Some(m) if m + HEADER_ROOM > max_payload => {
            return Err(Error::InvalidArgument(format!(
                "max_message_size {m} plus {HEADER_ROOM} bytes of headers is over the server's max_payload of {max_payload} bytes"
            )))
        }
        Some(m) => m,
        None => max_payload.saturating_sub(HEADER_ROOM),
    };
    let js = jetstream::ContextBuilder::new()
        .timeout(opts.request_timeout)
        .build(client.clone());

    let replicas = opts.replicas;
    let create = |config: stream::Config| {
        let js = js.clone();
        let url = url.clone();
        async move {
            let name = config.name.clone();
            js.get_or_create_stream(config)
                .await
                .map_err(|e| Error::Backend {
                    url,
                    detail: format!("stream {name}: {e}"),
                })
        }
    };
    let jobs = create(stream::Config {
        name: names.jobs_stream(),
        subjects: vec![names.jobs_subjects()],
        // Work queue: a message leaves the stream when acked or
        // terminated, so the stream holds only live jobs.
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        num_replicas: replicas,
        duplicate_window: opts.dedup_window,
        max_message_size: i32::try_from(max_payload).unwrap_or(i32::MAX),
        ..Default::default()
    })
    .await?;
    // Dead letters, results and keys: one message per subject, the latest
    // (a redrive marker replaces its dead letter).
    let per_id = |name: String, subjects: String, max_age| stream::Config {
        name,
        subjects: vec![subjects],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        num_replicas: replicas,
        max_messages_per_subject: 1,
        max_age,
        max_message_size: i32::try_from(max_payload).unwrap_or(i32::MAX),
        ..Default::default()
    };
    let dead = create(per_id(
        names.dead_stream(),
        names.dead_subjects(),
        opts.dead_letter_retention.unwrap_or_default(),
    ))
    .await?;
    let results = create(per_id(
        names.results_stream(),
        names.results_subjects(),
        opts.result_retention.unwrap_or_default(),
    ))
    .await?;
    let keys = create(per_id(
        names.keys_stream(),
        names.keys_subjects(),
        opts.dedup_window,
    ))
    .await?;

    let mut bands = Vec::with_capacity(opts.bands.len());
    for &band in opts.bands.iter().rev() {
        let name = names.band_consumer(band);
        let consumer: consumer::PullConsumer = jobs
            .get_or_create_consumer(
                &name,
                consumer::pull::Config {
                    durable_name: Some(name.clone()),
                    filter_subject: names.band_subject(band),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: opts.visibility_timeout,
                    // Unlimited: lanelog counts deliveries itself and
                    // dead-letters past max_deliveries, so the message is
                    // moved, not left in the stream with an advisory.
                    max_deliver: -1,
                    max_ack_pending: opts.max_in_flight,
                    num_replicas: 0,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| Error::Backend {
                url: url.clone(),
                detail: format!("consumer {name}: {e}"),
            })?;
        let ack_wait = consumer.cached_info().config.ack_wait;
        if ack_wait != opts.visibility_timeout {
            return Err(Error::InvalidArgument(format!(
                "consumer {name} on {url} has an ack wait of {ack_wait:?}, this open asked for {:?}: every process of one queue must use the same visibility_timeout",
                opts.visibility_timeout
            )));
        }
        bands.push((band, consumer));
    }

    let notify = Arc::new(Notify::new());
    let wake = client
        .subscribe(names.wake_subject())
        .await
        .map_err(|e| unavailable(&url, format!("cannot subscribe to wake-ups: {e}")))?;
    Ok(Inner {
        url,
        names,
        client,
        js,
        jobs,
        dead,
        results,
        keys,
        bands,
        max_message_size,
        opts,
        table: Mutex::new(Table::new(receipt_base())),
        notify,
        wake: Mutex::new(Some(wake)),
        wake_epoch: AtomicU64::new(0),
        closed: AtomicBool::new(false),
    })
}

/// Where this handle's receipt numbers start: the clock's low 43 bits of
/// nanoseconds, shifted up 20 bits, so two handles' numbers do not overlap
/// in practice (one would have to issue 2^20 receipts to reach the start
/// of a handle opened a nanosecond later), and the top bit stays clear, so
/// counting up from the start cannot overflow.
fn receipt_base() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    (nanos & ((1 << 43) - 1)) << 20
}

/// `url` as the client's server list: one address or several separated
/// by commas (the client connects to one and fails over to the others).
fn server_addrs(url: &str) -> Result<Vec<async_nats::ServerAddr>> {
    url.split(',')
        .map(|one| {
            one.trim().parse().map_err(|e| {
                Error::InvalidArgument(format!("server address {one:?} in {url:?}: {e}"))
            })
        })
        .collect()
}

fn check_version(url: &str, version: &str) -> Result<()> {
    let mut parts = version
        .trim_start_matches('v')
        .split(['.', '-'])
        .map(|p| p.parse::<u64>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if found < MIN_SERVER {
        return Err(Error::Backend {
            url: url.to_string(),
            detail: format!(
                "nats-server {version} is too old: lanelog needs {}.{} or later (sync_interval for per-write fsync)",
                MIN_SERVER.0, MIN_SERVER.1
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_lists_are_parsed() {
        assert_eq!(server_addrs("nats://a:1, nats://b:2").unwrap().len(), 2);
        let e = server_addrs("nats://a:1,nats://b:x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("nats://b:x"), "{e}");
    }

    #[test]
    fn old_servers_are_refused_by_name() {
        assert!(check_version("u", "2.15.1").is_ok());
        assert!(check_version("u", "v2.10.0-beta").is_ok());
        assert!(check_version("u", "3.0.0").is_ok());
        let e = check_version("nats://h:1", "2.9.10")
            .unwrap_err()
            .to_string();
        assert!(e.contains("nats://h:1") && e.contains("2.9.10"), "{e}");
    }
}
