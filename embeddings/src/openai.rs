//! [`OpenAiEmbeddings`]: embeddings from any server that speaks OpenAI's
//! `/v1/embeddings` (OpenAI, vLLM, Ollama, llama.cpp's server, `kb serve`).

use std::time::Duration;

use async_trait::async_trait;
use kb_core::Embedder;
use serde::Deserialize;
use serde_json::json;

use crate::error::{Error, Result};

/// An embedder behind an OpenAI-compatible HTTP API.
///
/// Inputs are sent in batches; 429 and 5xx answers and connection failures
/// are retried with exponential backoff (honouring `Retry-After`), other 4xx
/// answers fail at once with the server's message; every returned vector is
/// checked against the expected dimension.
///
/// ```no_run
/// use kb_core::Embedder;
/// use kb_embeddings::OpenAiEmbeddings;
///
/// # async fn example() -> kb_embeddings::Result<()> {
/// let embedder = OpenAiEmbeddings::builder("http://127.0.0.1:8080/v1", "all-minilm-l6-v2")
///     .api_key(std::env::var("KB_API_KEY").ok())
///     .build() // asks the server once for the dimension when none is given
///     .await?;
/// let vectors = embedder.embed(&["hello"]).await?;
/// assert_eq!(vectors[0].len(), embedder.dimension());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct OpenAiEmbeddings {
    client: reqwest::Client,
    url: String,
    model: String,
    api_key: Option<String>,
    dimension: usize,
    batch_size: usize,
    max_retries: u32,
    id: String,
}

/// Builds an [`OpenAiEmbeddings`].
#[derive(Debug, Clone)]
pub struct OpenAiEmbeddingsBuilder {
    base_url: String,
    model: String,
    api_key: Option<String>,
    dimension: Option<usize>,
    batch_size: usize,
    max_retries: u32,
    timeout: Duration,
}

impl OpenAiEmbeddingsBuilder {
    /// Bearer token sent with every request; none by default.
    pub fn api_key(mut self, key: Option<String>) -> Self {
        self.api_key = key.filter(|k| !k.is_empty());
        self
    }

    /// The vector length the model returns; asked of the server by
    /// [`build`](Self::build) when not given.
    pub fn dimension(mut self, dimension: usize) -> Self {
        self.dimension = Some(dimension);
        self
    }

    /// Most inputs per request; default 64.
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }

    /// Retries after a 429, a 5xx or a connection failure; default 3.
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// Timeout of each request; default 60 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Builds the client; without a [`dimension`](Self::dimension), embeds one
    /// short text to learn it.
    pub async fn build(self) -> Result<OpenAiEmbeddings> {
        if self.batch_size == 0 {
            return Err(Error::InvalidSetting(
                "batch_size must be at least 1".into(),
            ));
        }
        let client = reqwest::Client::builder()
            .timeout(self.timeout)
            .build()
            .map_err(|e| Error::InvalidSetting(format!("HTTP client: {e}")))?;
        let url = format!("{}/embeddings", self.base_url.trim_end_matches('/'));
        let mut embedder = OpenAiEmbeddings {
            client,
            id: format!(
                "openai:{}:{}",
                self.base_url.trim_end_matches('/'),
                self.model
            ),
            url,
            model: self.model,
            api_key: self.api_key,
            dimension: self.dimension.unwrap_or(0),
            batch_size: self.batch_size,
            max_retries: self.max_retries,
        };
        if self.dimension.is_none() {
            let probe = embedder.request(&["dimension probe"]).await?;
            embedder.dimension = probe.first().map(Vec::len).unwrap_or(0);
            if embedder.dimension == 0 {
                return Err(Error::Remote(format!(
                    "{} returned an empty embedding",
                    embedder.url
                )));
            }
        }
        Ok(embedder)
    }
}

#[derive(Deserialize)]
struct Response {
    data: Vec<Datum>,
}

#[derive(Deserialize)]
struct Datum {
    embedding: Vec<f32>,
    #[serde(default)]
    index: Option<usize>,
}

