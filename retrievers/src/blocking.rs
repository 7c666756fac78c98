//! [`run_blocking`]: the indexes' file I/O off the async worker threads.

use crate::error::{Error, Result};

/// Runs `work` on one of tokio's blocking threads and waits for it without
/// holding up the async worker; `what` names the work in the error if its
/// thread panicked.
pub(crate) async fn run_blocking<T: Send + 'static>(
    what: &'static str,
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Index(format!("{what} failed: {e}")))?
}
