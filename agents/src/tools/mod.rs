//! Tools for agents: [`KbSearch`], [`Calculator`], [`ReadFile`], [`FnTool`]
//! for closures, and the [`Toolbox`] an agent calls them through.

mod calculator;
mod function;
mod kb_search;
mod read_file;

use std::sync::Arc;

pub use calculator::{Calculator, evaluate, format_number};
pub use function::{FnTool, Params};
use kb_core::{Tool, ToolSpec};
pub use kb_search::KbSearch;
pub use read_file::{DEFAULT_MAX_BYTES, ReadFile};
use serde_json::Value;

/// The tools an agent may call, by name.
///
/// [`Toolbox::call`] never fails: an unknown tool, bad arguments or a tool's
/// own error become an [`Observation`] with `error` set, which the agent shows
/// the model so that it can correct itself.
///
/// ```
/// use kb_agents::tools::{Calculator, Toolbox};
/// # futures::executor::block_on(async {
/// let tools = Toolbox::new().with(Calculator);
/// let seen = tools.call("calculator", serde_json::json!({"expression": "6 * 7"})).await;
/// assert_eq!((seen.text.as_str(), seen.error), ("42", false));
/// let seen = tools.call("shell", serde_json::json!({})).await;
/// assert!(seen.error && seen.text.contains("calculator"), "{}", seen.text);
/// # });
/// ```
#[derive(Clone, Default)]
pub struct Toolbox {
    tools: Vec<Arc<dyn Tool>>,
}

impl std::fmt::Debug for Toolbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.tools.iter().map(|t| t.name()))
            .finish()
    }
}

/// What a tool call gave back.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Observation {
    /// The tool's output, or the error message.
    pub text: String,
    /// Whether the call failed.
    pub error: bool,
}

impl Toolbox {
    /// No tools.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `tool`, replacing one of the same name.
    pub fn with(mut self, tool: impl Tool + 'static) -> Self {
        self.add(Arc::new(tool));
        self
    }

    /// Adds a shared tool, replacing one of the same name.
    pub fn add(&mut self, tool: Arc<dyn Tool>) {
        self.tools.retain(|t| t.name() != tool.name());
        self.tools.push(tool);
    }

    /// Whether there are no tools.
    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }

    /// The tools' names, in the order they were added.
    pub fn names(&self) -> Vec<&str> {
        self.tools.iter().map(|t| t.name()).collect()
    }

    /// Every tool's spec, for native tool calling.
    pub fn specs(&self) -> Vec<ToolSpec> {
        self.tools.iter().map(|t| t.spec()).collect()
    }

    /// Calls the tool `name` (matched ignoring case, `-` and spaces).
    pub async fn call(&self, name: &str, args: Value) -> Observation {
        let wanted = normalise(name);
        let Some(tool) = self.tools.iter().find(|t| normalise(t.name()) == wanted) else {
            return Observation {
                text: format!(
                    "there is no tool {name:?}; the tools are: {}",
                    self.names().join(", ")
                ),
                error: true,
            };
        };
        match tool.call(args).await {
            Ok(text) => Observation { text, error: false },
            Err(kb_core::Error::Tool { message, .. }) => Observation {
                text: message,
                error: true,
            },
            Err(e) => Observation {
                text: e.to_string(),
                error: true,
            },
        }
    }
}

fn normalise(name: &str) -> String {
    name.trim()
        .chars()
        .filter(|c| !matches!(c, '`' | '"' | '\''))
        .map(|c| {
            if c == '-' || c == ' ' {
                '_'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}
