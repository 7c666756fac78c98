//! Typed composition in the style of LangChain's expression language:
//! `prompt.pipe(model).pipe(parser)`.
//!
//! A [`Runnable`] turns an `Input` into an `Output` with [`invoke`](Runnable::invoke),
//! many at once with [`batch`](Runnable::batch), or incrementally with
//! [`stream`](Runnable::stream). [`pipe`](Runnable::pipe) joins two runnables whose
//! types line up, checked by the compiler where the pipe is written. Streaming
//! flows through a pipe: each stage receives the previous stage's chunks in
//! [`transform`](Runnable::transform), so a model's tokens reach the caller
//! through a [`StrOutputParser`] as they are generated.

mod func;
mod model;
mod parser;
mod pipe;

use std::pin::Pin;

use async_trait::async_trait;
use futures::{Stream, TryStreamExt, stream};

pub use func::{RunnableFn, runnable_fn};
pub use model::{BoundModel, IsChatModel};
pub use parser::StrOutputParser;
pub use pipe::Pipe;

use crate::{Error, Result};

/// A stream of output chunks.
pub type OutputStream<T> = Pin<Box<dyn Stream<Item = Result<T>> + Send>>;

/// A stream of chunks of one value, with the function that joins them back
/// into the value (supplied by the runnable that produced them).
pub struct Chunks<T> {
    stream: OutputStream<T>,
    join: fn(Vec<T>) -> Result<T>,
}

impl<T: Send + 'static> Chunks<T> {
    /// Chunks from `stream`, joined by `join`.
    pub fn new(stream: OutputStream<T>, join: fn(Vec<T>) -> Result<T>) -> Self {
        Chunks { stream, join }
    }

    /// One value as a single chunk.
    pub fn single(value: T) -> Self {
        Chunks {
            stream: Box::pin(stream::once(async { Ok(value) })),
            join: exactly_one,
        }
    }

    /// Waits for every chunk and joins them.
    pub async fn join(self) -> Result<T> {
        let chunks: Vec<T> = self.stream.try_collect().await?;
        (self.join)(chunks)
    }

    /// The chunks, for a runnable that processes them one by one.
    pub fn into_stream(self) -> OutputStream<T> {
        self.stream
    }
}

/// The default [`Runnable::join`]: a runnable that does not stream yields one chunk.
pub fn exactly_one<T>(mut chunks: Vec<T>) -> Result<T> {
    match chunks.len() {
        1 => Ok(chunks.remove(0)),
        n => Err(Error::InvalidInput(format!(
            "expected exactly one output chunk, got {n}; a runnable that streams several chunks must implement `join`"
        ))),
    }
}

/// One step of a pipeline: an `Input` in, an `Output` out.
///
/// Implement [`invoke`](Runnable::invoke). Runnables that produce output
/// incrementally also implement [`stream`](Runnable::stream) and
/// [`join`](Runnable::join); runnables that can consume a stream as it arrives
/// implement [`transform`](Runnable::transform).
///
/// ```
/// use async_trait::async_trait;
/// use kb_core::{runnable_fn, Result, Runnable};
///
/// /// Counts the words of a text.
/// struct WordCount;
///
/// #[async_trait]
/// impl Runnable for WordCount {
///     type Input = String;
///     type Output = usize;
///     async fn invoke(&self, text: String) -> Result<usize> {
///         Ok(text.split_whitespace().count())
///     }
/// }
///
/// # futures::executor::block_on(async {
/// let shout = runnable_fn(|text: String| async move { Ok(text.to_uppercase()) });
/// let chain = shout.pipe(WordCount).pipe(runnable_fn(|n: usize| async move { Ok(n * 10) }));
/// assert_eq!(chain.invoke("retrieval augmented generation".into()).await?, 30);
/// assert_eq!(chain.batch(vec!["a".into(), "a b".into()]).await?, vec![10, 20]);
/// # Ok::<(), kb_core::Error>(())
/// # }).unwrap();
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a `Runnable`",
    label = "this cannot be a pipeline step",
    note = "implement `Runnable` for it, wrap a closure with `kb_core::runnable_fn`, or pass a `ChatModel`"
)]
#[async_trait]
pub trait Runnable: Send + Sync {
    /// What the step takes.
    type Input: Send + 'static;
    /// What the step gives.
    type Output: Send + 'static;

