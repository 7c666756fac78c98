//! [`Lease`]: a writer's claim on a knowledge base kept on a server, held
//! for the length of one change and renewed while it runs.

use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;

use super::qdrant::ServerManifest;
use crate::error::{Error, Result};

/// A claim on the knowledge base: taken before a change, renewed every
/// third of its length in the background, given up when the change ends.
/// A writer that dies stops renewing it, and it runs out.
pub(crate) struct Lease {
    manifest: ServerManifest,
    holder: String,
    renewer: JoinHandle<()>,
    /// Why renewing failed, once it has.
    lost: Arc<Mutex<Option<String>>>,
}

impl Lease {
    /// Claims the knowledge base `manifest` keeps for `holder`.
    pub(crate) async fn take(manifest: &ServerManifest, holder: &str) -> Result<Self> {
        manifest.claim(holder).await?;
        let lost = Arc::new(Mutex::new(None));
        let renewer = {
            let (manifest, holder, lost) = (manifest.clone(), holder.to_string(), lost.clone());
            tokio::spawn(async move {
                let every = manifest.lease_time() / 3;
                loop {
                    tokio::time::sleep(every).await;
                    if let Err(e) = manifest.claim(&holder).await {
                        if let Ok(mut lost) = lost.lock() {
                            *lost = Some(e.to_string());
                        }
                        return;
                    }
                }
            })
        };
        Ok(Lease {
            manifest: manifest.clone(),
            holder: holder.to_string(),
            renewer,
            lost,
        })
    }

    /// An error if the claim could not be renewed: the change must not be
    /// committed, as another writer may hold the knowledge base now.
    pub(crate) fn check(&self) -> Result<()> {
        match self.lost.lock().ok().and_then(|lost| lost.clone()) {
            None => Ok(()),
            Some(why) => Err(Error::Busy(format!(
                "this process lost its claim on the knowledge base while changing it, so \
                 the change was not committed (the next ingest completes it): {why}"
            ))),
        }
    }

    /// Gives the claim up; a failure to (the server gone) leaves it to run
    /// out.
    pub(crate) async fn release(self) {
        self.renewer.abort();
        if let Err(e) = self.manifest.release(&self.holder).await {
            tracing::warn!("could not give up the claim on the knowledge base: {e}");
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}
