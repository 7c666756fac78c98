//! [`FewShotPromptTemplate`]: a prefix, worked examples, then the question.

use std::collections::BTreeSet;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::Value;

use crate::prompt::template::object;
use crate::prompt::{PromptTemplate, PromptValue};
use crate::runnable::Runnable;
use crate::{Error, Result};

/// A few-shot prompt: an optional prefix, each example rendered with an
/// example template, and a suffix, joined by a separator (default `"\n\n"`).
///
/// ```
/// use kb_core::{FewShotPromptTemplate, PromptTemplate};
/// use serde_json::json;
///
/// let template = FewShotPromptTemplate::builder()
///     .prefix(PromptTemplate::new("Give the antonym of every {{ kind }}.")?)
///     .example_prompt(PromptTemplate::new("Word: {{ word }}\nAntonym: {{ antonym }}")?)
///     .examples(vec![
///         json!({"word": "happy", "antonym": "sad"}),
///         json!({"word": "tall", "antonym": "short"}),
///     ])
///     .suffix(PromptTemplate::new("Word: {{ input }}\nAntonym:")?)
///     .build()?;
/// assert_eq!(template.input_variables(), ["input", "kind"]);
/// let prompt = template.format(&json!({"kind": "adjective", "input": "big"}))?;
/// assert_eq!(
///     prompt,
///     "Give the antonym of every adjective.\n\nWord: happy\nAntonym: sad\n\nWord: tall\nAntonym: short\n\nWord: big\nAntonym:"
/// );
/// # Ok::<(), kb_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct FewShotPromptTemplate {
    prefix: Option<PromptTemplate>,
    examples: Vec<serde_json::Map<String, Value>>,
    example_prompt: PromptTemplate,
    suffix: PromptTemplate,
    separator: String,
}

/// Builds a [`FewShotPromptTemplate`]; `example_prompt` and `suffix` are required.
#[derive(Debug, Default)]
pub struct FewShotPromptTemplateBuilder {
    prefix: Option<PromptTemplate>,
    examples: Vec<Value>,
    example_prompt: Option<PromptTemplate>,
    suffix: Option<PromptTemplate>,
    separator: Option<String>,
}

impl FewShotPromptTemplate {
    /// Starts a builder.
    pub fn builder() -> FewShotPromptTemplateBuilder {
        FewShotPromptTemplateBuilder::default()
    }

    /// The variables a caller must provide (those of the prefix and suffix), sorted.
    pub fn input_variables(&self) -> Vec<&str> {
        let mut all: BTreeSet<&str> = self.suffix.input_variables().into_iter().collect();
        if let Some(prefix) = &self.prefix {
            all.extend(prefix.input_variables());
        }
        all.into_iter().collect()
    }

    /// The examples, in order.
    pub fn examples(&self) -> &[serde_json::Map<String, Value>] {
        &self.examples
    }

    /// Renders prefix, examples and suffix with `vars`.
    pub fn format(&self, vars: &impl Serialize) -> Result<String> {
        let vars = object("few-shot prompt", serde_json::to_value(vars)?)?;
        let mut pieces = Vec::with_capacity(self.examples.len() + 2);
        if let Some(prefix) = &self.prefix {
            pieces.push(prefix.render(&vars)?);
        }
        for example in &self.examples {
            pieces.push(self.example_prompt.render(example)?);
        }
        pieces.push(self.suffix.render(&vars)?);
        Ok(pieces.join(&self.separator))
    }
}

impl FewShotPromptTemplateBuilder {
    /// Text before the examples; none by default.
    pub fn prefix(mut self, template: PromptTemplate) -> Self {
        self.prefix = Some(template);
        self
    }

    /// The examples, each a JSON object holding the example template's variables.
    pub fn examples(mut self, examples: Vec<Value>) -> Self {
        self.examples = examples;
        self
    }

    /// The template each example is rendered with (required).
    pub fn example_prompt(mut self, template: PromptTemplate) -> Self {
        self.example_prompt = Some(template);
        self
    }

    /// The text after the examples, usually holding the question (required).
    pub fn suffix(mut self, template: PromptTemplate) -> Self {
        self.suffix = Some(template);
        self
    }

    /// What goes between the pieces; `"\n\n"` by default.
    pub fn separator(mut self, separator: impl Into<String>) -> Self {
        self.separator = Some(separator.into());
        self
    }

    /// Checks that every example has every variable the example template needs.
    pub fn build(self) -> Result<FewShotPromptTemplate> {
        let example_prompt = self.example_prompt.ok_or_else(|| {
            Error::InvalidInput("a few-shot prompt needs an example_prompt".into())
        })?;
        let suffix = self
            .suffix
            .ok_or_else(|| Error::InvalidInput("a few-shot prompt needs a suffix".into()))?;
        let mut examples = Vec::with_capacity(self.examples.len());
        for (i, example) in self.examples.into_iter().enumerate() {
            let Value::Object(example) = example else {
                return Err(Error::InvalidInput(format!(
                    "few-shot example {} is not a JSON object",
                    i + 1
                )));
            };
            if let Some(missing) = example_prompt
                .input_variables()
                .into_iter()
                .find(|v| !example.contains_key(*v))
            {
                return Err(Error::MissingVariable {
                    template: format!("{} (example {})", example_prompt.name(), i + 1),
                    variable: missing.to_string(),
                });
            }
            examples.push(example);
        }
        Ok(FewShotPromptTemplate {
            prefix: self.prefix,
            examples,
            example_prompt,
            suffix,
            separator: self.separator.unwrap_or_else(|| "\n\n".into()),
        })
    }
}

#[async_trait]
impl Runnable for FewShotPromptTemplate {
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

    fn example_prompt() -> PromptTemplate {
        PromptTemplate::new("Q: {{ q }}\nA: {{ a }}").expect("compile")
    }

    #[test]
    fn an_example_missing_a_variable_is_rejected_at_build() {
        let err = FewShotPromptTemplate::builder()
            .example_prompt(example_prompt())
            .examples(vec![json!({"q": "1+1", "a": "2"}), json!({"q": "2+2"})])
            .suffix(PromptTemplate::new("Q: {{ input }}\nA:").expect("compile"))
            .build()
            .unwrap_err();
        match err {
            Error::MissingVariable { template, variable } => {
                assert!(template.contains("example 2"), "{template}");
                assert_eq!(variable, "a");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn renders_with_custom_separator_and_no_prefix() {
        let t = FewShotPromptTemplate::builder()
            .example_prompt(example_prompt())
            .examples(vec![json!({"q": "2+2", "a": "4"})])
            .suffix(PromptTemplate::new("Q: {{ input }}\nA:").expect("compile"))
            .separator("\n---\n")
            .build()
            .expect("build");
        assert_eq!(
            t.format(&json!({"input": "3+3"})).expect("render"),
            "Q: 2+2\nA: 4\n---\nQ: 3+3\nA:"
        );
        let err = t.format(&json!({})).unwrap_err();
        assert!(matches!(err, Error::MissingVariable { ref variable, .. } if variable == "input"));
    }

    #[test]
    fn requires_suffix_and_example_prompt() {
        assert!(
            FewShotPromptTemplate::builder()
                .example_prompt(example_prompt())
                .build()
                .is_err()
        );
        assert!(
            FewShotPromptTemplate::builder()
                .suffix(example_prompt())
                .build()
                .is_err()
        );
    }
}
