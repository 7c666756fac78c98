//! Vector backends behind [`kb_core::VectorStore`]: one folder per backend,
//! and the payload format they share.

pub(crate) mod edge;
pub(crate) mod payload;
pub(crate) mod qdrant;
