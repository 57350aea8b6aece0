//! lanelog's JetStream backend (`lanelog::nats::JetStreamQueue`, the
//! queue the worker layer scales out on) against nats-server processes
//! this row starts on loopback: one node, or three with streams
//! replicated three times; with `sync_interval: always` (a write is on
//! disk when its publish is acknowledged) or the server's default (a sync
//! every two minutes: NOT durable against power loss). The server is the
//! official 2.15.1 binary (`testkit::nats` finds or installs it), and it
//! runs on the same machine, its fsyncs on the same disk.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Result};
use lanelog::nats::{JetStreamQueue, NatsOptions};
use lanelog::{DequeueOptions, EnqueueOptions, JobQueue};
use testkit::nats::{Cluster, Server};

use super::{Handle, Store};

pub struct JetStreamStore {
    q: JetStreamQueue,
    /// The servers the row runs on (one node, or a cluster); dropping
    /// them kills them.
    _node: Option<Server>,
    _cluster: Option<Cluster>,
}

impl JetStreamStore {
    /// Start `nodes` (1 or 3) servers and open the queue, its streams
    /// replicated on every node.
    pub fn start(_dir: &Path, nodes: usize, always: bool) -> Result<Self> {
        let (node, cluster, url) = if nodes == 1 {
            let s = Server::start_synced(always).map_err(|e| anyhow!(e))?;
            let url = s.url();
            (Some(s), None, url)
        } else {
            let c = Cluster::start_synced(nodes, always).map_err(|e| anyhow!(e))?;
            let url = c.url();
            (None, Some(c), url)
        };
        // A fresh cluster may still be electing its meta leader: the
        // streams' creation is retried for a while.
        let mut tries = 0;
        let q = loop {
            match NatsOptions::new()
                .prefix("bench")
                .replicas(nodes)
                .max_deliveries(0)
                .open(&url)
            {
                Ok(q) => break q,
                Err(e) if tries < 60 => {
                    tries += 1;
                    eprintln!("jetstream open: {e}; retrying");
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => return Err(e.into()),
            }
        };
        Ok(JetStreamStore {
            q,
            _node: node,
            _cluster: cluster,
        })
    }
}

impl Store for JetStreamStore {
    fn handle(&self) -> Result<Box<dyn Handle>> {
        Ok(Box::new(JetStreamHandle { q: self.q.clone() }))
    }

    fn close(self: Box<Self>) -> Result<()> {
        self.q.clone().close()?;
        Ok(())
    }
}

struct JetStreamHandle {
    q: JetStreamQueue,
}

impl Handle for JetStreamHandle {
    fn enqueue(&mut self, items: &[&[u8]]) -> Result<()> {
        let opts = EnqueueOptions::new();
        if let [one] = items {
            self.q.enqueue_with(one, &opts)?;
        } else {
            let batch: Vec<(&[u8], EnqueueOptions)> =
                items.iter().map(|p| (*p, opts.clone())).collect();
            self.q.enqueue_batch_with(&batch)?;
        }
        Ok(())
    }

    fn dequeue(&mut self, max: usize, wait: bool) -> Result<usize> {
        let mut opts = DequeueOptions::new().max(max);
        if wait {
            opts = opts.wait(Duration::from_millis(100));
        }
        let got = self.q.dequeue_with(&opts)?;
        if got.is_empty() {
            return Ok(0);
        }
        let receipts: Vec<_> = got.iter().map(|d| d.receipt).collect();
        self.q.ack_batch(&receipts)?;
        Ok(got.len())
    }

    fn blocks(&self) -> bool {
        true
    }
}
