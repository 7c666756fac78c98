//! [`Pipe`]: two runnables, one after the other.

use async_trait::async_trait;

use crate::Result;
use crate::runnable::{Chunks, OutputStream, Runnable};

/// `first` then `second`; built by [`Runnable::pipe`].
///
/// Streaming passes through: `second` receives `first`'s chunks as they come.
#[derive(Debug, Clone)]
pub struct Pipe<A, B> {
    first: A,
    second: B,
}

impl<A, B> Pipe<A, B> {
    /// `first` then `second`.
    pub fn new(first: A, second: B) -> Self {
        Pipe { first, second }
    }

    /// The first step.
    pub fn first(&self) -> &A {
        &self.first
    }

    /// The second step.
    pub fn second(&self) -> &B {
        &self.second
    }
}

#[async_trait]
impl<A, B> Runnable for Pipe<A, B>
where
    A: Runnable,
    B: Runnable<Input = A::Output>,
{
    type Input = A::Input;
    type Output = B::Output;

    async fn invoke(&self, input: A::Input) -> Result<B::Output> {
        let middle = self.first.invoke(input).await?;
        self.second.invoke(middle).await
    }

    async fn batch(&self, inputs: Vec<A::Input>) -> Result<Vec<B::Output>> {
        let middle = self.first.batch(inputs).await?;
        self.second.batch(middle).await
    }

    async fn stream(&self, input: A::Input) -> Result<OutputStream<B::Output>> {
        let middle = self.first.stream(input).await?;
        self.second.transform(Chunks::new(middle, A::join)).await
    }

    async fn transform(&self, input: Chunks<A::Input>) -> Result<OutputStream<B::Output>> {
        let middle = self.first.transform(input).await?;
        self.second.transform(Chunks::new(middle, A::join)).await
    }

    fn join(chunks: Vec<B::Output>) -> Result<B::Output> {
        B::join(chunks)
    }
}
