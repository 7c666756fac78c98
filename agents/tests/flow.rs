//! Control flow of the agents with scripted models (no real model here; the
//! real-model runs are the examples' tests): JSON repair and retries, budgets,
//! tool errors as observations, native tool calls, streaming order, BFS/DFS
//! tree search and self-consistency voting.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::StreamExt;
use kb_agents::tools::{Calculator, FnTool, Params, ReadFile, Toolbox};
use kb_agents::tot::{
    Budget, FnEvaluator, FnProposer, LlmEvaluator, SearchStop, Strategy, TreeOfThoughts,
};
use kb_agents::{
    AgentEvent, ChainOfThought, Metered, ReActAgent, SelfConsistency, StopReason, ToolMode,
};
use kb_core::{
    ChatModel, ChatResponse, Error, FinishReason, GenerateOptions, Message, Result, Role, ToolCall,
    Usage,
};
use serde_json::json;

/// One call as the model saw it.
type Call = (Vec<Message>, GenerateOptions);

type Reply = dyn Fn(usize, &[Message], &GenerateOptions) -> Message + Send + Sync;

/// A model that answers call `n` with `reply(n, messages, options)` and logs
/// what it was sent.
#[derive(Clone)]
struct Scripted {
    reply: Arc<Reply>,
    seen: Arc<Mutex<Vec<Call>>>,
    native: bool,
    can_score: bool,
}

impl Scripted {
    fn new(
        reply: impl Fn(usize, &[Message], &GenerateOptions) -> Message + Send + Sync + 'static,
    ) -> Self {
        Scripted {
            reply: Arc::new(reply),
            seen: Arc::default(),
            native: false,
            can_score: false,
        }
    }

    /// Answers the n-th call with the n-th text (the last one repeats).
    fn texts(texts: &[&str]) -> Self {
        let texts: Vec<String> = texts.iter().map(|s| s.to_string()).collect();
        Self::new(move |n, _, _| Message::assistant(texts[n.min(texts.len() - 1)].clone()))
    }

    fn calls(&self) -> Vec<Call> {
        self.seen.lock().expect("lock").clone()
    }
}

#[async_trait]
impl ChatModel for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }

    fn supports_tools(&self) -> bool {
        self.native
    }

    async fn chat(&self, messages: &[Message], options: &GenerateOptions) -> Result<ChatResponse> {
        let n = {
            let mut seen = self.seen.lock().expect("lock");
            seen.push((messages.to_vec(), options.clone()));
            seen.len() - 1
        };
        let message = (self.reply)(n, messages, options);
        let finish = if message.tool_calls.is_empty() {
            FinishReason::Stop
        } else {
            FinishReason::ToolCalls
        };
        Ok(ChatResponse {
            message,
            finish_reason: finish,
            usage: Usage {
                prompt_tokens: 100,
                cached_prompt_tokens: 60,
                completion_tokens: 40,
            },
            timings: None,
        })
    }

    async fn score(&self, messages: &[Message], continuations: &[String]) -> Result<Vec<f32>> {
        if !self.can_score {
            return Err(Error::Unsupported("no scoring".into()));
        }
        // "sure" when the last message mentions 24, else "impossible".
        let sure = messages.last().is_some_and(|m| m.content.contains("24"));
        Ok(continuations
            .iter()
            .map(|c| match (c.as_str(), sure) {
                ("sure", true) | ("impossible", false) => 0.0,
                _ => -20.0,
            })
            .collect())
    }
}

fn calculator_box() -> Toolbox {
    Toolbox::new().with(Calculator)
}

