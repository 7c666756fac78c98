//! `kb generate`: one prompt, one streamed answer, from the local GGUF model
//! or an OpenAI-compatible server.

use std::io::Write;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use kb_core::{ChatEvent, ChatModel, FinishReason, GenerateOptions, Message};
use kb_llm::{GgufModel, LoadOptions, OpenAiChat};
use serde::Serialize;

use crate::commands::argument_or_stdin;
use crate::config::Config;

/// What `kb generate` was asked to do.
pub struct Request {
    pub prompt: Option<String>,
    pub system: Option<String>,
    pub raw: bool,
    pub options: GenerateOptions,
    pub threads: Option<usize>,
    pub json: bool,
    pub verbose: bool,
}

/// A model location: a URL means an OpenAI-compatible server, with the model
/// name after `#` (`http://localhost:11434/v1#qwen2.5:0.5b`).
pub fn is_remote(llm: &str) -> bool {
    kb_llm::is_remote(llm)
}

/// The remote chat model `llm` names; the API key comes from `KB_API_KEY`
/// or `OPENAI_API_KEY`.
pub fn remote_model(llm: &str) -> Result<OpenAiChat> {
    Ok(kb_llm::remote(llm)?)
}

/// How local models are loaded: `KB_PROMPT_WEIGHTS`, `KB_DEVICE`, and
/// `threads` or else `KB_THREADS`.
pub fn load_options(threads: Option<usize>) -> Result<LoadOptions> {
    let mut options = LoadOptions::default().dense_prompt_weights(dense_prompt_weights()?);
    if let Some(backend) = backend_from_env()? {
        options = options.backend(backend);
    }
    if let Some(threads) = threads.or_else(threads_from_env) {
        options = options.threads(threads);
    }
    Ok(options)
}

/// Loads the configured local model.
pub fn load_local(config: &Config, threads: Option<usize>) -> Result<GgufModel> {
    let path = config.model_cache().resolve(&config.llm.value)?;
    GgufModel::load(&path, &load_options(threads)?)
        .with_context(|| format!("loading the chat model from {}", path.display()))
}

/// `KB_DEVICE`: where the chat model runs: `cpu` (kb's own kernels),
/// `cuda` or `cuda:N` (a GPU; kb built with `--features cuda`), or
/// `candle-cpu`. Unset: a GPU when there is one and kb can use it, else the CPU.
pub fn backend_from_env() -> Result<Option<kb_llm::Backend>> {
    match std::env::var("KB_DEVICE").ok().as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(value) => value
            .parse()
            .map(Some)
            .map_err(|e: String| anyhow::anyhow!("KB_DEVICE: {e}")),
    }
}

/// `KB_PROMPT_WEIGHTS`: `quantized` (the default: the least memory, and
/// prompts run on 8-bit integer products where the processor has AVX-512
/// VNNI) or `dense` (f32 copies of the layer weights and f32 prompt
/// arithmetic, which reproduces llama.cpp's greedy tokens exactly; about
/// twice the memory).
pub fn dense_prompt_weights() -> Result<bool> {
    match std::env::var("KB_PROMPT_WEIGHTS")
        .ok()
        .as_deref()
        .map(str::trim)
    {
        None | Some("") | Some("quantized") => Ok(false),
        Some("dense") => Ok(true),
        Some(other) => bail!("KB_PROMPT_WEIGHTS is {other:?}; use quantized or dense"),
    }
}

/// `KB_THREADS`, when set to a number.
pub fn threads_from_env() -> Option<usize> {
    std::env::var("KB_THREADS").ok()?.trim().parse().ok()
}

#[derive(Serialize)]
struct JsonOutput<'a> {
    model: &'a str,
    text: &'a str,
    finish_reason: FinishReason,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_ids: Option<&'a [u32]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ids: Option<&'a [u32]>,
    prompt_tokens: usize,
    cached_prompt_tokens: usize,
    completion_tokens: usize,
    prompt_ms: f64,
    generation_ms: f64,
    prompt_tokens_per_second: Option<f64>,
    tokens_per_second: Option<f64>,
}

