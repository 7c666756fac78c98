//! [`StrOutputParser`]: a model's message as plain text, streamed.

use async_trait::async_trait;
use futures::StreamExt;

use crate::Result;
use crate::message::Message;
use crate::runnable::{Chunks, OutputStream, Runnable};

/// Takes the text of a model's [`Message`]. Streams: each incoming message
/// chunk becomes a text chunk as soon as it arrives.
#[derive(Debug, Clone, Copy, Default)]
pub struct StrOutputParser;

#[async_trait]
impl Runnable for StrOutputParser {
    type Input = Message;
    type Output = String;

    async fn invoke(&self, message: Message) -> Result<String> {
        Ok(message.content)
    }

    async fn transform(&self, input: Chunks<Message>) -> Result<OutputStream<String>> {
        Ok(Box::pin(
            input
                .into_stream()
                .map(|chunk| chunk.map(|message| message.content)),
        ))
    }

    fn join(chunks: Vec<String>) -> Result<String> {
        Ok(chunks.concat())
    }
}
