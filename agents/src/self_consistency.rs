//! Self-consistency: sample several chains of thought and take the answer
//! most of them reach.

use futures::future::join_all;
use kb_core::{GenerateOptions, Result, Usage};
use serde::{Deserialize, Serialize};

use crate::cot::{ChainOfThought, CotAnswer, normalize_answer};

/// How many chains reached one answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    /// The answer, as the first chain reaching it wrote it.
    pub answer: String,
    /// Its normalised form, which votes are counted on.
    pub key: String,
    /// How many chains reached it.
    pub count: usize,
}

/// The result of a vote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Vote {
    /// The winning answer; ties go to the answer reached first. `None` when
    /// no chain reached an answer.
    pub answer: Option<String>,
    /// Every answer with its count, most votes first.
    pub table: Vec<Tally>,
    /// Every sampled chain, in seed order.
    pub samples: Vec<CotAnswer>,
    /// Tokens over all chains.
    pub usage: Usage,
}

impl Vote {
    /// The share of the chains that agree with the winner (0 when none
    /// answered).
    pub fn agreement(&self) -> f32 {
        match self.table.first() {
            Some(top) => top.count as f32 / self.samples.len().max(1) as f32,
            None => 0.0,
        }
    }
}

/// Samples `n` chains of thought at a temperature above zero, each with its
/// own seed, and returns the majority answer with the vote table.
///
/// ```
/// use kb_agents::{Tally, tally};
/// let table = tally(["12", "12.0", "14", "$12"].map(Some));
/// assert_eq!(table[0], Tally { answer: "12".into(), key: "12".into(), count: 3 });
/// assert_eq!(table[1].count, 1);
/// ```
#[derive(Debug, Clone)]
pub struct SelfConsistency {
    cot: ChainOfThought,
    samples: usize,
    temperature: f32,
    seed: u64,
}

impl SelfConsistency {
    /// Votes over `cot`: 5 samples at temperature 0.7, seeds from 0.
    pub fn new(cot: ChainOfThought) -> Self {
        SelfConsistency {
            cot,
            samples: 5,
            temperature: 0.7,
            seed: 0,
        }
    }

    /// How many chains to sample (default 5).
    pub fn samples(mut self, n: usize) -> Self {
        self.samples = n.max(1);
        self
    }

    /// Sampling temperature (default 0.7; must be above 0 for the chains to
    /// differ).
    pub fn temperature(mut self, t: f32) -> Self {
        self.temperature = t;
        self
    }

    /// The first seed; chain `i` uses `seed + i` (default 0).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Samples the chains and counts their answers.
    pub async fn vote(&self, question: &str) -> Result<Vote> {
        if self.temperature.is_nan() || self.temperature <= 0.0 {
            return Err(kb_core::Error::InvalidInput(format!(
                "self-consistency needs a temperature above 0 so that the chains differ, got {}",
                self.temperature
            )));
        }
        let runs = (0..self.samples).map(|i| {
            let mut options: GenerateOptions = self.cot.generate_options().clone();
            options.temperature = self.temperature;
            options.seed = Some(self.seed + i as u64);
            async move { self.cot.answer_with(question, &options).await }
        });
        let samples = join_all(runs)
            .await
            .into_iter()
            .collect::<Result<Vec<CotAnswer>>>()?;
        let mut usage = Usage::default();
        for sample in &samples {
            usage.prompt_tokens += sample.usage.prompt_tokens;
            usage.cached_prompt_tokens += sample.usage.cached_prompt_tokens;
            usage.completion_tokens += sample.usage.completion_tokens;
        }
        let table = tally(samples.iter().map(|s| s.answer.as_deref()));
        Ok(Vote {
            answer: table.first().map(|t| t.answer.clone()),
            table,
            samples,
            usage,
        })
    }
}

/// Counts answers by their [normalised](normalize_answer) form, most votes
/// first, ties in order of first appearance; `None`s do not vote.
pub fn tally<'a>(answers: impl IntoIterator<Item = Option<&'a str>>) -> Vec<Tally> {
    let mut table: Vec<Tally> = Vec::new();
    for answer in answers.into_iter().flatten() {
        let key = normalize_answer(answer);
        if key.is_empty() {
            continue;
        }
        match table.iter_mut().find(|t| t.key == key) {
            Some(t) => t.count += 1,
            None => table.push(Tally {
                answer: answer.trim().to_string(),
                key,
                count: 1,
            }),
        }
    }
    // A stable sort keeps first appearance among equal counts.
    table.sort_by_key(|t| std::cmp::Reverse(t.count));
    table
}
