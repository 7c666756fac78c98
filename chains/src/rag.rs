//! [`RagChain`]: retriever → context builder → prompt → model, streamed,
//! with verified citations.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt, stream};
use kb_core::{
    ChatEvent, ChatModel, ChatStream, Error, FinishReason, GenerateOptions, Message, Result,
    Retriever, ScoredChunk, Usage,
};
use serde::{Deserialize, Serialize};

use crate::attribution::Attributor;
use crate::citation::{CitationFilter, verify_citations};
use crate::context::{Source, fit};
use crate::language::Language;
use crate::prompts::{RagPrompts, no_answer};

/// Tokens kept free for the answer when the options set no `max_tokens`.
pub const DEFAULT_ANSWER_TOKENS: usize = 512;

/// The context window assumed for models that do not report theirs.
pub const DEFAULT_CONTEXT_WINDOW: usize = 4096;

/// How the retrieved chunks reach the model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// All chunks that fit go into one prompt (one model call).
    #[default]
    Stuff,
    /// Each chunk is first reduced to the sentences relevant to the question
    /// (one call per chunk), then the notes are answered from (one call).
    MapReduce,
    /// The answer is drafted from the first chunk and refined with each
    /// following one (one call per chunk).
    Refine,
}

impl std::str::FromStr for Strategy {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "stuff" => Ok(Strategy::Stuff),
            "map_reduce" | "map-reduce" => Ok(Strategy::MapReduce),
            "refine" => Ok(Strategy::Refine),
            other => Err(Error::InvalidInput(format!(
                "unknown strategy {other:?}; expected stuff, map_reduce or refine"
            ))),
        }
    }
}

/// Where the time of an answer went (in JSON: milliseconds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct AnswerTimings {
    /// Rewriting a follow-up question (conversational chains).
    #[serde(with = "millis")]
    pub condense: Duration,
    /// Retrieval.
    #[serde(with = "millis")]
    pub retrieval: Duration,
    /// Map or refine calls before the final one.
    #[serde(with = "millis")]
    pub intermediate: Duration,
    /// From the start to the first token shown (`None` when nothing was
    /// generated).
    #[serde(with = "millis_option")]
    pub first_token: Option<Duration>,
    /// The final call's prompt processing, as the model reports it.
    #[serde(with = "millis")]
    pub prompt: Duration,
    /// The final call's generation, as the model reports it.
    #[serde(with = "millis")]
    pub generation: Duration,
    /// From the start to the end.
    #[serde(with = "millis")]
    pub total: Duration,
}

/// A cited answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// The question asked.
    pub question: String,
    /// The question the retriever was given, when a conversational chain
    /// rewrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standalone_question: Option<String>,
    /// The answer, with citation markers that point at no source removed.
    pub text: String,
    /// The language the answer was asked for.
    pub language: Language,
    /// The chunks the model was given, numbered as it saw them.
    pub sources: Vec<Source>,
    /// The source numbers the answer cites, in order of first citation.
    pub cited: Vec<usize>,
    /// The citations kb added to sentences that repeat a source but carry no
    /// marker (a subset of `cited`; see [`RagChain::attribute`]).
    pub attributed: Vec<usize>,
    /// Citation numbers the model produced that point at no source (removed
    /// from `text`).
    pub invalid_citations: Vec<usize>,
    /// Whether the answer says the documents do not contain it.
    pub abstained: bool,
    /// Retrieved chunks left out because the context window was full.
    pub dropped_sources: usize,
    /// Why the final generation stopped.
    pub finish_reason: FinishReason,
    /// Tokens of the final call.
    pub usage: Usage,
    /// Where the time went.
    pub timings: AnswerTimings,
}

impl Answer {
    /// The sources the answer cites.
    pub fn cited_sources(&self) -> impl Iterator<Item = &Source> {
        self.cited
            .iter()
            .filter_map(|n| self.sources.iter().find(|s| s.number == *n))
    }
}

/// One event of a streamed answer.
#[derive(Debug, Clone, PartialEq)]
pub enum AnswerEvent {
    /// The sources the model is given, before any token.
    Sources(Vec<Source>),
    /// A piece of the answer, citations already checked.
    Token(String),
    /// The end: the complete answer.
    Done(Box<Answer>),
}

