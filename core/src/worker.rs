//! [`Worker`]: one dedicated thread that runs blocking jobs (model inference)
//! in arrival order, awaited from async code without blocking the runtime.

use std::sync::Mutex;
use std::sync::mpsc;
use std::thread;

use futures::channel::oneshot;

use crate::{Error, Result};

type Job = Box<dyn FnOnce() + Send>;

/// A dedicated thread that runs jobs one at a time, in the order they arrive.
///
/// A loaded model is shared behind one worker: callers queue work instead of
/// loading the model again or fighting over the cores. Works under any async
/// executor; the thread ends when the worker is dropped and the queue is empty.
///
/// ```
/// use kb_core::Worker;
/// # futures::executor::block_on(async {
/// let worker = Worker::spawn("example")?;
/// let answer = worker.run(|| 6 * 7).await?;
/// assert_eq!(answer, 42);
/// # Ok::<(), kb_core::Error>(())
/// # }).unwrap();
/// ```
#[derive(Debug)]
pub struct Worker {
    queue: Mutex<mpsc::Sender<Job>>,
    name: String,
}

impl Worker {
    /// Starts the thread, named `name` (visible in debuggers and panics).
    pub fn spawn(name: &str) -> Result<Self> {
        let (queue, jobs) = mpsc::channel::<Job>();
        thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                for job in jobs {
                    job();
                }
            })
            .map_err(|e| Error::Model(format!("could not start worker thread {name:?}: {e}")))?;
        Ok(Worker {
            queue: Mutex::new(queue),
            name: name.to_string(),
        })
    }

    /// Runs `job` on the worker thread and waits for its result. A job that
    /// panics yields an error; the worker keeps serving later jobs.
    pub async fn run<T, F>(&self, job: F) -> Result<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            let _ = reply.send(result);
        });
        let sent = self
            .queue
            .lock()
            .map_err(|_| self.stopped())?
            .send(job)
            .is_ok();
        if !sent {
            return Err(self.stopped());
        }
        match answer.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(panic)) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                Err(Error::Model(format!(
                    "worker {:?} job panicked: {message}",
                    self.name
                )))
            }
            Err(_) => Err(self.stopped()),
        }
    }

    /// Queues `job` without waiting for it (it reports back through its own
    /// channel). A panic in it is caught; the worker keeps serving.
    pub fn submit<F>(&self, job: F) -> Result<()>
    where
        F: FnOnce() + Send + 'static,
    {
        let name = self.name.clone();
        let job: Job = Box::new(move || {
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                tracing::error!(worker = %name, "a queued job panicked");
            }
        });
        let sent = self
            .queue
            .lock()
            .map_err(|_| self.stopped())?
            .send(job)
            .is_ok();
        if sent { Ok(()) } else { Err(self.stopped()) }
    }

    fn stopped(&self) -> Error {
        Error::Model(format!("worker thread {:?} has stopped", self.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_run_in_order_and_panics_are_contained() {
        futures::executor::block_on(async {
            let worker = Worker::spawn("test").expect("spawn");
            let log = std::sync::Arc::new(Mutex::new(Vec::new()));
            let futures: Vec<_> = (0..5)
                .map(|i| {
                    let log = log.clone();
                    worker.run(move || log.lock().expect("lock").push(i))
                })
                .collect();
            for result in futures::future::join_all(futures).await {
                result.expect("job");
            }
            assert_eq!(*log.lock().expect("lock"), vec![0, 1, 2, 3, 4]);
            let err = worker.run::<(), _>(|| panic!("boom")).await.unwrap_err();
            assert!(err.to_string().contains("boom"), "{err}");
            assert_eq!(worker.run(|| 1).await.expect("still serving"), 1);
        });
    }
}
