//! What a chat model is asked to do ([`GenerateOptions`]) and what it answers
//! ([`ChatResponse`], [`ChatEvent`]).

use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::message::{Message, Role, ToolCall};
use crate::tool::ToolSpec;

/// Decoding settings for one generation. Every field has a neutral default
/// (greedy decoding, no penalties), and every field has a chaining setter of the
/// same name:
///
/// ```
/// use kb_core::GenerateOptions;
/// let options = GenerateOptions::default().temperature(0.7).top_p(0.9).max_tokens(256).seed(42);
/// assert_eq!(options.max_tokens, Some(256));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct GenerateOptions {
    /// Most tokens to generate; `None` lets the model run to its context limit.
    pub max_tokens: Option<usize>,
    /// Softmax temperature; `0.0` (the default) means greedy decoding.
    pub temperature: f32,
    /// Keep only the `k` most likely tokens before sampling.
    pub top_k: Option<usize>,
    /// Nucleus sampling: keep the smallest set of tokens whose probability sums to `p`.
    pub top_p: Option<f32>,
    /// Drop tokens whose probability is below `min_p` times the top token's.
    pub min_p: Option<f32>,
    /// Multiplicative penalty on tokens already seen (`1.0`, the default, is off).
    pub repetition_penalty: f32,
    /// Additive penalty proportional to how often a token was generated (`0.0` is off).
    pub frequency_penalty: f32,
    /// Additive penalty on any token generated before (`0.0` is off).
    pub presence_penalty: f32,
    /// Forbid repeating any n-gram of this size.
    pub no_repeat_ngram_size: Option<usize>,
    /// Beam search width; `1` (the default) is no beam search.
    pub num_beams: usize,
    /// Beam search length penalty exponent (`1.0` is neutral).
    pub length_penalty: f32,
    /// Generation stops before any of these strings; they are not returned.
    pub stop: Vec<String>,
    /// Seed for sampling; the same seed gives the same output.
    pub seed: Option<u64>,
    /// Tools the model may call natively (OpenAI `tools`), for models whose
    /// [`supports_tools`](crate::ChatModel::supports_tools) is true; others
    /// ignore them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolSpec>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_tokens: None,
            temperature: 0.0,
            top_k: None,
            top_p: None,
            min_p: None,
            repetition_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            no_repeat_ngram_size: None,
            num_beams: 1,
            length_penalty: 1.0,
            stop: Vec::new(),
            seed: None,
            tools: Vec::new(),
        }
    }
}

impl GenerateOptions {
    /// Applies `setter` with `value` when there is one: options that a
    /// request or a command line may leave out chain without `if let`s.
    ///
    /// ```
    /// use kb_core::GenerateOptions;
    ///
    /// let top_p: Option<f32> = Some(0.9);
    /// let seed: Option<u64> = None;
    /// let options = GenerateOptions::default()
    ///     .set_some(top_p, GenerateOptions::top_p)
    ///     .set_some(seed, GenerateOptions::seed);
    /// assert_eq!((options.top_p, options.seed), (Some(0.9), None));
    /// ```
    pub fn set_some<T>(self, value: Option<T>, setter: impl FnOnce(Self, T) -> Self) -> Self {
        match value {
            Some(value) => setter(self, value),
            None => self,
        }
    }

    /// Sets [`GenerateOptions::max_tokens`].
    pub fn max_tokens(mut self, n: usize) -> Self {
        self.max_tokens = Some(n);
        self
    }
    /// Sets [`GenerateOptions::temperature`].
    pub fn temperature(mut self, t: f32) -> Self {
        self.temperature = t;
        self
    }
    /// Sets [`GenerateOptions::top_k`].
    pub fn top_k(mut self, k: usize) -> Self {
        self.top_k = Some(k);
        self
    }
    /// Sets [`GenerateOptions::top_p`].
    pub fn top_p(mut self, p: f32) -> Self {
        self.top_p = Some(p);
        self
    }
    /// Sets [`GenerateOptions::min_p`].
    pub fn min_p(mut self, p: f32) -> Self {
        self.min_p = Some(p);
        self
    }
    /// Sets [`GenerateOptions::repetition_penalty`].
    pub fn repetition_penalty(mut self, penalty: f32) -> Self {
        self.repetition_penalty = penalty;
        self
    }
    /// Sets [`GenerateOptions::frequency_penalty`].
    pub fn frequency_penalty(mut self, penalty: f32) -> Self {
        self.frequency_penalty = penalty;
        self
    }
    /// Sets [`GenerateOptions::presence_penalty`].
    pub fn presence_penalty(mut self, penalty: f32) -> Self {
        self.presence_penalty = penalty;
        self
    }
    /// Sets [`GenerateOptions::no_repeat_ngram_size`].
    pub fn no_repeat_ngram_size(mut self, n: usize) -> Self {
        self.no_repeat_ngram_size = Some(n);
        self
    }
    /// Sets [`GenerateOptions::num_beams`].
    pub fn num_beams(mut self, n: usize) -> Self {
        self.num_beams = n;
        self
    }
    /// Sets [`GenerateOptions::length_penalty`].
    pub fn length_penalty(mut self, penalty: f32) -> Self {
        self.length_penalty = penalty;
        self
    }
    /// Adds a stop string.
    pub fn stop(mut self, s: impl Into<String>) -> Self {
        self.stop.push(s.into());
        self
    }
    /// Sets [`GenerateOptions::seed`].
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }
    /// Sets [`GenerateOptions::tools`].
    pub fn tools(mut self, tools: Vec<ToolSpec>) -> Self {
        self.tools = tools;
        self
    }

    /// Checks that the values are in range, naming the first one that is not.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(crate::Error::InvalidInput(what));
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return bad(format!("temperature must be ≥ 0, got {}", self.temperature));
        }
        if let Some(p) = self.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return bad(format!("top_p must be in (0, 1], got {p}"));
        }
        if let Some(p) = self.min_p
            && !(0.0..=1.0).contains(&p)
        {
            return bad(format!("min_p must be in [0, 1], got {p}"));
        }
        if self.top_k == Some(0) {
            return bad("top_k must be ≥ 1".into());
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return bad(format!(
                "repetition_penalty must be > 0, got {}",
                self.repetition_penalty
            ));
        }
        if self.num_beams == 0 {
            return bad("num_beams must be ≥ 1".into());
        }
        if self.max_tokens == Some(0) {
            return bad("max_tokens must be ≥ 1".into());
        }
        Ok(())
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model emitted an end-of-generation token or a stop string.
    Stop,
    /// `max_tokens` or the context window was reached.
    Length,
    /// The model asked for tool calls.
    ToolCalls,
    /// The caller cancelled the generation.
    Cancelled,
}