/// A streamed answer. Dropping it cancels the generation.
pub type AnswerStream = Pin<Box<dyn Stream<Item = Result<AnswerEvent>> + Send>>;

/// Collects a streamed answer.
pub async fn collect_answer(mut stream: AnswerStream) -> Result<Answer> {
    while let Some(event) = stream.next().await {
        if let AnswerEvent::Done(answer) = event? {
            return Ok(*answer);
        }
    }
    Err(Error::Model("the answer stream ended early".into()))
}

/// Whether `text` is the abstention sentence (in either language).
pub fn is_abstention(text: &str) -> bool {
    let normalize = |s: &str| -> String {
        s.chars()
            .filter(|c| c.is_alphanumeric())
            .flat_map(char::to_lowercase)
            .collect()
    };
    let text = normalize(text);
    [Language::English, Language::Chinese]
        .iter()
        .any(|l| text.starts_with(&normalize(no_answer(*l))))
}

/// Retrieval-augmented generation: retrieves chunks for a question, numbers
/// them, fits as many as the model's context window holds (counted with its
/// tokenizer), asks the model to answer from them with `[n]` citations in
/// the question's language, and checks the citations.
///
/// ```no_run
/// # async fn demo(retriever: std::sync::Arc<dyn kb_core::Retriever>, model: std::sync::Arc<dyn kb_core::ChatModel>) -> kb_core::Result<()> {
/// use kb_chains::RagChain;
///
/// let chain = RagChain::new(retriever, model).k(4);
/// let answer = chain.ask("What does RRF fuse?").await?;
/// println!("{}", answer.text);
/// for source in answer.cited_sources() {
///     println!("[{}] {}", source.number, source.source);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RagChain {
    retriever: Arc<dyn Retriever>,
    model: Arc<dyn ChatModel>,
    prompts: RagPrompts,
    options: GenerateOptions,
    k: usize,
    strategy: Strategy,
    context_window: Option<usize>,
    attribute: bool,
}

impl std::fmt::Debug for RagChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RagChain")
            .field("model", &self.model.name())
            .field("k", &self.k)
            .field("strategy", &self.strategy)
            .finish_non_exhaustive()
    }
}

/// A prompt ready for the final call.
struct Prepared {
    messages: Vec<Message>,
    sources: Vec<Source>,
    dropped: usize,
    timings: AnswerTimings,
    options: GenerateOptions,
}

impl RagChain {
    /// A chain answering from `retriever`'s chunks with `model`: four
    /// chunks, the `stuff` strategy, greedy decoding.
    pub fn new(retriever: Arc<dyn Retriever>, model: Arc<dyn ChatModel>) -> Self {
        RagChain {
            retriever,
            model,
            prompts: RagPrompts::default(),
            options: GenerateOptions::default(),
            k: 4,
            strategy: Strategy::Stuff,
            context_window: None,
            attribute: true,
        }
    }

    /// Whether sentences that repeat a source without citing it get its
    /// number added (on by default; small models often forget to cite).
    /// Added numbers are listed in [`Answer::attributed`].
    pub fn attribute(mut self, attribute: bool) -> Self {
        self.attribute = attribute;
        self
    }

    /// Chunks to retrieve.
    pub fn k(mut self, k: usize) -> Self {
        self.k = k;
        self
    }

    /// Decoding options of the answer.
    pub fn options(mut self, options: GenerateOptions) -> Self {
        self.options = options;
        self
    }

    /// How chunks reach the model.
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// The prompts.
    pub fn prompts(mut self, prompts: RagPrompts) -> Self {
        self.prompts = prompts;
        self
    }

    /// Overrides the model's context window (or sets it for a model that
    /// does not report one).
    pub fn context_window(mut self, tokens: usize) -> Self {
        self.context_window = Some(tokens);
        self
    }

    /// The model.
    pub fn model(&self) -> &Arc<dyn ChatModel> {
        &self.model
    }

    /// The prompts in use.
    pub fn prompt_set(&self) -> &RagPrompts {
        &self.prompts
    }

    /// Answers `question`, streaming.
    pub async fn stream(&self, question: &str) -> Result<AnswerStream> {
        self.stream_with(question, question, AnswerTimings::default(), Instant::now())
            .await
    }

