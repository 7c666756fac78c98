//! [`ClassificationChain`]: classification in the prompt-learning style. A
//! template turns the input into a prompt; a [`Verbalizer`] maps label words
//! to classes; the model's probabilities of the label words as the answer's
//! first tokens decide, so no free text is parsed.

use std::sync::Arc;

use kb_core::{ChatModel, Error, Message, PromptTemplate, Result};
use serde::{Deserialize, Serialize};

/// Maps label words to classes: `positive` ← {"positive", "good", "great"}.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verbalizer {
    classes: Vec<(String, Vec<String>)>,
}

impl Verbalizer {
    /// An empty verbalizer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a class and the words that name it.
    pub fn class<S: Into<String>>(
        mut self,
        name: impl Into<String>,
        words: impl IntoIterator<Item = S>,
    ) -> Self {
        self.classes
            .push((name.into(), words.into_iter().map(Into::into).collect()));
        self
    }

    fn validate(&self) -> Result<()> {
        if self.classes.len() < 2 {
            return Err(Error::InvalidInput(
                "a verbalizer needs at least two classes".into(),
            ));
        }
        for (name, words) in &self.classes {
            if words.is_empty() || words.iter().any(|w| w.is_empty()) {
                return Err(Error::InvalidInput(format!(
                    "class {name:?} needs at least one non-empty label word"
                )));
            }
        }
        Ok(())
    }
}

/// One class and its probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassScore {
    /// The class.
    pub label: String,
    /// Its probability, normalised over the classes.
    pub probability: f32,
    /// The log-probability of its label words (log-sum-exp over them).
    pub log_score: f32,
}

/// The outcome of [`ClassificationChain::classify`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Classification {
    /// The most probable class.
    pub label: String,
    /// Every class, in the verbalizer's order.
    pub scores: Vec<ClassScore>,
}

impl Classification {
    /// The probability of `label` (0 for an unknown one).
    pub fn probability(&self, label: &str) -> f32 {
        self.scores
            .iter()
            .find(|s| s.label == label)
            .map_or(0.0, |s| s.probability)
    }
}

/// Template + verbalizer classification with a model that can
/// [`score`](ChatModel::score) continuations (a local GGUF model).
///
/// ```no_run
/// # async fn demo(model: std::sync::Arc<dyn kb_core::ChatModel>) -> kb_core::Result<()> {
/// use kb_chains::{ClassificationChain, Verbalizer};
/// use kb_core::PromptTemplate;
///
/// let chain = ClassificationChain::new(
///     model,
///     PromptTemplate::new("Review: {{ text }}\nIs this review positive or negative?")?,
///     Verbalizer::new()
///         .class("positive", ["positive", "Positive"])
///         .class("negative", ["negative", "Negative"]),
/// )?;
/// let result = chain.classify(&serde_json::json!({"text": "I loved it"})).await?;
/// println!("{} ({:.2})", result.label, result.probability(&result.label));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ClassificationChain {
    model: Arc<dyn ChatModel>,
    template: PromptTemplate,
    verbalizer: Verbalizer,
    system: Option<String>,
}

impl std::fmt::Debug for ClassificationChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClassificationChain")
            .field("model", &self.model.name())
            .field("verbalizer", &self.verbalizer)
            .finish_non_exhaustive()
    }
}

impl ClassificationChain {
    /// A classifier prompting `model` with `template` and scoring
    /// `verbalizer`'s label words.
    pub fn new(
        model: Arc<dyn ChatModel>,
        template: PromptTemplate,
        verbalizer: Verbalizer,
    ) -> Result<Self> {
        verbalizer.validate()?;
        Ok(ClassificationChain {
            model,
            template,
            verbalizer,
            system: None,
        })
    }

    /// A system message before the prompt.
    pub fn system(mut self, text: impl Into<String>) -> Self {
        self.system = Some(text.into());
        self
    }

    /// Classifies the input `vars` fill the template with.
    pub async fn classify(&self, vars: &impl Serialize) -> Result<Classification> {
        let mut messages = Vec::new();
        if let Some(system) = &self.system {
            messages.push(Message::system(system.clone()));
        }
        messages.push(Message::user(self.template.format(vars)?));
        let words: Vec<String> = self
            .verbalizer
            .classes
            .iter()
            .flat_map(|(_, words)| words.iter().cloned())
            .collect();
        let scores = self.model.score(&messages, &words).await?;
        if scores.len() != words.len() {
            return Err(Error::Model(format!(
                "the model scored {} of {} label words",
                scores.len(),
                words.len()
            )));
        }
        let mut next = scores.into_iter();
        let log_scores: Vec<f32> = self
            .verbalizer
            .classes
            .iter()
            .map(|(_, words)| log_sum_exp(next.by_ref().take(words.len())))
            .collect();
        let total = log_sum_exp(log_scores.iter().copied());
        let scores: Vec<ClassScore> = self
            .verbalizer
            .classes
            .iter()
            .zip(&log_scores)
            .map(|((label, _), &log_score)| ClassScore {
                label: label.clone(),
                probability: (log_score - total).exp(),
                log_score,
            })
            .collect();
        let label = scores
            .iter()
            .max_by(|a, b| a.probability.total_cmp(&b.probability))
            .map(|s| s.label.clone())
            .unwrap_or_default();
        Ok(Classification { label, scores })
    }
}

fn log_sum_exp(values: impl Iterator<Item = f32>) -> f32 {
    let values: Vec<f32> = values.collect();
    let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return max;
    }
    max + values.iter().map(|v| (v - max).exp()).sum::<f32>().ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_sum_exp_is_stable() {
        let v = log_sum_exp([-1000.0f32, -1000.0].into_iter());
        assert!((v - (-1000.0 + 2f32.ln())).abs() < 1e-3);
        assert_eq!(log_sum_exp(std::iter::empty()), f32::NEG_INFINITY);
    }

    #[test]
    fn verbalizers_need_two_classes_with_words() {
        assert!(Verbalizer::new().class("a", ["x"]).validate().is_err());
        assert!(
            Verbalizer::new()
                .class("a", ["x"])
                .class("b", Vec::<String>::new())
                .validate()
                .is_err()
        );
        assert!(
            Verbalizer::new()
                .class("a", ["x"])
                .class("b", ["y"])
                .validate()
                .is_ok()
        );
    }
}
