//! [`QdrantStore`]: the vectors on a Qdrant server or cluster, through the
//! official client (gRPC). Points, payloads and ids are the embedded
//! store's ([`payload`](super::payload)), so both backends answer alike.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use kb_core::{Chunk, Filter, ScoredChunk, StoredIds, Unit, VectorStore};
use qdrant_client::qdrant::{
    self, CountPointsBuilder, CreateCollectionBuilder, CreateFieldIndexCollectionBuilder,
    DeleteCollectionBuilder, DeletePointsBuilder, Distance, FieldType, Modifier, PointStruct,
    QueryPointsBuilder, ScrollPointsBuilder, SparseVectorParamsBuilder, SparseVectorsConfigBuilder,
    UpsertPointsBuilder, VectorParamsBuilder, VectorsConfigBuilder, vectors_config,
};
use qdrant_client::{Payload, Qdrant, QdrantError};
use rayon::prelude::*;
use serde_json::Value;
use tokio::sync::OnceCell;

use super::payload::{
    INDEXED_KEYS, UNIT_FANOUT, UNIT_KEY, check_query, check_vectors, chunk_from_payload,
    first_per_chunk, payload_of, point_id,
};
use crate::blocking::run_blocking;
use crate::bm25::{bm25_document, bm25_query};
use crate::error::{Error, Result};
use crate::keywords::KeywordIndex;
use crate::manifest::qdrant::ServerManifest;

/// The dense vector's name in a collection.
pub(crate) const DENSE: &str = "dense";
/// The sparse (BM25) vector's name in a collection.
pub(crate) const SPARSE: &str = "bm25";
/// The collection metadata key naming the embedder that built it.
const EMBEDDER_KEY: &str = "kb_embedder";
/// Points per write request: small enough to stay well inside a request
/// timeout, large enough that a round trip per batch costs little.
const WRITE_BATCH: usize = 256;
/// Write requests in flight at once.
const WRITES_IN_FLIGHT: usize = 4;

/// Where and how to reach a Qdrant server: the `[vector]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QdrantOptions {
    /// The server's gRPC URL, as qdrant-client takes it
    /// (`http://localhost:6334`; `https://` for TLS).
    pub url: String,
    /// The API key, if the server checks one.
    pub api_key: Option<String>,
    /// The collection.
    pub collection: String,
    /// Shards of a new collection (the server's default when unset).
    pub shards: Option<u32>,
    /// Copies of each shard in a new collection (on a cluster).
    pub replicas: Option<u32>,
    /// Replicas that must acknowledge a write, in a new collection.
    pub write_consistency: Option<u32>,
    /// How long one request may take before it fails.
    pub timeout: Duration,
    /// How long a writer's claim on the collection lasts unless renewed (a
    /// live writer renews it every third of this): a writer that died
    /// keeps others out this long at most.
    pub lease: Duration,
}

impl QdrantOptions {
    /// The collection kb uses unless told otherwise.
    pub const DEFAULT_COLLECTION: &'static str = "kb";

    /// Options for the server at `url`, with the defaults for the rest.
    pub fn new(url: impl Into<String>) -> Self {
        QdrantOptions {
            url: url.into(),
            api_key: None,
            collection: Self::DEFAULT_COLLECTION.into(),
            shards: None,
            replicas: None,
            write_consistency: None,
            timeout: Duration::from_secs(10),
            lease: Duration::from_secs(30),
        }
    }
}

/// Vectors in a collection on a Qdrant server: a named dense vector per
/// chunk and per [`Unit`], the chunk as payload, keyword indexes on the
/// filter keys.
///
/// The collection is created on first use (when `create` allows it), with
/// the embedder's name in its metadata; one built by another embedder, or
/// of another dimension, is refused. Writes wait until the server has
/// applied them, so what a call reports written is on the server.
pub struct QdrantStore {
    client: Qdrant,
    options: QdrantOptions,
    embedder: String,
    dimension: usize,
    /// What to do with the collection the first time it is used.
    setup: Setup,
    ready: OnceCell<()>,
}

