//! `kb ask` (one cited answer, streamed) and `kb chat` (a conversation over
//! the knowledge base).

use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use kb_chains::{
    Answer, AnswerEvent, AnswerStream, ConversationalRagChain, RagChain, Source, Strategy,
    WindowMemory,
};
use kb_core::{ChatEvent, ChatModel, GenerateOptions, Message};
use kb_retrievers::{Access, KnowledgeBase};
use serde::Serialize;

use crate::args::RagArgs;
use crate::commands::argument_or_stdin;
use crate::commands::generate::load_options;
use crate::commands::kb::{open, parse_filter, rerank, runtime};
use crate::config::Config;

/// The configured chat model, local or remote.
pub fn chat_model(config: &Config, threads: Option<usize>) -> Result<Arc<dyn ChatModel>> {
    let spec = &config.llm.value;
    kb_llm::open(spec, &config.model_cache(), &load_options(threads)?)
        .with_context(|| format!("opening the chat model {spec}"))
}

/// The knowledge base, or `None` (with a hint on stderr) when there is none
/// yet: the model then answers on its own.
pub fn open_if_present(config: &Config) -> Result<Option<KnowledgeBase>> {
    match open(config, Access::Read) {
        Ok(kb) => Ok(Some(kb)),
        Err(e)
            if e.chain().any(|cause| {
                matches!(
                    cause.downcast_ref::<kb_retrievers::Error>(),
                    Some(kb_retrievers::Error::Missing(_))
                )
            }) =>
        {
            eprintln!(
                "note: there is no knowledge base at {}; answering from the model alone. \
                 Build one with `kb ingest PATH` (or point --kb at one) for cited answers.",
                config.kb_dir.value.display()
            );
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The RAG chain `args` describe over `kb`, reranking as configured.
pub fn rag_chain(
    config: &Config,
    kb: &KnowledgeBase,
    model: Arc<dyn ChatModel>,
    args: &RagArgs,
) -> Result<RagChain> {
    let filter = parse_filter(args.filter.as_deref())?;
    let strategy: Strategy = args.strategy.parse()?;
    let mut prompts = kb_chains::RagPrompts::default();
    if let Some(path) = &args.system_prompt {
        prompts = prompts.with_system_file(path)?;
    }
    if let Some(path) = &args.prompt {
        prompts = prompts.with_user_file(path)?;
    }
    let retriever = kb
        .retriever(filter)
        .with_rerank(rerank(config, None, Some(model.clone()))?);
    Ok(RagChain::new(Arc::new(retriever), model)
        .k(args.k)
        .strategy(strategy)
        .prompts(prompts)
        .options(args.options()))
}

#[derive(Serialize)]
struct PlainAnswer<'a> {
    question: &'a str,
    text: &'a str,
    sources: &'a [Source],
    note: &'a str,
}

/// What `kb ask` was asked to do.
pub struct AskRequest {
    pub question: Option<String>,
    pub rag: RagArgs,
    pub json: bool,
    pub verbose: bool,
}

pub fn ask(config: &Config, request: &AskRequest, out: &mut impl Write) -> Result<()> {
    let args = &request.rag;
    let question = argument_or_stdin(request.question.as_deref(), "question")?
        .trim()
        .to_string();
    if args.k == 0 {
        bail!("-k must be at least 1");
    }
    let kb = open_if_present(config)?;
    let model = chat_model(config, args.decoding.threads)?;
    let rt = runtime()?;
    let Some(kb) = kb else {
        return rt.block_on(plain_answer(model.as_ref(), &question, request, out));
    };
    let chain = rag_chain(config, &kb, model, args)?;
    rt.block_on(async {
        let stream = chain.stream(&question).await?;
        let answer = render(stream, request.json, args.show_context, out).await?;
        if request.json {
            serde_json::to_writer_pretty(&mut *out, &answer)?;
            writeln!(out)?;
        } else {
            print_sources(&answer, out)?;
            if request.verbose {
                print_timings(&answer);
            }
        }
        Ok(())
    })
}

/// Prints the events of `stream` as they come (nothing but the answer in
/// JSON mode) and returns the answer.
async fn render(
    mut stream: AnswerStream,
    json: bool,
    show_context: bool,
    out: &mut impl Write,
) -> Result<Answer> {
    while let Some(event) = stream.next().await {
        match event? {
            AnswerEvent::Sources(sources) => {
                if show_context && !json {
                    print_context(&sources, out)?;
                }
            }
            AnswerEvent::Token(text) => {
                if !json {
                    write!(out, "{text}")?;
                    out.flush()?;
                }
            }
            AnswerEvent::Done(answer) => {
                if !json {
                    writeln!(out)?;
                }
                return Ok(*answer);
            }
        }
    }
    bail!("the answer ended early")
}

fn print_context(sources: &[Source], out: &mut impl Write) -> Result<()> {
    writeln!(out, "── context ({} chunks) ──", sources.len())?;
    for s in sources {
        writeln!(out, "[{}] {}", s.number, describe(s))?;
        writeln!(out, "{}\n", s.text.trim())?;
    }
    writeln!(out, "── answer ──")?;
    Ok(())
}

fn describe(source: &Source) -> String {
    match &source.heading {
        Some(h) => format!("{} › {h}", source.source),
        None => source.source.clone(),
    }
}

fn print_sources(answer: &Answer, out: &mut impl Write) -> Result<()> {
    if answer.sources.is_empty() {
        return Ok(());
    }
    writeln!(out, "\nSources:")?;
    for s in &answer.sources {
        let mark = if answer.cited.contains(&s.number) {
            "cited"
        } else {
            "not cited"
        };
        writeln!(out, "  [{}] {}  ({mark})", s.number, describe(s))?;
        writeln!(out, "      {}", s.snippet)?;
    }
    if !answer.invalid_citations.is_empty() {
        let list: Vec<String> = answer
            .invalid_citations
            .iter()
            .map(|n| format!("[{n}]"))
            .collect();
        writeln!(
            out,
            "  (removed citations that point at no source: {})",
            list.join(" ")
        )?;
    }
    if answer.dropped_sources > 0 {
        writeln!(
            out,
            "  ({} more retrieved chunks did not fit the context window)",
            answer.dropped_sources
        )?;
    }
    Ok(())
}

fn print_timings(answer: &Answer) {
    let t = &answer.timings;
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    let speed = if t.generation.as_secs_f64() > 0.0 {
        answer.usage.completion_tokens as f64 / t.generation.as_secs_f64()
    } else {
        0.0
    };
    eprintln!(
        "retrieval {:.0} ms, first token after {:.0} ms (prompt {} tokens in {:.0} ms), {} tokens at {speed:.1} tok/s, total {:.0} ms",
        ms(t.retrieval),
        t.first_token.map_or(0.0, ms),
        answer.usage.prompt_tokens,
        ms(t.prompt),
        answer.usage.completion_tokens,
        ms(t.total),
    );
}

/// Without a knowledge base: the question goes to the model as is.
async fn plain_answer(
    model: &dyn ChatModel,
    question: &str,
    request: &AskRequest,
    out: &mut impl Write,
) -> Result<()> {
    let messages = [Message::user(question)];
    let options = request.rag.options();
    let text = stream_plain(model, &messages, &options, request.json, out).await?;
    if request.json {
        let answer = PlainAnswer {
            question,
            text: &text,
            sources: &[],
            note: "no knowledge base: answered from the model alone",
        };
        serde_json::to_writer_pretty(&mut *out, &answer)?;
        writeln!(out)?;
    }
    Ok(())
}

async fn stream_plain(
    model: &dyn ChatModel,
    messages: &[Message],
    options: &GenerateOptions,
    quiet: bool,
    out: &mut impl Write,
) -> Result<String> {
    let mut stream = model.stream(messages, options).await?;
    let mut text = String::new();
    while let Some(event) = stream.next().await {
        match event? {
            ChatEvent::Token(piece) => {
                if !quiet {
                    write!(out, "{piece}")?;
                    out.flush()?;
                }
                text.push_str(&piece);
            }
            ChatEvent::ToolCall(_) => {}
            ChatEvent::Done { .. } => break,
        }
    }
    if !quiet {
        writeln!(out)?;
    }
    Ok(text.trim().to_string())
}

const CHAT_HELP: &str = "\
Commands: /sources  the sources of the last answer
          /reset    forget the conversation
          /help     this text
          /exit     leave (or Ctrl-D)
Ctrl-C cancels the answer being written, not the session.";

pub fn chat(
    config: &Config,
    args: &RagArgs,
    history: usize,
    verbose: bool,
    out: &mut impl Write,
) -> Result<()> {
    let kb = open_if_present(config)?;
    let model = chat_model(config, args.decoding.threads)?;
    let rt = runtime()?;
    let conversation = match &kb {
        Some(kb) => Some(ConversationalRagChain::new(
            rag_chain(config, kb, model.clone(), args)?,
            WindowMemory::new(history),
        )),
        None => None,
    };
    let mut plain_history = WindowMemory::new(history);
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        writeln!(
            out,
            "kb chat — {} over {}. /help for commands.",
            model.name(),
            match &kb {
                Some(_) => config.kb_dir.value.display().to_string(),
                None => "no knowledge base".to_string(),
            }
        )?;
    }
    let mut interrupts = Interrupts::new(rt)?;
    let mut last: Option<Answer> = None;
    let stdin = std::io::stdin();
    let mut lines = stdin.lock();
    loop {
        if interactive {
            write!(out, "\n› ")?;
            out.flush()?;
        }
        let mut line = String::new();
        if lines.read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim();
        match line {
            "" => continue,
            "/exit" | "/quit" => break,
            "/help" => {
                writeln!(out, "{CHAT_HELP}")?;
                continue;
            }
            "/reset" => {
                if let Some(c) = &conversation {
                    c.reset();
                }
                kb_chains::Memory::clear(&mut plain_history);
                last = None;
                writeln!(out, "(conversation forgotten)")?;
                continue;
            }
            "/sources" => {
                match &last {
                    Some(answer) if !answer.sources.is_empty() => print_sources(answer, out)?,
                    _ => writeln!(out, "(no sources yet)")?,
                }
                continue;
            }
            command if command.starts_with('/') => {
                writeln!(out, "unknown command {command}; /help lists them")?;
                continue;
            }
            _ => {}
        }
        interrupts.drain();
        let turn = async {
            match &conversation {
                Some(c) => {
                    let stream = c.stream(line).await?;
                    render(stream, false, args.show_context, out)
                        .await
                        .map(Some)
                }
                None => {
                    let mut messages = kb_chains::Memory::messages(&plain_history);
                    messages.push(Message::user(line));
                    let text = stream_plain(model.as_ref(), &messages, &args.options(), false, out)
                        .await?;
                    kb_chains::Memory::save(&mut plain_history, line, &text);
                    Ok(None)
                }
            }
        };
        let outcome = rt.block_on(async {
            tokio::select! {
                result = turn => result,
                _ = interrupts.recv() => {
                    eprintln!("\n(cancelled)");
                    Ok(None)
                }
            }
        });
        match outcome {
            Ok(Some(answer)) => {
                print_sources(&answer, out)?;
                if verbose {
                    print_timings(&answer);
                }
                last = Some(answer);
            }
            Ok(None) => {}
            Err(e) => eprintln!("error: {e:#}"),
        }
    }
    Ok(())
}

/// Ctrl-C during a `kb chat` session: it cancels the answer being written
/// (dropping its stream stops the generation), never the session.
struct Interrupts {
    #[cfg(unix)]
    signal: tokio::signal::unix::Signal,
}

impl Interrupts {
    /// Takes over SIGINT for the rest of the process.
    fn new(rt: &tokio::runtime::Runtime) -> Result<Self> {
        #[cfg(unix)]
        {
            let _context = rt.enter();
            let signal = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
                .context("listening for Ctrl-C")?;
            Ok(Interrupts { signal })
        }
        #[cfg(not(unix))]
        {
            let _ = rt;
            Ok(Interrupts {})
        }
    }

    /// Forgets a Ctrl-C pressed while no answer was being written.
    fn drain(&mut self) {
        #[cfg(unix)]
        while let Some(Some(())) = futures::FutureExt::now_or_never(self.signal.recv()) {}
    }

    /// The next Ctrl-C.
    async fn recv(&mut self) {
        #[cfg(unix)]
        self.signal.recv().await;
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}
