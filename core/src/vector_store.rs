//! The [`VectorStore`] trait and the metadata [`Filter`] every store understands.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Result;
use crate::document::{Chunk, Metadata, ScoredChunk};

/// A condition on one metadata field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// The field equals this value.
    Equals {
        /// The metadata key.
        key: String,
        /// The value it must have.
        value: Value,
    },
    /// The field equals one of these values.
    AnyOf {
        /// The metadata key.
        key: String,
        /// The values it may have.
        values: Vec<Value>,
    },
}

impl Condition {
    /// Whether `metadata` satisfies the condition. A field holding an array
    /// matches when any element does.
    pub fn matches(&self, metadata: &Metadata) -> bool {
        let field_matches = |key: &str, accept: &dyn Fn(&Value) -> bool| match metadata.get(key) {
            Some(Value::Array(items)) => items.iter().any(accept),
            Some(value) => accept(value),
            None => false,
        };
        match self {
            Condition::Equals { key, value } => field_matches(key, &|v| v == value),
            Condition::AnyOf { key, values } => field_matches(key, &|v| values.contains(v)),
        }
    }
}

/// A metadata filter: every `must` condition holds and no `must_not` condition
/// holds. The empty filter matches everything.
///
/// ```
/// use kb_core::{Filter, Metadata};
/// let filter: Filter = "source=notes.md".parse().unwrap();
/// let mut metadata = Metadata::new();
/// metadata.insert("source".into(), "notes.md".into());
/// assert!(filter.matches(&metadata));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Filter {
    /// Conditions that must all hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub must: Vec<Condition>,
    /// Conditions none of which may hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub must_not: Vec<Condition>,
}

impl Filter {
    /// A filter requiring `key == value`.
    pub fn equals(key: impl Into<String>, value: impl Into<Value>) -> Self {
        Filter::default().and(Condition::Equals {
            key: key.into(),
            value: value.into(),
        })
    }

    /// Adds a condition that must hold.
    pub fn and(mut self, condition: Condition) -> Self {
        self.must.push(condition);
        self
    }

    /// Adds a condition that must not hold.
    pub fn and_not(mut self, condition: Condition) -> Self {
        self.must_not.push(condition);
        self
    }

    /// Whether `metadata` passes the filter.
    pub fn matches(&self, metadata: &Metadata) -> bool {
        self.must.iter().all(|c| c.matches(metadata))
            && !self.must_not.iter().any(|c| c.matches(metadata))
    }

    /// Whether the filter has no condition.
    pub fn is_empty(&self) -> bool {
        self.must.is_empty() && self.must_not.is_empty()
    }
}

impl std::str::FromStr for Filter {
    type Err = crate::Error;

    /// Parses `key=value`, `key!=value` and `key=a|b|c`, joined by `,`.
    /// Values are strings unless they parse as JSON numbers or booleans.
    fn from_str(s: &str) -> Result<Self> {
        let mut filter = Filter::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value, negate) = if let Some((k, v)) = part.split_once("!=") {
                (k, v, true)
            } else if let Some((k, v)) = part.split_once('=') {
                (k, v, false)
            } else {
                return Err(crate::Error::InvalidInput(format!(
                    "filter {part:?} is not key=value or key!=value"
                )));
            };
            let key = key.trim();
            if key.is_empty() {
                return Err(crate::Error::InvalidInput(format!(
                    "filter {part:?} has an empty key"
                )));
            }
            let parse = |v: &str| -> Value {
                let v = v.trim();
                match serde_json::from_str::<Value>(v) {
                    Ok(n @ (Value::Number(_) | Value::Bool(_))) => n,
                    _ => Value::String(v.to_string()),
                }
            };
            let values: Vec<Value> = value.split('|').map(parse).collect();
            let condition = match <[Value; 1]>::try_from(values) {
                Ok([value]) => Condition::Equals {
                    key: key.into(),
                    value,
                },
                Err(values) => Condition::AnyOf {
                    key: key.into(),
                    values,
                },
            };
            filter = if negate {
                filter.and_not(condition)
            } else {
                filter.and(condition)
            };
        }
        Ok(filter)
    }
}

