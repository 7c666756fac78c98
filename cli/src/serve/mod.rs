//! `kb serve`: the OpenAI-compatible HTTP API over the local model and
//! embedder.

mod auth;
mod documents;
mod error;
mod kb;
mod metrics;
mod openai;
mod page;

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use anyhow::{Context, Result};
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use kb_core::{ChatModel, Embedder};
use kb_retrievers::{Access, Fusion, KnowledgeBase, Rerank};
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::args::ServeArgs;
use crate::commands::ask::chat_model;
use crate::commands::embed::load_embedder;
use crate::config::Config;
use error::ApiError;
use metrics::Metrics;

/// What every handler shares.
pub struct AppState {
    model: Arc<dyn ChatModel>,
    model_id: String,
    embedder: Option<Arc<dyn Embedder>>,
    embedder_id: Option<String>,
    /// The knowledge base; a writable server creates it on the first upload.
    kb: RwLock<Option<Arc<KnowledgeBase>>>,
    /// How its searches rank (kb.toml's `[retrieval]`).
    fusion: Fusion,
    rerank: Option<Rerank>,
    expand: bool,
    kb_dir: PathBuf,
    /// Where the knowledge base keeps its vectors.
    vectors: kb_retrievers::VectorBackend,
    /// Whether documents may be uploaded and deleted (not `--read-only`).
    writable: bool,
    /// One change to the knowledge base at a time.
    writer: tokio::sync::Mutex<()>,
    api_key: Option<String>,
    timeout: std::time::Duration,
    gate: Arc<Semaphore>,
    queue: usize,
    next_id: AtomicU64,
    metrics: Metrics,
}

impl AppState {
    /// A place in the queue in front of the models, or 503 when it is full.
    fn admit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.gate
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::busy(self.queue))
    }

    fn queue_depth(&self) -> usize {
        self.queue - self.gate.available_permits()
    }

    /// The knowledge base, if there is one yet.
    fn kb(&self) -> Option<Arc<KnowledgeBase>> {
        self.kb.read().ok().and_then(|kb| kb.clone())
    }

    /// The knowledge base, created with the server's embedder if there is
    /// none yet. Only for a writable server.
    fn kb_for_writing(&self) -> kb_retrievers::Result<Arc<KnowledgeBase>> {
        if let Some(kb) = self.kb() {
            return Ok(kb);
        }
        let embedder = self.embedder.clone().ok_or_else(|| {
            kb_retrievers::Error::InvalidInput("this server has no embedder".into())
        })?;
        let mut kb =
            KnowledgeBase::open_with(&self.kb_dir, embedder, Access::Write, &self.vectors)?;
        kb.set_fusion(self.fusion);
        kb.set_rerank(self.rerank.clone());
        kb.set_query_expansion(self.expand);
        let kb = Arc::new(kb);
        if let Ok(mut slot) = self.kb.write() {
            *slot = Some(kb.clone());
        }
        Ok(kb)
    }

    /// Where uploaded files are kept.
    fn uploads_dir(&self) -> PathBuf {
        self.kb_dir.join("uploads")
    }
}

/// The name a configured model goes by: its catalog name, or a file's stem.
fn model_id(setting: &str) -> String {
    if kb_llm::is_remote(setting) {
        return setting
            .rsplit_once('#')
            .map_or("default", |(_, m)| m)
            .to_string();
    }
    let path = std::path::Path::new(setting);
    match path.file_stem() {
        Some(stem) if path.components().count() > 1 || path.extension().is_some() => {
            stem.to_string_lossy().into_owned()
        }
        _ => setting.to_string(),
    }
}

/// The routes over `state`.
fn router(state: Arc<AppState>, max_body: usize, max_upload: usize) -> Router {
    Router::new()
        .route("/", get(page::index))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(openai::models))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/v1/kb/search", post(kb::search))
        .route("/v1/kb/ask", post(kb::ask))
        .route(
            "/v1/kb/documents",
            get(documents::list)
                .post(documents::upload)
                .layer(DefaultBodyLimit::max(max_upload)),
        )
        .route("/v1/kb/documents/{id}", delete(documents::delete))
        .fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "invalid_request_error",
                "no such route; see the docs for the API",
            )
        })
        .layer(middleware::from_fn_with_state(state.clone(), deadline))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_key,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), measure))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// Answers 504 when a request has not begun its response within the
/// timeout; dropping it stops its generation. A stream that has begun runs
/// on (its client decides when to stop).
async fn deadline(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(state.timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            use axum::response::IntoResponse;
            ApiError::new(
                axum::http::StatusCode::GATEWAY_TIMEOUT,
                "server_error",
                format!(
                    "no answer within {} s (--timeout); ask for fewer tokens or stream",
                    state.timeout.as_secs_f64()
                ),
            )
            .into_response()
        }
    }
}

