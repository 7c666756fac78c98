//! A [`Proposer`] and an [`Evaluator`] that ask a chat model.

use std::sync::Arc;

use async_trait::async_trait;
use kb_core::{ChatModel, Error, GenerateOptions, Message, Result};

use super::{Evaluator, Proposer};

type PromptFn<S> = Arc<dyn Fn(&S) -> Vec<Message> + Send + Sync>;
type ProposePromptFn<S> = Arc<dyn Fn(&S, usize) -> Vec<Message> + Send + Sync>;
type ParseFn<S> = Arc<dyn Fn(&S, &str) -> Vec<S> + Send + Sync>;

/// Proposes next states by asking a model ("given the current state,
/// propose k next steps") and parsing its reply.
///
/// `parse` turns the reply into states; it is where a problem's own validity
/// checks belong (a Game of 24 step must use available numbers and be
/// arithmetically right), so that invented steps never enter the tree.
pub struct LlmProposer<S> {
    model: Arc<dyn ChatModel>,
    prompt: ProposePromptFn<S>,
    parse: ParseFn<S>,
    options: GenerateOptions,
}

impl<S> std::fmt::Debug for LlmProposer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmProposer")
            .field("model", &self.model.name())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl<S> LlmProposer<S> {
    /// Asks `model` with the conversation `prompt(state, k)` and reads the
    /// reply with `parse(state, reply)`; greedy, 256 tokens.
    pub fn new(
        model: Arc<dyn ChatModel>,
        prompt: impl Fn(&S, usize) -> Vec<Message> + Send + Sync + 'static,
        parse: impl Fn(&S, &str) -> Vec<S> + Send + Sync + 'static,
    ) -> Self {
        LlmProposer {
            model,
            prompt: Arc::new(prompt),
            parse: Arc::new(parse),
            options: GenerateOptions::default().max_tokens(256),
        }
    }

    /// Decoding options.
    pub fn options(mut self, options: GenerateOptions) -> Self {
        self.options = options;
        self
    }
}

#[async_trait]
impl<S: Send + Sync> Proposer<S> for LlmProposer<S> {
    async fn propose(&self, state: &S, k: usize) -> Result<Vec<S>> {
        let reply = self
            .model
            .chat(&(self.prompt)(state, k), &self.options)
            .await?;
        let mut states = (self.parse)(state, &reply.message.content);
        states.truncate(k);
        Ok(states)
    }
}

/// How an [`LlmEvaluator`]'s prompt asks the model to judge a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Valuation {
    /// "sure" / "likely" / "impossible" (一定 / 可能 / 不可能), mapped to 1,
    /// 0.5 and 0. Models that can score continuations are not sampled: the
    /// value is the expectation under their probabilities of the three
    /// words, from one prompt pass.
    #[default]
    Verbal,
    /// A number from 0 to 1 (or out of 10 or 100).
    Number,
}

/// Scores states by asking a model how promising each one is.
pub struct LlmEvaluator<S> {
    model: Arc<dyn ChatModel>,
    prompt: PromptFn<S>,
    valuation: Valuation,
    options: GenerateOptions,
}

impl<S> std::fmt::Debug for LlmEvaluator<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmEvaluator")
            .field("model", &self.model.name())
            .field("valuation", &self.valuation)
            .finish_non_exhaustive()
    }
}

const VERBAL: [(&str, f32); 3] = [("sure", 1.0), ("likely", 0.5), ("impossible", 0.0)];

impl<S> LlmEvaluator<S> {
    /// Asks `model` with the conversation `prompt(state)`, which should
    /// request one of "sure", "likely" or "impossible".
    pub fn new(
        model: Arc<dyn ChatModel>,
        prompt: impl Fn(&S) -> Vec<Message> + Send + Sync + 'static,
    ) -> Self {
        LlmEvaluator {
            model,
            prompt: Arc::new(prompt),
            valuation: Valuation::Verbal,
            options: GenerateOptions::default().max_tokens(16),
        }
    }

    /// The answer the prompt asks for (default [`Valuation::Verbal`]).
    pub fn valuation(mut self, valuation: Valuation) -> Self {
        self.valuation = valuation;
        self
    }