/// How [`QdrantStore`] treats its collection on first use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    /// Use it; create it when missing.
    Create,
    /// Use it; it must exist (searches do not create collections).
    Existing,
    /// Drop it and create it anew (a rebuild).
    Recreate,
}

impl std::fmt::Debug for QdrantStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QdrantStore")
            .field("url", &self.options.url)
            .field("collection", &self.options.collection)
            .field("dimension", &self.dimension)
            .finish_non_exhaustive()
    }
}

impl QdrantStore {
    /// A store for `embedder`'s `dimension`-sized vectors in the collection
    /// `options` name. Nothing is sent until the first call.
    pub fn connect(
        options: QdrantOptions,
        embedder: &str,
        dimension: usize,
        setup: Setup,
    ) -> Result<Self> {
        let client = Qdrant::from_url(&options.url)
            .api_key(options.api_key.clone())
            .timeout(options.timeout)
            .connect_timeout(options.timeout.min(Duration::from_secs(5)))
            .skip_compatibility_check()
            .build()
            .map_err(|e| {
                Error::InvalidInput(format!("vector server URL {:?}: {e}", options.url))
            })?;
        Ok(QdrantStore {
            client,
            options,
            embedder: embedder.to_string(),
            dimension,
            setup,
            ready: OnceCell::new(),
        })
    }

    /// Where the vectors are, for messages: `URL collection NAME`.
    pub fn location(&self) -> String {
        format!(
            "{} collection {:?}",
            self.options.url, self.options.collection
        )
    }

    fn collection(&self) -> &str {
        &self.options.collection
    }