    /// Answers `question`.
    pub async fn ask(&self, question: &str) -> Result<Answer> {
        collect_answer(self.stream(question).await?).await
    }

    /// Answers `query` (what retrieval and the prompt see) for the user
    /// who asked `asked` (whose language the answer uses).
    pub(crate) async fn stream_with(
        &self,
        asked: &str,
        query: &str,
        timings: AnswerTimings,
        started: Instant,
    ) -> Result<AnswerStream> {
        if asked.trim().is_empty() || query.trim().is_empty() {
            return Err(Error::InvalidInput("the question is empty".into()));
        }
        self.options.validate()?;
        let language = Language::detect(asked);
        let standalone = (query != asked).then(|| query.to_string());
        let question = query;
        let retrieval = Instant::now();
        let chunks = if self.k == 0 {
            Vec::new()
        } else {
            self.retriever.retrieve(query, self.k).await?
        };
        let mut timings = timings;
        timings.retrieval = retrieval.elapsed();
        let mut answer = Answer {
            question: asked.to_string(),
            standalone_question: standalone,
            text: String::new(),
            language,
            sources: Vec::new(),
            cited: Vec::new(),
            attributed: Vec::new(),
            invalid_citations: Vec::new(),
            abstained: false,
            dropped_sources: 0,
            finish_reason: FinishReason::Stop,
            usage: Usage::default(),
            timings,
        };
        if chunks.is_empty() {
            // Nothing to answer from: say so without asking the model.
            answer.text = no_answer(language).to_string();
            answer.abstained = true;
            answer.timings.total = started.elapsed();
            let events = vec![
                Ok(AnswerEvent::Sources(Vec::new())),
                Ok(AnswerEvent::Token(answer.text.clone())),
                Ok(AnswerEvent::Done(Box::new(answer))),
            ];
            return Ok(Box::pin(stream::iter(events)));
        }
        let prepared = match self.strategy {
            Strategy::Stuff => self.stuff(question, language, &chunks)?,
            Strategy::MapReduce => self.map_reduce(question, language, &chunks).await?,
            Strategy::Refine => self.refine(question, language, &chunks).await?,
        };
        answer.timings.intermediate = prepared.timings.intermediate;
        answer.sources = prepared.sources.clone();
        answer.dropped_sources = prepared.dropped;
        let events = self
            .model
            .stream(&prepared.messages, &prepared.options)
            .await?;
        Ok(answer_stream(
            events,
            answer,
            prepared,
            self.attribute,
            started,
        ))
    }

    /// Tokens the prompt may take: the window less the answer's room.
    fn budget(&self, options: &GenerateOptions) -> Result<usize> {
        let window = self
            .context_window
            .or_else(|| self.model.context_window())
            .unwrap_or(DEFAULT_CONTEXT_WINDOW);
        let answer = options.max_tokens.unwrap_or(DEFAULT_ANSWER_TOKENS);
        window.checked_sub(answer).filter(|b| *b > 0).ok_or_else(|| {
            Error::InvalidInput(format!(
                "max_tokens {answer} leaves no room for the prompt in a context window of {window} tokens"
            ))
        })
    }

    /// The answer's options, with `max_tokens` set to the room reserved.
    fn answer_options(&self) -> GenerateOptions {
        let mut options = self.options.clone();
        options.max_tokens = Some(options.max_tokens.unwrap_or(DEFAULT_ANSWER_TOKENS));
        options
    }

    fn render(
        &self,
        language: Language,
        question: &str,
        sources: &[Source],
    ) -> Result<Vec<Message>> {
        Ok(vec![
            Message::system(self.prompts.system(language)?),
            Message::user(self.prompts.user(language, question, sources)?),
        ])
    }

    fn stuff(
        &self,
        question: &str,
        language: Language,
        chunks: &[ScoredChunk],
    ) -> Result<Prepared> {
        let options = self.answer_options();
        let fitted = fit(
            self.model.as_ref(),
            self.budget(&options)?,
            chunks,
            |sources| self.render(language, question, sources),
        )?;
        if fitted.dropped > 0 {
            tracing::info!(
                dropped = fitted.dropped,
                kept = fitted.sources.len(),
                "the context window holds only part of the retrieved chunks"
            );
        }
        Ok(Prepared {
            messages: fitted.messages,
            sources: fitted.sources,
            dropped: fitted.dropped,
            timings: AnswerTimings::default(),
            options,
        })
    }

