//! [`ReActAgent`]: reason, act with a tool, observe, repeat — until a final
//! answer or a budget runs out.

use std::pin::Pin;
use std::sync::Arc;

use futures::channel::mpsc;
use futures::{FutureExt, Stream, StreamExt, stream};
use kb_chains::Language;
use kb_core::{
    ChatEvent, ChatModel, FinishReason, GenerateOptions, Message, Result, ToolCall, Usage,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::reply::{Reply, parse_reply};
use crate::tools::{Observation, Toolbox};

/// How the agent asks for tool calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolMode {
    /// Native tool calling when the model supports it, else guided when
    /// the model can continue an answer and score words, else text.
    #[default]
    Auto,
    /// OpenAI-style `tools`, answered with tool calls.
    Native,
    /// The `Thought / Action / Observation` text protocol, for any model.
    Text,
    /// The text protocol with the model's answer started for it and its
    /// choices scored rather than written: it writes a thought, then the
    /// larger of its probabilities for "Action" and "Final" decides, the
    /// tool is the most probable of the toolbox's names, and it writes only
    /// the arguments' values. Every reply is well formed, so even a 135M
    /// model calls tools. Needs [`ChatModel::supports_prefill`] and
    /// [`ChatModel::score`] (kb's local models); the last allowed step is
    /// made to answer.
    Guided,
}

/// The protocol a run uses, once [`ToolMode::Auto`] is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    Native,
    Text,
    Guided,
}

/// Why a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The model gave a final answer.
    Answered,
    /// [`ReActAgent::max_steps`] model calls were made without one.
    MaxSteps,
    /// [`ReActAgent::token_budget`] tokens were generated without one.
    TokenBudget,
    /// The model's replies could not be read, [`ReActAgent::max_retries`]
    /// times in a row.
    Unparseable,
}

/// One model call of a run and what came of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentStep {
    /// The model's reasoning, when it wrote any.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub thought: String,
    /// The tool calls it asked for (more than one only with native tools).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calls: Vec<ToolCall>,
    /// What each call gave back, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub observations: Vec<Observation>,
    /// Why the reply could not be read, when it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parse_error: Option<String>,
    /// The model's raw text.
    pub output: String,
}

/// The result of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentOutcome {
    /// The final answer, when the model gave one.
    pub answer: Option<String>,
    /// Why the run ended.
    pub stop: StopReason,
    /// Every model call, in order.
    pub steps: Vec<AgentStep>,
    /// Tokens over all model calls.
    pub usage: Usage,
}

/// One event of a streamed run, in the order things happen; the last one is
/// [`AgentEvent::Finished`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentEvent {
    /// A new model call begins (step numbers count from 1).
    Step {
        /// Its number.
        number: usize,
    },
    /// Text as the model writes it.
    Token {
        /// The new text.
        text: String,
    },
    /// The model's reasoning for this step.
    Thought {
        /// The reasoning.
        text: String,
    },
    /// A tool is about to be called.
    ToolCall {
        /// The call.
        call: ToolCall,
    },
    /// A tool answered.
    Observation {
        /// The tool's name.
        tool: String,
        /// What it gave back.
        observation: Observation,
    },
    /// The reply could not be read; the model is told why and asked again.
    Retry {
        /// What was wrong.
        error: String,
    },
    /// The final answer.
    Answer {
        /// The answer.
        text: String,
    },
    /// The run is over.
    Finished {
        /// Its result.
        outcome: AgentOutcome,
    },
}

/// The stream returned by [`ReActAgent::stream`]; dropping it stops the run.
pub type AgentStream = Pin<Box<dyn Stream<Item = Result<AgentEvent>> + Send>>;