    /// Runs the step on one input.
    async fn invoke(&self, input: Self::Input) -> Result<Self::Output>;

    /// Runs the step on many inputs, concurrently; outputs keep the input order.
    async fn batch(&self, inputs: Vec<Self::Input>) -> Result<Vec<Self::Output>> {
        futures::future::try_join_all(inputs.into_iter().map(|input| self.invoke(input))).await
    }

    /// Runs the step, yielding its output in chunks as they become available.
    /// The default yields the whole output as one chunk.
    async fn stream(&self, input: Self::Input) -> Result<OutputStream<Self::Output>> {
        let output = self.invoke(input).await?;
        Ok(Box::pin(stream::once(async { Ok(output) })))
    }

    /// Runs the step on an input that arrives in chunks. The default waits for
    /// all of them, joins them, and [`stream`](Runnable::stream)s the result.
    async fn transform(&self, input: Chunks<Self::Input>) -> Result<OutputStream<Self::Output>> {
        let input = input.join().await?;
        self.stream(input).await
    }

    /// Joins the chunks [`stream`](Runnable::stream) yielded into one output.
    /// The default accepts exactly one chunk.
    fn join(chunks: Vec<Self::Output>) -> Result<Self::Output>
    where
        Self: Sized,
    {
        exactly_one(chunks)
    }

    /// Feeds this step's output into `next`: a [`Runnable`] whose input is this
    /// step's output, or a [`ChatModel`](crate::ChatModel) when this step yields a
    /// [`PromptValue`](crate::PromptValue).
    fn pipe<N, M>(self, next: N) -> Pipe<Self, N::Runnable>
    where
        Self: Sized,
        N: IntoRunnable<M>,
        N::Runnable: Runnable<Input = Self::Output>,
    {
        Pipe::new(self, next.into_runnable())
    }
}

/// What [`Runnable::pipe`] accepts: any [`Runnable`], and any
/// [`ChatModel`](crate::ChatModel) (bound to default options). `Marker` only
/// tells the two apart; callers never name it.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be piped",
    note = "pipe a `Runnable`, or a `ChatModel` after a step that yields a `PromptValue`"
)]
pub trait IntoRunnable<Marker> {
    /// The runnable this becomes.
    type Runnable: Runnable;
    /// Converts into the runnable.
    fn into_runnable(self) -> Self::Runnable;
}

/// The [`IntoRunnable`] marker for values that are runnables already.
#[derive(Debug)]
pub enum IsRunnable {}

impl<R: Runnable> IntoRunnable<IsRunnable> for R {
    type Runnable = R;
    fn into_runnable(self) -> R {
        self
    }
}

#[async_trait]
impl<R: Runnable> Runnable for std::sync::Arc<R> {
    type Input = R::Input;
    type Output = R::Output;

    async fn invoke(&self, input: Self::Input) -> Result<Self::Output> {
        (**self).invoke(input).await
    }
    async fn batch(&self, inputs: Vec<Self::Input>) -> Result<Vec<Self::Output>> {
        (**self).batch(inputs).await
    }
    async fn stream(&self, input: Self::Input) -> Result<OutputStream<Self::Output>> {
        (**self).stream(input).await
    }
    async fn transform(&self, input: Chunks<Self::Input>) -> Result<OutputStream<Self::Output>> {
        (**self).transform(input).await
    }
    fn join(chunks: Vec<Self::Output>) -> Result<Self::Output> {
        R::join(chunks)
    }
}
