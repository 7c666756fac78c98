//! The `kb` binary: parses arguments, loads the configuration, calls the kb
//! libraries and renders their results. No logic of its own lives here.

// A binary exports nothing; `pub` inside it means "shared between modules".
#![allow(unreachable_pub)]

mod args;
mod commands;
mod config;
mod serve;

use std::io::{self, Write};
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

use crate::args::{AgentArgs, Cli, Command, ConfigCommand, EvalCommand, ModelsCommand, SearchArgs};
use crate::config::{Config, Layer};

fn main() -> ExitCode {
    explain_bus_errors();
    let cli = Cli::parse();
    init_logging(cli.global.verbose);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            let _ = writeln!(io::stderr(), "error: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// Reading or writing a memory-mapped file (the vector store's pages and
/// log, model weights) that the disk cannot back raises SIGBUS, which would
/// end the process with a bare "Bus error". Says what happened instead, and
/// exits like any error. A knowledge base survives this as it survives a
/// kill: the next `kb ingest` repairs it.
fn explain_bus_errors() {
    extern "C" fn on_bus_error(_: libc::c_int) {
        const MESSAGE: &[u8] =
            b"error: a memory-mapped file could not be read or written: the disk \
holding the knowledge base is probably full, or a model or index file was cut short while in use. \
Free some space (or restore the file) and run the command again; an interrupted ingest is \
repaired by the next one.\n";
        // SAFETY: write(2) and _exit(2) are async-signal-safe; the message
        // is a static buffer.
        unsafe {
            libc::write(2, MESSAGE.as_ptr().cast(), MESSAGE.len());
            libc::_exit(2);
        }
    }
    // SAFETY: installs a handler that only calls async-signal-safe functions.
    unsafe {
        libc::signal(
            libc::SIGBUS,
            on_bus_error as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
}

fn run(cli: Cli) -> Result<()> {
    let env = Layer::from_env(|name| std::env::var(name).ok())?;
    let config_file = cli.global.config.clone().or_else(|| {
        std::env::var_os("KB_CONFIG")
            .filter(|v| !v.is_empty())
            .map(Into::into)
    });
    let mut flags = cli.global.layer();
    match &cli.command {
        Command::Generate {
            model: Some(model), ..
        } => flags.llm = Some(model.clone()),
        Command::Embed {
            model: Some(model), ..
        } => flags.embedder = Some(model.clone()),
        Command::Ask { rag, .. } | Command::Chat { rag, .. } if rag.model.is_some() => {
            flags.llm = rag.model.clone();
        }
        Command::Eval(EvalCommand::Answers { rag, .. }) if rag.model.is_some() => {
            flags.llm = rag.model.clone();
        }
        Command::Agent(AgentArgs {
            model: Some(model), ..
        }) => flags.llm = Some(model.clone()),
        _ => {}
    }
    let mut config = Config::load(flags, env, config_file)?;
    // `--fusion` outranks kb.toml for the one command.
    if let Command::Search(SearchArgs {
        fusion: Some(method),
        ..
    })
    | Command::Eval(EvalCommand::Retrieval {
        fusion: Some(method),
        ..
    }) = &cli.command
    {
        config.retrieval.value.fusion = *method;
    }
    let stdout = io::stdout();
    let mut out = stdout.lock();
    match cli.command {
        Command::Models(ModelsCommand::Fetch { names, all, json }) => {
            commands::models::fetch(&config, &names, all, json, &mut out)
        }
        Command::Models(ModelsCommand::List { json }) => {
            commands::models::list(&config, json, &mut out)
        }
        Command::Config(ConfigCommand::Show { json }) => {
            commands::config::show(&config, json, &mut out)
        }
        Command::Ingest(args) => commands::kb::ingest(&config, &args, &mut out),
        Command::Search(args) => commands::kb::search(&config, &args, &mut out),
        Command::List { json } => commands::kb::list(&config, json, &mut out),
        Command::Delete { sources, json } => {
            commands::kb::delete(&config, &sources, json, &mut out)
        }
        Command::Stats { json } => commands::kb::stats(&config, json, &mut out),
        Command::Check { json } => commands::kb::check(&config, json, &mut out),
        Command::Eval(EvalCommand::Retrieval {
            dataset,
            mode,
            rerank,
            json,
            fusion: _,
        }) => {
            let modes = if mode == "all" {
                vec![
                    kb_retrievers::SearchMode::Vector,
                    kb_retrievers::SearchMode::Bm25,
                    kb_retrievers::SearchMode::Hybrid,
                ]
            } else {
                vec![mode.parse()?]
            };
            commands::eval::retrieval(&config, &dataset, &modes, rerank.as_deref(), json, &mut out)
        }
        Command::Eval(EvalCommand::Answers {
            dataset,
            limit,
            rag,
            json,
        }) => commands::eval::answers(&config, &dataset, &rag, limit, json, &mut out),
        Command::Generate {
            prompt,
            system,
            raw,
            model: _,
            decoding,
            json,
        } => commands::generate::run(
            &config,
            commands::generate::Request {
                prompt,
                system,
                raw,
                options: decoding.options(),
                threads: decoding.threads,
                json,
                verbose: cli.global.verbose > 0,
            },
            &mut out,
        ),
        Command::Embed {
            texts, query, json, ..
        } => commands::embed::run(&config, texts, query, json, &mut out),
        Command::Ask {
            question,
            rag,
            json,
        } => commands::ask::ask(
            &config,
            &commands::ask::AskRequest {
                question,
                rag,
                json,
                verbose: cli.global.verbose > 0,
            },
            &mut out,
        ),
        Command::Chat { rag, history } => {
            commands::ask::chat(&config, &rag, history, cli.global.verbose > 0, &mut out)
        }
        Command::Serve(args) => serve::run(&config, &args),
        Command::Agent(args) => commands::agent::run(&config, &args, &mut out),
    }?;
    out.flush()?;
    Ok(())
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    // The embedded Qdrant engine warns about server-only settings it does
    // not use; its errors still show.
    let default = format!("{default},qdrant_edge=error");
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .init();
}

/// Whether the error is stdout closing early (`kb models list | head -1`).
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        let kind = cause
            .downcast_ref::<io::Error>()
            .map(io::Error::kind)
            .or_else(|| cause.downcast_ref::<serde_json::Error>()?.io_error_kind());
        kind == Some(io::ErrorKind::BrokenPipe)
    })
}
