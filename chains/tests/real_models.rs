//! The chains on the real models: SmolLM2-135M-Instruct (Q4_1) answering
//! from a knowledge base built with multilingual-e5-small over the sample
//! corpus (`../shared/corpus`, with `../shared/eval/dev.jsonl`). Slow-ish:
//! a few short generations on the CPU.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use futures::StreamExt;
use kb_chains::{
    AnswerEvent, ClassificationChain, ConversationalRagChain, RagChain, Verbalizer, WindowMemory,
};
use kb_core::models::{DEFAULT_LLM, ModelCache};
use kb_core::{ChatModel, Chunk, GenerateOptions, Message, PromptTemplate, Retriever, ScoredChunk};
use kb_llm::{LoadOptions, LocalLlm};
use kb_retrievers::{Access, IngestOptions, KnowledgeBase};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn llm() -> Arc<dyn ChatModel> {
    static LLM: OnceLock<LocalLlm> = OnceLock::new();
    Arc::new(
        LLM.get_or_init(|| {
            let path = ModelCache::from_env()
                .expect("cache")
                .resolve(DEFAULT_LLM)
                .expect("the chat model is installed (run `kb models fetch`)");
            // Dense prompt weights: the same answers' quality, faster tests.
            LocalLlm::load(
                &path,
                &LoadOptions::default().threads(2).dense_prompt_weights(true),
            )
            .expect("load SmolLM2")
        })
        .clone(),
    )
}

fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared")
}

/// The sample corpus ingested with the default embedder, once per run.
fn corpus_kb() -> Option<&'static KnowledgeBase> {
    static KB: OnceLock<Option<(tempfile::TempDir, KnowledgeBase)>> = OnceLock::new();
    KB.get_or_init(|| {
        let corpus = shared().join("corpus");
        if !corpus.is_dir() {
            eprintln!("skipped: {} is not here", corpus.display());
            return None;
        }
        let path = ModelCache::from_env()
            .expect("cache")
            .resolve("multilingual-e5-small")
            .expect("the embedder is installed (run `kb models fetch`)");
        let embedder = kb_embeddings::LocalEmbedder::open(&path).expect("embedder");
        let dir = tempfile::tempdir().expect("tempdir");
        let kb = KnowledgeBase::open(dir.path(), Arc::new(embedder), Access::Write).expect("kb");
        runtime()
            .block_on(kb.ingest(&[corpus], &IngestOptions::default(), &mut |_| {}))
            .expect("ingest");
        Some((dir, kb))
    })
    .as_ref()
    .map(|(_, kb)| kb)
}

#[derive(serde::Deserialize)]
struct Item {
    question: String,
    evidence: Vec<String>,
}

fn dev_items() -> Vec<Item> {
    let text = std::fs::read_to_string(shared().join("eval/dev.jsonl")).expect("dev set");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("item"))
        .collect()
}

#[test]
fn answers_over_the_sample_corpus_stream_and_cite_the_evidence() {
    let Some(kb) = corpus_kb() else { return };
    let chain = RagChain::new(Arc::new(kb.retriever(None)), llm())
        .k(3)
        .options(
            GenerateOptions::default()
                .max_tokens(32)
                .repetition_penalty(1.1),
        );
    // A 135M model cites only now and then: every answerable question runs,
    // and at least one answer must cite a chunk that holds its evidence.
    let answerable: Vec<Item> = dev_items()
        .into_iter()
        .filter(|i| !i.evidence.is_empty())
        .collect();
    let mut evidence_cited = 0;
    for item in &answerable {
        let (tokens, answer) = runtime().block_on(async {
            let mut stream = chain.stream(&item.question).await.expect("stream");
            let mut tokens = 0;
            let mut answer = None;
            while let Some(event) = stream.next().await {
                match event.expect("event") {
                    AnswerEvent::Token(_) => tokens += 1,
                    AnswerEvent::Done(a) => answer = Some(*a),
                    AnswerEvent::Sources(s) => assert!(!s.is_empty()),
                }
            }
            (tokens, answer.expect("done"))
        });
        eprintln!(
            "{} → {} (cited {:?})",
            item.question, answer.text, answer.cited
        );
        assert!(tokens > 1, "the answer streamed in {tokens} pieces");
        assert!(
            answer
                .cited
                .iter()
                .all(|n| (1..=answer.sources.len()).contains(n))
        );
        if answer
            .cited_sources()
            .any(|s| item.evidence.iter().any(|e| s.text.contains(e.as_str())))
        {
            evidence_cited += 1;
        }
        let first = answer.timings.first_token.expect("a first token");
        assert!(first <= answer.timings.total);
    }
    assert!(
        evidence_cited > 0,
        "no answer cited a chunk holding its evidence"
    );
}