fn last_user(messages: &[Message]) -> String {
    messages
        .iter()
        .rev()
        .find(|m| m.role != Role::Assistant)
        .map(|m| m.content.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn malformed_json_is_repaired() {
    let model = Scripted::new(|n, messages, _| {
        Message::assistant(match n {
            0 => "Thought: I should add.\nAction: ```json\n{tool: 'calculator', args: {expression: '2+3',},}\n```".to_string(),
            _ => format!("Thought: done\nFinal Answer: {}", last_user(messages).trim_start_matches("Observation: ")),
        })
    });
    let outcome = ReActAgent::new(Arc::new(model.clone()), calculator_box())
        .run("What is 2 + 3?")
        .await
        .expect("run");
    assert_eq!(outcome.stop, StopReason::Answered);
    assert_eq!(outcome.answer.as_deref(), Some("5"));
    assert_eq!(
        outcome.steps[0].calls[0].arguments,
        json!({"expression": "2+3"})
    );
    assert_eq!(outcome.steps[0].thought, "I should add.");
    // The text protocol stops before an invented observation.
    let (_, options) = &model.calls()[0];
    assert!(options.stop.iter().any(|s| s.contains("Observation:")));
    assert!(options.tools.is_empty());
    assert_eq!(outcome.usage.completion_tokens, 80);
}

#[tokio::test]
async fn an_unreadable_reply_is_retried_with_the_error() {
    let model = Scripted::texts(&[
        "I think the answer is probably five or so.",
        "Final Answer: 5",
    ]);
    let outcome = ReActAgent::new(Arc::new(model.clone()), calculator_box())
        .run("What is 2 + 3?")
        .await
        .expect("run");
    assert_eq!(outcome.answer.as_deref(), Some("5"));
    assert!(outcome.steps[0].parse_error.is_some());
    let retry = last_user(&model.calls()[1].0);
    assert!(
        retry.contains("could not read") && retry.contains("Final Answer"),
        "{retry}"
    );

    let hopeless = Scripted::texts(&["no format at all"]);
    let outcome = ReActAgent::new(Arc::new(hopeless.clone()), calculator_box())
        .max_retries(2)
        .run("What is 2 + 3?")
        .await
        .expect("run");
    assert_eq!(outcome.stop, StopReason::Unparseable);
    assert_eq!(outcome.answer, None);
    assert_eq!(hopeless.calls().len(), 3, "the first try and two retries");
}

#[tokio::test]
async fn budgets_end_the_loop_with_a_clear_result() {
    let looping = "Action: {\"tool\": \"calculator\", \"args\": {\"expression\": \"1+1\"}}";
    let model = Scripted::texts(&[looping]);
    let outcome = ReActAgent::new(Arc::new(model.clone()), calculator_box())
        .max_steps(3)
        .run("loop")
        .await
        .expect("run");
    assert_eq!(outcome.stop, StopReason::MaxSteps);
    assert_eq!(outcome.steps.len(), 3);
    assert_eq!(model.calls().len(), 3);

    let model = Scripted::texts(&[looping]);
    let outcome = ReActAgent::new(Arc::new(model.clone()), calculator_box())
        .token_budget(100)
        .run("loop")
        .await
        .expect("run");
    // 40 tokens a call: the third call may use only the 20 left.
    assert_eq!(outcome.stop, StopReason::TokenBudget);
    assert_eq!(model.calls()[2].1.max_tokens, Some(20));
}

#[tokio::test]
async fn tool_errors_and_traversal_become_observations() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("a.txt"), "alpha").expect("write");
    let tools = Toolbox::new()
        .with(Calculator)
        .with(ReadFile::new(dir.path()).expect("root"));
    let model = Scripted::texts(&[
        "Action: {\"tool\": \"calculator\", \"args\": {\"expression\": \"1/0\"}}",
        "Action: {\"tool\": \"read_file\", \"args\": {\"path\": \"../../etc/passwd\"}}",
        "Action: {\"tool\": \"shell\", \"args\": {\"cmd\": \"ls\"}}",
        "Action: read_file(a.txt)",
        "Final Answer: alpha",
    ]);
    let outcome = ReActAgent::new(Arc::new(model.clone()), tools)
        .run("read a.txt")
        .await
        .expect("run");
    assert_eq!(outcome.answer.as_deref(), Some("alpha"));
    let seen: Vec<_> = outcome.steps.iter().flat_map(|s| &s.observations).collect();
    assert!(
        seen[0].error && seen[0].text.contains("division by zero"),
        "{seen:?}"
    );
    assert!(
        seen[1].error && seen[1].text.contains("outside"),
        "{seen:?}"
    );
    assert!(
        seen[2].error && seen[2].text.contains("no tool"),
        "{seen:?}"
    );
    assert_eq!((seen[3].text.as_str(), seen[3].error), ("alpha", false));
    assert!(last_user(&model.calls()[1].0).starts_with("Observation: division by zero"));
}