/// A piece of a stored chunk (a sentence or two) with a vector of its own:
/// a search that matches it finds the whole chunk. Small units match a
/// question about one sentence of a chunk that is about other things too.
#[derive(Debug, Clone, Copy)]
pub struct Unit<'a> {
    /// The chunk the unit belongs to.
    pub chunk: &'a Chunk,
    /// Its position among the chunk's units.
    pub n: usize,
    /// Its text.
    pub text: &'a str,
}

/// The chunk ids of every point in a store, one entry per point: the
/// chunks' own vectors, and their units' (a chunk id once per unit).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredIds {
    /// The chunk id of each chunk's own point.
    pub chunks: Vec<String>,
    /// The chunk id of each unit's point.
    pub units: Vec<String>,
}

/// What a knowledge base needs from a vector backend: chunks and their
/// [`Unit`]s with vectors, deletion, filtered nearest-neighbour search, and
/// what a consistency check reads. The embedded store and a Qdrant server
/// are two implementations; a knowledge base holds an `Arc<dyn VectorStore>`.
///
/// Implementations must not block the async runtime: a store that does
/// file or network I/O synchronously moves it to a blocking thread.
///
/// ```
/// use std::sync::Mutex;
/// use async_trait::async_trait;
/// use kb_core::{Chunk, Filter, Result, ScoredChunk, StoredIds, Unit, VectorStore};
///
/// /// Brute-force dot-product search over vectors in memory: (chunk, its
/// /// own vector or a unit's, whether a unit's).
/// #[derive(Debug, Default)]
/// struct Flat(Mutex<Vec<(Chunk, Vec<f32>, bool)>>);
///
/// #[async_trait]
/// impl VectorStore for Flat {
///     fn dimension(&self) -> usize {
///         2
///     }
///     async fn upsert(&self, chunks: &[Chunk], vectors: &[Vec<f32>]) -> Result<()> {
///         let mut points = self.0.lock().unwrap();
///         for (chunk, vector) in chunks.iter().zip(vectors) {
///             points.retain(|(c, _, unit)| *unit || c.id != chunk.id);
///             points.push((chunk.clone(), vector.clone(), false));
///         }
///         Ok(())
///     }
///     async fn upsert_units(&self, units: &[Unit<'_>], vectors: &[Vec<f32>]) -> Result<()> {
///         let mut points = self.0.lock().unwrap();
///         for (unit, vector) in units.iter().zip(vectors) {
///             points.push((unit.chunk.clone(), vector.clone(), true));
///         }
///         Ok(())
///     }
///     async fn delete(&self, ids: &[String]) -> Result<()> {
///         self.0.lock().unwrap().retain(|(c, _, _)| !ids.contains(&c.id));
///         Ok(())
///     }
///     async fn search(&self, query: &[f32], k: usize, filter: Option<&Filter>) -> Result<Vec<ScoredChunk>> {
///         let points = self.0.lock().unwrap();
///         let mut hits: Vec<ScoredChunk> = points
///             .iter()
///             .filter(|(c, _, _)| filter.is_none_or(|f| f.matches(&c.metadata)))
///             .map(|(c, v, _)| ScoredChunk { chunk: c.clone(), score: v.iter().zip(query).map(|(a, b)| a * b).sum() })
///             .collect();
///         hits.sort_by(|a, b| b.score.total_cmp(&a.score));
///         // A chunk is as near as its nearest point.
///         let mut seen = std::collections::HashSet::new();
///         hits.retain(|h| seen.insert(h.chunk.id.clone()));
///         hits.truncate(k);
///         Ok(hits)
///     }
///     async fn ids(&self) -> Result<StoredIds> {
///         let mut ids = StoredIds::default();
///         for (c, _, unit) in self.0.lock().unwrap().iter() {
///             if *unit { &mut ids.units } else { &mut ids.chunks }.push(c.id.clone());
///         }
///         Ok(ids)
///     }
/// }
///
/// # futures::executor::block_on(async {
/// let store = Flat::default();
/// let (a, b) = (Chunk::new("a", 0, "x"), Chunk::new("b", 0, "y"));
/// store.upsert(&[a.clone(), b], &[vec![1.0, 0.0], vec![0.0, 1.0]]).await?;
/// store.upsert_units(&[Unit { chunk: &a, n: 0, text: "x" }], &[vec![0.0, 1.0]]).await?;
/// let hits = store.search(&[0.1, 0.9], 2, None).await?;
/// assert_eq!(hits.len(), 2);
/// assert_eq!(store.ids().await?.units, vec![a.id.clone()]);
/// # Ok::<(), kb_core::Error>(())
/// # }).unwrap();
/// ```
#[async_trait]
pub trait VectorStore: Send + Sync + std::fmt::Debug {
    /// The vectors' dimension.
    fn dimension(&self) -> usize;

