//! [`PromptTemplate`]: a minijinja template that turns variables into a prompt string.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use minijinja::syntax::SyntaxConfig;
use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::IoContext;
use crate::prompt::PromptValue;
use crate::runnable::Runnable;
use crate::{Error, Result};

/// A prompt template in Jinja syntax, rendered with minijinja.
///
/// Undefined variables are errors, never empty strings: rendering without a
/// variable the template uses fails with [`Error::MissingVariable`] naming it.
/// Block tags on their own line leave no blank line (`trim_blocks` and
/// `lstrip_blocks` are on).
///
/// ```
/// use kb_core::PromptTemplate;
/// use serde_json::json;
///
/// let template = PromptTemplate::new("Answer in {{ language }}: {{ question }}")?;
/// assert_eq!(template.input_variables(), ["language", "question"]);
///
/// let english = template.partial("language", "English")?;
/// assert_eq!(english.input_variables(), ["question"]);
/// assert_eq!(english.format(&json!({"question": "What is RAG?"}))?, "Answer in English: What is RAG?");
///
/// let err = english.format(&json!({})).unwrap_err();
/// assert!(err.to_string().contains("\"question\""));
/// # Ok::<(), kb_core::Error>(())
/// ```
#[derive(Clone)]
pub struct PromptTemplate {
    name: String,
    env: Arc<Environment<'static>>,
    variables: Vec<String>,
    partials: Map<String, Value>,
}

impl std::fmt::Debug for PromptTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromptTemplate")
            .field("name", &self.name)
            .field("variables", &self.variables)
            .field("partials", &self.partials)
            .finish_non_exhaustive()
    }
}

/// The minijinja environment every kb prompt template is compiled in.
pub(crate) fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    if let Ok(syntax) = SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build()
    {
        env.set_syntax(syntax);
    }
    env
}

impl PromptTemplate {
    /// Compiles `source`, named `"prompt"` in error messages.
    pub fn new(source: impl Into<String>) -> Result<Self> {
        Self::named("prompt", source)
    }

    /// Compiles `source` under `name`, which error messages use.
    pub fn named(name: impl Into<String>, source: impl Into<String>) -> Result<Self> {
        let name = name.into();
        let mut env = environment();
        env.add_template_owned(name.clone(), source.into())
            .map_err(|e| Error::TemplateSyntax {
                name: name.clone(),
                message: e.to_string(),
            })?;
        let template = env.get_template(&name).map_err(|e| Error::TemplateSyntax {
            name: name.clone(),
            message: e.to_string(),
        })?;
        let globals: BTreeSet<&str> = env.globals().map(|(k, _)| k).collect();
        let variables: BTreeSet<String> = template
            .undeclared_variables(false)
            .into_iter()
            .filter(|v| !globals.contains(v.as_str()))
            .collect();
        let variables = variables.into_iter().collect();
        Ok(PromptTemplate {
            name,
            env: Arc::new(env),
            variables,
            partials: Map::new(),
        })
    }

    /// Reads and compiles a template file; the file name is the template's name.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let source = std::fs::read_to_string(path).at("reading template", path)?;
        Self::named(path.display().to_string(), source)
    }

    /// The template's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The variables a caller must provide, sorted: those the template uses
    /// minus those fixed by [`partial`](Self::partial).
    pub fn input_variables(&self) -> Vec<&str> {
        self.variables
            .iter()
            .filter(|v| !self.partials.contains_key(*v))
            .map(String::as_str)
            .collect()
    }

    /// Fixes `variable` to `value` for every later rendering.
    pub fn partial(mut self, variable: impl Into<String>, value: impl Serialize) -> Result<Self> {
        self.partials
            .insert(variable.into(), serde_json::to_value(value)?);
        Ok(self)
    }

    /// Renders the template with `vars` (any value that serializes to a JSON
    /// object; `()` or `null` when there are no variables).
    pub fn format(&self, vars: &impl Serialize) -> Result<String> {
        let vars = object(&self.name, serde_json::to_value(vars)?)?;
        self.render(&vars)
    }

    /// Renders with variables already in a JSON object.
    pub(crate) fn render(&self, vars: &Map<String, Value>) -> Result<String> {
        let mut context = self.partials.clone();
        context.extend(vars.iter().map(|(k, v)| (k.clone(), v.clone())));
        if let Some(missing) = self.variables.iter().find(|v| !context.contains_key(*v)) {
            return Err(Error::MissingVariable {
                template: self.name.clone(),
                variable: missing.clone(),
            });
        }
        let template = self
            .env
            .get_template(&self.name)
            .map_err(|e| self.render_error(e))?;
        template
            .render(minijinja::value::Serde(&context))
            .map_err(|e| self.render_error(e))
    }

    fn render_error(&self, err: minijinja::Error) -> Error {
        Error::TemplateRender {
            template: self.name.clone(),
            message: err.to_string(),
        }
    }
}

