//! [`Metered`]: a chat model that counts its calls and tokens.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::StreamExt;
use kb_core::{
    ChatEvent, ChatModel, ChatResponse, ChatStream, GenerateOptions, Message, Result, Usage,
};
use serde::{Deserialize, Serialize};

/// What a [`Metered`] model has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Generations (`chat` and `stream` calls).
    pub calls: usize,
    /// Scoring calls.
    pub scores: usize,
    /// Tokens over all generations; `cached_prompt_tokens` are the prompt
    /// tokens the model's prefix cache saved it from processing.
    pub usage: Usage,
}

impl Counts {
    /// Prompt tokens actually processed (prompt tokens minus cached ones).
    pub fn prefilled_tokens(&self) -> usize {
        self.usage.prompt_tokens
            - self
                .usage
                .cached_prompt_tokens
                .min(self.usage.prompt_tokens)
    }
}

/// A shared view of a [`Metered`] model's counts.
#[derive(Debug, Clone, Default)]
pub struct Meter(Arc<Mutex<Counts>>);

impl Meter {
    /// The counts so far.
    pub fn counts(&self) -> Counts {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add(&self, usage: Usage) {
        let mut counts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        counts.calls += 1;
        counts.usage.prompt_tokens += usage.prompt_tokens;
        counts.usage.cached_prompt_tokens += usage.cached_prompt_tokens;
        counts.usage.completion_tokens += usage.completion_tokens;
    }

    fn add_score(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).scores += 1;
    }
}

/// Wraps a chat model to count calls and tokens, for budgets and reports.
///
/// ```
/// use std::sync::Arc;
/// use async_trait::async_trait;
/// use kb_agents::Metered;
/// use kb_core::{ChatModel, ChatResponse, FinishReason, GenerateOptions, Message, Result, Usage};
///
/// struct Fixed;
/// #[async_trait]
/// impl ChatModel for Fixed {
///     fn name(&self) -> &str { "fixed" }
///     async fn chat(&self, _: &[Message], _: &GenerateOptions) -> Result<ChatResponse> {
///         let usage = Usage { prompt_tokens: 10, cached_prompt_tokens: 4, completion_tokens: 2 };
///         Ok(ChatResponse { message: Message::assistant("ok"), finish_reason: FinishReason::Stop, usage, timings: None })
///     }
/// }
///
/// # futures::executor::block_on(async {
/// let model = Metered::new(Arc::new(Fixed));
/// let meter = model.meter();
/// model.chat(&[Message::user("hi")], &GenerateOptions::default()).await?;
/// model.chat(&[Message::user("hi")], &GenerateOptions::default()).await?;
/// assert_eq!(meter.counts().calls, 2);
/// assert_eq!(meter.counts().prefilled_tokens(), 12);
/// # Ok::<(), kb_core::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct Metered {
    inner: Arc<dyn ChatModel>,
    meter: Meter,
}

impl std::fmt::Debug for Metered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metered")
            .field("model", &self.inner.name())
            .field("counts", &self.meter.counts())
            .finish()
    }
}

impl Metered {
    /// Counts what `inner` does from now on.
    pub fn new(inner: Arc<dyn ChatModel>) -> Self {
        Metered {
            inner,
            meter: Meter::default(),
        }
    }

    /// A handle on the counts, which stays valid as the model is used.
    pub fn meter(&self) -> Meter {
        self.meter.clone()
    }
}

#[async_trait]
impl ChatModel for Metered {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn chat(&self, messages: &[Message], options: &GenerateOptions) -> Result<ChatResponse> {
        let response = self.inner.chat(messages, options).await?;
        self.meter.add(response.usage);
        Ok(response)
    }

    async fn stream(&self, messages: &[Message], options: &GenerateOptions) -> Result<ChatStream> {
        let meter = self.meter.clone();
        let events = self.inner.stream(messages, options).await?;
        Ok(Box::pin(events.inspect(move |event| {
            if let Ok(ChatEvent::Done { usage, .. }) = event {
                meter.add(*usage);
            }
        })))
    }

    fn supports_tools(&self) -> bool {
        self.inner.supports_tools()
    }

    fn supports_prefill(&self) -> bool {
        self.inner.supports_prefill()
    }

    fn context_window(&self) -> Option<usize> {
        self.inner.context_window()
    }

    fn count_tokens(&self, messages: &[Message]) -> Result<Option<usize>> {
        self.inner.count_tokens(messages)
    }

    async fn score(&self, messages: &[Message], continuations: &[String]) -> Result<Vec<f32>> {
        let scores = self.inner.score(messages, continuations).await?;
        self.meter.add_score();
        Ok(scores)
    }
}
