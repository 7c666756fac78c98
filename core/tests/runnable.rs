//! `prompt.pipe(model).pipe(parser)`: invoke, batch and stream through typed
//! pipelines, with a scripted model (this tests composition, not a model).

use std::sync::Mutex;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt, stream};
use kb_core::{
    ChatEvent, ChatModel, ChatPromptTemplate, ChatResponse, ChatStream, Error, FinishReason,
    GenerateOptions, Message, PromptTemplate, Result, Role, Runnable, StrOutputParser, Usage,
    runnable_fn,
};
use serde_json::json;

/// Answers "echo: <last message>" in three-character tokens, and records the
/// options and messages it was called with.
#[derive(Default)]
struct ScriptedModel {
    seen: Mutex<Vec<(Vec<Message>, GenerateOptions)>>,
}

impl ScriptedModel {
    fn answer(&self, messages: &[Message], options: &GenerateOptions) -> String {
        self.seen
            .lock()
            .expect("lock")
            .push((messages.to_vec(), options.clone()));
        let last = messages.last().map(|m| m.content.as_str()).unwrap_or("");
        format!("echo: {last}")
    }
}

#[async_trait]
impl ChatModel for ScriptedModel {
    fn name(&self) -> &str {
        "scripted"
    }

    async fn chat(&self, messages: &[Message], options: &GenerateOptions) -> Result<ChatResponse> {
        Ok(ChatResponse {
            message: Message::assistant(self.answer(messages, options)),
            finish_reason: FinishReason::Stop,
            usage: Usage::default(),
            timings: None,
        })
    }

    async fn stream(&self, messages: &[Message], options: &GenerateOptions) -> Result<ChatStream> {
        let answer: Vec<char> = self.answer(messages, options).chars().collect();
        let mut events: Vec<Result<ChatEvent>> = answer
            .chunks(3)
            .map(|c| Ok(ChatEvent::Token(c.iter().collect())))
            .collect();
        events.push(Ok(ChatEvent::Done {
            usage: Usage::default(),
            finish: FinishReason::Stop,
            timings: None,
        }));
        Ok(Box::pin(stream::iter(events)))
    }
}

#[tokio::test]
async fn prompt_model_parser_invokes_and_batches() {
    let chain = PromptTemplate::new("Q: {{ q }}")
        .expect("template")
        .pipe(ScriptedModel::default())
        .pipe(StrOutputParser);
    assert_eq!(
        chain.invoke(json!({"q": "why"})).await.expect("invoke"),
        "echo: Q: why"
    );
    let answers = chain
        .batch(vec![json!({"q": "a"}), json!({"q": "b"})])
        .await
        .expect("batch");
    assert_eq!(answers, ["echo: Q: a", "echo: Q: b"]);
}

#[tokio::test]
async fn tokens_stream_through_the_parser_as_they_come() {
    let chain = PromptTemplate::new("{{ q }}")
        .expect("template")
        .pipe(ScriptedModel::default())
        .pipe(StrOutputParser);
    let chunks: Vec<String> = chain
        .stream(json!({"q": "streaming"}))
        .await
        .expect("stream")
        .try_collect()
        .await
        .expect("chunks");
    assert_eq!(chunks, ["ech", "o: ", "str", "eam", "ing"]);
}

#[tokio::test]
async fn a_non_streaming_step_after_a_streaming_one_gets_the_joined_value() {
    let chain = PromptTemplate::new("{{ q }}")
        .expect("template")
        .pipe(ScriptedModel::default())
        .pipe(runnable_fn(|m: Message| async move { Ok(m.content.len()) }));
    let mut chunks = chain.stream(json!({"q": "abcdef"})).await.expect("stream");
    assert_eq!(
        chunks.next().await.transpose().expect("chunk"),
        Some("echo: abcdef".len())
    );
    assert!(chunks.next().await.is_none());
}

#[tokio::test]
async fn chat_prompts_and_bound_options_reach_the_model() {
    let model = std::sync::Arc::new(ScriptedModel::default());
    let options = GenerateOptions::default().temperature(0.3).max_tokens(7);
    let chain = ChatPromptTemplate::new()
        .system("Be brief.")
        .expect("system")
        .user("{{ q }}")
        .expect("user")
        .pipe(model.clone().bind(options.clone()))
        .pipe(StrOutputParser);
    assert_eq!(
        chain.invoke(json!({"q": "hi"})).await.expect("invoke"),
        "echo: hi"
    );
    let seen = model.seen.lock().expect("lock");
    let (messages, used) = &seen[0];
    assert_eq!(messages[0].role, Role::System);
    assert_eq!(messages[1].content, "hi");
    assert_eq!(used, &options);
}

#[tokio::test]
async fn errors_stop_the_pipeline_and_name_the_problem() {
    let calls = std::sync::Arc::new(Mutex::new(0));
    let counter = calls.clone();
    let chain = PromptTemplate::new("{{ q }}")
        .expect("template")
        .pipe(runnable_fn(move |_prompt: kb_core::PromptValue| {
            let counter = counter.clone();
            async move {
                *counter.lock().expect("lock") += 1;
                Ok(())
            }
        }));
    let err = chain.invoke(json!({})).await.unwrap_err();
    assert!(matches!(err, Error::MissingVariable { ref variable, .. } if variable == "q"));
    assert_eq!(*calls.lock().expect("lock"), 0, "later steps must not run");
    let err = chain
        .stream(json!({"x": 1}))
        .await
        .err()
        .expect("stream error");
    assert!(err.to_string().contains("\"q\""), "{err}");
}
