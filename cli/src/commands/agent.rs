//! `kb agent`: a ReAct agent with the knowledge base, a calculator and,
//! when asked, files.

use std::io::Write;

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use kb_agents::tools::{Calculator, KbSearch, ReadFile, Toolbox};
use kb_agents::{AgentEvent, AgentOutcome, ReActAgent, ToolMode};

use crate::args::{ANSWER_REPEAT_PENALTY, AgentArgs};
use crate::commands::argument_or_stdin;
use crate::commands::ask::{chat_model, open_if_present};
use crate::commands::kb::runtime;
use crate::config::Config;

fn protocol(name: &str) -> Result<ToolMode> {
    Ok(match name {
        "auto" => ToolMode::Auto,
        "guided" => ToolMode::Guided,
        "text" => ToolMode::Text,
        "native" => ToolMode::Native,
        other => bail!("--protocol {other:?}: use auto, guided, text or native"),
    })
}

/// The agent's tools: the knowledge base when there is one, the calculator,
/// and files only when `--files DIR` names a folder. Nothing reaches the
/// network, and nothing outside DIR can be read: a retrieved document that
/// tells the agent to read a file finds no tool to do it with unless the
/// user granted one.
fn toolbox(
    kb: Option<&kb_retrievers::KnowledgeBase>,
    k: usize,
    files: Option<&std::path::Path>,
) -> Result<Toolbox> {
    let mut tools = Toolbox::new();
    if let Some(kb) = kb {
        tools = tools.with(KbSearch::new(kb.retriever(None)).k(k.max(1)));
    }
    tools = tools.with(Calculator);
    if let Some(dir) = files {
        let reader = ReadFile::new(dir)
            .with_context(|| format!("--files {}: it must be an existing folder", dir.display()))?;
        tools = tools.with(reader);
    }
    Ok(tools)
}

/// Runs the agent on the task, printing each step as it happens.
pub fn run(config: &Config, request: &AgentArgs, out: &mut impl Write) -> Result<()> {
    let task = argument_or_stdin(request.task.as_deref(), "task")?
        .trim()
        .to_string();
    if request.max_steps == 0 {
        bail!("--max-steps must be at least 1");
    }
    let mode = protocol(&request.protocol)?;
    let kb = open_if_present(config)?;
    let tools = toolbox(kb.as_ref(), request.k, request.files.as_deref())?;
    let model = chat_model(config, request.decoding.threads)?;
    let mut options = request.decoding.options_with_penalty(ANSWER_REPEAT_PENALTY);
    options.max_tokens = Some(
        request
            .decoding
            .max_tokens
            .unwrap_or(kb_agents::STEP_TOKENS),
    );
    let agent = ReActAgent::new(model, tools)
        .mode(mode)
        .max_steps(request.max_steps)
        .token_budget(request.token_budget)
        .options(options);
    let rt = runtime()?;
    let outcome = rt.block_on(async {
        let mut events = agent.stream(&task);
        let mut outcome = None;
        while let Some(event) = events.next().await {
            let event = event?;
            if request.json {
                if !matches!(event, AgentEvent::Token { .. }) {
                    serde_json::to_writer(&mut *out, &event)?;
                    writeln!(out)?;
                }
            } else {
                render(&event, out)?;
            }
            out.flush()?;
            if let AgentEvent::Finished { outcome: o } = event {
                outcome = Some(o);
            }
        }
        outcome.context("the agent stopped without a result")
    })?;
    if outcome.answer.is_none() && !request.json {
        eprintln!("{}", why_no_answer(&outcome));
    }
    Ok(())
}

fn render(event: &AgentEvent, out: &mut impl Write) -> Result<()> {
    match event {
        AgentEvent::Step { number } => writeln!(out, "── step {number}")?,
        AgentEvent::Token { text } => write!(out, "{text}")?,
        AgentEvent::ToolCall { call } => writeln!(out, "\n→ {} {}", call.name, call.arguments)?,
        AgentEvent::Observation { observation, .. } => {
            let text: String = observation.text.chars().take(600).collect();
            let more = if text.len() < observation.text.len() {
                " …"
            } else {
                ""
            };
            let label = if observation.error { "error" } else { "result" };
            writeln!(out, "← {label}: {}{more}", text.trim())?;
        }
        AgentEvent::Retry { error } => {
            writeln!(out, "\n(could not read the reply: {error}; asking again)")?
        }
        AgentEvent::Thought { .. } => {}
        AgentEvent::Answer { .. } => writeln!(out)?,
        AgentEvent::Finished { outcome } => {
            if let Some(answer) = &outcome.answer {
                writeln!(out, "\nAnswer: {answer}")?;
            }
            let calls: usize = outcome.steps.iter().map(|s| s.calls.len()).sum();
            writeln!(
                out,
                "({} steps, {calls} tool calls, {} tokens generated)",
                outcome.steps.len(),
                outcome.usage.completion_tokens
            )?;
        }
    }
    Ok(())
}

fn why_no_answer(outcome: &AgentOutcome) -> String {
    use kb_agents::StopReason::*;
    match outcome.stop {
        MaxSteps => "no answer: the step limit was reached; raise --max-steps or simplify the task".into(),
        TokenBudget => "no answer: the token budget ran out; raise --token-budget".into(),
        Unparseable => "no answer: the model's replies could not be read as actions; try --protocol guided or a larger model".into(),
        Answered => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_a_tool_only_when_granted() {
        let tools = toolbox(None, 4, None).expect("tools");
        assert_eq!(tools.names(), ["calculator"]);
        let dir = std::env::temp_dir();
        let tools = toolbox(None, 4, Some(&dir)).expect("tools");
        assert_eq!(tools.names(), ["calculator", "read_file"]);
        assert!(toolbox(None, 4, Some(std::path::Path::new("/no/such/dir"))).is_err());
    }
}
