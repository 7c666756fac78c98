//! [`SemanticExampleSelector`] and [`FewShotChain`]: few-shot prompting with
//! the examples nearest to the input.

use std::sync::Arc;

use kb_core::{
    ChatModel, Embedder, Error, FewShotPromptTemplate, GenerateOptions, Message, PromptTemplate,
    Result,
};
use serde_json::Value;

/// Picks the `k` examples whose inputs are nearest (by cosine similarity of
/// their embeddings) to a query.
#[derive(Clone)]
pub struct SemanticExampleSelector {
    embedder: Arc<dyn Embedder>,
    examples: Vec<Value>,
    vectors: Vec<Vec<f32>>,
    input_keys: Vec<String>,
    k: usize,
}

impl std::fmt::Debug for SemanticExampleSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SemanticExampleSelector")
            .field("embedder", &self.embedder.id())
            .field("examples", &self.examples.len())
            .field("k", &self.k)
            .finish_non_exhaustive()
    }
}

/// The text of `value`'s `keys`, joined by newlines.
fn input_text(value: &Value, keys: &[String]) -> Result<String> {
    let mut parts = Vec::with_capacity(keys.len());
    for key in keys {
        match value.get(key) {
            Some(Value::String(s)) => parts.push(s.clone()),
            Some(other) => parts.push(other.to_string()),
            None => {
                return Err(Error::InvalidInput(format!(
                    "the example or input {value} has no field {key:?}"
                )));
            }
        }
    }
    Ok(parts.join("\n"))
}

impl SemanticExampleSelector {
    /// Embeds the `input_keys` fields of each example (as documents).
    pub async fn new(
        embedder: Arc<dyn Embedder>,
        examples: Vec<Value>,
        input_keys: &[&str],
        k: usize,
    ) -> Result<Self> {
        let input_keys: Vec<String> = input_keys.iter().map(|k| k.to_string()).collect();
        if input_keys.is_empty() {
            return Err(Error::InvalidInput(
                "name at least one input field to select examples by".into(),
            ));
        }
        let texts = examples
            .iter()
            .map(|e| input_text(e, &input_keys))
            .collect::<Result<Vec<_>>>()?;
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let vectors = embedder.embed_documents(&refs).await?;
        Ok(SemanticExampleSelector {
            embedder,
            examples,
            vectors,
            input_keys,
            k,
        })
    }

    /// The examples nearest to the input `vars`, nearest first.
    pub async fn select(&self, vars: &Value) -> Result<Vec<Value>> {
        let query = self
            .embedder
            .embed_query(&input_text(vars, &self.input_keys)?)
            .await?;
        let mut scored: Vec<(f32, usize)> = self
            .vectors
            .iter()
            .enumerate()
            .map(|(i, v)| (cosine(&query, v), i))
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        Ok(scored
            .into_iter()
            .take(self.k)
            .map(|(_, i)| self.examples[i].clone())
            .collect())
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let denominator = norm(a) * norm(b);
    if denominator == 0.0 {
        0.0
    } else {
        dot / denominator
    }
}

/// A few-shot prompt whose examples are chosen per input by a
/// [`SemanticExampleSelector`], sent to a model.
///
/// ```no_run
/// # async fn demo(model: std::sync::Arc<dyn kb_core::ChatModel>, embedder: std::sync::Arc<dyn kb_core::Embedder>) -> kb_core::Result<()> {
/// use kb_chains::{FewShotChain, SemanticExampleSelector};
/// use kb_core::PromptTemplate;
/// use serde_json::json;
///
/// let examples = vec![
///     json!({"word": "happy", "antonym": "sad"}),
///     json!({"word": "tall", "antonym": "short"}),
/// ];
/// let selector = SemanticExampleSelector::new(embedder, examples, &["word"], 1).await?;
/// let chain = FewShotChain::new(
///     model,
///     selector,
///     PromptTemplate::new("Word: {{ word }}\nAntonym: {{ antonym }}")?,
///     PromptTemplate::new("Word: {{ word }}\nAntonym:")?,
/// );
/// println!("{}", chain.invoke(&json!({"word": "cheerful"})).await?);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct FewShotChain {
    model: Arc<dyn ChatModel>,
    selector: SemanticExampleSelector,
    prefix: Option<PromptTemplate>,
    example_prompt: PromptTemplate,
    suffix: PromptTemplate,
    options: GenerateOptions,
}

impl std::fmt::Debug for FewShotChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FewShotChain")
            .field("model", &self.model.name())
            .field("selector", &self.selector)
            .finish_non_exhaustive()
    }
}

impl FewShotChain {
    /// Examples rendered with `example_prompt`, then the input with `suffix`.
    pub fn new(
        model: Arc<dyn ChatModel>,
        selector: SemanticExampleSelector,
        example_prompt: PromptTemplate,
        suffix: PromptTemplate,
    ) -> Self {
        FewShotChain {
            model,
            selector,
            prefix: None,
            example_prompt,
            suffix,
            options: GenerateOptions::default().max_tokens(64),
        }
    }

    /// Text before the examples.
    pub fn prefix(mut self, prefix: PromptTemplate) -> Self {
        self.prefix = Some(prefix);
        self
    }

    /// Decoding options.
    pub fn options(mut self, options: GenerateOptions) -> Self {
        self.options = options;
        self
    }

    /// The prompt for `vars`, with its selected examples.
    pub async fn prompt(&self, vars: &Value) -> Result<String> {
        let examples = self.selector.select(vars).await?;
        let mut builder = FewShotPromptTemplate::builder()
            .examples(examples)
            .example_prompt(self.example_prompt.clone())
            .suffix(self.suffix.clone());
        if let Some(prefix) = &self.prefix {
            builder = builder.prefix(prefix.clone());
        }
        builder.build()?.format(vars)
    }

    /// The model's answer for `vars`, trimmed.
    pub async fn invoke(&self, vars: &Value) -> Result<String> {
        let prompt = self.prompt(vars).await?;
        let reply = self
            .model
            .chat(&[Message::user(prompt)], &self.options)
            .await?;
        Ok(reply.message.content.trim().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_of_zero_is_zero() {
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
        assert!((cosine(&[1.0, 1.0], &[2.0, 2.0]) - 1.0).abs() < 1e-6);
    }
}