/// Turns variables into a JSON object, or explains why they are not one.
pub(crate) fn object(template: &str, vars: Value) -> Result<Map<String, Value>> {
    match vars {
        Value::Object(map) => Ok(map),
        Value::Null => Ok(Map::new()),
        other => Err(Error::InvalidInput(format!(
            "template {template:?} needs its variables as a JSON object, got {}",
            kind_of(&other)
        ))),
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[async_trait]
impl Runnable for PromptTemplate {
    type Input = Value;
    type Output = PromptValue;

    async fn invoke(&self, input: Value) -> Result<PromptValue> {
        self.format(&input).map(PromptValue::Text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn missing_variable_is_named() {
        let t = PromptTemplate::named("qa", "Context: {{ context }}\nQ: {{ question }}")
            .expect("compile");
        let err = t.format(&json!({"context": "x"})).unwrap_err();
        match err {
            Error::MissingVariable { template, variable } => {
                assert_eq!(template, "qa");
                assert_eq!(variable, "question");
            }
            other => panic!("unexpected error {other:?}"),
        }
    }

    #[test]
    fn variables_exclude_loop_locals_and_globals() {
        let t = PromptTemplate::new(
            "{% for doc in docs %}[{{ loop.index }}] {{ doc }}\n{% endfor %}{% for i in range(2) %}{{ i }}{% endfor %}{{ q | upper }}",
        )
        .expect("compile");
        assert_eq!(t.input_variables(), ["docs", "q"]);
        let out = t
            .format(&json!({"docs": ["a", "b"], "q": "why"}))
            .expect("render");
        assert_eq!(out, "[1] a\n[2] b\n01WHY");
    }

    #[test]
    fn missing_attribute_is_an_error_not_an_empty_string() {
        let t = PromptTemplate::new("{{ doc.title }}").expect("compile");
        let err = t.format(&json!({"doc": {}})).unwrap_err();
        assert!(matches!(err, Error::TemplateRender { .. }), "{err:?}");
    }

    #[test]
    fn syntax_errors_are_reported_at_compile_time() {
        let err = PromptTemplate::named("bad", "{% if x %}unclosed").unwrap_err();
        assert!(
            matches!(err, Error::TemplateSyntax { ref name, .. } if name == "bad"),
            "{err:?}"
        );
    }

    #[test]
    fn block_tags_leave_no_blank_lines_and_chinese_passes_through() {
        let t =
            PromptTemplate::new("问题：\n{% if q %}\n{{ q }}\n{% endif %}\n完").expect("compile");
        assert_eq!(
            t.format(&json!({"q": "什么是注意力？"})).expect("render"),
            "问题：\n什么是注意力？\n完"
        );
    }

    #[test]
    fn caller_values_override_partials_and_non_objects_are_rejected() {
        let t = PromptTemplate::new("{{ a }}")
            .expect("compile")
            .partial("a", 1)
            .expect("partial");
        assert_eq!(t.format(&()).expect("render"), "1");
        assert_eq!(t.format(&json!({"a": 2})).expect("render"), "2");
        assert!(matches!(t.format(&json!([1])), Err(Error::InvalidInput(_))));
    }
}
