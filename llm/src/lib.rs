//! The local quantized GGUF chat engine (candle) and remote OpenAI-compatible chat models.
