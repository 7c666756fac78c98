//! [`BoundModel`]: a [`ChatModel`] with its options, as a pipeline step.

use async_trait::async_trait;
use futures::StreamExt;

use crate::Result;
use crate::chat_model::ChatModel;
use crate::generate::{ChatEvent, GenerateOptions};
use crate::message::{Message, Role};
use crate::prompt::PromptValue;
use crate::runnable::{IntoRunnable, OutputStream, Runnable};

/// A chat model bound to [`GenerateOptions`]: a [`Runnable`] from a
/// [`PromptValue`] to the assistant's [`Message`].
///
/// [`stream`](Runnable::stream) yields one message chunk per token (and one per
/// tool call); [`join`](Runnable::join) concatenates them.
#[derive(Debug, Clone)]
pub struct BoundModel<M> {
    model: M,
    options: GenerateOptions,
}

impl<M: ChatModel> BoundModel<M> {
    /// `model`, generating with `options`.
    pub fn new(model: M, options: GenerateOptions) -> Self {
        BoundModel { model, options }
    }

    /// The model.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The options every call uses.
    pub fn options(&self) -> &GenerateOptions {
        &self.options
    }
}

#[async_trait]
impl<M: ChatModel> Runnable for BoundModel<M> {
    type Input = PromptValue;
    type Output = Message;

    async fn invoke(&self, prompt: PromptValue) -> Result<Message> {
        let response = self
            .model
            .chat(&prompt.into_messages(), &self.options)
            .await?;
        Ok(response.message)
    }

    async fn stream(&self, prompt: PromptValue) -> Result<OutputStream<Message>> {
        let events = self
            .model
            .stream(&prompt.into_messages(), &self.options)
            .await?;
        Ok(Box::pin(events.filter_map(|event| async move {
            match event {
                Ok(ChatEvent::Token(text)) => Some(Ok(Message::assistant(text))),
                Ok(ChatEvent::ToolCall(call)) => {
                    let mut message = Message::assistant(String::new());
                    message.tool_calls.push(call);
                    Some(Ok(message))
                }
                Ok(ChatEvent::Done { .. }) => None,
                Err(err) => Some(Err(err)),
            }
        })))
    }

    fn join(chunks: Vec<Message>) -> Result<Message> {
        let mut message = Message::new(Role::Assistant, String::new());
        for chunk in chunks {
            message.content.push_str(&chunk.content);
            message.tool_calls.extend(chunk.tool_calls);
        }
        Ok(message)
    }
}

/// The [`IntoRunnable`] marker for chat models, which are piped as a
/// [`BoundModel`] with default options.
#[derive(Debug)]
pub enum IsChatModel {}

impl<M: ChatModel> IntoRunnable<IsChatModel> for M {
    type Runnable = BoundModel<M>;
    fn into_runnable(self) -> BoundModel<M> {
        BoundModel::new(self, GenerateOptions::default())
    }
}
