//! The [`ChatModel`] trait: anything that answers a conversation.

use std::sync::Arc;

use async_trait::async_trait;
use futures::stream;

use crate::generate::{ChatEvent, ChatResponse, ChatStream, GenerateOptions};
use crate::message::Message;
use crate::runnable::BoundModel;
use crate::{Error, Result};

/// A chat model: local (the GGUF engine) or remote (an OpenAI-compatible server).
///
/// Implement [`chat`](ChatModel::chat); [`stream`](ChatModel::stream) has a default
/// that yields the whole answer as one token, which real streaming backends override.
///
/// ```
/// use async_trait::async_trait;
/// use kb_core::{ChatModel, ChatResponse, FinishReason, GenerateOptions, Message, Result, Usage};
///
/// /// Answers every conversation by shouting the last message back.
/// struct Echo;
///
/// #[async_trait]
/// impl ChatModel for Echo {
///     fn name(&self) -> &str {
///         "echo"
///     }
///     async fn chat(&self, messages: &[Message], _: &GenerateOptions) -> Result<ChatResponse> {
///         let last = messages.last().map(|m| m.content.to_uppercase()).unwrap_or_default();
///         Ok(ChatResponse {
///             message: Message::assistant(last),
///             finish_reason: FinishReason::Stop,
///             usage: Usage::default(),
///             timings: None,
///         })
///     }
/// }
///
/// # futures::executor::block_on(async {
/// let answer = Echo.chat(&[Message::user("hi")], &GenerateOptions::default()).await?;
/// assert_eq!(answer.message.content, "HI");
/// # Ok::<(), kb_core::Error>(())
/// # }).unwrap();
/// ```
#[async_trait]
pub trait ChatModel: Send + Sync {
    /// The model's name, as shown to users and in `/v1/models`.
    fn name(&self) -> &str;

    /// Generates a complete answer to `messages`.
    async fn chat(&self, messages: &[Message], options: &GenerateOptions) -> Result<ChatResponse>;

    /// Whether the model calls the tools of [`GenerateOptions::tools`]
    /// natively, answering with [`ToolCall`](crate::ToolCall)s. Agents fall
    /// back to a text protocol for models that do not.
    fn supports_tools(&self) -> bool {
        false
    }

    /// Whether a conversation that ends with an assistant message is
    /// continued — the reply extends that message, as its next words —
    /// instead of being answered with a new turn. Guided agents and parsers
    /// use it to start the model's answer for it (`Thought:`, `{"tool": "`).
    fn supports_prefill(&self) -> bool {
        false
    }

    /// The model's context window in tokens, when known. Local models know
    /// it; a remote server usually does not say.
    fn context_window(&self) -> Option<usize> {
        None
    }

    /// How many prompt tokens `messages` take once the model's chat template
    /// is applied, or `None` when the model cannot count them. Chains use it
    /// to fit retrieved context into [`context_window`](ChatModel::context_window).
    fn count_tokens(&self, messages: &[Message]) -> Result<Option<usize>> {
        let _ = messages;
        Ok(None)
    }

    /// The log-probability of each continuation as the beginning of the
    /// assistant's answer to `messages` (the sum over its tokens).
    ///
    /// Classification by verbalizer scores label words with it. Models that
    /// cannot score (most remote servers) return [`Error::Unsupported`].
    async fn score(&self, messages: &[Message], continuations: &[String]) -> Result<Vec<f32>> {
        let _ = (messages, continuations);
        Err(Error::Unsupported(format!(
            "model {:?} cannot score continuations; use a local GGUF model",
            self.name()
        )))
    }

    /// Generates an answer as a stream of [`ChatEvent`]s. Dropping the stream
    /// cancels the generation.
    async fn stream(&self, messages: &[Message], options: &GenerateOptions) -> Result<ChatStream> {
        let response = self.chat(messages, options).await?;
        let mut events = Vec::with_capacity(2 + response.message.tool_calls.len());
        if !response.message.content.is_empty() {
            events.push(Ok(ChatEvent::Token(response.message.content)));
        }
        events.extend(
            response
                .message
                .tool_calls
                .into_iter()
                .map(|call| Ok(ChatEvent::ToolCall(call))),
        );
        events.push(Ok(ChatEvent::Done {
            usage: response.usage,
            finish: response.finish_reason,
            timings: response.timings,
        }));
        Ok(Box::pin(stream::iter(events)))
    }

    /// This model with fixed options, as a pipeline step (a
    /// [`Runnable`](crate::Runnable) from a [`PromptValue`](crate::PromptValue)
    /// to the assistant's [`Message`]).
    fn bind(self, options: GenerateOptions) -> BoundModel<Self>
    where
        Self: Sized,
    {
        BoundModel::new(self, options)
    }
}

/// `ChatModel` for smart pointers to one, forwarding every method.
macro_rules! forward_chat_model {
    ($($pointer:ident),*) => {$(
        #[async_trait]
        impl<T: ChatModel + ?Sized> ChatModel for $pointer<T> {
            fn name(&self) -> &str {
                (**self).name()
            }
            async fn chat(
                &self,
                messages: &[Message],
                options: &GenerateOptions,
            ) -> Result<ChatResponse> {
                (**self).chat(messages, options).await
            }
            async fn stream(
                &self,
                messages: &[Message],
                options: &GenerateOptions,
            ) -> Result<ChatStream> {
                (**self).stream(messages, options).await
            }
            fn supports_tools(&self) -> bool {
                (**self).supports_tools()
            }
            fn supports_prefill(&self) -> bool {
                (**self).supports_prefill()
            }
            fn context_window(&self) -> Option<usize> {
                (**self).context_window()
            }
            fn count_tokens(&self, messages: &[Message]) -> Result<Option<usize>> {
                (**self).count_tokens(messages)
            }
            async fn score(
                &self,
                messages: &[Message],
                continuations: &[String],
            ) -> Result<Vec<f32>> {
                (**self).score(messages, continuations).await
            }
        }
    )*};
}

forward_chat_model!(Arc, Box);