/// A ReAct agent: the model reasons, calls [tools](crate::tools), reads what
/// they return, and repeats until it gives a final answer.
///
/// Models with native tool calling get the tools as OpenAI `tools`; every
/// other model uses a text protocol (`Thought:`, `Action: {json}`,
/// `Observation:`, `Final Answer:`) read leniently: JSON is repaired, the
/// LangChain `Action Input:` layout and bare `tool(args)` calls are accepted,
/// and an unreadable reply is answered with the parse error and a reminder of
/// the format, up to [`max_retries`](ReActAgent::max_retries) times in a row.
/// Tool errors become observations. Budgets on model calls and generated
/// tokens bound every run.
///
/// ```
/// use std::sync::Arc;
/// use async_trait::async_trait;
/// use kb_agents::{ReActAgent, StopReason, tools::{Calculator, Toolbox}};
/// use kb_core::{ChatModel, ChatResponse, FinishReason, GenerateOptions, Message, Result, Role, Usage};
///
/// /// Calls the calculator, then answers with what it saw.
/// struct Scripted;
/// #[async_trait]
/// impl ChatModel for Scripted {
///     fn name(&self) -> &str { "scripted" }
///     async fn chat(&self, messages: &[Message], _: &GenerateOptions) -> Result<ChatResponse> {
///         let last = messages.last().map(|m| m.content.as_str()).unwrap_or("");
///         let text = match last.strip_prefix("Observation: ") {
///             None => "Thought: multiply\nAction: {\"tool\": \"calculator\", \"args\": {\"expression\": \"6*7\"}}".to_string(),
///             Some(seen) => format!("Final Answer: {seen}"),
///         };
///         Ok(ChatResponse { message: Message::assistant(text), finish_reason: FinishReason::Stop, usage: Usage::default(), timings: None })
///     }
/// }
///
/// # futures::executor::block_on(async {
/// let agent = ReActAgent::new(Arc::new(Scripted), Toolbox::new().with(Calculator));
/// let outcome = agent.run("What is 6 times 7?").await?;
/// assert_eq!(outcome.answer.as_deref(), Some("42"));
/// assert_eq!(outcome.stop, StopReason::Answered);
/// # Ok::<(), kb_core::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct ReActAgent {
    model: Arc<dyn ChatModel>,
    tools: Toolbox,
    mode: ToolMode,
    max_steps: usize,
    token_budget: usize,
    max_retries: usize,
    options: GenerateOptions,
    instructions: Option<String>,
    example: Option<Vec<Message>>,
    act_first: bool,
}

impl std::fmt::Debug for ReActAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReActAgent")
            .field("model", &self.model.name())
            .field("tools", &self.tools)
            .field("mode", &self.mode)
            .field("max_steps", &self.max_steps)
            .field("token_budget", &self.token_budget)
            .finish_non_exhaustive()
    }
}

/// Tokens one step may generate by default.
pub const STEP_TOKENS: usize = 256;

impl ReActAgent {
    /// An agent using `model` and `tools`: 8 steps, 2048 generated tokens, 2
    /// retries, greedy decoding, 256 tokens a step.
    pub fn new(model: Arc<dyn ChatModel>, tools: Toolbox) -> Self {
        ReActAgent {
            model,
            tools,
            mode: ToolMode::Auto,
            max_steps: 8,
            token_budget: 2048,
            max_retries: 2,
            options: GenerateOptions::default()
                .max_tokens(STEP_TOKENS)
                .repetition_penalty(1.1),
            instructions: None,
            example: None,
            act_first: true,
        }
    }

    /// Native or text tool calling (default [`ToolMode::Auto`]).
    pub fn mode(mut self, mode: ToolMode) -> Self {
        self.mode = mode;
        self
    }

    /// Most model calls in a run (default 8).
    pub fn max_steps(mut self, steps: usize) -> Self {
        self.max_steps = steps.max(1);
        self
    }

    /// Most tokens generated over a run (default 2048).
    pub fn token_budget(mut self, tokens: usize) -> Self {
        self.token_budget = tokens.max(1);
        self
    }

    /// Unreadable replies tolerated in a row (default 2).
    pub fn max_retries(mut self, retries: usize) -> Self {
        self.max_retries = retries;
        self
    }

    /// Decoding options of each step; `max_tokens` caps one step.
    pub fn options(mut self, options: GenerateOptions) -> Self {
        self.options = options;
        self
    }

