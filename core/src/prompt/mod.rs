//! Prompt templates on minijinja: plain, chat and few-shot, and the
//! [`PromptValue`] they produce for a chat model.

mod chat;
mod few_shot;
mod template;

pub use chat::ChatPromptTemplate;
pub use few_shot::{FewShotPromptTemplate, FewShotPromptTemplateBuilder};
pub use template::PromptTemplate;

use crate::message::Message;

/// What a prompt template produces: a string, or a list of messages.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptValue {
    /// A plain prompt; a chat model receives it as one user message.
    Text(String),
    /// A conversation.
    Messages(Vec<Message>),
}

impl PromptValue {
    /// The prompt as chat messages.
    pub fn into_messages(self) -> Vec<Message> {
        match self {
            PromptValue::Text(text) => vec![Message::user(text)],
            PromptValue::Messages(messages) => messages,
        }
    }

    /// The prompt as one string; messages are written `role: content`, one a line.
    pub fn to_text(&self) -> String {
        match self {
            PromptValue::Text(text) => text.clone(),
            PromptValue::Messages(messages) => messages
                .iter()
                .map(|m| format!("{}: {}", m.role, m.content))
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

impl From<String> for PromptValue {
    fn from(text: String) -> Self {
        PromptValue::Text(text)
    }
}

impl From<&str> for PromptValue {
    fn from(text: &str) -> Self {
        PromptValue::Text(text.to_string())
    }
}

impl From<Vec<Message>> for PromptValue {
    fn from(messages: Vec<Message>) -> Self {
        PromptValue::Messages(messages)
    }
}
