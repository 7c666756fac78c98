//! LLM chains and retrieval-augmented generation with numbered citations.