    /// Inserts or replaces chunks (by [`Chunk::id`]) with their vectors;
    /// `vectors[i]` belongs to `chunks[i]`.
    async fn upsert(&self, chunks: &[Chunk], vectors: &[Vec<f32>]) -> Result<()>;

    /// Inserts or replaces units of stored chunks with their vectors.
    async fn upsert_units(&self, units: &[Unit<'_>], vectors: &[Vec<f32>]) -> Result<()>;

    /// Removes chunks by id, with their units; unknown ids are ignored.
    async fn delete(&self, ids: &[String]) -> Result<()>;

    /// The `k` chunks nearest to `query` that pass `filter`, best first; a
    /// chunk is as near as its nearest vector (its own or a unit's), and
    /// appears once.
    async fn search(
        &self,
        query: &[f32],
        k: usize,
        filter: Option<&Filter>,
    ) -> Result<Vec<ScoredChunk>>;

    /// The chunk id of every stored point.
    async fn ids(&self) -> Result<StoredIds>;

    /// Points stored: `(chunks, units)`. By default counted from
    /// [`VectorStore::ids`]; stores that count faster say so.
    async fn counts(&self) -> Result<(usize, usize)> {
        let ids = self.ids().await?;
        Ok((ids.chunks.len(), ids.units.len()))
    }

    /// Prepares the store for use (creates or checks what it keeps its
    /// vectors in), so that a setup error shows before any work is done.
    /// Every other call sets up as needed too. By default nothing to do.
    async fn setup(&self) -> Result<()> {
        Ok(())
    }

    /// Makes every change so far durable. By default nothing to do.
    async fn flush(&self) -> Result<()> {
        Ok(())
    }

    /// Builds search indexes after a large change; whether anything was
    /// done. By default nothing to do.
    async fn optimize(&self) -> Result<bool> {
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(pairs: &[(&str, Value)]) -> Metadata {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn parses_and_matches_filters() {
        let filter: Filter = "source=a.md|b.md, lang!=en, year=2024"
            .parse()
            .expect("parse");
        assert_eq!(filter.must.len(), 2);
        assert_eq!(filter.must_not.len(), 1);
        let ok = meta(&[
            ("source", "b.md".into()),
            ("lang", "zh".into()),
            ("year", 2024.into()),
        ]);
        assert!(filter.matches(&ok));
        let wrong_lang = meta(&[
            ("source", "b.md".into()),
            ("lang", "en".into()),
            ("year", 2024.into()),
        ]);
        assert!(!filter.matches(&wrong_lang));
        let missing = meta(&[("source", "b.md".into())]);
        assert!(!filter.matches(&missing));
    }

    #[test]
    fn array_fields_match_any_element() {
        let filter = Filter::equals("tags", "rag");
        assert!(filter.matches(&meta(&[("tags", serde_json::json!(["llm", "rag"]))])));
        assert!(!filter.matches(&meta(&[("tags", serde_json::json!(["llm"]))])));
    }

    #[test]
    fn rejects_malformed_filters() {
        assert!("source".parse::<Filter>().is_err());
        assert!("=x".parse::<Filter>().is_err());
        assert!("".parse::<Filter>().expect("empty").is_empty());
    }
}
