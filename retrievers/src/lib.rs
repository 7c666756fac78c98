//! Loaders, splitters, vector stores, BM25 and hybrid retrieval: the knowledge base.