/// Returns the same long chunks for every query.
struct Long(Vec<ScoredChunk>);

#[async_trait]
impl Retriever for Long {
    async fn retrieve(&self, _: &str, k: usize) -> kb_core::Result<Vec<ScoredChunk>> {
        Ok(self.0.iter().take(k).cloned().collect())
    }
}

fn long_chunks(n: usize, text: &str) -> Arc<Long> {
    Arc::new(Long(
        (0..n)
            .map(|i| ScoredChunk {
                chunk: Chunk::new(format!("long{i}.md"), 0, format!("Part {i}. {text}")),
                score: 1.0,
            })
            .collect(),
    ))
}

#[test]
fn the_prompt_never_exceeds_the_context_window() {
    let model = llm();
    let window = 1024;
    let answer_room = 8;
    let paragraph = "Retrieval finds passages; the model reads them and answers. ".repeat(40);
    let chain = RagChain::new(long_chunks(8, &paragraph), model.clone())
        .k(8)
        .context_window(window)
        .options(GenerateOptions::default().max_tokens(answer_room));
    let answer = runtime()
        .block_on(chain.ask("What does retrieval find?"))
        .expect("answer");
    assert!(answer.dropped_sources > 0, "8 long chunks cannot all fit");
    assert!(!answer.sources.is_empty());
    assert!(
        answer.usage.prompt_tokens + answer_room <= window,
        "prompt {} + answer {answer_room} > {window}",
        answer.usage.prompt_tokens
    );

    // One chunk far larger than the window is shortened at a character
    // boundary (Chinese text: several bytes per character).
    let huge = "检索增强生成先检索相关段落，再让模型根据段落回答问题。".repeat(400);
    let chain = RagChain::new(long_chunks(1, &huge), model)
        .context_window(window)
        .options(GenerateOptions::default().max_tokens(answer_room));
    let answer = runtime()
        .block_on(chain.ask("什么是检索增强生成？"))
        .expect("answer");
    assert_eq!(answer.sources.len(), 1);
    let text = &answer.sources[0].text;
    assert!(text.ends_with('…') && text.len() < huge.len(), "shortened");
    assert!(answer.usage.prompt_tokens + answer_room <= window);
    assert!(
        answer.usage.prompt_tokens > window / 2,
        "but not needlessly"
    );
}

/// Records the queries it is given.
struct Recording(Mutex<Vec<String>>);

#[async_trait]
impl Retriever for Recording {
    async fn retrieve(&self, query: &str, _: usize) -> kb_core::Result<Vec<ScoredChunk>> {
        self.0.lock().expect("lock").push(query.to_string());
        Ok(vec![ScoredChunk {
            chunk: Chunk::new(
                "bm25.md",
                0,
                "BM25 ranks documents by how often the query terms occur in them and how rare the terms are.",
            ),
            score: 1.0,
        }])
    }
}

#[test]
fn follow_up_questions_are_rewritten_with_memory() {
    let retriever = Arc::new(Recording(Mutex::new(Vec::new())));
    let chain = RagChain::new(retriever.clone(), llm()).options(
        GenerateOptions::default()
            .max_tokens(24)
            .repetition_penalty(1.1),
    );
    let chat = ConversationalRagChain::new(chain, WindowMemory::new(2));
    let rt = runtime();
    rt.block_on(chat.ask("What is BM25?")).expect("first");
    let follow_up = "How does it rank documents?";
    let answer = rt.block_on(chat.ask(follow_up)).expect("second");
    let standalone = answer.standalone_question.expect("rewritten");
    eprintln!("standalone: {standalone}");
    assert_ne!(standalone, follow_up);
    assert!(standalone.to_lowercase().contains("bm25"), "{standalone}");
    let queries = retriever.0.lock().expect("lock").clone();
    assert_eq!(
        queries[1], standalone,
        "retrieval used the rewritten question"
    );
    assert_eq!(chat.history().len(), 4);
}