    /// Options of the intermediate (map/refine) calls.
    fn step_options(&self) -> GenerateOptions {
        let mut options = self.options.clone();
        options.max_tokens = Some(options.max_tokens.unwrap_or(DEFAULT_ANSWER_TOKENS) / 2 + 1);
        options
    }

    /// Every chunk on its own, fitted (shortened if it must be) with
    /// `render`, numbered in rank order.
    fn one_by_one<F>(&self, chunks: &[ScoredChunk], render: F) -> Result<Vec<Vec<Message>>>
    where
        F: Fn(&Source) -> Result<Vec<Message>>,
    {
        let budget = self.budget(&self.step_options())?;
        let mut prompts = Vec::with_capacity(chunks.len());
        for (i, chunk) in chunks.iter().enumerate() {
            let fitted = fit(
                self.model.as_ref(),
                budget,
                std::slice::from_ref(chunk),
                |sources| match sources.first() {
                    Some(source) => {
                        let mut source = source.clone();
                        source.number = i + 1;
                        render(&source)
                    }
                    None => Ok(Vec::new()),
                },
            )?;
            prompts.push(fitted.messages);
        }
        Ok(prompts)
    }

    async fn map_reduce(
        &self,
        question: &str,
        language: Language,
        chunks: &[ScoredChunk],
    ) -> Result<Prepared> {
        let started = Instant::now();
        let prompts = self.one_by_one(chunks, |source| {
            Ok(vec![Message::user(
                self.prompts.map(language, question, source)?,
            )])
        })?;
        let options = self.step_options();
        let mut notes = Vec::new();
        for (messages, chunk) in prompts.iter().zip(chunks) {
            if messages.is_empty() {
                continue;
            }
            let reply = self.model.chat(messages, &options).await?;
            let note = reply.message.content.trim().to_string();
            if note.is_empty() || note.to_uppercase().starts_with("NONE") {
                continue;
            }
            let mut reduced = chunk.clone();
            reduced.chunk.text = note;
            notes.push(reduced);
        }
        // The notes keep their chunk's source; numbering follows the notes.
        let mut prepared = self.stuff(question, language, &notes)?;
        prepared.timings.intermediate = started.elapsed();
        Ok(prepared)
    }

    async fn refine(
        &self,
        question: &str,
        language: Language,
        chunks: &[ScoredChunk],
    ) -> Result<Prepared> {
        let started = Instant::now();
        let options = self.step_options();
        // The draft comes from the best chunk alone.
        let first = self.stuff(question, language, &chunks[..1])?;
        let mut sources = first.sources.clone();
        if chunks.len() == 1 {
            return Ok(first);
        }
        let draft = self.model.chat(&first.messages, &options).await?;
        let mut answer = draft.message.content.trim().to_string();
        let system = Message::system(self.prompts.system(language)?);
        for (i, chunk) in chunks.iter().enumerate().skip(1) {
            let source_of = |source: &Source| {
                let mut source = source.clone();
                source.number = i + 1;
                source
            };
            let answer_so_far = answer.clone();
            let fitted = fit(
                self.model.as_ref(),
                self.budget(&self.answer_options())?,
                std::slice::from_ref(chunk),
                |s| match s.first() {
                    Some(source) => Ok(vec![
                        system.clone(),
                        Message::user(self.prompts.refine(
                            language,
                            question,
                            &answer_so_far,
                            &source_of(source),
                        )?),
                    ]),
                    None => Ok(Vec::new()),
                },
            )?;
            let Some(source) = fitted.sources.first() else {
                continue;
            };
            sources.push(source_of(source));
            if i + 1 == chunks.len() {
                // The last refinement is the streamed answer.
                return Ok(Prepared {
                    messages: fitted.messages,
                    sources,
                    dropped: 0,
                    timings: AnswerTimings {
                        intermediate: started.elapsed(),
                        ..AnswerTimings::default()
                    },
                    options: self.answer_options(),
                });
            }
            let reply = self.model.chat(&fitted.messages, &options).await?;
            let refined = reply.message.content.trim();
            if !refined.is_empty() {
                answer = refined.to_string();
            }
        }
        // The last chunk did not fit: answer from everything that did.
        let kept: Vec<ScoredChunk> = chunks[..sources.len().min(chunks.len())].to_vec();
        let mut prepared = self.stuff(question, language, &kept)?;
        prepared.timings.intermediate = started.elapsed();
        Ok(prepared)
    }
}

