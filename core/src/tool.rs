//! The [`Tool`] trait: a function an agent can call.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Result;

/// A tool's name, description and parameter schema, in the shape of an OpenAI
/// `tools[].function` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// The name the model calls it by.
    pub name: String,
    /// What it does and when to use it, for the model.
    pub description: String,
    /// A JSON schema of the arguments object.
    pub parameters: Value,
}

/// A function an agent can call with JSON arguments.
///
/// Errors are returned to the model as observations, so make their messages
/// helpful to it.
///
/// ```
/// use async_trait::async_trait;
/// use kb_core::{Error, Result, Tool};
/// use serde_json::{json, Value};
///
/// /// Returns the length of a string, in characters.
/// struct Length;
///
/// #[async_trait]
/// impl Tool for Length {
///     fn name(&self) -> &str {
///         "length"
///     }
///     fn description(&self) -> &str {
///         "Counts the characters of `text`."
///     }
///     fn parameters(&self) -> Value {
///         json!({"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]})
///     }
///     async fn call(&self, args: Value) -> Result<String> {
///         let text = args["text"].as_str().ok_or_else(|| Error::Tool {
///             tool: "length".into(),
///             message: "`text` must be a string".into(),
///         })?;
///         Ok(text.chars().count().to_string())
///     }
/// }
///
/// # futures::executor::block_on(async {
/// assert_eq!(Length.call(json!({"text": "你好"})).await?, "2");
/// assert!(Length.call(json!({})).await.is_err());
/// assert_eq!(Length.spec().name, "length");
/// # Ok::<(), kb_core::Error>(())
/// # }).unwrap();
/// ```
#[async_trait]
pub trait Tool: Send + Sync {
    /// The name the model calls the tool by: short, `snake_case`.
    fn name(&self) -> &str;

    /// What the tool does and when to use it, written for the model.
    fn description(&self) -> &str;

    /// A JSON schema of the arguments object.
    fn parameters(&self) -> Value;

    /// Runs the tool; the returned text is the observation shown to the model.
    async fn call(&self, args: Value) -> Result<String>;

    /// Name, description and parameters in one value.
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: self.name().to_string(),
            description: self.description().to_string(),
            parameters: self.parameters(),
        }
    }
}

#[async_trait]
impl<T: Tool + ?Sized> Tool for Arc<T> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn description(&self) -> &str {
        (**self).description()
    }
    fn parameters(&self) -> Value {
        (**self).parameters()
    }
    async fn call(&self, args: Value) -> Result<String> {
        (**self).call(args).await
    }
}

#[async_trait]
impl<T: Tool + ?Sized> Tool for Box<T> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn description(&self) -> &str {
        (**self).description()
    }
    fn parameters(&self) -> Value {
        (**self).parameters()
    }
    async fn call(&self, args: Value) -> Result<String> {
        (**self).call(args).await
    }
}
