//! [`Bm25Index`]: keyword search over chunks, persisted with tantivy and
//! tokenized with jieba, so that Chinese text without spaces is searchable.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;

use jieba_rs::{Jieba, TokenizeMode};
use kb_core::{Chunk, Filter, ScoredChunk};
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, Occur, Query, TermQuery};
use tantivy::schema::{
    Field, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions, Value,
};
use tantivy::tokenizer::{Token, TokenStream, Tokenizer};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

use crate::blocking::run_blocking;
use crate::error::{Error, Result};
use crate::keywords::KeywordIndex;

/// The name the analyzer is registered under in the index.
const TOKENIZER: &str = "kb_jieba";

/// jieba's dictionary, loaded once per process.
pub(crate) fn jieba() -> &'static Jieba {
    static JIEBA: OnceLock<Jieba> = OnceLock::new();
    JIEBA.get_or_init(Jieba::new)
}

/// The words BM25 indexes in `text`: jieba's search-mode segmentation (long
/// Chinese words also yield their parts), lowercased, with whitespace and
/// punctuation dropped.
///
/// ```
/// let terms = kb_retrievers::bm25_terms("大模型微调的显存, GPU Memory!");
/// assert!(terms.contains(&"模型".to_string()));
/// assert!(terms.contains(&"显存".to_string()));
/// assert!(terms.contains(&"gpu".to_string()));
/// assert!(!terms.iter().any(|t| t == "," || t == " "));
/// ```
pub fn bm25_terms(text: &str) -> Vec<String> {
    analyze(text).into_iter().map(|t| t.text).collect()
}

fn analyze(text: &str) -> Vec<Token> {
    let mut byte_of_char: Vec<usize> = text.char_indices().map(|(b, _)| b).collect();
    byte_of_char.push(text.len());
    jieba()
        .tokenize(text, TokenizeMode::Search, true)
        .into_iter()
        .filter(|t| t.word.chars().any(char::is_alphanumeric))
        .enumerate()
        .map(|(position, t)| Token {
            offset_from: byte_of_char[t.start.min(byte_of_char.len() - 1)],
            offset_to: byte_of_char[t.end.min(byte_of_char.len() - 1)],
            position,
            text: t.word.to_lowercase(),
            position_length: 1,
        })
        .collect()
}

/// The tantivy tokenizer over [`analyze`].
#[derive(Clone, Default)]
struct KbTokenizer;

struct KbTokenStream {
    tokens: Vec<Token>,
    index: usize,
}

impl Tokenizer for KbTokenizer {
    type TokenStream<'a> = KbTokenStream;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> KbTokenStream {
        KbTokenStream {
            tokens: analyze(text),
            index: 0,
        }
    }
}

impl TokenStream for KbTokenStream {
    fn advance(&mut self) -> bool {
        if self.index < self.tokens.len() {
            self.index += 1;
            true
        } else {
            false
        }
    }

    fn token(&self) -> &Token {
        &self.tokens[self.index - 1]
    }

    fn token_mut(&mut self) -> &mut Token {
        &mut self.tokens[self.index - 1]
    }
}

#[derive(Clone, Copy)]
struct Fields {
    id: Field,
    doc_id: Field,
    source: Field,
    text: Field,
    chunk: Field,
}

/// A persistent BM25 index of chunks in a directory.
///
/// Adding a chunk whose id is already indexed replaces it; changes become
/// visible (and durable) at [`commit`](Self::commit). Clones share the
/// index. As a [`KeywordIndex`] it does its file work on tokio's blocking
/// threads.
#[derive(Clone)]
pub struct Bm25Index {
    dir: PathBuf,
    index: Index,
    reader: IndexReader,
    writer: Arc<Mutex<Option<IndexWriter>>>,
    fields: Fields,
}

impl std::fmt::Debug for Bm25Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bm25Index")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn schema() -> Schema {
    let mut builder = Schema::builder();
    builder.add_text_field("id", STRING | STORED);
    builder.add_text_field("doc_id", STRING);
    builder.add_text_field("source", STRING);
    let text = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(TOKENIZER)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    );
    builder.add_text_field("text", text);
    builder.add_text_field("chunk", STORED);
    builder.build()
}

fn index_error(dir: &Path, e: impl std::fmt::Display) -> Error {
    Error::Index(format!("BM25 index {}: {e}", dir.display()))
}