    /// An error of the server call `what`.
    fn server(&self, what: &'static str) -> impl FnOnce(QdrantError) -> Error + '_ {
        server_error(self.location(), what)
    }

    /// The knowledge base's manifest on the same server, in the collection
    /// `NAME-manifest` beside this one, set up (and replicated) as this
    /// store's collection is.
    pub(crate) fn manifest(&self) -> ServerManifest {
        ServerManifest::new(
            self.client.clone(),
            &self.options,
            self.location(),
            self.setup,
        )
    }

    /// Sets the collection up once, as [`Setup`] says.
    async fn ready(&self) -> Result<()> {
        self.ready
            .get_or_try_init(|| async {
                let exists = self
                    .client
                    .collection_exists(self.collection())
                    .await
                    .map_err(self.server("checking the collection"))?;
                match (exists, self.setup) {
                    (true, Setup::Recreate) => {
                        self.client
                            .delete_collection(DeleteCollectionBuilder::new(self.collection()))
                            .await
                            .map_err(self.server("dropping the collection"))?;
                        self.create().await
                    }
                    (true, _) => self.check().await,
                    (false, Setup::Existing) => Err(Error::Index(format!(
                        "{} does not exist; create it with `kb ingest PATH...`",
                        self.location()
                    ))),
                    (false, _) => self.create().await,
                }
            })
            .await
            .map(|_| ())
    }

    /// Creates the collection: the dense vector, the sparse one, the
    /// keyword indexes.
    async fn create(&self) -> Result<()> {
        let mut dense = VectorsConfigBuilder::default();
        dense.add_named_vector_params(
            DENSE,
            VectorParamsBuilder::new(self.dimension as u64, Distance::Cosine),
        );
        let mut sparse = SparseVectorsConfigBuilder::default();
        sparse.add_named_vector_params(
            SPARSE,
            SparseVectorParamsBuilder::default().modifier(Modifier::Idf),
        );
        let metadata: HashMap<String, Value> =
            HashMap::from([(EMBEDDER_KEY.to_string(), self.embedder.clone().into())]);
        let mut request = CreateCollectionBuilder::new(self.collection())
            .vectors_config(dense)
            .sparse_vectors_config(sparse)
            .metadata(metadata);
        if let Some(shards) = self.options.shards {
            request = request.shard_number(shards);
        }
        if let Some(replicas) = self.options.replicas {
            request = request.replication_factor(replicas);
        }
        if let Some(factor) = self.options.write_consistency {
            request = request.write_consistency_factor(factor);
        }
        match self.client.create_collection(request).await {
            Ok(_) => {}
            // Another process created it meanwhile: use theirs, if it fits.
            Err(e) if already_exists(&e) => return self.check().await,
            Err(e) => return Err(self.server("creating the collection")(e)),
        }
        for key in INDEXED_KEYS {
            self.client
                .create_field_index(
                    CreateFieldIndexCollectionBuilder::new(
                        self.collection(),
                        key,
                        FieldType::Keyword,
                    )
                    .wait(true),
                )
                .await
                .map_err(self.server("indexing the payload"))?;
        }
        Ok(())
    }

    /// Refuses a collection of another embedder or dimension.
    async fn check(&self) -> Result<()> {
        let info = self
            .client
            .collection_info(self.collection())
            .await
            .map_err(self.server("reading the collection's settings"))?;
        let config = info.result.and_then(|r| r.config);
        let built_with = config
            .as_ref()
            .and_then(|c| c.metadata.get(EMBEDDER_KEY))
            .and_then(|v| v.as_str().cloned());
        let dense = config
            .and_then(|c| c.params)
            .and_then(|p| p.vectors_config)
            .and_then(|v| v.config)
            .and_then(|c| match c {
                vectors_config::Config::ParamsMap(map) => map.map.get(DENSE).map(|p| p.size),
                vectors_config::Config::Params(_) => None,
            });
        let Some(size) = dense else {
            return Err(Error::Index(format!(
                "{} was not made by kb (it has no {DENSE:?} vector); name another \
                 collection with KB_VECTOR_COLLECTION",
                self.location()
            )));
        };
        let built_with = built_with.unwrap_or_else(|| "an unknown embedder".into());
        if size as usize != self.dimension || built_with != self.embedder {
            return Err(Error::Index(format!(
                "{} was built with the embedder {built_with:?} ({size} dimensions), not \
                 {:?} ({} dimensions); use --embedder {built_with}, another collection \
                 (KB_VECTOR_COLLECTION), or rebuild it with `kb ingest --rebuild PATH...`",
                self.location(),
                self.embedder,
                self.dimension,
            )));
        }
        Ok(())
    }

    /// Writes points (key, chunk, unit text) with their vectors, in
    /// batches, each acknowledged before the next.
    async fn write(
        &self,
        keyed: Vec<(String, &Chunk, Option<&str>)>,
        vectors: &[Vec<f32>],
    ) -> Result<()> {
        check_vectors(keyed.len(), vectors, self.dimension)?;
        if keyed.is_empty() {
            return Ok(());
        }
        self.ready().await?;
        // A chunk's point carries its keywords (a unit's leads to the chunk
        // by meaning alone): segmenting the texts is CPU work, done on the
        // blocking threads, all cores at once.
        let texts: Vec<Option<String>> = keyed
            .iter()
            .map(|(_, chunk, unit)| unit.is_none().then(|| chunk.text.clone()))
            .collect();
        let keywords = run_blocking("weighing keywords", move || {
            Ok(texts
                .par_iter()
                .map(|text| text.as_deref().map(bm25_document))
                .collect::<Vec<_>>())
        })
        .await?;
        let points: Vec<PointStruct> = keyed
            .iter()
            .zip(vectors)
            .zip(keywords)
            .map(|(((key, chunk, unit), vector), keywords)| {
                let mut named =
                    HashMap::from([(DENSE.to_string(), qdrant::Vector::new_dense(vector.clone()))]);
                if let Some(terms) = keywords {
                    named.insert(
                        SPARSE.to_string(),
                        qdrant::Vector::new_sparse(terms.indices, terms.values),
                    );
                }
                PointStruct::new(
                    point_id(key).to_string(),
                    named,
                    Payload::from(payload_of(chunk, *unit)),
                )
            })
            .collect();
        // A few batches in flight hide the round trips; the call returns
        // once every batch is acknowledged, or with the first failure.
        let batches: Vec<Vec<PointStruct>> =
            points.chunks(WRITE_BATCH).map(<[_]>::to_vec).collect();
        futures::stream::iter(batches)
            .map(|batch| async move {
                self.client
                    .upsert_points(UpsertPointsBuilder::new(self.collection(), batch).wait(true))
                    .await
                    .map_err(self.server("writing points"))
            })
            .buffer_unordered(WRITES_IN_FLIGHT)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(())
    }

    async fn delete_ids(&self, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.ready().await?;
        for batch in ids.chunks(WRITE_BATCH) {
            let filter =
                qdrant::Filter::must([qdrant::Condition::matches("chunk_id", batch.to_vec())]);
            self.client
                .delete_points(
                    DeletePointsBuilder::new(self.collection())
                        .points(filter)
                        .wait(true),
                )
                .await
                .map_err(self.server("deleting points"))?;
        }
        Ok(())
    }

    async fn nearest(
        &self,
        query: &[f32],
        k: usize,
        filter: Option<&Filter>,
    ) -> Result<Vec<ScoredChunk>> {
        check_query(query, self.dimension)?;
        if k == 0 {
            return Ok(Vec::new());
        }
        let request = QueryPointsBuilder::new(self.collection())
            .query(query.to_vec())
            .using(DENSE)
            .limit((k * UNIT_FANOUT) as u64);
        let hits = self.query(request, filter, "searching").await?;
        Ok(first_per_chunk(hits, k))
    }

    /// Runs a query (with `filter`, payloads included): the chunks of the
    /// points found, best first.
    async fn query(
        &self,
        request: QueryPointsBuilder,
        filter: Option<&Filter>,
        what: &'static str,
    ) -> Result<Vec<ScoredChunk>> {
        self.ready().await?;
        let mut request = request.with_payload(true);
        if let Some(filter) = filter.filter(|f| !f.is_empty()) {
            request = request.filter(to_filter(filter)?);
        }
        let points = self
            .client
            .query(request)
            .await
            .map_err(self.server(what))?
            .result;
        Ok(points
            .into_iter()
            .filter_map(|p| {
                Some(ScoredChunk {
                    chunk: chunk_from_payload(to_json(p.payload))?,
                    score: p.score,
                })
            })
            .collect())
    }

    /// The `k` chunks whose keywords best match `query` (BM25: the sparse
    /// vectors, weighted by the server's inverse document frequencies).
    async fn keyword_hits(
        &self,
        query: &str,
        k: usize,
        filter: Option<&Filter>,
    ) -> Result<Vec<ScoredChunk>> {
        let terms = bm25_query(query);
        if terms.indices.is_empty() || k == 0 {
            return Ok(Vec::new());
        }
        let request = QueryPointsBuilder::new(self.collection())
            .query(qdrant::VectorInput::new_sparse(terms.indices, terms.values))
            .using(SPARSE)
            .limit(k as u64);
        self.query(request, filter, "searching keywords").await
    }

    async fn all_ids(&self) -> Result<StoredIds> {
        self.ids_where(None).await
    }

    /// The chunk ids of the points `filter` accepts (all without one),
    /// split into chunks and units.
    async fn ids_where(&self, filter: Option<qdrant::Filter>) -> Result<StoredIds> {
        self.ready().await?;
        let mut ids = StoredIds::default();
        let mut offset: Option<qdrant::PointId> = None;
        loop {
            let mut request = ScrollPointsBuilder::new(self.collection())
                .limit(1024)
                .with_payload(qdrant::PayloadIncludeSelector::new(vec![
                    "chunk_id".to_string(),
                    UNIT_KEY.to_string(),
                ]))
                .with_vectors(false);
            if let Some(offset) = offset.take() {
                request = request.offset(offset);
            }
            if let Some(filter) = &filter {
                request = request.filter(filter.clone());
            }
            let page = self
                .client
                .scroll(request)
                .await
                .map_err(self.server("listing points"))?;
            for point in page.result {
                let unit = point.payload.contains_key(UNIT_KEY);
                let id = point
                    .payload
                    .get("chunk_id")
                    .and_then(|v| v.as_str().cloned())
                    .unwrap_or_default();
                if unit {
                    ids.units.push(id);
                } else {
                    ids.chunks.push(id);
                }
            }
            match page.next_page_offset {
                Some(next) => offset = Some(next),
                None => return Ok(ids),
            }
        }
    }

    async fn count(&self, filter: Option<qdrant::Filter>) -> Result<usize> {
        let mut request = CountPointsBuilder::new(self.collection()).exact(true);
        if let Some(filter) = filter {
            request = request.filter(filter);
        }
        let counted = self
            .client
            .count(request)
            .await
            .map_err(self.server("counting points"))?;
        Ok(counted.result.map_or(0, |r| r.count as usize))
    }
}

/// An error of the server call `what` on what `location` names.
pub(crate) fn server_error(
    location: String,
    what: &'static str,
) -> impl FnOnce(QdrantError) -> Error {
    move |source| Error::Server {
        location,
        what,
        hint: hint(&source),
        source: Box::new(ClientError(source)),
    }
}

/// What to tell the user about a failed call, beyond the server's words.
fn hint(error: &QdrantError) -> &'static str {
    let status = match error {
        QdrantError::ResponseError { status } => status,
        QdrantError::ResourceExhaustedError { .. } => {
            return "the server is overloaded; retry later";
        }
        _ => return "",
    };
    use tonic::Code;
    match status.code() {
        Code::Unauthenticated | Code::PermissionDenied => {
            "the server refused the API key: set KB_VECTOR_API_KEY (or [vector] api_key) to its key"
        }
        // The client reports a refused connection as an internal error.
        Code::Unavailable => UNREACHABLE,
        Code::Internal if status.message().contains("Failed to connect") => UNREACHABLE,
        Code::DeadlineExceeded | Code::Cancelled => {
            "the server did not answer in time (the limit is [vector] timeout_secs)"
        }
        _ => "",
    }
}

