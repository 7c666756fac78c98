//! Local BERT-family embedders (candle) and remote OpenAI-compatible embeddings.