pub fn run(config: &Config, request: Request, out: &mut impl Write) -> Result<()> {
    let prompt = argument_or_stdin(request.prompt.as_deref(), "prompt")?;
    let mut messages = Vec::new();
    if let Some(system) = &request.system {
        messages.push(Message::system(system.clone()));
    }
    messages.push(Message::user(prompt.clone()));
    if is_remote(&config.llm.value) {
        if request.raw {
            bail!("--raw needs a local model: a server applies its own chat template");
        }
        return run_remote(config, &messages, &request, out);
    }

    let model = load_local(config, request.threads)?;
    let prompt_ids = if request.raw {
        model.tokenizer().encode_prompt(&prompt)?
    } else {
        model.chat_prompt(&messages)?
    };
    let mut session = model.session();
    let mut write_error = None;
    let generation = model.generate(&mut session, &prompt_ids, &request.options, |text| {
        if request.json {
            return true;
        }
        match write!(out, "{text}").and_then(|_| out.flush()) {
            Ok(()) => true,
            Err(e) => {
                write_error = Some(e);
                false
            }
        }
    })?;
    if let Some(e) = write_error {
        return Err(e.into());
    }
    if request.json {
        let output = JsonOutput {
            model: model.name(),
            text: &generation.text,
            finish_reason: generation.finish,
            prompt_ids: Some(&prompt_ids),
            ids: Some(&generation.ids),
            prompt_tokens: generation.prompt_tokens,
            cached_prompt_tokens: generation.cached_tokens,
            completion_tokens: generation.ids.len(),
            prompt_ms: generation.prompt_time.as_secs_f64() * 1e3,
            generation_ms: generation.generation_time.as_secs_f64() * 1e3,
            prompt_tokens_per_second: Some(generation.prompt_tokens_per_second()),
            tokens_per_second: Some(generation.tokens_per_second()),
        };
        serde_json::to_writer_pretty(&mut *out, &output)?;
    }
    writeln!(out)?;
    if request.verbose {
        eprintln!(
            "{}: prompt {} tokens at {:.1} tok/s, generated {} tokens at {:.1} tok/s ({} threads), finish: {:?}",
            model.name(),
            generation.prompt_tokens,
            generation.prompt_tokens_per_second(),
            generation.ids.len(),
            generation.tokens_per_second(),
            model.threads(),
            generation.finish
        );
    }
    Ok(())
}

fn run_remote(
    config: &Config,
    messages: &[Message],
    request: &Request,
    out: &mut impl Write,
) -> Result<()> {
    let model = remote_model(&config.llm.value)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let started = Instant::now();
        let mut stream = model.stream(messages, &request.options).await?;
        let mut text = String::new();
        let mut first_token = None;
        while let Some(event) = stream.next().await {
            match event? {
                ChatEvent::Token(piece) => {
                    first_token.get_or_insert_with(|| started.elapsed());
                    if !request.json {
                        write!(out, "{piece}")?;
                        out.flush()?;
                    }
                    text.push_str(&piece);
                }
                ChatEvent::ToolCall(_) => {}
                ChatEvent::Done { usage, finish, .. } => {
                    let prompt_time = first_token.unwrap_or_default();
                    let generation_time = started.elapsed() - prompt_time;
                    if request.json {
                        let output = JsonOutput {
                            model: model.name(),
                            text: &text,
                            finish_reason: finish,
                            prompt_ids: None,
                            ids: None,
                            prompt_tokens: usage.prompt_tokens,
                            cached_prompt_tokens: usage.cached_prompt_tokens,
                            completion_tokens: usage.completion_tokens,
                            prompt_ms: prompt_time.as_secs_f64() * 1e3,
                            generation_ms: generation_time.as_secs_f64() * 1e3,
                            prompt_tokens_per_second: None,
                            tokens_per_second: None,
                        };
                        serde_json::to_writer_pretty(&mut *out, &output)?;
                    }
                    writeln!(out)?;
                    if request.verbose {
                        eprintln!(
                            "{}: first token after {:.0} ms, {} tokens in {:.0} ms",
                            model.name(),
                            prompt_time.as_secs_f64() * 1e3,
                            usage.completion_tokens,
                            generation_time.as_secs_f64() * 1e3
                        );
                    }
                }
            }
        }
        Ok(())
    })
}