    /// Replaces the opening of the system prompt (the tool list and the
    /// format follow it).
    pub fn instructions(mut self, text: impl Into<String>) -> Self {
        self.instructions = Some(text.into());
        self
    }

    /// In [guided](ToolMode::Guided) runs, whether the first step calls a
    /// tool rather than letting the model answer at once (default true:
    /// small models answer from memory when let, and an agent is run to use
    /// its tools).
    pub fn act_first(mut self, on: bool) -> Self {
        self.act_first = on;
        self
    }

    /// A worked exchange shown before the task in the text protocol (user
    /// task, assistant action, user observation, assistant answer). Small
    /// models follow a shown format far better than a described one. By
    /// default, when the toolbox has the `calculator`, a short calculation;
    /// an empty vector shows none.
    pub fn example(mut self, messages: Vec<Message>) -> Self {
        self.example = Some(messages);
        self
    }

    fn example_messages(&self) -> Vec<Message> {
        if let Some(messages) = &self.example {
            return messages.clone();
        }
        if !self.tools.names().contains(&"calculator") {
            return Vec::new();
        }
        vec![
            Message::user("What is 15% of 80?"),
            Message::assistant(
                "Thought: I need to compute 15% of 80.\n\
                 Action: {\"tool\": \"calculator\", \"args\": {\"expression\": \"0.15 * 80\"}}",
            ),
            Message::user("Observation: 12"),
            Message::assistant(
                "Thought: The calculator gave the result.\nFinal Answer: 15% of 80 is 12.",
            ),
        ]
    }

    fn style(&self) -> Style {
        match self.mode {
            ToolMode::Auto if self.model.supports_tools() => Style::Native,
            ToolMode::Auto if self.model.supports_prefill() => Style::Guided,
            ToolMode::Auto | ToolMode::Text => Style::Text,
            ToolMode::Native => Style::Native,
            ToolMode::Guided => Style::Guided,
        }
    }

    /// The system prompt for `task`.
    pub fn system_prompt(&self, task: &str) -> String {
        let opening = self.instructions.as_deref().unwrap_or(
            "You are a careful assistant. Solve the task step by step, using the tools when they help. \
             Never invent an observation: wait for it.",
        );
        let mut prompt = format!("{opening}\n\nTools:\n");
        for spec in self.tools.specs() {
            prompt.push_str(&format!("- {}: {}", spec.name, spec.description));
            if let Some(props) = spec.parameters.get("properties").and_then(Value::as_object) {
                let args: Vec<String> = props
                    .iter()
                    .map(|(k, v)| format!("\"{k}\": {}", v["type"].as_str().unwrap_or("value")))
                    .collect();
                prompt.push_str(&format!(" Arguments: {{{}}}", args.join(", ")));
            }
            prompt.push('\n');
        }
        if self.style() != Style::Native {
            prompt.push_str(
                "\nTo use a tool, reply with exactly:\n\
                 Thought: <what to do next>\n\
                 Action: {\"tool\": \"<tool name>\", \"args\": {<arguments>}}\n\n\
                 You will then get \"Observation: <result>\". When you know the answer, reply:\n\
                 Thought: <why you know>\n\
                 Final Answer: <the answer>\n",
            );
        }
        if Language::detect(task) == Language::Chinese {
            prompt.push_str("\n请用中文写最终答案。\n");
        }
        prompt
    }

    /// Runs the agent on `task` to the end.
    pub async fn run(&self, task: &str) -> Result<AgentOutcome> {
        self.drive(task, &mut |_| {}).await
    }

    /// Runs the agent on `task`, yielding every step as it happens.
    pub fn stream(&self, task: &str) -> AgentStream {
        let (tx, rx) = mpsc::unbounded();
        let agent = self.clone();
        let task = task.to_string();
        let driver = async move {
            let events = tx.clone();
            let result = agent
                .drive(&task, &mut |event| {
                    let _ = events.unbounded_send(Ok(event));
                })
                .await;
            match result {
                Ok(outcome) => {
                    let _ = tx.unbounded_send(Ok(AgentEvent::Finished { outcome }));
                }
                Err(e) => {
                    let _ = tx.unbounded_send(Err(e));
                }
            }
        };
        let driver = driver.into_stream().filter_map(|()| async { None });
        Box::pin(stream::select(rx, driver))
    }

