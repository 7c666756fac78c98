//! [`ConversationalRagChain`]: RAG over a conversation. A follow-up question
//! is rewritten into a standalone one before retrieval.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;
use kb_core::{GenerateOptions, Message, Result};

use crate::language::Language;
use crate::memory::{Memory, WindowMemory};
use crate::rag::{Answer, AnswerEvent, AnswerStream, AnswerTimings, RagChain, collect_answer};

/// Longest standalone question accepted from the model, in characters;
/// anything longer is a ramble, and the follow-up is used as asked.
const MAX_STANDALONE_CHARS: usize = 300;

/// A [`RagChain`] with a [`Memory`]: each answered turn is remembered, and
/// a question asked after earlier turns is first rewritten by the model
/// into one that stands on its own ("and how fast is it?" → "how fast is
/// the BM25 index?"), which is what retrieval and the prompt see.
///
/// ```no_run
/// # async fn demo(chain: kb_chains::RagChain) -> kb_core::Result<()> {
/// use kb_chains::{ConversationalRagChain, WindowMemory};
///
/// let chat = ConversationalRagChain::new(chain, WindowMemory::new(4));
/// chat.ask("What is BM25?").await?;
/// let follow_up = chat.ask("How does it rank documents?").await?;
/// println!("searched for: {:?}", follow_up.standalone_question);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ConversationalRagChain {
    chain: RagChain,
    memory: Arc<Mutex<Box<dyn Memory>>>,
}

impl std::fmt::Debug for ConversationalRagChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConversationalRagChain")
            .field("chain", &self.chain)
            .finish_non_exhaustive()
    }
}

impl ConversationalRagChain {
    /// `chain` remembering turns in `memory`.
    pub fn new(chain: RagChain, memory: impl Memory + 'static) -> Self {
        ConversationalRagChain {
            chain,
            memory: Arc::new(Mutex::new(Box::new(memory))),
        }
    }

    /// `chain` remembering the last four turns.
    pub fn with_window(chain: RagChain) -> Self {
        Self::new(chain, WindowMemory::new(4))
    }

    /// The remembered messages.
    pub fn history(&self) -> Vec<Message> {
        self.lock().messages()
    }

    /// Forgets the conversation.
    pub fn reset(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Box<dyn Memory>> {
        self.memory
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The standalone form of `question` given the remembered turns
    /// (`question` itself when there are none).
    pub async fn condense(&self, question: &str) -> Result<String> {
        let history = self.history();
        if history.is_empty() {
            return Ok(question.to_string());
        }
        let language = Language::detect(question);
        let prompt = self
            .chain
            .prompt_set()
            .condense(language, question, &history)?;
        let options = GenerateOptions::default().max_tokens(64).stop("\n");
        let reply = self
            .chain
            .model()
            .chat(&[Message::user(prompt)], &options)
            .await?;
        Ok(clean_standalone(&reply.message.content).unwrap_or_else(|| question.to_string()))
    }

    /// Answers `question` in the conversation, streaming; the turn is
    /// remembered once the answer is complete.
    pub async fn stream(&self, question: &str) -> Result<AnswerStream> {
        let started = Instant::now();
        let standalone = self.condense(question).await?;
        let timings = AnswerTimings {
            condense: started.elapsed(),
            ..AnswerTimings::default()
        };
        let events = self
            .chain
            .stream_with(question, &standalone, timings, started)
            .await?;
        let memory = self.memory.clone();
        Ok(Box::pin(events.inspect(move |event| {
            if let Ok(AnswerEvent::Done(answer)) = event {
                memory
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .save(&answer.question, &answer.text);
            }
        })))
    }

    /// Answers `question` in the conversation.
    pub async fn ask(&self, question: &str) -> Result<Answer> {
        collect_answer(self.stream(question).await?).await
    }
}

/// The model's rewritten question, cleaned of labels and quotes, or `None`
/// when it is empty or rambles.
fn clean_standalone(reply: &str) -> Option<String> {
    let line = reply.lines().map(str::trim).find(|l| !l.is_empty())?;
    let mut text = line;
    for label in [
        "Standalone question:",
        "standalone question:",
        "独立问题：",
        "独立问题:",
    ] {
        if let Some(rest) = text.strip_prefix(label) {
            text = rest.trim();
        }
    }
    let text = text
        .trim_matches(|c: char| matches!(c, '"' | '\'' | '“' | '”' | '「' | '」'))
        .trim();
    (!text.is_empty() && text.chars().count() <= MAX_STANDALONE_CHARS).then(|| text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standalone_replies_are_cleaned() {
        assert_eq!(
            clean_standalone("\n Standalone question: \"How does BM25 rank?\"\nextra").as_deref(),
            Some("How does BM25 rank?")
        );
        assert_eq!(
            clean_standalone("独立问题：BM25 如何排序？").as_deref(),
            Some("BM25 如何排序？")
        );
        assert_eq!(clean_standalone("  \n "), None);
        assert_eq!(clean_standalone(&"x".repeat(400)), None);
    }
}
