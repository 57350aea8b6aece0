//! Shared by the inference examples: the model called directly on
//! micro-batches, with no queue, the best any worker loop could do.

use std::time::{Duration, Instant};

use lanelog::worker::{Model, ModelError};

/// Run `model` over `rows` in micro-batches of `batch` rows, the batches
/// split evenly over `threads` scoped threads; the wall time, or the first
/// error.
pub fn run_direct<M: Model>(
    model: &M,
    rows: &[M::Input],
    batch: usize,
    threads: usize,
) -> Result<Duration, ModelError> {
    let chunks: Vec<&[M::Input]> = rows.chunks(batch.max(1)).collect();
    let per = chunks.len().div_ceil(threads.max(1)).max(1);
    let t = Instant::now();
    std::thread::scope(|s| {
        let running: Vec<_> = chunks
            .chunks(per)
            .map(|part| s.spawn(move || part.iter().try_for_each(|c| model.infer(c).map(drop))))
            .collect();
        running.into_iter().try_for_each(|h| {
            h.join()
                .map_err(|_| ModelError::transient("a direct-run thread panicked"))?
        })
    })?;
    Ok(t.elapsed())
}