    async fn drive(
        &self,
        task: &str,
        emit: &mut (dyn FnMut(AgentEvent) + Send),
    ) -> Result<AgentOutcome> {
        let style = self.style();
        let mut messages = vec![Message::system(self.system_prompt(task))];
        if style == Style::Text {
            messages.extend(self.example_messages());
        }
        messages.push(Message::user(task));
        let mut outcome = AgentOutcome {
            answer: None,
            stop: StopReason::MaxSteps,
            steps: Vec::new(),
            usage: Usage::default(),
        };
        let mut failures = 0;
        let mut history = Vec::new();
        let mut repeated = false;
        for number in 1..=self.max_steps {
            let left = self
                .token_budget
                .saturating_sub(outcome.usage.completion_tokens);
            if left == 0 {
                outcome.stop = StopReason::TokenBudget;
                return Ok(outcome);
            }
            emit(AgentEvent::Step { number });
            let mut options = self.options.clone();
            options.max_tokens = Some(options.max_tokens.unwrap_or(STEP_TOKENS).min(left));
            match style {
                Style::Native => options.tools = self.tools.specs(),
                Style::Text | Style::Guided => {
                    for stop in ["\nObservation:", "Observation:"] {
                        if !options.stop.iter().any(|s| s == stop) {
                            options.stop.push(stop.to_string());
                        }
                    }
                }
            }
            let (text, calls, reply) = if style == Style::Guided {
                let last = number == self.max_steps;
                let first = number == 1 && self.act_first;
                let (text, reply) = self
                    .guided_step(
                        &messages,
                        &options,
                        (first, last || repeated),
                        &mut outcome.usage,
                        emit,
                    )
                    .await?;
                (text, Vec::new(), Ok(reply))
            } else {
                let (text, calls, finish) = self
                    .generate(&messages, &options, &mut outcome.usage, emit)
                    .await?;
                let reply = match parse_reply(&text) {
                    // A native answer without the text protocol is the answer itself.
                    Err(_)
                        if style == Style::Native
                            && !text.trim().is_empty()
                            && finish != FinishReason::Length =>
                    {
                        Ok(Reply::Final {
                            thought: String::new(),
                            answer: text.trim().to_string(),
                        })
                    }
                    other => other,
                };
                (text, calls, reply)
            };
            let mut step = AgentStep {
                thought: String::new(),
                calls: Vec::new(),
                observations: Vec::new(),
                parse_error: None,
                output: text.clone(),
            };

            if !calls.is_empty() {
                // Native tool calls.
                failures = 0;
                step.thought = text.trim().to_string();
                if !step.thought.is_empty() {
                    emit(AgentEvent::Thought {
                        text: step.thought.clone(),
                    });
                }
                let mut assistant = Message::assistant(text.clone());
                assistant.tool_calls = calls.clone();
                messages.push(assistant);
                for call in calls {
                    let seen = self.call_tool(&call, &mut history, emit).await;
                    messages.push(Message::tool(call.id.clone(), seen.text.clone()));
                    step.calls.push(call);
                    step.observations.push(seen);
                }
                outcome.steps.push(step);
                continue;
            }

            match reply {
                Ok(Reply::Final { thought, answer }) => {
                    step.thought = thought;
                    if !step.thought.is_empty() {
                        emit(AgentEvent::Thought {
                            text: step.thought.clone(),
                        });
                    }
                    emit(AgentEvent::Answer {
                        text: answer.clone(),
                    });
                    outcome.steps.push(step);
                    outcome.answer = Some(answer);
                    outcome.stop = StopReason::Answered;
                    return Ok(outcome);
                }
                Ok(Reply::Action {
                    thought,
                    tool,
                    args,
                }) => {
                    failures = 0;
                    step.thought = thought;
                    if !step.thought.is_empty() {
                        emit(AgentEvent::Thought {
                            text: step.thought.clone(),
                        });
                    }
                    let call = ToolCall {
                        id: format!("call_{number}"),
                        name: tool,
                        arguments: args,
                    };
                    let before = history.len();
                    let seen = self.call_tool(&call, &mut history, emit).await;
                    repeated = history.len() == before;
                    messages.push(Message::assistant(text.trim_end()));
                    messages.push(Message::user(format!("Observation: {}", seen.text)));
                    step.calls.push(call);
                    step.observations.push(seen);
                    outcome.steps.push(step);
                }
                Err(error) => {
                    failures += 1;
                    emit(AgentEvent::Retry {
                        error: error.clone(),
                    });
                    step.parse_error = Some(error.clone());
                    outcome.steps.push(step);
                    if failures > self.max_retries {
                        outcome.stop = StopReason::Unparseable;
                        return Ok(outcome);
                    }
                    messages.push(Message::assistant(text.trim_end()));
                    messages.push(Message::user(format!(
                        "Observation: I could not read that: {error}. Reply with \
                         \"Thought: …\" and then either \"Action: {{\"tool\": \"<name>\", \"args\": {{…}}}}\" \
                         or \"Final Answer: …\"."
                    )));
                }
            }
        }
        outcome.stop = if outcome.usage.completion_tokens >= self.token_budget {
            StopReason::TokenBudget
        } else {
            StopReason::MaxSteps
        };
        Ok(outcome)
    }