#[tokio::test]
async fn native_tool_calls_when_the_model_has_them() {
    let mut model = Scripted::new(|n, messages, _| match n {
        0 => {
            let mut m = Message::assistant("");
            m.tool_calls = vec![ToolCall {
                id: "c1".into(),
                name: "lookup".into(),
                arguments: json!({"key": "capital"}),
            }];
            m
        }
        _ => Message::assistant(format!(
            "It is {}.",
            messages.last().map(|m| m.content.as_str()).unwrap_or("")
        )),
    });
    model.native = true;
    let lookup = FnTool::typed(
        "lookup",
        "Looks a key up.",
        Params::new().required("key", "string", "The key"),
        |args: serde_json::Map<String, serde_json::Value>| async move {
            Ok(format!("value of {}", args["key"].as_str().unwrap_or("?")))
        },
    );
    let outcome = ReActAgent::new(Arc::new(model.clone()), Toolbox::new().with(lookup))
        .run("What is the capital?")
        .await
        .expect("run");
    assert_eq!(outcome.answer.as_deref(), Some("It is value of capital."));
    let calls = model.calls();
    assert_eq!(calls[0].1.tools[0].name, "lookup");
    assert!(calls[0].1.stop.is_empty());
    let tool_message = calls[1].0.last().expect("message");
    assert_eq!(tool_message.role, Role::Tool);
    assert_eq!(tool_message.tool_call_id.as_deref(), Some("c1"));
    assert_eq!(
        calls[1].0[2].tool_calls.len(),
        1,
        "the assistant's call is kept"
    );

    // Forced text mode on the same model.
    let outcome = ReActAgent::new(
        Arc::new(Scripted::texts(&["Final Answer: x"])),
        Toolbox::new(),
    )
    .mode(ToolMode::Text)
    .run("t")
    .await
    .expect("run");
    assert_eq!(outcome.answer.as_deref(), Some("x"));
}

#[tokio::test]
async fn every_step_is_streamed_in_order() {
    let model = Scripted::texts(&[
        "Thought: add\nAction: {\"tool\": \"calculator\", \"args\": {\"expression\": \"2+2\"}}",
        "Thought: got it\nFinal Answer: 4",
    ]);
    let events: Vec<AgentEvent> = ReActAgent::new(Arc::new(model), calculator_box())
        .stream("2+2?")
        .map(|e| e.expect("event"))
        .collect()
        .await;
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| match e {
            AgentEvent::Step { .. } => "step",
            AgentEvent::Token { .. } => "token",
            AgentEvent::Thought { .. } => "thought",
            AgentEvent::ToolCall { .. } => "call",
            AgentEvent::Observation { .. } => "observation",
            AgentEvent::Retry { .. } => "retry",
            AgentEvent::Answer { .. } => "answer",
            AgentEvent::Finished { .. } => "finished",
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "step",
            "token",
            "thought",
            "call",
            "observation",
            "step",
            "token",
            "thought",
            "answer",
            "finished"
        ]
    );
    match events.last() {
        Some(AgentEvent::Finished { outcome }) => assert_eq!(outcome.answer.as_deref(), Some("4")),
        other => panic!("{other:?}"),
    }
}

/// A planted tree: states are paths of digits; children append 0–3. The
/// solution is 2-1-3; the evaluator likes prefixes of it and also (wrongly)
/// 0-0, a dead end.
fn planted(strategy: Strategy) -> TreeOfThoughts<Vec<u8>> {
    TreeOfThoughts::new(
        FnProposer(|path: &Vec<u8>, _k| {
            (0..4)
                .map(|d| {
                    let mut next = path.clone();
                    next.push(d);
                    next
                })
                .collect()
        }),
        FnEvaluator(|path: &Vec<u8>| {
            let good = [2, 1, 3];
            if path.starts_with(&[0, 0]) || path.as_slice() == [0] {
                0.95
            } else if good.starts_with(path) {
                0.9
            } else {
                0.1 * path.len() as f32 / 3.0
            }
        }),
        |path: &Vec<u8>| path.as_slice() == [2, 1, 3],
    )
    .strategy(strategy)
    .max_depth(3)
    .proposals(4)
}

#[tokio::test]
async fn bfs_keeps_the_best_states_and_finds_the_planted_solution() {
    let outcome = planted(Strategy::Bfs { beam: 2 })
        .run(Vec::new())
        .await
        .expect("bfs");
    assert_eq!(outcome.stop, SearchStop::Solved);
    let path: Vec<&Vec<u8>> = outcome.solution_states().expect("solution");
    assert_eq!(path.last().map(|p| p.as_slice()), Some(&[2u8, 1, 3][..]));
    // Root, then at most `beam` states expanded per level.
    for depth in 1..3 {
        let expanded = outcome
            .tree
            .iter()
            .filter(|n| n.depth == depth && n.expanded)
            .count();
        assert!(expanded <= 2, "depth {depth}: {expanded} expanded");
    }
    assert_eq!(outcome.per_depth()[..2], [1, 4]);

    let outcome = planted(Strategy::Bfs { beam: 1 })
        .run(Vec::new())
        .await
        .expect("bfs");
    assert_eq!(
        outcome.stop,
        SearchStop::Exhausted,
        "a beam of 1 follows the decoy"
    );
}