impl Bm25Index {
    /// Opens the index in `dir`, creating it if the directory is empty or missing.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            action: "creating",
            path: dir.into(),
            source,
        })?;
        let index = if dir.join("meta.json").exists() {
            Index::open_in_dir(dir).map_err(|e| index_error(dir, e))?
        } else {
            Index::create_in_dir(dir, schema()).map_err(|e| index_error(dir, e))?
        };
        // Tokenizers are not persisted: register ours on every open.
        index.tokenizers().register(TOKENIZER, KbTokenizer);
        let schema = index.schema();
        let field = |name: &str| {
            schema
                .get_field(name)
                .map_err(|e| index_error(dir, format!("unexpected schema: {e}")))
        };
        let fields = Fields {
            id: field("id")?,
            doc_id: field("doc_id")?,
            source: field("source")?,
            text: field("text")?,
            chunk: field("chunk")?,
        };
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(|e| index_error(dir, e))?;
        Ok(Bm25Index {
            dir: dir.to_path_buf(),
            index,
            reader,
            writer: Arc::new(Mutex::new(None)),
            fields,
        })
    }

    fn with_writer<T>(&self, f: impl FnOnce(&mut IndexWriter) -> Result<T>) -> Result<T> {
        let mut guard = self
            .writer
            .lock()
            .map_err(|_| index_error(&self.dir, "writer lock poisoned"))?;
        if guard.is_none() {
            let writer = self
                .index
                .writer_with_num_threads(1, 64 << 20)
                .map_err(|e| index_error(&self.dir, e))?;
            *guard = Some(writer);
        }
        match guard.as_mut() {
            Some(writer) => f(writer),
            None => Err(index_error(&self.dir, "no writer")),
        }
    }

    /// Adds (or replaces) `chunks`.
    pub fn upsert(&self, chunks: &[Chunk]) -> Result<()> {
        let f = self.fields;
        self.with_writer(|writer| {
            for chunk in chunks {
                writer.delete_term(Term::from_field_text(f.id, &chunk.id));
                let source = chunk
                    .metadata
                    .get("source")
                    .and_then(|v| v.as_str())
                    .unwrap_or_default();
                let stored = serde_json::to_string(chunk).map_err(|e| index_error(&self.dir, e))?;
                let mut doc = TantivyDocument::default();
                doc.add_text(f.id, &chunk.id);
                doc.add_text(f.doc_id, &chunk.doc_id);
                doc.add_text(f.source, source);
                doc.add_text(f.text, &chunk.text);
                doc.add_text(f.chunk, &stored);
                writer
                    .add_document(doc)
                    .map_err(|e| index_error(&self.dir, e))?;
            }
            Ok(())
        })
    }

    /// Removes the chunks with these ids.
    pub fn delete(&self, ids: &[String]) -> Result<()> {
        let f = self.fields;
        self.with_writer(|writer| {
            for id in ids {
                writer.delete_term(Term::from_field_text(f.id, id));
            }
            Ok(())
        })
    }

    /// Makes the changes so far durable and visible to searches.
    pub fn commit(&self) -> Result<()> {
        self.with_writer(|writer| {
            writer.commit().map_err(|e| index_error(&self.dir, e))?;
            Ok(())
        })?;
        self.reader.reload().map_err(|e| index_error(&self.dir, e))
    }

    /// Chunks indexed.
    pub fn count(&self) -> usize {
        self.reader.searcher().num_docs() as usize
    }

    /// The `k` best chunks for `query` by BM25, among those `filter` accepts.
    pub fn search(
        &self,
        query: &str,
        k: usize,
        filter: Option<&Filter>,
    ) -> Result<Vec<ScoredChunk>> {
        let f = self.fields;
        let mut terms = bm25_terms(query);
        terms.sort();
        terms.dedup();
        if terms.is_empty() || k == 0 {
            return Ok(Vec::new());
        }
        let clauses: Vec<(Occur, Box<dyn Query>)> = terms
            .iter()
            .map(|t| {
                let q: Box<dyn Query> = Box::new(TermQuery::new(
                    Term::from_field_text(f.text, t),
                    IndexRecordOption::WithFreqs,
                ));
                (Occur::Should, q)
            })
            .collect();
        let query = BooleanQuery::new(clauses);
        let searcher = self.reader.searcher();
        // Metadata filters are applied to the hits; fetch more until enough pass.
        let mut limit = if filter.is_some() { k * 4 } else { k };
        loop {
            let top = searcher
                .search(&query, &TopDocs::with_limit(limit).order_by_score())
                .map_err(|e| index_error(&self.dir, e))?;
            let exhausted = top.len() < limit;
            let mut hits = Vec::with_capacity(k);
            for (score, address) in top {
                let doc: TantivyDocument = searcher
                    .doc(address)
                    .map_err(|e| index_error(&self.dir, e))?;
                let Some(stored) = doc.get_first(f.chunk).and_then(|v| v.as_str()) else {
                    continue;
                };
                let chunk: Chunk =
                    serde_json::from_str(stored).map_err(|e| index_error(&self.dir, e))?;
                if filter.is_none_or(|flt| flt.matches(&chunk.metadata)) {
                    hits.push(ScoredChunk { chunk, score });
                    if hits.len() == k {
                        return Ok(hits);
                    }
                }
            }
            if exhausted || limit >= 100_000 {
                return Ok(hits);
            }
            limit *= 4;
        }
    }

    /// Every indexed document's chunk id, one entry per document (so a
    /// chunk indexed twice shows twice).
    pub fn ids(&self) -> Result<Vec<String>> {
        self.stored(self.fields.id)
    }

    /// Every chunk in the index, in no particular order.
    pub fn chunks(&self) -> Result<Vec<Chunk>> {
        self.stored(self.fields.chunk)?
            .iter()
            .map(|stored| serde_json::from_str(stored).map_err(|e| index_error(&self.dir, e)))
            .collect()
    }

    /// The stored text `field` of every live document.
    fn stored(&self, field: Field) -> Result<Vec<String>> {
        let searcher = self.reader.searcher();
        let mut values = Vec::with_capacity(searcher.num_docs() as usize);
        for segment in searcher.segment_readers() {
            let store = segment
                .get_store_reader(16)
                .map_err(|e| index_error(&self.dir, e))?;
            for doc in segment.doc_ids_alive() {
                let doc: TantivyDocument = store.get(doc).map_err(|e| index_error(&self.dir, e))?;
                if let Some(value) = doc.get_first(field).and_then(|v| v.as_str()) {
                    values.push(value.to_string());
                }
            }
        }
        Ok(values)
    }
}