/// Counts each request by route and status and times it to its
/// response's head. Unknown routes count as `other`, so clients cannot
/// grow the label set.
async fn measure(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("other", MatchedPath::as_str)
        .to_string();
    let started = Instant::now();
    let response = next.run(req).await;
    state
        .metrics
        .record(&route, response.status().as_u16(), started.elapsed());
    response
}

async fn metrics(State(state): State<Arc<AppState>>) -> String {
    state.metrics.render(state.queue_depth())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    eprintln!("kb serve: shutting down after the requests in flight");
}

/// Loads the models, binds `request.addr` and serves until Ctrl-C or SIGTERM.
pub fn run(config: &Config, request: &ServeArgs) -> Result<()> {
    if request.queue == 0 {
        anyhow::bail!("--queue must be at least 1");
    }
    let timeout = std::time::Duration::try_from_secs_f64(request.timeout)
        .ok()
        .filter(|t| !t.is_zero())
        .context("--timeout must be a positive number of seconds")?;
    let model = chat_model(config, request.threads)?;
    let fusion = config.retrieval.value.fusion();
    let rerank = crate::commands::kb::rerank(config, None, Some(model.clone()))?;
    let kb_dir = config.kb_dir.value.clone();
    // The knowledge base's embedder serves /v1/embeddings too; without a
    // knowledge base, the configured one (which a first upload builds it with).
    let embedder: Arc<dyn Embedder> = Arc::new(load_embedder(config)?);
    let vectors = config.vector.backend();
    // A knowledge base on a server has nothing in the directory to find.
    let on_server = matches!(vectors, kb_retrievers::VectorBackend::Qdrant(_));
    let kb = if on_server || KnowledgeBase::exists(&kb_dir) {
        let access = if request.read_only {
            Access::Read
        } else {
            Access::Write
        };
        let mut kb = KnowledgeBase::open_with(&kb_dir, embedder.clone(), access, &vectors)
            .with_context(|| format!("opening the knowledge base {}", kb_dir.display()))?;
        kb.set_fusion(fusion);
        kb.set_rerank(rerank.clone());
        kb.set_query_expansion(config.retrieval.value.expand);
        Some(Arc::new(kb))
    } else {
        eprintln!(
            "note: there is no knowledge base at {} yet; {}",
            kb_dir.display(),
            if request.read_only {
                "the model answers alone. Build one with `kb ingest PATH` and restart."
            } else {
                "upload documents (POST /v1/kb/documents or the page at /) to build one."
            }
        );
        None
    };

    let state = Arc::new(AppState {
        model,
        model_id: model_id(&config.llm.value),
        embedder: Some(embedder),
        embedder_id: Some(model_id(&config.embedder.value)),
        kb: RwLock::new(kb),
        fusion,
        rerank,
        expand: config.retrieval.value.expand,
        kb_dir,
        vectors,
        writable: !request.read_only,
        writer: tokio::sync::Mutex::new(()),
        api_key: request.api_key.clone().filter(|k| !k.is_empty()),
        timeout,
        gate: Arc::new(Semaphore::new(request.queue)),
        queue: request.queue,
        next_id: AtomicU64::new(1),
        metrics: Metrics::default(),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        // On a server, what searches need (the glossary) is read before the
        // first request, on this runtime.
        if let Some(kb) = state.kb()
            && let Err(e) = kb.ready().await
        {
            eprintln!("note: the knowledge base is not ready yet: {e}");
        }
        let listener = tokio::net::TcpListener::bind(request.addr)
            .await
            .with_context(|| format!("binding {}", request.addr))?;
        let addr = listener.local_addr()?;
        println!(
            "kb serve: listening on http://{addr} (model {}, embedder {}, knowledge base {}{})",
            state.model_id,
            state.embedder_id.as_deref().unwrap_or("none"),
            if state.kb().is_some() {
                state.kb_dir.display().to_string()
            } else {
                "none yet".into()
            },
            if state.api_key.is_some() {
                ", API key required"
            } else {
                ""
            }
        );
        use std::io::Write;
        std::io::stdout().flush()?;
        axum::serve(
            listener,
            router(state, request.max_body, request.max_upload),
        )
        .with_graceful_shutdown(shutdown())
        .await
        .context("serving")
    })
}

#[cfg(test)]
mod tests {
    use super::model_id;

    #[test]
    fn models_are_named_as_configured() {
        assert_eq!(model_id("smollm2-135m-instruct"), "smollm2-135m-instruct");
        assert_eq!(
            model_id("/models/qwen2.5-0.5b.Q4_0.gguf"),
            "qwen2.5-0.5b.Q4_0"
        );
        assert_eq!(model_id("http://host:8080/v1#llama3"), "llama3");
        assert_eq!(model_id("https://host/v1"), "default");
    }
}