const UNREACHABLE: &str =
    "the server cannot be reached: is it running, and is the URL its gRPC port (6334 by default)?";

/// The client's error, told without the transport's headers.
#[derive(Debug)]
pub struct ClientError(QdrantError);

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            QdrantError::ResponseError { status } => {
                write!(f, "{:?}: {}", status.code(), status.message())
            }
            other => other.fmt(f),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        // The client's own error repeats this one's words; its cause does not.
        self.0.source()
    }
}

impl ClientError {
    /// The client's error.
    pub fn client(&self) -> &QdrantError {
        &self.0
    }
}

pub(crate) fn already_exists(error: &QdrantError) -> bool {
    matches!(error, QdrantError::ResponseError { status }
        if status.code() == tonic::Code::AlreadyExists
            || status.message().contains("already exists"))
}

/// The payload as JSON.
pub(crate) fn to_json(payload: HashMap<String, qdrant::Value>) -> kb_core::Metadata {
    payload
        .into_iter()
        .map(|(k, v)| (k, v.into_json()))
        .collect()
}

/// A kb filter in the client's terms.
fn to_filter(filter: &Filter) -> Result<qdrant::Filter> {
    let conditions = |conditions: &[kb_core::Condition]| -> Result<Vec<qdrant::Condition>> {
        conditions.iter().map(to_condition).collect()
    };
    Ok(qdrant::Filter {
        must: conditions(&filter.must)?,
        must_not: conditions(&filter.must_not)?,
        ..Default::default()
    })
}