/// The model's events as answer events: citations checked, the first token
/// timed, the answer completed at the end.
fn answer_stream(
    events: ChatStream,
    answer: Answer,
    prepared: Prepared,
    attribute: bool,
    started: Instant,
) -> AnswerStream {
    struct State {
        events: ChatStream,
        filter: CitationFilter,
        attributor: Option<Attributor>,
        answer: Answer,
        queue: VecDeque<Result<AnswerEvent>>,
        started: Instant,
        finished: bool,
    }
    impl State {
        fn emit(&mut self, text: String) {
            let text = match &mut self.attributor {
                Some(a) => a.push(&text),
                None => text,
            };
            if text.is_empty() {
                return;
            }
            if self.answer.timings.first_token.is_none() {
                self.answer.timings.first_token = Some(self.started.elapsed());
            }
            self.answer.text.push_str(&text);
            self.queue.push_back(Ok(AnswerEvent::Token(text)));
        }
    }
    let mut queue = VecDeque::new();
    queue.push_back(Ok(AnswerEvent::Sources(prepared.sources.clone())));
    let attributor =
        attribute.then(|| Attributor::new(prepared.sources.iter().map(|s| s.text.as_str())));
    let state = State {
        events,
        filter: CitationFilter::new(prepared.sources.len()),
        attributor,
        answer,
        queue,
        started,
        finished: false,
    };
    Box::pin(stream::unfold(state, |mut st| async move {
        loop {
            if let Some(event) = st.queue.pop_front() {
                return Some((event, st));
            }
            if st.finished {
                return None;
            }
            match st.events.next().await {
                Some(Ok(ChatEvent::Token(text))) => {
                    let shown = st.filter.push(&text);
                    st.emit(shown);
                }
                Some(Ok(ChatEvent::ToolCall(_))) => {}
                Some(Ok(ChatEvent::Done {
                    usage,
                    finish,
                    timings,
                })) => {
                    let tail = st.filter.finish();
                    st.emit(tail);
                    let last = st.attributor.as_mut().map(Attributor::finish);
                    if let Some(last) = last.filter(|l| !l.is_empty()) {
                        st.answer.text.push_str(&last);
                        st.queue.push_back(Ok(AnswerEvent::Token(last)));
                    }
                    st.finished = true;
                    let mut answer = st.answer.clone();
                    answer.text = answer.text.trim().to_string();
                    answer.abstained = is_abstention(&answer.text);
                    answer.cited = verify_citations(&answer.text, answer.sources.len()).cited;
                    answer.attributed = st
                        .attributor
                        .as_ref()
                        .map(|a| a.attributed().to_vec())
                        .unwrap_or_default();
                    answer.invalid_citations = st.filter.invalid().to_vec();
                    answer.finish_reason = finish;
                    answer.usage = usage;
                    if let Some(t) = timings {
                        answer.timings.prompt = t.prompt;
                        answer.timings.generation = t.generation;
                    }
                    answer.timings.total = st.started.elapsed();
                    st.queue.push_back(Ok(AnswerEvent::Done(Box::new(answer))));
                }
                Some(Err(e)) => {
                    st.finished = true;
                    return Some((Err(e), st));
                }
                None => {
                    st.finished = true;
                    return Some((
                        Err(Error::Model("the model's stream ended early".into())),
                        st,
                    ));
                }
            }
        }
    }))
}

/// A [`Duration`] as fractional milliseconds.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64() * 1e3)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let ms = f64::deserialize(d)?;
        Ok(Duration::from_secs_f64(ms.max(0.0) / 1e3))
    }
}

/// An optional [`Duration`] as fractional milliseconds or `null`.
mod millis_option {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_f64(d.as_secs_f64() * 1e3),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.map(|ms| Duration::from_secs_f64(ms.max(0.0) / 1e3)))
    }
}
