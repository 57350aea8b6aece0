//! The README's Rust code blocks, compiled and run as doctests, so the tour
//! a user reads is the API that builds. Gated on `tokio` because one block
//! shows `dequeue_async`; `cargo test --doc --all-features` runs them all.

#[cfg(all(doctest, feature = "tokio"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