#[test]
fn the_verbalizer_gives_a_probability_per_class() {
    let chain = ClassificationChain::new(
        llm(),
        PromptTemplate::new(
            "Review: {{ text }}\nIs the sentiment of this review positive or negative? Answer with one word.",
        )
        .expect("template"),
        Verbalizer::new()
            .class("positive", ["positive", "Positive"])
            .class("negative", ["negative", "Negative"]),
    )
    .expect("chain");
    let rt = runtime();
    let good = rt
        .block_on(chain.classify(
            &serde_json::json!({"text": "A wonderful film. I loved every minute of it."}),
        ))
        .expect("classify");
    let bad = rt
        .block_on(chain.classify(
            &serde_json::json!({"text": "Terrible and boring. I hated it and walked out."}),
        ))
        .expect("classify");
    for result in [&good, &bad] {
        assert_eq!(result.scores.len(), 2);
        let total: f32 = result.scores.iter().map(|s| s.probability).sum();
        assert!((total - 1.0).abs() < 1e-4, "{result:?}");
        assert!(
            result
                .scores
                .iter()
                .all(|s| s.log_score.is_finite() && s.log_score < 0.0)
        );
    }
    eprintln!("{good:?}\n{bad:?}");
    assert!(
        good.probability("positive") > bad.probability("positive"),
        "the positive review is more positive: {good:?} vs {bad:?}"
    );
    // A scorer is the engine's: the conversation's own tokens are untouched.
    let messages = [Message::user("Say yes.")];
    let scores = rt
        .block_on(llm().score(&messages, &["Yes".into(), "Yes, I will.".into()]))
        .expect("score");
    assert!(
        scores[1] < scores[0],
        "a longer continuation is less likely: {scores:?}"
    );
}

#[test]
fn few_shot_examples_are_chosen_by_meaning() {
    let path = ModelCache::from_env()
        .expect("cache")
        .resolve("multilingual-e5-small")
        .expect("the embedder is installed (run `kb models fetch`)");
    let embedder: Arc<dyn kb_core::Embedder> =
        Arc::new(kb_embeddings::LocalEmbedder::open(&path).expect("embedder"));
    let examples = vec![
        serde_json::json!({"word": "happy", "antonym": "sad"}),
        serde_json::json!({"word": "tall", "antonym": "short"}),
        serde_json::json!({"word": "hot", "antonym": "cold"}),
        serde_json::json!({"word": "fast", "antonym": "slow"}),
    ];
    let rt = runtime();
    let selector = rt
        .block_on(kb_chains::SemanticExampleSelector::new(
            embedder,
            examples,
            &["word"],
            2,
        ))
        .expect("selector");
    let chosen = rt
        .block_on(selector.select(&serde_json::json!({"word": "joyful"})))
        .expect("select");
    assert_eq!(chosen.len(), 2);
    assert_eq!(chosen[0]["word"], "happy", "{chosen:?}");
    let chain = kb_chains::FewShotChain::new(
        llm(),
        selector,
        PromptTemplate::new("Word: {{ word }}\nAntonym: {{ antonym }}").expect("template"),
        PromptTemplate::new("Word: {{ word }}\nAntonym:").expect("template"),
    )
    .prefix(PromptTemplate::new("Give the antonym of every word.").expect("template"))
    .options(GenerateOptions::default().max_tokens(8));
    let prompt = rt
        .block_on(chain.prompt(&serde_json::json!({"word": "joyful"})))
        .expect("prompt");
    assert!(prompt.starts_with("Give the antonym"), "{prompt}");
    assert!(prompt.contains("Word: happy\nAntonym: sad"), "{prompt}");
    assert!(prompt.ends_with("Word: joyful\nAntonym:"), "{prompt}");
    let answer = rt
        .block_on(chain.invoke(&serde_json::json!({"word": "joyful"})))
        .expect("answer");
    assert!(!answer.is_empty());
}
