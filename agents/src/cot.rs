//! Chain-of-thought prompting: zero-shot ("Let's think step by step.") or
//! few-shot with worked examples, and reading the answer off the reasoning.

use std::sync::Arc;

use kb_chains::Language;
use kb_core::{ChatModel, GenerateOptions, Message, Result, Usage};
use serde::{Deserialize, Serialize};

use crate::tools::format_number;

/// A worked example for few-shot chain-of-thought.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CotExample {
    /// The question.
    pub question: String,
    /// The step-by-step reasoning.
    pub reasoning: String,
    /// The answer the reasoning reaches.
    pub answer: String,
}

impl CotExample {
    /// An example.
    pub fn new(
        question: impl Into<String>,
        reasoning: impl Into<String>,
        answer: impl Into<String>,
    ) -> Self {
        CotExample {
            question: question.into(),
            reasoning: reasoning.into(),
            answer: answer.into(),
        }
    }
}

/// One reasoned answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CotAnswer {
    /// The model's whole reply: the reasoning and the answer.
    pub reasoning: String,
    /// The answer read off the reply ([`extract_answer`]), when there is one.
    pub answer: Option<String>,
    /// Tokens used.
    pub usage: Usage,
}

/// Asks a model to reason step by step before answering.
///
/// Without examples it is zero-shot chain-of-thought: the question is
/// followed by "Let's think step by step." (让我们一步一步地思考。 for Chinese
/// questions) and a request to end with "The answer is …" (答案是…). With
/// examples, each is shown as a question and a worked answer first.
///
/// ```
/// use std::sync::Arc;
/// use async_trait::async_trait;
/// use kb_agents::ChainOfThought;
/// use kb_core::{ChatModel, ChatResponse, FinishReason, GenerateOptions, Message, Result, Usage};
///
/// struct Reasoner;
/// #[async_trait]
/// impl ChatModel for Reasoner {
///     fn name(&self) -> &str { "reasoner" }
///     async fn chat(&self, _: &[Message], _: &GenerateOptions) -> Result<ChatResponse> {
///         let text = "3 boxes of 4 is 12, plus 2 is 14. The answer is 14.";
///         Ok(ChatResponse { message: Message::assistant(text), finish_reason: FinishReason::Stop, usage: Usage::default(), timings: None })
///     }
/// }
///
/// # futures::executor::block_on(async {
/// let cot = ChainOfThought::new(Arc::new(Reasoner));
/// let reply = cot.answer("3 boxes of 4 apples and 2 more: how many?").await?;
/// assert_eq!(reply.answer.as_deref(), Some("14"));
/// # Ok::<(), kb_core::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct ChainOfThought {
    model: Arc<dyn ChatModel>,
    examples: Vec<CotExample>,
    options: GenerateOptions,
}

impl std::fmt::Debug for ChainOfThought {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainOfThought")
            .field("model", &self.model.name())
            .field("examples", &self.examples.len())
            .field("options", &self.options)
            .finish()
    }
}

impl ChainOfThought {
    /// Zero-shot chain-of-thought with `model`, greedy, 384 tokens.
    pub fn new(model: Arc<dyn ChatModel>) -> Self {
        ChainOfThought {
            model,
            examples: Vec::new(),
            options: GenerateOptions::default()
                .max_tokens(384)
                .repetition_penalty(1.1),
        }
    }

    /// Worked examples shown before the question (few-shot).
    pub fn examples(mut self, examples: Vec<CotExample>) -> Self {
        self.examples = examples;
        self
    }

    /// Decoding options.
    pub fn options(mut self, options: GenerateOptions) -> Self {
        self.options = options;
        self
    }

    /// The decoding options in use.
    pub fn generate_options(&self) -> &GenerateOptions {
        &self.options
    }

    /// The conversation sent for `question`.
    pub fn messages(&self, question: &str) -> Vec<Message> {
        let zh = Language::detect(question) == Language::Chinese;
        let mut messages = Vec::with_capacity(2 + 2 * self.examples.len());
        messages.push(Message::system(if zh {
            "你擅长推理。先一步一步地思考，最后一句写成“答案是……”。"
        } else {
            "You reason carefully. Think step by step, then end with one sentence \"The answer is ...\"."
        }));
        for example in &self.examples {
            messages.push(Message::user(example.question.clone()));
            messages.push(Message::assistant(if zh {
                format!(
                    "{} 答案是{}。",
                    example.reasoning.trim(),
                    example.answer.trim()
                )
            } else {
                format!(
                    "{} The answer is {}.",
                    example.reasoning.trim(),
                    example.answer.trim()
                )
            }));
        }
        messages.push(Message::user(if self.examples.is_empty() {
            if zh {
                format!("{question}\n\n让我们一步一步地思考。")
            } else {
                format!("{question}\n\nLet's think step by step.")
            }
        } else {
            question.to_string()
        }));
        messages
    }

    /// Reasons about `question` and reads off the answer.
    pub async fn answer(&self, question: &str) -> Result<CotAnswer> {
        self.answer_with(question, &self.options).await
    }

    /// As [`answer`](Self::answer), with other decoding options.
    pub async fn answer_with(
        &self,
        question: &str,
        options: &GenerateOptions,
    ) -> Result<CotAnswer> {
        let response = self.model.chat(&self.messages(question), options).await?;
        let reasoning = response.message.content;
        Ok(CotAnswer {
            answer: extract_answer(&reasoning),
            reasoning,
            usage: response.usage,
        })
    }
}

