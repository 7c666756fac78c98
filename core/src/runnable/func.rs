//! [`RunnableFn`]: an async closure as a pipeline step.

use std::future::Future;
use std::marker::PhantomData;

use async_trait::async_trait;

use crate::Result;
use crate::runnable::Runnable;

/// An async function as a [`Runnable`]; built by [`runnable_fn`].
pub struct RunnableFn<F, I, O> {
    f: F,
    types: PhantomData<fn(I) -> O>,
}

impl<F: Clone, I, O> Clone for RunnableFn<F, I, O> {
    fn clone(&self) -> Self {
        RunnableFn {
            f: self.f.clone(),
            types: PhantomData,
        }
    }
}

impl<F, I, O> std::fmt::Debug for RunnableFn<F, I, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunnableFn").finish_non_exhaustive()
    }
}

/// Wraps `f`, an async function from `I` to `Result<O>`, as a [`Runnable`].
///
/// ```
/// use kb_core::{runnable_fn, Runnable};
/// # futures::executor::block_on(async {
/// let double = runnable_fn(|x: i32| async move { Ok(x * 2) });
/// assert_eq!(double.invoke(21).await?, 42);
/// # Ok::<(), kb_core::Error>(())
/// # }).unwrap();
/// ```
pub fn runnable_fn<F, Fut, I, O>(f: F) -> RunnableFn<F, I, O>
where
    F: Fn(I) -> Fut + Send + Sync,
    Fut: Future<Output = Result<O>> + Send,
    I: Send + 'static,
    O: Send + 'static,
{
    RunnableFn {
        f,
        types: PhantomData,
    }
}

#[async_trait]
impl<F, Fut, I, O> Runnable for RunnableFn<F, I, O>
where
    F: Fn(I) -> Fut + Send + Sync,
    Fut: Future<Output = Result<O>> + Send,
    I: Send + 'static,
    O: Send + 'static,
{
    type Input = I;
    type Output = O;

    async fn invoke(&self, input: I) -> Result<O> {
        (self.f)(input).await
    }
}
