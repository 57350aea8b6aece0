//! `lanelog worker`: a worker pool for one ONNX model file serving the
//! runs queued on NATS JetStream, until Ctrl-C or SIGTERM (or, with
//! `--exit-when-idle`, until no row has come for that long); and the
//! `--nats` options it shares with `lanelog infer`.
//!
//! Any number of `lanelog worker` processes, on any hosts, and every
//! `lanelog infer --nats` on the same URL and prefix share the runs: a
//! run submitted by one is computed by the workers of all (see
//! docs/nats.md). A job is identified by its model's file name, content
//! and output, so every process loads the same model file.
//!
//! Invariants: the service is closed on every way out but a kill (jobs a
//! killed worker held come back to the others when their lease ends);
//! a model that cannot be loaded, a server that cannot be reached, or
//! options out of range are refused before any job is taken.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::infer::parse_duration;
#[cfg(feature = "nats")]
use crate::Failure;
use crate::{fail, Output, USAGE};

/// Where a service's queues are on NATS JetStream.
#[derive(Args, Debug, Clone)]
pub(crate) struct NatsArgs {
    /// Queue the run on NATS JetStream at URL (nats://host:port; several
    /// servers of one cluster separated by commas), shared with every
    /// `lanelog worker` on that URL and --prefix, instead of a directory
    #[arg(long, value_name = "URL")]
    pub(crate) nats: Option<String>,
    /// The streams' name prefix on the server: processes sharing runs use
    /// the same one; workers of different models use different ones
    #[arg(long, value_name = "NAME", default_value = "lanelog")]
    pub(crate) prefix: String,
    /// Copies the server keeps of each stream (1-5, at most the cluster's
    /// nodes); applies when the streams are first made
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub(crate) replicas: u8,
    /// A job's lease: a job taken by a worker that dies is given to
    /// another after this long (the same in every process of a prefix)
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub(crate) lease: Duration,
}

/// `lanelog worker`'s options.
#[derive(Args, Debug)]
pub(crate) struct WorkerArgs {
    /// The ONNX model: one input of shape [N, features] (f32); the same
    /// file (name and content) as the `lanelog infer --nats` submitting
    /// the runs
    #[arg(long, value_name = "MODEL.onnx")]
    pub(crate) model: PathBuf,
    /// The model output to compute [default: its only f32 output, or
    /// "probabilities"]; the same as the submitter's --model-output
    #[arg(long, value_name = "NAME")]
    pub(crate) model_output: Option<String>,
    /// Values per row, when the model file does not fix it
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub(crate) width: Option<u32>,
    /// Workers running the model at once [default: the number of CPUs]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub(crate) parallel: Option<u16>,
    /// Most rows per model call
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub(crate) batch: u32,
    /// Stop once no row has been computed for this long (e.g. 30s, 5m);
    /// without it, run until Ctrl-C or SIGTERM
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) exit_when_idle: Option<Duration>,
    #[command(flatten)]
    pub(crate) nats: NatsArgs,
}

/// The `--nats` URL, required here.
fn url(a: &WorkerArgs) -> Result<&str, crate::Failure> {
    a.nats.nats.as_deref().ok_or_else(|| {
        fail(
            USAGE,
            "worker serves runs queued on NATS JetStream: pass --nats URL (nats://host:port)",
        )
    })
}

#[cfg(not(feature = "nats"))]
pub(crate) fn worker(a: &WorkerArgs) -> Result<Output, crate::Failure> {
    url(a)?;
    Err(not_in_this_build())
}

/// What a build without the `nats` feature says to `--nats` and `worker`.
#[cfg(not(feature = "nats"))]
pub(crate) fn not_in_this_build() -> crate::Failure {
    fail(
        USAGE,
        "NATS JetStream is not in this build of lanelog: build it with the `nats` and \
         `infer-cli` features (cargo install --path . --features infer-cli,nats)",
    )
}

#[cfg(feature = "nats")]
pub(crate) use with_nats::{open_service, worker, UNAVAILABLE};

#[cfg(feature = "nats")]
mod with_nats {
    use std::io::{self, IsTerminal as _};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Instant;

    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    use lanelog::nats::{JetStreamQueue, NatsOptions};
    use lanelog::worker::{
        InferError, InferService, Model as _, OnnxModel, PoolOptions, ServiceOptions,
    };