#[async_trait]
impl KeywordIndex for Bm25Index {
    async fn keyword_search(
        &self,
        query: &str,
        k: usize,
        filter: Option<&Filter>,
    ) -> Result<Vec<ScoredChunk>> {
        let (index, query, filter) = (self.clone(), query.to_string(), filter.cloned());
        run_blocking("a BM25 search", move || {
            index.search(&query, k, filter.as_ref())
        })
        .await
    }

    async fn keyword_write(&self, remove: Vec<String>, add: Vec<Chunk>) -> Result<()> {
        let index = self.clone();
        run_blocking("writing the BM25 index", move || {
            index.delete(&remove)?;
            index.upsert(&add)?;
            index.commit()
        })
        .await
    }

    async fn keyword_ids(&self) -> Result<Vec<String>> {
        let index = self.clone();
        run_blocking("reading the BM25 index", move || index.ids()).await
    }

    async fn keyword_count(&self) -> Result<usize> {
        Ok(self.count())
    }
}

/// BM25's term-frequency saturation (tantivy's and Lucene's default).
const K1: f32 = 1.2;
/// BM25's length normalisation (tantivy's and Lucene's default).
const B: f32 = 0.75;
/// The length (in terms) a chunk's is normalised against. A sparse vector
/// is written once per chunk, so the collection's average when it is
/// searched cannot be known: this is the average chunk at kb's default
/// chunk size over mixed Chinese and English notes (99.6 terms on the
/// sample corpus, jieba's search mode counting a long word's parts too).
const TYPICAL_TERMS: f32 = 100.0;

/// A sparse vector: sorted term indices and their weights.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct SparseTerms {
    pub(crate) indices: Vec<u32>,
    pub(crate) values: Vec<f32>,
}

/// A term's index in a sparse vector: its FNV-1a hash (stable across
/// processes, versions and machines; two of a chunk's terms rarely share
/// one, and then count as one).
fn term_index(term: &str) -> u32 {
    term.bytes().fold(0x811c_9dc5u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    })
}

fn sparse(weights: BTreeMap<u32, f32>) -> SparseTerms {
    let (indices, values) = weights.into_iter().unzip();
    SparseTerms { indices, values }
}

