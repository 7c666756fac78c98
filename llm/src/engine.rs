//! [`GgufModel`]: a loaded GGUF model with its tokenizer and chat template,
//! and the generation loop over a [`Session`]'s key/value cache.

use std::path::Path;
use std::time::{Duration, Instant};

use kb_core::{FinishReason, GenerateOptions, Message, Role};

use crate::backend::{Backend, Cache, Model};
use crate::error::{LlmError, Result};
use crate::gguf::GgufFile;
use crate::models::{Arch, Config, Pass};
use crate::sampler::{Sampler, log_softmax};
use crate::template::{CHATML, ChatTemplate, GEMMA};
use crate::tokenizer::{StreamDecoder, Tokenizer};

/// Tokens generated when the options set no `max_tokens`.
pub const DEFAULT_MAX_TOKENS: usize = 512;

/// How to load a model.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct LoadOptions {
    /// Inference threads; by default the machine's cores.
    pub threads: Option<usize>,
    /// Keep f32 copies of the layer weights and process prompts in f32: a
    /// reference arithmetic without 8-bit activations, for several times the
    /// memory. Without them (the default) every product runs through the
    /// integer kernels of [`kb_kernels`] on the weights as the file stores
    /// them, activations rounded to 8 bits as llama.cpp rounds them.
    pub dense_prompt_weights: bool,
    /// Where the model runs; by default [`Backend::auto`]: a CUDA GPU when
    /// kb has the `cuda` feature and one is present, else the CPU.
    pub backend: Option<Backend>,
    /// The CPU kernel family; by default the one `KB_KERNELS` names, else
    /// the best this processor runs. Every family gives the same numbers.
    pub kernels: Option<kb_kernels::Isa>,
}

impl LoadOptions {
    /// Sets the number of inference threads.
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = Some(threads.max(1));
        self
    }

    /// Chooses where the model runs.
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = Some(backend);
        self
    }

    /// Chooses the CPU kernel family (see [`kb_kernels::Isa`]).
    pub fn kernels(mut self, isa: kb_kernels::Isa) -> Self {
        self.kernels = Some(isa);
        self
    }

    /// Chooses whether f32 prompt weights are held.
    pub fn dense_prompt_weights(mut self, dense: bool) -> Self {
        self.dense_prompt_weights = dense;
        self
    }
}

/// A GGUF chat model loaded for the CPU: weights, tokenizer and chat template.
///
/// It is immutable and can be shared; each conversation keeps its key/value
/// cache in a [`Session`].
pub struct GgufModel {
    name: String,
    model: Model,
    tokenizer: Tokenizer,
    template: ChatTemplate,
    has_template: bool,
}

impl std::fmt::Debug for GgufModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufModel")
            .field("name", &self.name)
            .field("context", &self.model.config().context)
            .finish_non_exhaustive()
    }
}

/// The key/value cache of one conversation, and which tokens it holds, so a
/// request that shares a prefix with the previous one skips that prefix.
#[derive(Debug, Clone)]
pub struct Session {
    cache: Cache,
    tokens: Vec<u32>,
    /// How many of `tokens` were computed as prompt tokens (the ones that can
    /// be reused with results identical to a fresh run).
    reusable: usize,
}

impl Session {
    /// Tokens in the cache.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    /// Bytes its key/value cache takes (in host or device memory).
    pub fn cache_bytes(&self) -> usize {
        self.cache.bytes()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.cache.len() == 0
    }

    /// Drops everything cached.
    pub fn clear(&mut self) {
        self.cache.clear();
        self.tokens.clear();
        self.reusable = 0;
    }

    /// Bytes held by the cache.
    pub fn cache_size(&self) -> usize {
        self.cache.size()
    }
}

/// The outcome of [`GgufModel::generate`].
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// The generated token ids, up to (not including) the end-of-generation
    /// token or the stop string.
    pub ids: Vec<u32>,
    /// Their text, cut before a stop string.
    pub text: String,
    /// Why generation stopped.
    pub finish: FinishReason,
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Prompt tokens served from the session's cache.
    pub cached_tokens: usize,
    /// Time spent on the prompt (prefill).
    pub prompt_time: Duration,
    /// Time spent generating.
    pub generation_time: Duration,
}