    use super::*;
    use crate::format::{duration, plural};
    use crate::infer::load_model;
    use crate::IO;

    /// The server could not be reached, or refused the queues.
    pub(crate) const UNAVAILABLE: i32 = 9;

    /// How often the progress line is updated and the stop conditions
    /// looked at.
    const TICK: Duration = Duration::from_millis(200);

    /// A service over the queues of `nats` (URL, prefix, replicas,
    /// lease) with `pool`; a server that cannot be reached or refuses is
    /// [`UNAVAILABLE`], naming the URL.
    pub(crate) fn open_service(
        nats: &NatsArgs,
        url: &str,
        pool: PoolOptions,
    ) -> Result<InferService<JetStreamQueue>, Failure> {
        let opts = NatsOptions::new()
            .prefix(&nats.prefix)
            .replicas(usize::from(nats.replicas))
            .visibility_timeout(nats.lease);
        ServiceOptions::new()
            .pool(pool)
            .open_nats(url, &opts)
            .map_err(|e| nats_error(url, e))
    }

    fn nats_error(url: &str, e: InferError) -> Failure {
        match e {
            InferError::Queue(
                e @ (lanelog::Error::Unavailable { .. } | lanelog::Error::Backend { .. }),
            ) => fail(UNAVAILABLE, e.to_string()),
            InferError::Queue(lanelog::Error::InvalidArgument(m))
            | InferError::InvalidArgument(m) => fail(USAGE, format!("{url}: {m}")),
            e => fail(IO, format!("{url}: {e}")),
        }
    }

    pub(crate) fn worker(a: &WorkerArgs) -> Result<Output, Failure> {
        let url = url(a)?;
        let width = a.width.map(|w| w as usize);
        let model: Arc<OnnxModel> =
            Arc::new(load_model(&a.model, a.model_output.as_deref(), width)?);
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let parallel = a.parallel.map_or(threads, usize::from);
        let pool = PoolOptions::new()
            .num_parallel(parallel)
            .max_batch(a.batch as usize)
            .linger(Duration::from_millis(1));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let stop = stop.clone();
            ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst))
                .map_err(|e| fail(IO, format!("cannot catch Ctrl-C and SIGTERM: {e}")))?;
        }
        let service = open_service(&a.nats, url, pool)?;
        let m = service.register(model.clone());
        eprintln!(
            "lanelog: worker: {parallel} worker{} running model {} ({}) for runs on {url}, \
             prefix {}; Ctrl-C or SIGTERM stops {}",
            plural(parallel as u64),
            model.name(),
            model.version(),
            a.nats.prefix,
            if parallel == 1 { "it" } else { "them" }
        );
        let started = Instant::now();
        let bar = progress();
        let mut last = (0, 0);
        let mut active = Instant::now();
        let why = loop {
            std::thread::sleep(TICK);
            let s = service.stats();
            let (done, failed) = s
                .rows
                .iter()
                .filter(|r| r.model == m.name() && r.version == m.version())
                .fold((0, 0), |(d, f), r| (d + r.done, f + r.failed));
            if (done, failed) != last {
                last = (done, failed);
                active = Instant::now();
            }
            let rate = done as f64 / started.elapsed().as_secs_f64();
            bar.set_message(format!(
                "{done} rows computed, {failed} failed, {rate:.0} rows/s, {} held for other models",
                s.held_jobs
            ));
            bar.tick();
            if stop.load(Ordering::SeqCst) {
                break "stopped by a signal".to_string();
            }
            if let Some(idle) = a.exit_when_idle.filter(|i| active.elapsed() >= *i) {
                break format!("no row for {}", duration(idle));
            }
            if s.workers == 0 {
                bar.finish_and_clear();
                let errors = service.errors().join("; ");
                let _ = service.close();
                return Err(fail(IO, format!("every worker stopped: {errors}")));
            }
        };
        bar.finish_and_clear();
        service.close().map_err(|e| nats_error(url, e))?;
        let (done, failed) = last;
        // Rows that failed are not this command's failure: their errors
        // are in their runs, for the submitter.
        Ok(Output::ok(format!(
            "worker: {done} row{} computed, {failed} failed, in {} ({why})\n",
            plural(done),
            duration(started.elapsed())
        )))
    }

    /// A spinner with the counts on stderr when it is a terminal.
    fn progress() -> ProgressBar {
        let target = if io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(None, target);
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar
    }
}