    /// One generation, streamed out as tokens: its text, tool calls and why
    /// it ended.
    async fn generate(
        &self,
        messages: &[Message],
        options: &GenerateOptions,
        usage: &mut Usage,
        emit: &mut (dyn FnMut(AgentEvent) + Send),
    ) -> Result<(String, Vec<ToolCall>, FinishReason)> {
        let mut events = self.model.stream(messages, options).await?;
        let mut text = String::new();
        let mut calls = Vec::new();
        let mut finish = FinishReason::Stop;
        while let Some(event) = events.next().await {
            match event? {
                ChatEvent::Token(t) => {
                    text.push_str(&t);
                    emit(AgentEvent::Token { text: t });
                }
                ChatEvent::ToolCall(call) => calls.push(call),
                ChatEvent::Done {
                    usage: used,
                    finish: f,
                    ..
                } => {
                    usage.prompt_tokens += used.prompt_tokens;
                    usage.cached_prompt_tokens += used.cached_prompt_tokens;
                    usage.completion_tokens += used.completion_tokens;
                    finish = f;
                }
            }
        }
        Ok((text, calls, finish))
    }

    /// One guided step (see [`ToolMode::Guided`]): the assistant's text and
    /// what it asks for.
    async fn guided_step(
        &self,
        messages: &[Message],
        options: &GenerateOptions,
        (first, last): (bool, bool),
        usage: &mut Usage,
        emit: &mut (dyn FnMut(AgentEvent) + Send),
    ) -> Result<(String, Reply)> {
        let budget = options.max_tokens.unwrap_or(STEP_TOKENS);
        let mut text = String::new();
        let say = |text: &mut String, piece: &str, emit: &mut (dyn FnMut(AgentEvent) + Send)| {
            text.push_str(piece);
            emit(AgentEvent::Token {
                text: piece.to_string(),
            });
        };
        let continued = |text: &str| {
            let mut conversation = messages.to_vec();
            conversation.push(Message::assistant(text));
            conversation
        };
        let line = |max: usize, stops: &[&str]| {
            let mut o = options.clone();
            o.max_tokens = Some(max.min(budget).max(1));
            o.stop = stops.iter().map(|s| s.to_string()).collect();
            o
        };

        say(&mut text, "Thought:", emit);
        let (thought, _, _) = self
            .generate(
                &continued(&text),
                &line(96, &["\n", "Action:", "Final Answer:"]),
                usage,
                emit,
            )
            .await?;
        text.push_str(&thought);
        let thought = thought.trim().to_string();
        say(&mut text, "\n", emit);

        let act = !last
            && !self.tools.is_empty()
            && (first || {
                let scores = self
                    .model
                    .score(
                        &continued(&text),
                        &["Action".to_string(), "Final".to_string()],
                    )
                    .await?;
                scores.first() >= scores.get(1)
            });
        if !act {
            say(&mut text, "Final Answer:", emit);
            let stops = ["\nAction:", "\nThought:", "\nObservation:"];
            let (answer, _, _) = self
                .generate(&continued(&text), &line(budget, &stops), usage, emit)
                .await?;
            text.push_str(&answer);
            let answer = answer.trim().to_string();
            return Ok((text, Reply::Final { thought, answer }));
        }

        say(&mut text, "Action: {\"tool\": \"", emit);
        let specs = self.tools.specs();
        let names: Vec<String> = specs.iter().map(|s| format!("{}\"", s.name)).collect();
        let scores = self.model.score(&continued(&text), &names).await?;
        // Per token, so that a name split into more tokens is not
        // penalised for it.
        let base = self.model.count_tokens(&continued(&text))?;
        let mut per_token = Vec::with_capacity(scores.len());
        for (score, name) in scores.iter().zip(&names) {
            let with = self
                .model
                .count_tokens(&continued(&format!("{text}{name}")))?;
            let n = match (base, with) {
                (Some(b), Some(w)) if w > b => w - b,
                _ => 1,
            };
            per_token.push(score / n as f32);
        }
        let best = per_token
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(i, _)| i);
        tracing::debug!(?names, ?scores, ?per_token, "guided tool choice");
        let spec = &specs[best];
        say(&mut text, &format!("{}\", \"args\": {{", spec.name), emit);
        let args = match single_string_argument(&spec.parameters) {
            Some(key) => {
                say(&mut text, &format!("\"{key}\": \""), emit);
                let (value, _, _) = self
                    .generate(&continued(&text), &line(64, &["\"", "\n"]), usage, emit)
                    .await?;
                text.push_str(&value);
                say(&mut text, "\"}}", emit);
                serde_json::json!({ key: value.trim() })
            }
            None => {
                let (rest, _, _) = self
                    .generate(&continued(&text), &line(128, &["\n"]), usage, emit)
                    .await?;
                text.push_str(&rest);
                kb_chains::parse_json::<Value>(&format!("{{{rest}"))
                    .unwrap_or_else(|_| Value::String(rest.trim().to_string()))
            }
        };
        Ok((
            text,
            Reply::Action {
                thought,
                tool: spec.name.clone(),
                args,
            },
        ))
    }

    /// Calls a tool, or, for a call made before with the same arguments,
    /// repeats its result with a nudge to move on (`history` holds the calls
    /// so far).
    async fn call_tool(
        &self,
        call: &ToolCall,
        history: &mut Vec<(ToolCall, Observation)>,
        emit: &mut (dyn FnMut(AgentEvent) + Send),
    ) -> Observation {
        emit(AgentEvent::ToolCall { call: call.clone() });
        let earlier = history.iter().find(|(c, _)| {
            c.name.eq_ignore_ascii_case(&call.name) && c.arguments == call.arguments
        });
        let seen = match earlier {
            Some((_, seen)) => Observation {
                text: format!(
                    "{}\n(You already called {} with these arguments and got this result; use it, \
                     try other arguments, or give the Final Answer.)",
                    seen.text, call.name
                ),
                error: seen.error,
            },
            None => {
                let seen = self.tools.call(&call.name, call.arguments.clone()).await;
                history.push((call.clone(), seen.clone()));
                seen
            }
        };
        tracing::debug!(tool = %call.name, error = seen.error, "tool called");
        emit(AgentEvent::Observation {
            tool: call.name.clone(),
            observation: seen.clone(),
        });
        seen
    }
}

/// The name of a schema's only required property, when it is a string: its
/// value alone is then what a guided step has the model write.
fn single_string_argument(schema: &Value) -> Option<String> {
    let required = schema.get("required")?.as_array()?;
    let [name] = required.as_slice() else {
        return None;
    };
    let name = name.as_str()?;
    let kind = schema.get("properties")?.get(name)?.get("type")?.as_str()?;
    (kind == "string").then(|| name.to_string())
}