    /// Decoding options when the answer is generated.
    pub fn options(mut self, options: GenerateOptions) -> Self {
        self.options = options;
        self
    }

    async fn value(&self, state: &S) -> Result<f32> {
        let messages = (self.prompt)(state);
        if self.valuation == Valuation::Verbal {
            let words: Vec<String> = VERBAL.iter().map(|(w, _)| w.to_string()).collect();
            match self.model.score(&messages, &words).await {
                Ok(logprobs) => return Ok(expected_value(&logprobs)),
                Err(Error::Unsupported(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let reply = self.model.chat(&messages, &self.options).await?;
        let text = reply.message.content;
        Ok(match self.valuation {
            Valuation::Verbal => verbal_value(&text),
            Valuation::Number => number_value(&text),
        }
        .unwrap_or(0.0))
    }
}

/// The expected value of sure/likely/impossible under the softmax of their
/// log-probabilities.
fn expected_value(logprobs: &[f32]) -> f32 {
    let top = logprobs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !top.is_finite() {
        return 0.0;
    }
    let weights: Vec<f32> = logprobs.iter().map(|l| (l - top).exp()).collect();
    let total: f32 = weights.iter().sum();
    weights
        .iter()
        .zip(VERBAL)
        .map(|(w, (_, value))| w / total * value)
        .sum()
}

/// The value of a verbal judgement: the first of sure (1), likely (0.5) or
/// impossible (0) in `text`, in English or Chinese.
///
/// ```
/// use kb_agents::tot::verbal_value;
/// assert_eq!(verbal_value("10 14: 10 + 14 = 24. sure"), Some(1.0));
/// assert_eq!(verbal_value("Impossible, the numbers are too small"), Some(0.0));
/// assert_eq!(verbal_value("不可能"), Some(0.0));
/// assert_eq!(verbal_value("maybe?"), None);
/// ```
pub fn verbal_value(text: &str) -> Option<f32> {
    let lower = text.to_lowercase();
    let words: [(&str, f32); 6] = [
        ("impossible", 0.0),
        ("不可能", 0.0),
        ("sure", 1.0),
        ("一定", 1.0),
        ("likely", 0.5),
        ("可能", 0.5),
    ];
    // The last judgement wins (reasoning may mention the words first); at
    // one position the longer word ("不可能" over "可能").
    words
        .iter()
        .filter_map(|(w, v)| lower.rfind(w).map(|at| (at + w.len(), w.len(), *v)))
        .max_by_key(|&(end, len, _)| (end, len))
        .map(|(_, _, v)| v)
}

fn number_value(text: &str) -> Option<f32> {
    let start = text.find(|c: char| c.is_ascii_digit())?;
    let literal: String = text[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let value: f32 = literal.trim_end_matches('.').parse().ok()?;
    let value = if value <= 1.0 {
        value
    } else if value <= 10.0 {
        value / 10.0
    } else {
        value / 100.0
    };
    Some(value.clamp(0.0, 1.0))
}

#[async_trait]
impl<S: Send + Sync> Evaluator<S> for LlmEvaluator<S> {
    async fn evaluate(&self, states: &[S]) -> Result<Vec<f32>> {
        let mut scores = Vec::with_capacity(states.len());
        for state in states {
            scores.push(self.value(state).await?);
        }
        Ok(scores)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_from_words_numbers_and_scores() {
        assert_eq!(verbal_value("likely, then sure"), Some(1.0));
        assert_eq!(verbal_value("It is sure. 不可能"), Some(0.0));
        assert_eq!(number_value("Score: 0.8"), Some(0.8));
        assert_eq!(number_value("7/10"), Some(0.7));
        assert_eq!(number_value("85%"), Some(0.85));
        assert_eq!(number_value("none"), None);
        let v = expected_value(&[0.0, f32::NEG_INFINITY, f32::NEG_INFINITY]);
        assert!((v - 1.0).abs() < 1e-6);
        let v = expected_value(&[-1.0, -1.0, -1.0]);
        assert!((v - 0.5).abs() < 1e-6);
    }
}