#[tokio::test]
async fn dfs_backtracks_out_of_the_decoy() {
    let outcome = planted(Strategy::Dfs { threshold: 0.5 })
        .run(Vec::new())
        .await
        .expect("dfs");
    assert_eq!(outcome.stop, SearchStop::Solved);
    assert!(outcome.backtracks >= 1, "{}", outcome.backtracks);
    let decoy_expanded = outcome.tree.iter().any(|n| n.state == [0, 0] && n.expanded);
    assert!(decoy_expanded, "the decoy is tried first");
    assert!(
        outcome.tree.iter().any(|n| n.pruned),
        "low scores are pruned"
    );

    let outcome = planted(Strategy::Dfs { threshold: 0.5 })
        .budget(Budget {
            max_calls: 6,
            max_tokens: usize::MAX,
        })
        .run(Vec::new())
        .await
        .expect("dfs");
    assert_eq!(outcome.stop, SearchStop::Budget);
    assert!(outcome.proposals + outcome.evaluations <= 6);
}

#[tokio::test]
async fn llm_evaluator_scores_or_generates() {
    let mut scorer = Scripted::texts(&["unused"]);
    scorer.can_score = true;
    let evaluator = LlmEvaluator::new(Arc::new(scorer.clone()), |s: &String| {
        vec![Message::user(s.clone())]
    });
    let search = TreeOfThoughts::new(
        FnProposer(|_: &String, _| vec!["1 + 2".to_string(), "20 + 4 = 24".to_string()]),
        evaluator,
        |_: &String| false,
    )
    .max_depth(1);
    let outcome = search.run("start".into()).await.expect("run");
    let scores: Vec<f32> = outcome.tree[1..].iter().map(|n| n.score).collect();
    assert!(scores[0] < 0.01 && scores[1] > 0.99, "{scores:?}");
    assert!(scorer.calls().is_empty(), "scored, not generated");

    let talker = Scripted::new(|_, messages, _| {
        Message::assistant(if last_user(messages).contains("24") {
            "sure"
        } else {
            "impossible"
        })
    });
    let metered = Metered::new(Arc::new(talker.clone()));
    let meter = metered.meter();
    let evaluator = LlmEvaluator::new(Arc::new(metered), |s: &String| {
        vec![Message::user(s.clone())]
    });
    let search = TreeOfThoughts::new(
        FnProposer(|_: &String, _| vec!["1 + 2".to_string(), "20 + 4 = 24".to_string()]),
        evaluator,
        |_: &String| false,
    )
    .max_depth(1)
    .meter(meter.clone());
    let outcome = search.run("start".into()).await.expect("run");
    let scores: Vec<f32> = outcome.tree[1..].iter().map(|n| n.score).collect();
    assert_eq!(scores, [0.0, 1.0]);
    assert_eq!(meter.counts().calls, 2);
    assert_eq!(meter.counts().prefilled_tokens(), 80);
}

#[tokio::test]
async fn self_consistency_votes_on_normalised_answers() {
    let model = Scripted::new(|_, _, options| {
        Message::assistant(match options.seed {
            Some(0) => "6 * 2 = 12. The answer is 12.",
            Some(1) => "The answer is 14.",
            Some(2) => "So it is $12",
            Some(3) => "The answer is 12.0",
            _ => "I cannot tell.",
        })
    });
    let vote = SelfConsistency::new(ChainOfThought::new(Arc::new(model.clone())))
        .samples(5)
        .temperature(0.8)
        .vote("Six pairs of socks: how many socks?")
        .await
        .expect("vote");
    assert_eq!(vote.answer.as_deref(), Some("12"));
    assert_eq!(vote.table[0].count, 3);
    assert_eq!(vote.table[1].answer, "14");
    assert_eq!(vote.samples.len(), 5);
    assert!((vote.agreement() - 0.6).abs() < 1e-6);
    let mut seeds: Vec<u64> = model.calls().iter().filter_map(|(_, o)| o.seed).collect();
    seeds.sort_unstable();
    assert_eq!(seeds, [0, 1, 2, 3, 4]);
    assert!(model.calls().iter().all(|(_, o)| o.temperature == 0.8));
    assert!(
        model.calls()[0]
            .0
            .last()
            .expect("user")
            .content
            .ends_with("Let's think step by step.")
    );

    let err = SelfConsistency::new(ChainOfThought::new(Arc::new(model)))
        .temperature(0.0)
        .vote("q")
        .await
        .expect_err("greedy chains cannot differ");
    assert!(err.to_string().contains("temperature"), "{err}");
}