impl Generation {
    /// Prompt tokens processed per second (cached ones excluded).
    pub fn prompt_tokens_per_second(&self) -> f64 {
        (self.prompt_tokens - self.cached_tokens) as f64 / self.prompt_time.as_secs_f64().max(1e-9)
    }

    /// Generated tokens per second.
    pub fn tokens_per_second(&self) -> f64 {
        self.ids.len() as f64 / self.generation_time.as_secs_f64().max(1e-9)
    }
}

/// Hands memory that loading freed (tensor bytes read before packing, the
/// file's metadata) back to the system. glibc keeps freed blocks of up to
/// 32 MiB in its heap after the first large one, so without this a loaded
/// model holds tens of megabytes it no longer uses.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl GgufModel {
    /// Loads a GGUF file.
    ///
    /// Errors name the problem: a missing or unreadable file, a file that is
    /// not GGUF, an unsupported architecture or tokenizer, missing metadata or
    /// tensors, a chat template that does not parse.
    pub fn load(path: &Path, options: &LoadOptions) -> Result<Self> {
        let path = crate::gguf::resolve(path)?;
        let mut gguf = GgufFile::open(&path)?;
        let arch = Config::arch(&gguf)?;
        let tokenizer = Tokenizer::from_gguf(&gguf)?;
        let bos = tokenizer.token_text(tokenizer.bos());
        let eos = tokenizer.token_text(tokenizer.eos());
        let (source, has_template) = if gguf.has("tokenizer.chat_template") {
            (gguf.string("tokenizer.chat_template")?.to_string(), true)
        } else if arch == Arch::Gemma3 {
            (GEMMA.to_string(), false)
        } else {
            (CHATML.to_string(), false)
        };
        let template = ChatTemplate::new(&source, &bos, &eos)?;
        gguf.forget("tokenizer.");
        let threads = options.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });
        let backend = options.backend.unwrap_or_else(Backend::auto);
        let isa = match options.kernels {
            Some(isa) => isa,
            None => kb_kernels::Isa::from_env()?,
        };
        let model = Model::load(
            &mut gguf,
            backend,
            threads,
            isa,
            options.dense_prompt_weights,
        )?;
        if model.config().vocab < tokenizer.vocab_size() {
            return Err(LlmError::metadata(
                "tokenizer.ggml.tokens",
                format!(
                    "{} tokens but the embedding table has {} rows",
                    tokenizer.vocab_size(),
                    model.config().vocab
                ),
            ));
        }
        let name = if gguf.has("general.name") {
            gguf.string("general.name")?.to_string()
        } else {
            path.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "gguf".into())
        };
        drop(gguf);
        release_freed_memory();
        tracing::info!(
            model = %name,
            %backend,
            kernels = %isa,
            threads,
            weights_mib = model.size() / (1 << 20),
            context = model.config().context,
            "loaded GGUF model"
        );
        Ok(GgufModel {
            name,
            model,
            tokenizer,
            template,
            has_template,
        })
    }

    /// The model's name (`general.name`, else the file name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The chat template.
    pub fn template(&self) -> &ChatTemplate {
        &self.template
    }

    /// Whether the file carried its own chat template (otherwise ChatML is used).
    pub fn has_template(&self) -> bool {
        self.has_template
    }

    /// The context window in tokens.
    pub fn context_length(&self) -> usize {
        self.model.config().context
    }

    /// The CPU kernel family the model runs on (`None` on a GPU).
    pub fn kernels(&self) -> Option<kb_kernels::Isa> {
        self.model.isa()
    }

    /// Inference threads.
    pub fn threads(&self) -> usize {
        self.model.threads()
    }

    /// Bytes of weights held in memory.
    pub fn weights_size(&self) -> usize {
        self.model.size()
    }

    /// A new, empty session.
    pub fn session(&self) -> Session {
        Session {
            cache: self.model.cache(),
            tokens: Vec::new(),
            reusable: 0,
        }
    }

    /// The prompt token ids for a conversation: the chat template rendered
    /// with the generation prompt, then tokenized. When the conversation ends
    /// with an assistant message (without tool calls), the prompt ends with
    /// that message's text instead, so that generation continues it.
    ///
    /// Message contents cannot write the template's markers: see
    /// [`Tokenizer::defuse`].
    pub fn chat_prompt(&self, messages: &[Message]) -> Result<Vec<u32>> {
        let contents: Vec<_> = messages
            .iter()
            .map(|m| self.tokenizer.defuse(&m.content))
            .collect();
        let defused: Vec<Message>;
        let messages = if contents
            .iter()
            .any(|c| matches!(c, std::borrow::Cow::Owned(_)))
        {
            defused = messages
                .iter()
                .zip(contents)
                .map(|(m, content)| Message {
                    content: content.into_owned(),
                    ..m.clone()
                })
                .collect();
            &defused
        } else {
            messages
        };
        let text = match messages.split_last() {
            // A final assistant message is continued: the answer begins
            // with its text (prefill).
            Some((last, earlier))
                if last.role == Role::Assistant
                    && last.tool_calls.is_empty()
                    && !earlier.is_empty() =>
            {
                let mut text = self.template.render(earlier, true)?;
                text.push_str(&last.content);
                text
            }
            _ => self.template.render(messages, true)?,
        };
        self.tokenizer.encode_prompt(&text)
    }

    /// The logits after `tokens`, run as prompt tokens in `session` (which is
    /// extended by them).
    pub fn logits(&self, session: &mut Session, tokens: &[u32]) -> Result<Vec<f32>> {
        let logits = self
            .model
            .forward(tokens, &mut session.cache, Pass::Prompt)?;
        session.tokens.extend_from_slice(tokens);
        if session.reusable + tokens.len() == session.tokens.len() {
            session.reusable = session.tokens.len();
        }
        Ok(logits)
    }

    /// Runs one generated token through the model (the decoding path, with
    /// quantized activations) and returns the logits after it.
    pub fn decode_step(&self, session: &mut Session, token: u32) -> Result<Vec<f32>> {
        let logits = self
            .model
            .forward(&[token], &mut session.cache, Pass::Decode)?;
        session.tokens.push(token);
        Ok(logits)
    }

    /// Generates a continuation of `prompt` (token ids) in `session`.
    ///
    /// The longest prefix the session already holds from an earlier prompt
    /// is not processed again. `on_text` receives the text as it is
    /// generated, never half a character and never part of a stop string;
    /// returning `false` from it cancels the generation.
    pub fn generate(
        &self,
        session: &mut Session,
        prompt: &[u32],
        options: &GenerateOptions,
        mut on_text: impl FnMut(&str) -> bool,
    ) -> Result<Generation> {
        options
            .validate()
            .map_err(|e| LlmError::Options(e.to_string()))?;
        let context = self.model.config().context;
        if prompt.is_empty() {
            return Err(LlmError::Options("the prompt is empty".into()));
        }
        if prompt.len() >= context {
            return Err(LlmError::ContextOverflow {
                prompt: prompt.len(),
                context,
            });
        }
        let max_new = options
            .max_tokens
            .unwrap_or(DEFAULT_MAX_TOKENS)
            .min(context - prompt.len());
        if options.num_beams <= 1 {
            session.cache.reserve(prompt.len() + max_new);
        }

        let started = Instant::now();
        let (mut logits, cached) = self.prefill(session, prompt)?;
        let prompt_time = started.elapsed();

        let started = Instant::now();
        let (ids, text, finish) = if options.num_beams > 1 {
            self.beam_search(session, logits, prompt, options, max_new, &mut on_text)?
        } else {
            let mut sampler = Sampler::new(options);
            let mut stops = StopStrings::new(&options.stop);
            let mut decoder = StreamDecoder::new();
            let mut ids = Vec::new();
            let mut context_ids = prompt.to_vec();
            let finish = loop {
                if ids.len() == max_new {
                    break FinishReason::Length;
                }
                let token = sampler.sample(&mut logits, &context_ids, &ids);
                if self.tokenizer.is_end_of_generation(token) {
                    break FinishReason::Stop;
                }
                ids.push(token);
                context_ids.push(token);
                let mut piece = if self.tokenizer.is_control(token) {
                    String::new()
                } else {
                    decoder.push(self.tokenizer.token_bytes(token))
                };
                // SentencePiece answers start with the word's space: drop it,
                // as `decode` does.
                if ids.len() == 1 && self.tokenizer.adds_space_prefix() && piece.starts_with(' ') {
                    piece.remove(0);
                }
                let (ready, stopped) = stops.push(&piece);
                if !ready.is_empty() && !on_text(&ready) {
                    break FinishReason::Cancelled;
                }
                if stopped {
                    break FinishReason::Stop;
                }
                if ids.len() == max_new {
                    break FinishReason::Length;
                }
                logits = self
                    .model
                    .forward(&[token], &mut session.cache, Pass::Decode)?;
                session.tokens.push(token);
            };
            if finish != FinishReason::Cancelled && !stops.stopped {
                let (rest, _) = stops.push(&decoder.finish());
                let tail = stops.flush(rest);
                if !tail.is_empty() {
                    on_text(&tail);
                }
            }
            (ids, stops.text, finish)
        };
        Ok(Generation {
            ids,
            text,
            finish,
            prompt_tokens: prompt.len(),
            cached_tokens: cached,
            prompt_time,
            generation_time: started.elapsed(),
        })
    }

    /// Runs `prompt` in `session`, skipping the longest prefix the session
    /// already holds as prompt tokens; returns the logits after the prompt
    /// and how many tokens came from the cache.
    fn prefill(&self, session: &mut Session, prompt: &[u32]) -> Result<(Vec<f32>, usize)> {
        let common = session
            .tokens
            .iter()
            .zip(prompt)
            .take(session.reusable)
            .take_while(|(a, b)| a == b)
            .count();
        // At least one prompt token runs, for its logits.
        let cached = common.min(prompt.len().saturating_sub(1));
        session.cache.truncate(cached)?;
        session.tokens.truncate(cached);
        session.reusable = cached;
        let logits = self.logits(session, &prompt[cached..])?;
        Ok((logits, cached))
    }

    /// The log-probability of each continuation (token ids) right after
    /// `prompt`: the sum of its tokens' log-probabilities. Used to score label
    /// words; the prompt is computed once and shared by every continuation.
    pub fn score(
        &self,
        session: &mut Session,
        prompt: &[u32],
        continuations: &[Vec<u32>],
    ) -> Result<Vec<f32>> {
        let context = self.model.config().context;
        if prompt.is_empty() {
            return Err(LlmError::Options("the prompt is empty".into()));
        }
        let longest = continuations.iter().map(Vec::len).max().unwrap_or(0);
        if prompt.len() + longest > context {
            return Err(LlmError::ContextOverflow {
                prompt: prompt.len() + longest,
                context,
            });
        }
        let (first, _) = self.prefill(session, prompt)?;
        let first = log_softmax(&first);
        let mut scores = Vec::with_capacity(continuations.len());
        for continuation in continuations {
            let Some((&head, rest)) = continuation.split_first() else {
                return Err(LlmError::Options("a continuation is empty".into()));
            };
            let vocab = first.len();
            let out_of_range = |t: u32| {
                LlmError::Options(format!("token id {t} is outside the vocabulary of {vocab}"))
            };
            let mut total = *first.get(head as usize).ok_or_else(|| out_of_range(head))?;
            let mut previous = head;
            for &token in rest {
                let logits = log_softmax(&self.logits(session, &[previous])?);
                total += *logits
                    .get(token as usize)
                    .ok_or_else(|| out_of_range(token))?;
                previous = token;
            }
            session.cache.truncate(prompt.len())?;
            session.tokens.truncate(prompt.len());
            session.reusable = session.reusable.min(prompt.len());
            scores.push(total);
        }
        Ok(scores)
    }

    /// Beam search of width `options.num_beams`: the hypothesis with the best
    /// `log p / length^length_penalty` wins. Its text is delivered at the end.
    fn beam_search(
        &self,
        session: &mut Session,
        logits: Vec<f32>,
        prompt: &[u32],
        options: &GenerateOptions,
        max_new: usize,
        on_text: &mut impl FnMut(&str) -> bool,
    ) -> Result<(Vec<u32>, String, FinishReason)> {
        struct Beam {
            ids: Vec<u32>,
            score: f32,
            cache: Option<Cache>,
            logits: Vec<f32>,
        }
        let width = options.num_beams;
        let sampler = Sampler::new(options);
        let normalized =
            |score: f32, len: usize| score / (len.max(1) as f32).powf(options.length_penalty);
        let mut beams = vec![Beam {
            ids: Vec::new(),
            score: 0.0,
            cache: Some(session.cache.clone()),
            logits,
        }];
        let mut finished: Vec<(Vec<u32>, f32, FinishReason)> = Vec::new();
        for step in 0..max_new {
            let mut candidates: Vec<(usize, u32, f32)> = Vec::new();
            for (b, beam) in beams.iter_mut().enumerate() {
                let mut context_ids = prompt.to_vec();
                context_ids.extend_from_slice(&beam.ids);
                sampler.penalize(&mut beam.logits, &context_ids, &beam.ids);
                let lp = log_softmax(&beam.logits);
                let mut order: Vec<u32> = (0..lp.len() as u32).collect();
                let take = (2 * width).min(order.len());
                order.select_nth_unstable_by(take - 1, |a, b| {
                    lp[*b as usize].total_cmp(&lp[*a as usize])
                });
                for &t in &order[..take] {
                    if lp[t as usize].is_finite() {
                        candidates.push((b, t, beam.score + lp[t as usize]));
                    }
                }
            }
            candidates.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.1.cmp(&b.1)));
            let mut next: Vec<(usize, u32, f32)> = Vec::new();
            for (b, t, score) in candidates {
                if self.tokenizer.is_end_of_generation(t) {
                    finished.push((
                        beams[b].ids.clone(),
                        normalized(score, beams[b].ids.len() + 1),
                        FinishReason::Stop,
                    ));
                } else {
                    next.push((b, t, score));
                }
                if next.len() == width {
                    break;
                }
            }
            let best_finished = finished
                .iter()
                .map(|f| f.1)
                .fold(f32::NEG_INFINITY, f32::max);
            let best_live = next
                .first()
                .map_or(f32::NEG_INFINITY, |n| normalized(n.2, step + 1));
            if finished.len() >= width
                || next.is_empty()
                || (best_finished > best_live && options.length_penalty <= 0.0)
            {
                break;
            }
            let last_step = step + 1 == max_new;
            let mut new_beams = Vec::with_capacity(next.len());
            for (i, &(b, t, score)) in next.iter().enumerate() {
                let mut ids = beams[b].ids.clone();
                ids.push(t);
                // The last child of a parent takes its cache; others copy it.
                let last_child = next[i + 1..].iter().all(|n| n.0 != b);
                let mut cache = if last_child {
                    beams[b].cache.take()
                } else {
                    beams[b].cache.clone()
                }
                .ok_or_else(|| LlmError::Options("beam cache lost".into()))?;
                let logits = if last_step {
                    Vec::new()
                } else {
                    self.model.forward(&[t], &mut cache, Pass::Decode)?
                };
                new_beams.push(Beam {
                    ids,
                    score,
                    cache: Some(cache),
                    logits,
                });
            }
            beams = new_beams;
        }
        for beam in &beams {
            finished.push((
                beam.ids.clone(),
                normalized(beam.score, beam.ids.len()),
                FinishReason::Length,
            ));
        }
        let best = finished
            .into_iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .ok_or_else(|| LlmError::Options("beam search produced nothing".into()))?;
        let (mut ids, _, finish) = best;
        // The session keeps only the prompt; the beams' caches are dropped.
        session.cache.truncate(prompt.len())?;
        session.tokens.truncate(prompt.len());
        let mut text = self.tokenizer.decode(&ids, true);
        let cut = options
            .stop
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| text.find(s.as_str()))
            .min();
        let stopped = cut.is_some();
        if let Some(at) = cut {
            text.truncate(at);
            // Keep the ids whose text comes before the stop string.
            while !ids.is_empty() && self.tokenizer.decode(&ids, true).len() > at {
                ids.pop();
            }
        }
        if !text.is_empty() {
            on_text(&text);
        }
        Ok((ids, text, if stopped { FinishReason::Stop } else { finish }))
    }
}