impl OpenAiEmbeddings {
    /// A builder for `model` at `base_url` (the part before `/embeddings`, e.g.
    /// `https://api.openai.com/v1`).
    pub fn builder(
        base_url: impl Into<String>,
        model: impl Into<String>,
    ) -> OpenAiEmbeddingsBuilder {
        OpenAiEmbeddingsBuilder {
            base_url: base_url.into(),
            model: model.into(),
            api_key: None,
            dimension: None,
            batch_size: 64,
            max_retries: 3,
            timeout: Duration::from_secs(60),
        }
    }

    /// Embeds `texts` in batches.
    pub async fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let mut vectors = Vec::with_capacity(texts.len());
        for batch in texts.chunks(self.batch_size) {
            let batch_vectors = self.request(batch).await?;
            if let Some(bad) = batch_vectors.iter().find(|v| v.len() != self.dimension) {
                return Err(Error::DimensionMismatch {
                    expected: self.dimension,
                    got: bad.len(),
                });
            }
            vectors.extend(batch_vectors);
        }
        Ok(vectors)
    }

    /// One request, retried on transient failures.
    async fn request(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let body = json!({"model": self.model, "input": texts, "encoding_format": "float"});
        let mut attempt = 0;
        loop {
            let mut request = self.client.post(&self.url).json(&body);
            if let Some(key) = &self.api_key {
                request = request.bearer_auth(key);
            }
            let failure = match request.send().await {
                Ok(response) if response.status().is_success() => {
                    let parsed: Response = response.json().await.map_err(|e| {
                        Error::Remote(format!(
                            "{} answered with an unexpected body: {e}",
                            self.url
                        ))
                    })?;
                    return order(parsed, texts.len(), &self.url);
                }
                Ok(response) => {
                    let status = response.status();
                    let retry_after = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let message = server_message(response).await;
                    let error = Error::Remote(format!("{} answered {status}: {message}", self.url));
                    if status.as_u16() != 429 && !status.is_server_error() {
                        return Err(error);
                    }
                    (error, retry_after)
                }
                Err(e) => (
                    Error::Remote(format!("cannot reach {}: {e}", self.url)),
                    None,
                ),
            };
            if attempt >= self.max_retries {
                return Err(failure.0);
            }
            let backoff = failure
                .1
                .unwrap_or_else(|| Duration::from_millis(250 * 2u64.pow(attempt)))
                .min(Duration::from_secs(30));
            tracing::warn!(error = %failure.0, ?backoff, "retrying embeddings request");
            tokio::time::sleep(backoff).await;
            attempt += 1;
        }
    }
}

/// Puts the vectors in input order (by `index` when the server gives it).
fn order(response: Response, expected: usize, url: &str) -> Result<Vec<Vec<f32>>> {
    if response.data.len() != expected {
        return Err(Error::Remote(format!(
            "{url} returned {} embeddings for {expected} inputs",
            response.data.len()
        )));
    }
    let mut slots: Vec<Option<Vec<f32>>> = vec![None; expected];
    for (position, datum) in response.data.into_iter().enumerate() {
        let index = datum.index.unwrap_or(position);
        match slots.get_mut(index) {
            Some(slot @ None) => *slot = Some(datum.embedding),
            _ => {
                return Err(Error::Remote(format!(
                    "{url} returned a bad or repeated index {index}"
                )));
            }
        }
    }
    Ok(slots.into_iter().flatten().collect())
}

/// The `error.message` of an OpenAI-style error body, else the body itself.
async fn server_message(response: reqwest::Response) -> String {
    let text = response.text().await.unwrap_or_default();
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(String::from))
        .unwrap_or_else(|| text.chars().take(300).collect())
}

#[async_trait]
impl Embedder for OpenAiEmbeddings {
    fn id(&self) -> &str {
        &self.id
    }

    fn dimension(&self) -> usize {
        self.dimension
    }

    async fn embed_documents(&self, texts: &[&str]) -> kb_core::Result<Vec<Vec<f32>>> {
        Ok(self.embed(texts).await?)
    }
}
