//! A worker thread's OS scheduling priority ([`PoolOptions::worker_nice`]).
//!
//! Linux keeps a nice value per thread, and `setpriority(PRIO_PROCESS, 0)`
//! sets the calling thread's. Elsewhere the same call would change the
//! whole process, so there the option is refused when it is validated.
//!
//! [`PoolOptions::worker_nice`]: super::PoolOptions::worker_nice

/// Whether [`lower_this_thread`] changes only the calling thread.
pub(crate) const SUPPORTED: bool = cfg!(target_os = "linux");

/// Raise the calling thread's nice value by `by`, at most to 19.
#[cfg(target_os = "linux")]
pub(crate) fn lower_this_thread(by: u8) -> std::io::Result<()> {
    use rustix::process::{getpriority_process, setpriority_process};
    let now = getpriority_process(None)?;
    setpriority_process(None, (now + i32::from(by)).min(19))?;
    Ok(())
}

/// Never called: the option is refused on this platform.
#[cfg(not(target_os = "linux"))]
pub(crate) fn lower_this_thread(_by: u8) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use rustix::process::getpriority_process;

    #[test]
    fn lowers_only_the_calling_thread() {
        let before = getpriority_process(None).expect("getpriority");
        let inside = std::thread::spawn(|| {
            let start = getpriority_process(None).expect("getpriority");
            lower_this_thread(3).expect("lower");
            let lowered = getpriority_process(None).expect("getpriority");
            lower_this_thread(30).expect("lower to the floor");
            (
                start,
                lowered,
                getpriority_process(None).expect("getpriority"),
            )
        })
        .join()
        .expect("thread");
        assert_eq!(inside.1, (inside.0 + 3).min(19));
        assert_eq!(inside.2, 19, "clamped at the lowest priority");
        assert_eq!(
            getpriority_process(None).expect("getpriority"),
            before,
            "the spawning thread keeps its priority"
        );
    }
}