/// Token counts of one generation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Prompt tokens served from a cache instead of being processed again.
    pub cached_prompt_tokens: usize,
    /// Tokens generated.
    pub completion_tokens: usize,
}

impl Usage {
    /// Prompt plus completion tokens.
    pub fn total_tokens(&self) -> usize {
        self.prompt_tokens + self.completion_tokens
    }
}

/// Wall-clock time spent on one generation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// Time to process the prompt (time to first token).
    pub prompt: Duration,
    /// Time spent generating after the first token.
    pub generation: Duration,
}

/// A complete answer from a [`ChatModel`](crate::ChatModel).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// The assistant message (text and any tool calls).
    pub message: Message,
    /// Why generation ended.
    pub finish_reason: FinishReason,
    /// Token counts.
    pub usage: Usage,
    /// Time spent, when the model measures it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timings: Option<Timings>,
}

/// One event of a streamed generation. A stream yields any number of
/// [`ChatEvent::Token`]s and [`ChatEvent::ToolCall`]s, then one [`ChatEvent::Done`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChatEvent {
    /// New text: append it to what came before. Never splits a UTF-8 character.
    Token(String),
    /// A complete tool call.
    ToolCall(ToolCall),
    /// The end of the generation.
    Done {
        /// Token counts.
        usage: Usage,
        /// Why generation ended.
        finish: FinishReason,
        /// Time spent, when the model measures it.
        timings: Option<Timings>,
    },
}

/// The stream returned by [`ChatModel::stream`](crate::ChatModel::stream).
/// Dropping it cancels the generation.
pub type ChatStream = Pin<Box<dyn Stream<Item = Result<ChatEvent>> + Send>>;

/// Folds a [`ChatStream`] into the [`ChatResponse`] it amounts to.
///
/// ```
/// # futures::executor::block_on(async {
/// use futures::stream;
/// use kb_core::{collect_stream, ChatEvent, ChatStream, FinishReason, Usage};
/// let events: ChatStream = Box::pin(stream::iter(vec![
///     Ok(ChatEvent::Token("Hel".into())),
///     Ok(ChatEvent::Token("lo".into())),
///     Ok(ChatEvent::Done { usage: Usage::default(), finish: FinishReason::Stop, timings: None }),
/// ]));
/// let response = collect_stream(events).await.unwrap();
/// assert_eq!(response.message.content, "Hello");
/// # });
/// ```
pub async fn collect_stream(mut stream: ChatStream) -> Result<ChatResponse> {
    let mut message = Message::new(Role::Assistant, String::new());
    while let Some(event) = stream.next().await {
        match event? {
            ChatEvent::Token(text) => message.content.push_str(&text),
            ChatEvent::ToolCall(call) => message.tool_calls.push(call),
            ChatEvent::Done {
                usage,
                finish,
                timings,
            } => {
                return Ok(ChatResponse {
                    message,
                    finish_reason: finish,
                    usage,
                    timings,
                });
            }
        }
    }
    Err(crate::Error::Model(
        "the stream ended without a Done event".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_names_the_bad_field() {
        let err = GenerateOptions::default()
            .top_p(1.5)
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("top_p"), "{err}");
        assert!(GenerateOptions::default().validate().is_ok());
        let err = GenerateOptions::default()
            .temperature(f32::NAN)
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("temperature"), "{err}");
    }

    #[test]
    fn options_deserialize_with_defaults() {
        let options: GenerateOptions =
            serde_json::from_str(r#"{"temperature": 0.5, "stop": ["\n"]}"#).expect("parse");
        assert_eq!(options.temperature, 0.5);
        assert_eq!(options.repetition_penalty, 1.0);
        assert_eq!(options.stop, vec!["\n".to_string()]);
    }
}