/// `text` as a BM25 document vector: each term's saturated, length
/// normalised frequency. A server that multiplies each term by its inverse
/// document frequency (Qdrant's `idf` modifier) then scores a query's terms
/// as BM25 does.
pub(crate) fn bm25_document(text: &str) -> SparseTerms {
    let terms = bm25_terms(text);
    let length = terms.len() as f32;
    let mut counts: BTreeMap<u32, f32> = BTreeMap::new();
    for term in &terms {
        *counts.entry(term_index(term)).or_default() += 1.0;
    }
    let norm = K1 * (1.0 - B + B * length / TYPICAL_TERMS);
    for tf in counts.values_mut() {
        *tf = *tf * (K1 + 1.0) / (*tf + norm);
    }
    sparse(counts)
}

/// `query` as a BM25 query vector: each distinct term once, as the local
/// index's query counts it.
pub(crate) fn bm25_query(query: &str) -> SparseTerms {
    sparse(
        bm25_terms(query)
            .iter()
            .map(|term| (term_index(term), 1.0))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(doc: &str, n: u32, text: &str, source: &str) -> Chunk {
        Chunk::new(doc, n, text).with_metadata("source", source)
    }

    #[test]
    fn chinese_queries_find_unspaced_text_and_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let chunks = vec![
            chunk(
                "a",
                0,
                "大模型微调需要大量显存，LoRA 通过低秩矩阵减少参数。",
                "a.md",
            ),
            chunk("b", 0, "注意力机制让模型关注输入的不同部分。", "b.md"),
            chunk(
                "c",
                0,
                "The quick brown fox jumps over the lazy dog.",
                "c.md",
            ),
        ];
        {
            let index = Bm25Index::open(dir.path()).expect("open");
            index.upsert(&chunks).expect("add");
            index.commit().expect("commit");
            // Replacing by id does not duplicate.
            index.upsert(&chunks[..1]).expect("add again");
            index.commit().expect("commit");
            assert_eq!(index.count(), 3);
        }
        let index = Bm25Index::open(dir.path()).expect("reopen");
        let hits = index.search("大模型微调显存", 3, None).expect("search");
        assert_eq!(hits[0].chunk.doc_id, "a");
        let hits = index.search("注意力机制", 3, None).expect("search");
        assert_eq!(hits[0].chunk.doc_id, "b");
        let hits = index.search("LAZY dog", 3, None).expect("search");
        assert_eq!(hits[0].chunk.doc_id, "c");
        let filter: Filter = "source=b.md".parse().expect("filter");
        let hits = index.search("模型", 3, Some(&filter)).expect("search");
        assert!(hits.iter().all(|h| h.chunk.doc_id == "b"), "{hits:?}");
        index.delete(&[chunks[1].id.clone()]).expect("delete");
        index.commit().expect("commit");
        assert!(
            index
                .search("注意力机制", 3, None)
                .expect("search")
                .is_empty()
        );
        assert!(index.search("，。！", 3, None).expect("search").is_empty());
    }

    #[test]
    fn sparse_vectors_weigh_terms_as_bm25_does() {
        let short = bm25_document("注意力机制 attention attention");
        // Sorted, distinct indices; the same text gives the same vector.
        assert!(short.indices.windows(2).all(|w| w[0] < w[1]), "{short:?}");
        assert_eq!(short, bm25_document("注意力机制 attention attention"));
        let weight = |v: &SparseTerms, term: &str| {
            let i = v.indices.iter().position(|&i| i == term_index(term));
            i.map(|i| v.values[i])
        };
        // A repeated term counts more, but less than twice (saturation).
        let once = weight(&short, "注意力").expect("a part of the long word");
        let twice = weight(&short, "attention").expect("attention");
        assert!(twice > once && twice < 2.0 * once, "{once} {twice}");
        // The same count in a longer chunk weighs less.
        let long = bm25_document(&format!("注意力机制 {}", "padding words ".repeat(60)));
        assert!(weight(&long, "注意力").expect("term") < once);
        // A query counts each distinct term once, and punctuation not at all.
        let query = bm25_query("Attention, attention! 注意力");
        let mut distinct = bm25_terms("attention 注意力");
        distinct.sort();
        distinct.dedup();
        assert_eq!(
            query.indices.len(),
            distinct.len(),
            "{query:?} {distinct:?}"
        );
        assert_eq!(query.values, vec![1.0; query.indices.len()]);
        assert!(bm25_query("，。！").indices.is_empty());
        // Indices are fixed forever: they are stored on servers.
        assert_eq!(term_index("attention"), 0xe432_5ab9);
    }
}
