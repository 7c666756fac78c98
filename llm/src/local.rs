//! [`LocalLlm`]: a [`GgufModel`] behind the [`ChatModel`] trait, run on a
//! dedicated worker thread so that async callers never block.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::channel::mpsc;
use kb_core::{
    ChatEvent, ChatModel, ChatResponse, ChatStream, GenerateOptions, Message, Timings, Usage,
    Worker, collect_stream,
};

use crate::engine::{GgufModel, LoadOptions, Session};
use crate::error::Result;

/// A local GGUF chat model.
///
/// One loaded model serves every caller: requests queue on its worker thread
/// and run one at a time, each reusing the key/value cache of the previous
/// one for their shared prompt prefix. Dropping a stream cancels its
/// generation.
#[derive(Clone)]
pub struct LocalLlm {
    shared: Arc<Shared>,
    worker: Arc<Worker>,
}

struct Shared {
    model: GgufModel,
    session: Mutex<Session>,
}

impl std::fmt::Debug for LocalLlm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalLlm")
            .field("model", &self.shared.model)
            .finish_non_exhaustive()
    }
}

impl LocalLlm {
    /// Loads the GGUF file at `path` (blocking: call it before serving, or
    /// from a blocking thread).
    pub fn load(path: &Path, options: &LoadOptions) -> Result<Self> {
        Self::new(GgufModel::load(path, options)?)
    }

    /// Serves an already loaded model.
    pub fn new(model: GgufModel) -> Result<Self> {
        let worker =
            Worker::spawn("kb-llm").map_err(|e| crate::LlmError::Threads(e.to_string()))?;
        let session = Mutex::new(model.session());
        Ok(LocalLlm {
            shared: Arc::new(Shared { model, session }),
            worker: Arc::new(worker),
        })
    }

    /// Tokens held in the key/value cache, once the queued requests are done.
    pub async fn cached_tokens(&self) -> kb_core::Result<usize> {
        let shared = self.shared.clone();
        self.worker
            .run(move || {
                shared
                    .session
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .len()
            })
            .await
    }

    /// The loaded model.
    pub fn model(&self) -> &GgufModel {
        &self.shared.model
    }
}

#[async_trait]
impl ChatModel for LocalLlm {
    fn name(&self) -> &str {
        self.shared.model.name()
    }

    fn context_window(&self) -> Option<usize> {
        Some(self.shared.model.context_length())
    }

    fn count_tokens(&self, messages: &[Message]) -> kb_core::Result<Option<usize>> {
        Ok(Some(self.shared.model.chat_prompt(messages)?.len()))
    }

    fn supports_prefill(&self) -> bool {
        true
    }

    async fn score(
        &self,
        messages: &[Message],
        continuations: &[String],
    ) -> kb_core::Result<Vec<f32>> {
        let prompt = self.shared.model.chat_prompt(messages)?;
        let tokenizer = self.shared.model.tokenizer();
        let continuations = continuations
            .iter()
            .map(|text| tokenizer.encode(text))
            .collect::<Result<Vec<_>>>()?;
        let shared = self.shared.clone();
        self.worker
            .run(move || {
                let mut session = shared
                    .session
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                shared.model.score(&mut session, &prompt, &continuations)
            })
            .await?
            .map_err(kb_core::Error::from)
    }

    async fn chat(
        &self,
        messages: &[Message],
        options: &GenerateOptions,
    ) -> kb_core::Result<ChatResponse> {
        collect_stream(self.stream(messages, options).await?).await
    }

    async fn stream(
        &self,
        messages: &[Message],
        options: &GenerateOptions,
    ) -> kb_core::Result<ChatStream> {
        options.validate()?;
        let (tx, rx) = mpsc::unbounded();
        let shared = self.shared.clone();
        let messages = messages.to_vec();
        let options = options.clone();
        self.worker.submit(move || {
            let result = (|| {
                let prompt = shared.model.chat_prompt(&messages)?;
                let mut session = shared
                    .session
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                shared
                    .model
                    .generate(&mut session, &prompt, &options, |text| {
                        tx.unbounded_send(Ok(ChatEvent::Token(text.to_string())))
                            .is_ok()
                    })
            })();
            let event = result
                .map(|g| ChatEvent::Done {
                    usage: Usage {
                        prompt_tokens: g.prompt_tokens,
                        cached_prompt_tokens: g.cached_tokens,
                        completion_tokens: g.ids.len(),
                    },
                    finish: g.finish,
                    timings: Some(Timings {
                        prompt: g.prompt_time,
                        generation: g.generation_time,
                    }),
                })
                .map_err(kb_core::Error::from);
            let _ = tx.unbounded_send(event);
        })?;
        Ok(Box::pin(rx))
    }
}