/// Watches generated text for stop strings, holding back any tail that could
/// be the start of one.
struct StopStrings<'a> {
    stops: &'a [String],
    /// All text accepted so far (cut at a stop string once found).
    text: String,
    /// How much of `text` has been handed out.
    sent: usize,
    stopped: bool,
}

impl<'a> StopStrings<'a> {
    fn new(stops: &'a [String]) -> Self {
        StopStrings {
            stops,
            text: String::new(),
            sent: 0,
            stopped: false,
        }
    }

    /// Adds `piece`; returns the text that is safe to hand out and whether a
    /// stop string was found.
    fn push(&mut self, piece: &str) -> (String, bool) {
        if self.stopped {
            return (String::new(), true);
        }
        let search_from = self.sent.saturating_sub(self.longest());
        self.text.push_str(piece);
        let mut search_from = search_from;
        while !self.text.is_char_boundary(search_from) {
            search_from -= 1;
        }
        let found = self
            .stops
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| {
                self.text[search_from..]
                    .find(s.as_str())
                    .map(|i| search_from + i)
            })
            .min();
        if let Some(at) = found {
            self.text.truncate(at.max(self.sent));
            self.stopped = true;
            let ready = self.text[self.sent..].to_string();
            self.sent = self.text.len();
            return (ready, true);
        }
        let hold = self
            .stops
            .iter()
            .map(|s| {
                (1..s.len())
                    .rev()
                    .find(|&k| s.is_char_boundary(k) && self.text.ends_with(&s[..k]))
                    .unwrap_or(0)
            })
            .max()
            .unwrap_or(0);
        let safe = self.text.len() - hold;
        let ready = self.text[self.sent..safe].to_string();
        self.sent = safe;
        (ready, false)
    }

    /// Hands out everything still held (generation ended without a stop).
    fn flush(&mut self, mut ready: String) -> String {
        ready.push_str(&self.text[self.sent..]);
        self.sent = self.text.len();
        ready
    }

    fn longest(&self) -> usize {
        self.stops.iter().map(|s| s.len()).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_strings_hold_back_and_cut() {
        let stops = vec!["\nUser:".to_string(), "END".to_string()];
        let mut s = StopStrings::new(&stops);
        assert_eq!(s.push("Hello"), ("Hello".into(), false));
        assert_eq!(s.push(" E"), (" ".into(), false));
        assert_eq!(s.push("N"), ("".into(), false));
        assert_eq!(s.push("x"), ("ENx".into(), false));
        assert_eq!(s.push("\nUs"), ("".into(), false));
        assert_eq!(s.push("er: hi"), ("".into(), true));
        assert_eq!(s.text, "Hello ENx");
    }

    #[test]
    fn stop_strings_flush_at_the_end() {
        let stops = vec!["END".to_string()];
        let mut s = StopStrings::new(&stops);
        let (ready, _) = s.push("the E");
        assert_eq!(ready, "the ");
        assert_eq!(s.flush(String::new()), "E");
        assert_eq!(s.text, "the E");
    }
}
