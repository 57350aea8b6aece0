//! The battery's oracles: `testkit::oracle` (see its documentation for
//! what each finding means), with [`check`] taking the workload the image
//! came from.

pub use testkit::oracle::*;

use lanelog::storage::MemoryStorage;

use super::model::{Model, View};
use super::workload::Workload;

/// Observe and judge one image of a run of `w`; returns the observation if
/// it opened.
pub fn check(
    img: MemoryStorage,
    w: &Workload,
    model: &Model,
    view: View,
    ctx: &str,
    f: &mut Findings,
) -> Option<Box<Observed>> {
    testkit::oracle::check(img, w.checkpoint_bytes, model, view, ctx, f)
}