/// A model for guided runs: it continues prefilled answers and scores words.
#[derive(Clone, Default)]
struct Guided {
    /// Whether it wants to act even after an observation.
    keen: bool,
    prompts: Arc<Mutex<Vec<String>>>,
}

#[async_trait]
impl ChatModel for Guided {
    fn name(&self) -> &str {
        "guided"
    }

    fn supports_prefill(&self) -> bool {
        true
    }

    async fn chat(&self, messages: &[Message], _: &GenerateOptions) -> Result<ChatResponse> {
        let started = messages
            .last()
            .map(|m| m.content.clone())
            .unwrap_or_default();
        self.prompts.lock().expect("lock").push(started.clone());
        let text = if started.ends_with("Thought:") {
            " I should multiply."
        } else if started.ends_with("\"expression\": \"") {
            "6*7"
        } else if started.ends_with("Final Answer:") {
            " 42"
        } else {
            "?"
        };
        Ok(ChatResponse {
            message: Message::assistant(text),
            finish_reason: FinishReason::Stop,
            usage: Usage {
                prompt_tokens: 50,
                cached_prompt_tokens: 40,
                completion_tokens: 3,
            },
            timings: None,
        })
    }

    async fn score(&self, messages: &[Message], continuations: &[String]) -> Result<Vec<f32>> {
        let observed = messages
            .iter()
            .any(|m| m.content.starts_with("Observation:"));
        Ok(continuations
            .iter()
            .map(|c| match c.as_str() {
                "Action" if self.keen || !observed => -0.1,
                "Final" if !self.keen && observed => -0.1,
                c if c.starts_with("calculator") => -0.5,
                _ => -5.0,
            })
            .collect())
    }
}

#[tokio::test]
async fn guided_steps_are_well_formed_whatever_the_model_writes() {
    let model = Guided::default();
    let tools = Toolbox::new()
        .with(FnTool::new(
            "echo",
            "Echoes.",
            Params::new(),
            |v| async move { Ok(v.to_string()) },
        ))
        .with(Calculator);
    let outcome = ReActAgent::new(Arc::new(model.clone()), tools.clone())
        .run("What is 6 times 7?")
        .await
        .expect("run");
    assert_eq!(outcome.stop, StopReason::Answered);
    assert_eq!(outcome.answer.as_deref(), Some("42"));
    assert_eq!(outcome.steps[0].calls[0].name, "calculator");
    assert_eq!(
        outcome.steps[0].calls[0].arguments,
        json!({"expression": "6*7"})
    );
    assert_eq!(outcome.steps[0].observations[0].text, "42");
    assert_eq!(
        outcome.steps[0].output,
        "Thought: I should multiply.\nAction: {\"tool\": \"calculator\", \"args\": {\"expression\": \"6*7\"}}"
    );
    assert_eq!(outcome.steps[1].thought, "I should multiply.");
    // Each step starts the model's answer for it.
    assert!(model.prompts.lock().expect("lock")[0].ends_with("Thought:"));

    // A model that would act forever repeats itself once, then must answer;
    // and the last allowed step answers.
    let keen = Guided {
        keen: true,
        ..Guided::default()
    };
    let outcome = ReActAgent::new(Arc::new(keen.clone()), tools.clone())
        .run("What is 6 times 7?")
        .await
        .expect("run");
    assert_eq!(outcome.steps.len(), 3, "act, repeat, answer");
    assert!(
        outcome.steps[1].observations[0]
            .text
            .contains("already called")
    );
    assert_eq!(outcome.answer.as_deref(), Some("42"));
    let outcome = ReActAgent::new(Arc::new(keen), tools)
        .max_steps(1)
        .act_first(false)
        .run("What is 6 times 7?")
        .await
        .expect("run");
    assert_eq!(
        (outcome.steps.len(), outcome.stop),
        (1, StopReason::Answered)
    );
}