const ANSWER_MARKERS: &[&str] = &[
    "the answer is",
    "the final answer is",
    "final answer:",
    "answer:",
    "答案是",
    "答案：",
    "答案:",
];

/// The answer a chain of thought reaches: what follows its last "The answer
/// is" (also "Answer:", "答案是", "答案："), up to the end of the sentence;
/// failing that, the last number in the text.
///
/// ```
/// use kb_agents::extract_answer;
/// assert_eq!(extract_answer("12 + 2 = 14. The answer is 14."), Some("14".into()));
/// assert_eq!(extract_answer("所以一共是7个。答案是7个苹果。"), Some("7个苹果".into()));
/// assert_eq!(extract_answer("So she pays 3 * 4 = 12 dollars"), Some("12".into()));
/// assert_eq!(extract_answer("I am not sure."), None);
/// ```
pub fn extract_answer(text: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    let found = ANSWER_MARKERS
        .iter()
        .filter_map(|m| lower.rfind(m).map(|at| (at, at + m.len())))
        .max_by_key(|&(start, end)| (start, std::cmp::Reverse(end)));
    if let Some((_, end)) = found {
        let rest = text[end..].trim_start_matches([' ', ':', '：', '*', '$']);
        let sentence = sentence_end(rest);
        let answer = rest[..sentence]
            .trim()
            .trim_matches(|c: char| matches!(c, '*' | '"' | '“' | '”' | '\'' | '`' | '$'))
            .trim();
        if !answer.is_empty() {
            return Some(answer.to_string());
        }
    }
    last_number(text).map(format_number)
}

/// Where the sentence starting `text` ends: a newline, or a full stop not
/// inside a number.
fn sentence_end(text: &str) -> usize {
    let bytes = text.as_bytes();
    for (i, c) in text.char_indices() {
        match c {
            '\n' | '。' | '！' | '!' | '？' | '?' | ';' | '；' => return i,
            '.' => {
                let digit_after = bytes.get(i + 1).is_some_and(u8::is_ascii_digit);
                if !digit_after {
                    return i;
                }
            }
            _ => {}
        }
    }
    text.len()
}

/// The last number written in `text` (commas as thousands separators
/// allowed).
fn last_number(text: &str) -> Option<f64> {
    let mut last = None;
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_ascii_digit() {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_digit()
                    || (matches!(chars[i], '.' | ',')
                        && chars.get(i + 1).is_some_and(char::is_ascii_digit)))
            {
                i += 1;
            }
            let negative = start > 0 && chars[start - 1] == '-';
            let literal: String = chars[start..i].iter().filter(|c| **c != ',').collect();
            if let Ok(value) = literal.parse::<f64>() {
                last = Some(if negative { -value } else { value });
            }
        } else {
            i += 1;
        }
    }
    last
}

/// The form answers are compared in when voting: a short answer holding a
/// number becomes that number ("$18", "18 dollars" → "18"), anything else is
/// lower-cased without surrounding punctuation.
///
/// ```
/// use kb_agents::normalize_answer;
/// assert_eq!(normalize_answer("$1,800.00"), "1800");
/// assert_eq!(normalize_answer("18 dollars"), "18");
/// assert_eq!(normalize_answer("Paris."), "paris");
/// ```
pub fn normalize_answer(answer: &str) -> String {
    let trimmed = answer
        .trim()
        .trim_matches(|c: char| c.is_ascii_punctuation() && c != '-' || matches!(c, '。' | '，'))
        .trim();
    if trimmed.split_whitespace().count() <= 3
        && let Some(number) = last_number(trimmed)
        && trimmed.chars().filter(char::is_ascii_digit).count() > 0
        && first_number_is_last(trimmed)
    {
        return format_number(number);
    }
    trimmed.to_lowercase()
}

/// Whether `text` holds exactly one number.
fn first_number_is_last(text: &str) -> bool {
    let mut groups = 0;
    let mut in_number = false;
    for c in text.chars() {
        let part = c.is_ascii_digit() || (in_number && matches!(c, '.' | ','));
        if part && !in_number {
            groups += 1;
        }
        in_number = part;
    }
    groups == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_off_the_last_marker() {
        let cases = [
            ("First 2+2=4. Then 4*3=12. The answer is 12.", Some("12")),
            ("The answer is 5. Wait, no: the answer is 6.", Some("6")),
            ("**Answer:** 3.5 kg", Some("3.5 kg")),
            ("The answer is $1,200.", Some("1,200")),
            ("Total: 7 + 8 = 15\nSo 15 apples remain", Some("15")),
            ("因此答案是 42。", Some("42")),
            ("no numbers here", None),
            ("it fell by -3 degrees", Some("-3")),
        ];
        for (text, expected) in cases {
            assert_eq!(extract_answer(text).as_deref(), expected, "{text}");
        }
    }

    #[test]
    fn votes_compare_normalised_answers() {
        assert_eq!(normalize_answer("12."), "12");
        assert_eq!(normalize_answer("12.0"), "12");
        assert_eq!(normalize_answer("**12**"), "12");
        assert_eq!(normalize_answer("between 3 and 4"), "between 3 and 4");
        assert_eq!(normalize_answer("-3"), "-3");
        assert_eq!(normalize_answer("42个"), "42");
    }
}
