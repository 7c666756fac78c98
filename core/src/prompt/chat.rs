//! [`ChatPromptTemplate`]: role-tagged message templates and history placeholders.

use std::collections::BTreeSet;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::message::{Message, Role};
use crate::prompt::template::object;
use crate::prompt::{PromptTemplate, PromptValue};
use crate::runnable::Runnable;
use crate::{Error, Result};

#[derive(Debug, Clone)]
enum Part {
    Message(Role, PromptTemplate),
    Placeholder(String),
}

/// A conversation template: a list of role-tagged [`PromptTemplate`]s, plus
/// placeholders where a list of messages (a chat history) is spliced in.
///
/// ```
/// use kb_core::{ChatPromptTemplate, Role};
/// use serde_json::json;
///
/// let template = ChatPromptTemplate::new()
///     .system("You are a {{ persona }}.")?
///     .placeholder("history")
///     .user("{{ question }}")?;
/// assert_eq!(template.input_variables(), ["history", "persona", "question"]);
///
/// let messages = template.format_messages(&json!({
///     "persona": "librarian",
///     "history": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
///     "question": "Where is the RAG book?",
/// }))?;
/// assert_eq!(messages.len(), 4);
/// assert_eq!(messages[0].content, "You are a librarian.");
/// assert_eq!(messages[2].role, Role::Assistant);
/// # Ok::<(), kb_core::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct ChatPromptTemplate {
    parts: Vec<Part>,
}

impl ChatPromptTemplate {
    /// An empty template; add messages with the chaining methods.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a template from `(role, template source)` pairs.
    pub fn from_messages<'a>(messages: impl IntoIterator<Item = (Role, &'a str)>) -> Result<Self> {
        messages
            .into_iter()
            .try_fold(Self::new(), |t, (role, source)| t.message(role, source))
    }

    /// Appends a message template for `role`.
    pub fn message(mut self, role: Role, source: &str) -> Result<Self> {
        let name = format!("{role} message {}", self.parts.len() + 1);
        self.parts
            .push(Part::Message(role, PromptTemplate::named(name, source)?));
        Ok(self)
    }

    /// Appends a system message template.
    pub fn system(self, source: &str) -> Result<Self> {
        self.message(Role::System, source)
    }

    /// Appends a user message template.
    pub fn user(self, source: &str) -> Result<Self> {
        self.message(Role::User, source)
    }

    /// Appends an assistant message template.
    pub fn assistant(self, source: &str) -> Result<Self> {
        self.message(Role::Assistant, source)
    }

    /// Appends a placeholder: the variable `variable` must hold a list of
    /// messages (`[{"role": …, "content": …}, …]`), spliced in here.
    pub fn placeholder(mut self, variable: impl Into<String>) -> Self {
        self.parts.push(Part::Placeholder(variable.into()));
        self
    }

    /// Fixes `variable` to `value` in every message template that uses it.
    pub fn partial(mut self, variable: &str, value: impl Serialize) -> Result<Self> {
        let value = serde_json::to_value(value)?;
        for part in &mut self.parts {
            if let Part::Message(_, template) = part
                && template.input_variables().contains(&variable)
            {
                *template = template.clone().partial(variable, &value)?;
            }
        }
        Ok(self)
    }

    /// Every variable a caller must provide, sorted.
    pub fn input_variables(&self) -> Vec<String> {
        let mut all = BTreeSet::new();
        for part in &self.parts {
            match part {
                Part::Message(_, t) => {
                    all.extend(t.input_variables().into_iter().map(String::from))
                }
                Part::Placeholder(v) => {
                    all.insert(v.clone());
                }
            }
        }
        all.into_iter().collect()
    }

    /// Renders every message with `vars` (a value that serializes to a JSON object).
    pub fn format_messages(&self, vars: &impl Serialize) -> Result<Vec<Message>> {
        let vars = object("chat prompt", serde_json::to_value(vars)?)?;
        self.render(&vars)
    }

    fn render(&self, vars: &Map<String, Value>) -> Result<Vec<Message>> {
        let mut messages = Vec::with_capacity(self.parts.len());
        for part in &self.parts {
            match part {
                Part::Message(role, template) => {
                    messages.push(Message::new(*role, template.render(vars)?));
                }
                Part::Placeholder(variable) => {
                    let value = vars.get(variable).ok_or_else(|| Error::MissingVariable {
                        template: "chat prompt".into(),
                        variable: variable.clone(),
                    })?;
                    let history: Vec<Message> =
                        serde_json::from_value(value.clone()).map_err(|e| {
                            Error::InvalidInput(format!(
                                "placeholder {variable:?} needs a list of messages with role and content: {e}"
                            ))
                        })?;
                    messages.extend(history);
                }
            }
        }
        Ok(messages)
    }
}

#[async_trait]
impl Runnable for ChatPromptTemplate {
    type Input = Value;
    type Output = PromptValue;

    async fn invoke(&self, input: Value) -> Result<PromptValue> {
        self.format_messages(&input).map(PromptValue::Messages)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn missing_placeholder_and_bad_history_are_errors() {
        let t = ChatPromptTemplate::new()
            .placeholder("history")
            .user("{{ q }}")
            .expect("compile");
        let err = t.format_messages(&json!({"q": "x"})).unwrap_err();
        assert!(
            matches!(err, Error::MissingVariable { ref variable, .. } if variable == "history")
        );
        let err = t
            .format_messages(&json!({"q": "x", "history": "nope"}))
            .unwrap_err();
        assert!(err.to_string().contains("history"), "{err}");
    }

    #[test]
    fn partial_applies_to_every_message() {
        let t = ChatPromptTemplate::from_messages([
            (Role::System, "Reply in {{ lang }}."),
            (Role::User, "{{ q }} ({{ lang }})"),
        ])
        .expect("compile")
        .partial("lang", "中文")
        .expect("partial");
        assert_eq!(t.input_variables(), ["q"]);
        let messages = t.format_messages(&json!({"q": "hi"})).expect("render");
        assert_eq!(messages[0].content, "Reply in 中文.");
        assert_eq!(messages[1].content, "hi (中文)");
    }
}