fn to_condition(condition: &kb_core::Condition) -> Result<qdrant::Condition> {
    use kb_core::Condition as C;
    match condition {
        C::Equals { key, value } => match value {
            Value::String(s) => Ok(qdrant::Condition::matches(key.clone(), s.clone())),
            Value::Bool(b) => Ok(qdrant::Condition::matches(key.clone(), *b)),
            Value::Number(n) if n.as_i64().is_some() => Ok(qdrant::Condition::matches(
                key.clone(),
                n.as_i64().unwrap_or_default(),
            )),
            other => Err(Error::InvalidInput(format!(
                "filter {key}={other}: a vector server matches strings, integers and booleans"
            ))),
        },
        C::AnyOf { key, values } => {
            if let Some(strings) = values
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
            {
                return Ok(qdrant::Condition::matches(key.clone(), strings));
            }
            if let Some(ints) = values.iter().map(Value::as_i64).collect::<Option<Vec<_>>>() {
                return Ok(qdrant::Condition::matches(key.clone(), ints));
            }
            // Mixed kinds: any one of the single matches.
            let should = values
                .iter()
                .map(|value| {
                    to_condition(&C::Equals {
                        key: key.clone(),
                        value: value.clone(),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(qdrant::Filter::should(should).into())
        }
    }
}

/// Converts this crate's errors at the trait's boundary.
fn boundary<T>(result: Result<T>) -> kb_core::Result<T> {
    result.map_err(Into::into)
}

#[async_trait]
impl VectorStore for QdrantStore {
    fn dimension(&self) -> usize {
        self.dimension
    }

    async fn upsert(&self, chunks: &[Chunk], vectors: &[Vec<f32>]) -> kb_core::Result<()> {
        let keyed = chunks.iter().map(|c| (c.id.clone(), c, None)).collect();
        boundary(self.write(keyed, vectors).await)
    }

    async fn upsert_units(&self, units: &[Unit<'_>], vectors: &[Vec<f32>]) -> kb_core::Result<()> {
        let keyed = units
            .iter()
            .map(|u| (format!("{}#{}", u.chunk.id, u.n), u.chunk, Some(u.text)))
            .collect();
        boundary(self.write(keyed, vectors).await)
    }

    async fn delete(&self, ids: &[String]) -> kb_core::Result<()> {
        boundary(self.delete_ids(ids).await)
    }

    async fn search(
        &self,
        query: &[f32],
        k: usize,
        filter: Option<&Filter>,
    ) -> kb_core::Result<Vec<ScoredChunk>> {
        boundary(self.nearest(query, k, filter).await)
    }

    async fn ids(&self) -> kb_core::Result<StoredIds> {
        boundary(self.all_ids().await)
    }

    async fn counts(&self) -> kb_core::Result<(usize, usize)> {
        boundary(
            async {
                self.ready().await?;
                let all = self.count(None).await?;
                let units = self
                    .count(Some(qdrant::Filter::must_not([
                        qdrant::Condition::is_empty(UNIT_KEY),
                    ])))
                    .await?;
                Ok((all.saturating_sub(units), units))
            }
            .await,
        )
    }

    async fn setup(&self) -> kb_core::Result<()> {
        boundary(self.ready().await)
    }
}

/// The keywords live on the chunks' points: written with their vectors by
/// [`VectorStore::upsert`], removed with them by [`VectorStore::delete`].
#[async_trait]
impl KeywordIndex for QdrantStore {
    async fn keyword_search(
        &self,
        query: &str,
        k: usize,
        filter: Option<&Filter>,
    ) -> Result<Vec<ScoredChunk>> {
        self.keyword_hits(query, k, filter).await
    }

    /// Nothing to do: the points already carry (or no longer hold) them.
    async fn keyword_write(&self, _remove: Vec<String>, _add: Vec<Chunk>) -> Result<()> {
        Ok(())
    }

    async fn keyword_ids(&self) -> Result<Vec<String>> {
        let with_keywords = qdrant::Filter::must([qdrant::Condition::has_vector(SPARSE)]);
        Ok(self.ids_where(Some(with_keywords)).await?.chunks)
    }

    async fn keyword_count(&self) -> Result<usize> {
        self.ready().await?;
        self.count(Some(qdrant::Filter::must([qdrant::Condition::has_vector(
            SPARSE,
        )])))
        .await
    }
}
