//! [`FnTool`]: an async closure as a [`Tool`], and [`Params`] to write its
//! JSON schema.

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use futures::future::BoxFuture;
use kb_core::{Error, Result, Tool};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

type Call = Arc<dyn Fn(Value) -> BoxFuture<'static, Result<String>> + Send + Sync>;

/// A tool made from an async closure: no trait impl, no derive.
///
/// [`FnTool::new`] hands the closure the raw JSON arguments;
/// [`FnTool::typed`] deserializes them into the closure's argument type first
/// and turns a mismatch into an error the model can read.
///
/// ```
/// use kb_agents::tools::{FnTool, Params};
/// use kb_core::Tool;
/// use serde::Deserialize;
///
/// #[derive(Deserialize)]
/// struct Args { city: String, days: Option<u32> }
///
/// let forecast = FnTool::typed(
///     "forecast",
///     "The weather forecast for a city.",
///     Params::new()
///         .required("city", "string", "The city's name")
///         .optional("days", "integer", "How many days ahead (default 1)"),
///     |args: Args| async move {
///         Ok(format!("{}: sunny for {} day(s)", args.city, args.days.unwrap_or(1)))
///     },
/// );
///
/// # futures::executor::block_on(async {
/// assert_eq!(forecast.call(serde_json::json!({"city": "Oslo"})).await?, "Oslo: sunny for 1 day(s)");
/// let err = forecast.call(serde_json::json!({"town": "Oslo"})).await.unwrap_err();
/// assert!(err.to_string().contains("city"), "{err}");
/// assert_eq!(forecast.parameters()["required"], serde_json::json!(["city"]));
/// # Ok::<(), kb_core::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct FnTool {
    name: String,
    description: String,
    parameters: Value,
    call: Call,
}

impl std::fmt::Debug for FnTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnTool")
            .field("name", &self.name)
            .field("parameters", &self.parameters)
            .finish_non_exhaustive()
    }
}

impl FnTool {
    /// A tool calling `f` with the raw JSON arguments.
    pub fn new<F, Fut>(
        name: impl Into<String>,
        description: impl Into<String>,
        parameters: impl Into<Value>,
        f: F,
    ) -> Self
    where
        F: Fn(Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String>> + Send + 'static,
    {
        FnTool {
            name: name.into(),
            description: description.into(),
            parameters: parameters.into(),
            call: Arc::new(move |args| Box::pin(f(args))),
        }
    }

    /// A tool calling `f` with the arguments deserialized into `A`.
    pub fn typed<A, F, Fut>(
        name: impl Into<String>,
        description: impl Into<String>,
        parameters: impl Into<Value>,
        f: F,
    ) -> Self
    where
        A: DeserializeOwned + Send + 'static,
        F: Fn(A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String>> + Send + 'static,
    {
        let name = name.into();
        let tool = name.clone();
        let f = Arc::new(f);
        Self::new(name, description, parameters, move |args: Value| {
            let parsed = serde_json::from_value::<A>(args).map_err(|e| Error::Tool {
                tool: tool.clone(),
                message: format!("bad arguments: {e}"),
            });
            let f = f.clone();
            async move { f(parsed?).await }
        })
    }
}

#[async_trait]
impl Tool for FnTool {
    fn name(&self) -> &str {
        &self.name
    }
    fn description(&self) -> &str {
        &self.description
    }
    fn parameters(&self) -> Value {
        self.parameters.clone()
    }
    async fn call(&self, args: Value) -> Result<String> {
        (self.call)(args).await
    }
}

/// Builds the JSON schema of a tool's arguments object, one property at a
/// time.
///
/// ```
/// use kb_agents::tools::Params;
/// let schema: serde_json::Value = Params::new()
///     .required("query", "string", "What to look for")
///     .optional("k", "integer", "How many results")
///     .into();
/// assert_eq!(schema["properties"]["k"]["type"], "integer");
/// assert_eq!(schema["required"], serde_json::json!(["query"]));
/// ```
#[derive(Debug, Clone, Default)]
pub struct Params {
    properties: Map<String, Value>,
    required: Vec<String>,
}

impl Params {
    /// No parameters yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A required property of JSON type `kind` (`string`, `integer`,
    /// `number`, `boolean`, `array`, `object`).
    pub fn required(mut self, name: &str, kind: &str, description: &str) -> Self {
        self.required.push(name.to_string());
        self.optional(name, kind, description)
    }

    /// An optional property.
    pub fn optional(mut self, name: &str, kind: &str, description: &str) -> Self {
        self.properties.insert(
            name.to_string(),
            json!({"type": kind, "description": description}),
        );
        self
    }
}

impl From<Params> for Value {
    fn from(params: Params) -> Value {
        json!({
            "type": "object",
            "properties": params.properties,
            "required": params.required,
        })
    }
}
