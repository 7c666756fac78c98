//! [`Tokenizer`]: the model's tokenizer, rebuilt from the GGUF metadata
//! (`tokenizer.ggml.*`), and [`StreamDecoder`] for UTF-8-safe streaming.

use std::collections::HashMap;

use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior};

use crate::error::{LlmError, Result};
use crate::gguf::GgufFile;

mod spm;

use spm::Spm;

/// GGUF token types (`tokenizer.ggml.token_type`).
const TYPE_UNKNOWN: usize = 2;
const TYPE_CONTROL: usize = 3;
const TYPE_USER_DEFINED: usize = 4;
const TYPE_UNUSED: usize = 5;
const TYPE_BYTE: usize = 6;

/// Control tokens that end a turn in the chat formats kb knows, besides the
/// declared EOS.
const END_OF_TURN: &[&str] = &[
    "<|im_end|>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|end|>",
    "<end_of_turn>",
];

/// Llama 3's pre-tokenizer split.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen 2's: like Llama 3's with single digits.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The model's tokenizer, with its special tokens.
///
/// Built from what the GGUF stores (`tokenizer.ggml.*`), it reproduces
/// llama.cpp's token ids for both kinds of vocabulary GGUF files carry:
/// byte-level BPE (`gpt2`: SmolLM, Llama 3, Qwen 2/3) and SentencePiece
/// (`llama`: Llama 1/2, Mistral, Phi-3). Special tokens written in the text
/// (`<|im_start|>`, `<s>`) become their ids, as in llama.cpp.
pub struct Tokenizer {
    model: Model,
    /// The bytes each token stands for.
    bytes: TokenBytes,
    /// Which tokens are control tokens (not shown in generated text).
    control: Vec<bool>,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    end_of_generation: Vec<u32>,
    /// The texts the tokenizer turns into added tokens wherever they occur
    /// (`<|im_start|>`, …), longest first.
    added: Vec<String>,
}

/// How text becomes pieces.
enum Model {
    /// Byte-level BPE, with the special tokens registered as added tokens.
    Bpe(Box<tokenizers::Tokenizer>),
    /// SentencePiece, with the special tokens (longest first) split out of
    /// the text before it is encoded.
    Spm { spm: Spm, specials: Vec<Special> },
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab", &self.bytes.len())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// Builds the tokenizer a GGUF describes.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        let kind = gguf.string("tokenizer.ggml.model")?;
        let spm = match kind {
            "gpt2" => false,
            "llama" => true,
            other => {
                return Err(LlmError::Tokenizer(format!(
                    "tokenizer model {other:?} is not supported (kb runs byte-level BPE, `gpt2` \
                     in GGUF terms: SmolLM, Llama 3, Qwen 2/3; and SentencePiece, `llama`: \
                     Llama 1/2, Mistral, Phi-3)"
                )));
            }
        };
        let tokens = gguf.strings("tokenizer.ggml.tokens")?;
        let types = if gguf.has("tokenizer.ggml.token_type") {
            gguf.ints("tokenizer.ggml.token_type")?
        } else {
            vec![1; tokens.len()]
        };
        if types.len() != tokens.len() {
            return Err(LlmError::metadata(
                "tokenizer.ggml.token_type",
                format!("has {} entries for {} tokens", types.len(), tokens.len()),
            ));
        }
        let vocab: HashMap<String, u32> = tokens
            .iter()
            .enumerate()
            .map(|(id, t)| (t.to_string(), id as u32))
            .collect();
        let is_special = |t: usize| t == TYPE_CONTROL || t == TYPE_USER_DEFINED;
        // Markers only: a single character (or none) is ordinary text too.
        let mut added: Vec<String> = tokens
            .iter()
            .zip(&types)
            .filter(|(text, t)| is_special(**t) && text.chars().count() > 1)
            .map(|(text, _)| text.to_string())
            .collect();
        added.sort_by_key(|t| std::cmp::Reverse(t.len()));

        let optional_id = |key: &str| -> Result<Option<u32>> {
            if !gguf.has(key) {
                return Ok(None);
            }
            let id = gguf.usize(key)?;
            if id >= tokens.len() {
                return Err(LlmError::metadata(
                    key,
                    format!("token id {id} out of range"),
                ));
            }
            Ok(Some(id as u32))
        };
        // SentencePiece vocabularies default to <unk> 0, <s> 1, </s> 2.
        let default_id = |id: u32| (spm && (id as usize) < tokens.len()).then_some(id);
        let bos = optional_id("tokenizer.ggml.bos_token_id")?.or(default_id(1));
        let eos = optional_id("tokenizer.ggml.eos_token_id")?.or(default_id(2));
        let flag = |key: &str, default: bool| -> Result<bool> {
            if gguf.has(key) {
                gguf.bool(key)
            } else {
                Ok(default)
            }
        };
        // llama.cpp's defaults: SentencePiece and Llama 3 vocabularies start with BOS.
        let llama3 = !spm
            && gguf.has("tokenizer.ggml.pre")
            && llama3_family(gguf.string("tokenizer.ggml.pre")?);
        let add_bos = flag("tokenizer.ggml.add_bos_token", spm || llama3)?;
        let add_eos = flag("tokenizer.ggml.add_eos_token", false)?;

        let (model, bytes) = if spm {
            let unknown = optional_id("tokenizer.ggml.unknown_token_id")?.or(default_id(0));
            let add_space_prefix = flag("tokenizer.ggml.add_space_prefix", true)?;
            spm_model(gguf, &tokens, &types, vocab, unknown, add_space_prefix)?
        } else {
            bpe_model(gguf, &tokens, &types, vocab)?
        };
        let control: Vec<bool> = types
            .iter()
            .map(|t| *t == TYPE_CONTROL || (spm && *t == TYPE_UNKNOWN))
            .collect();
        let mut end_of_generation: Vec<u32> = eos.into_iter().collect();
        for key in ["tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"] {
            end_of_generation.extend(optional_id(key)?);
        }
        for text in END_OF_TURN {
            if let Some(id) = model.token_id(text)
                && control.get(id as usize).copied().unwrap_or(false)
            {
                end_of_generation.push(id);
            }
        }
        end_of_generation.sort_unstable();
        end_of_generation.dedup();
        Ok(Tokenizer {
            model,
            bytes,
            control,
            bos,
            eos,
            add_bos,
            add_eos,
            end_of_generation,
            added,
        })
    }

    /// `text` with every added token written in it (`<|im_start|>`,
    /// `<|im_end|>`, …) broken by a zero-width space after its first
    /// character, so that it is read as the characters it shows. Message
    /// contents go through this before the chat template wraps them: a
    /// retrieved document or a user cannot open or close a turn.
    pub fn defuse<'a>(&self, text: &'a str) -> std::borrow::Cow<'a, str> {
        if !self.added.iter().any(|t| text.contains(t.as_str())) {
            return std::borrow::Cow::Borrowed(text);
        }
        let mut out = text.to_string();
        for token in &self.added {
            if out.contains(token.as_str()) {
                let mut chars = token.chars();
                let first = chars.next().map(String::from).unwrap_or_default();
                out = out.replace(
                    token.as_str(),
                    &format!("{first}\u{200B}{}", chars.as_str()),
                );
            }
        }
        std::borrow::Cow::Owned(out)
    }

    /// The token ids of `text`, with special tokens written in it parsed,
    /// and without BOS/EOS.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        if text.is_empty() {
            return Ok(Vec::new());
        }
        match &self.model {
            Model::Bpe(inner) => {
                let encoding = inner
                    .encode_fast(text, false)
                    .map_err(|e| LlmError::Tokenizer(e.to_string()))?;
                Ok(encoding.get_ids().to_vec())
            }
            Model::Spm { spm, specials } => {
                let mut ids = Vec::new();
                // Text at the start or after a special token gets the space prefix.
                let mut after_special = true;
                for fragment in split_specials(text, specials) {
                    match fragment {
                        Fragment::Text(run) => {
                            spm.encode_text(run, after_special, &mut ids);
                            after_special = false;
                        }
                        Fragment::Token(id) => {
                            ids.push(id);
                            after_special = true;
                        }
                    }
                }
                Ok(ids)
            }
        }
    }

    /// The ids of a whole prompt: [`encode`](Self::encode) plus BOS/EOS where
    /// the model asks for them (`tokenizer.ggml.add_bos_token`), BOS not doubled.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = self.encode(text)?;
        if self.add_bos
            && let Some(bos) = self.bos
            && ids.first() != Some(&bos)
        {
            ids.insert(0, bos);
        }
        if self.add_eos
            && let Some(eos) = self.eos
        {
            ids.push(eos);
        }
        Ok(ids)
    }

    /// The text of `ids`; control tokens are left out when `skip_control`.
    /// Invalid UTF-8 (a character cut off at the end) becomes U+FFFD. With a
    /// SentencePiece vocabulary that adds a space prefix, the space the first
    /// token carries is dropped, so that text → ids → text is the identity.
    pub fn decode(&self, ids: &[u32], skip_control: bool) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            if skip_control && self.is_control(id) {
                continue;
            }
            bytes.extend_from_slice(self.token_bytes(id));
        }
        if self.adds_space_prefix()
            && ids.first().is_some_and(|&id| !self.is_control(id))
            && bytes.first() == Some(&b' ')
        {
            bytes.remove(0);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Whether encoding puts a space in front of the text (SentencePiece's
    /// `add_space_prefix`): generated text then starts with that space too.
    pub fn adds_space_prefix(&self) -> bool {
        matches!(&self.model, Model::Spm { spm, .. } if spm.add_space_prefix)
    }

    /// The bytes token `id` stands for (empty for an unknown id).
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.bytes.get(id)
    }

    /// Whether `id` is a control token (`<|im_start|>`, `<|im_end|>`, …).
    pub fn is_control(&self, id: u32) -> bool {
        self.control.get(id as usize).copied().unwrap_or(false)
    }

    /// Whether generating `id` ends the answer (EOS, end of turn).
    pub fn is_end_of_generation(&self, id: u32) -> bool {
        self.end_of_generation.binary_search(&id).is_ok()
    }

    /// The tokens that end generation.
    pub fn end_of_generation(&self) -> &[u32] {
        &self.end_of_generation
    }

    /// The id of token `text`, if the vocabulary has it.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.model.token_id(text)
    }

    /// The vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.bytes.len()
    }

    /// The beginning-of-sequence token.
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    /// The end-of-sequence token.
    pub fn eos(&self) -> Option<u32> {
        self.eos
    }

    /// The text of a token id, for templates (`bos_token`, `eos_token`).
    pub(crate) fn token_text(&self, id: Option<u32>) -> String {
        id.map(|id| String::from_utf8_lossy(self.token_bytes(id)).into_owned())
            .unwrap_or_default()
    }
}

/// Every token's bytes, end to end in one buffer (a vocabulary of 262k
/// tokens would otherwise be 262k small allocations).
#[derive(Debug, Default)]
struct TokenBytes {
    data: Vec<u8>,
    /// Where each token's bytes end in `data`.
    ends: Vec<u32>,
}

impl TokenBytes {
    fn with_capacity(tokens: usize) -> Self {
        TokenBytes {
            data: Vec::with_capacity(tokens * 8),
            ends: Vec::with_capacity(tokens),
        }
    }

    /// Adds bytes to the token being built.
    fn extend(&mut self, bytes: &[u8]) {
        self.data.extend_from_slice(bytes);
    }

    /// Ends the token being built.
    fn finish_token(&mut self) {
        self.ends.push(self.data.len() as u32);
    }

    /// Token `id`'s bytes (empty for an unknown id).
    fn get(&self, id: u32) -> &[u8] {
        let id = id as usize;
        let Some(&end) = self.ends.get(id) else {
            return &[];
        };
        let start = if id == 0 { 0 } else { self.ends[id - 1] };
        &self.data[start as usize..end as usize]
    }

    fn len(&self) -> usize {
        self.ends.len()
    }
}

impl Model {
    /// The id of token `text`, if the vocabulary has it.
    fn token_id(&self, text: &str) -> Option<u32> {
        match self {
            Model::Bpe(tokenizer) => tokenizer.token_to_id(text),
            Model::Spm { spm, .. } => spm.id(text),
        }
    }
}

/// The byte-level BPE model and each token's bytes.
fn bpe_model(
    gguf: &GgufFile,
    tokens: &[&str],
    types: &[usize],
    vocab: HashMap<String, u32>,
) -> Result<(Model, TokenBytes)> {
    let merges = gguf.strings("tokenizer.ggml.merges")?;
    let pre = if gguf.has("tokenizer.ggml.pre") {
        gguf.string("tokenizer.ggml.pre")?
    } else {
        "default"
    };
    let merges = merges
        .iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| {
                    LlmError::metadata("tokenizer.ggml.merges", format!("bad merge {m:?}"))
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(
            vocab
                .into_iter()
                .collect::<tokenizers::models::bpe::Vocab>(),
            merges,
        )
        // Llama 3's family takes a word that is itself a token whole.
        .ignore_merges(llama3_family(pre))
        .build()
        .map_err(|e| LlmError::Tokenizer(e.to_string()))?;
    let mut inner = tokenizers::Tokenizer::new(bpe);
    inner.with_pre_tokenizer(Some(pre_tokenizer(pre)?));
    let specials: Vec<AddedToken> = tokens
        .iter()
        .zip(types)
        .filter(|(_, t)| **t == TYPE_CONTROL || **t == TYPE_USER_DEFINED)
        .map(|(text, t)| AddedToken::from(text.to_string(), *t == TYPE_CONTROL))
        .collect();
    inner
        .add_special_tokens(specials)
        .map_err(|e| LlmError::Tokenizer(e.to_string()))?;
    let byte_of = byte_decoder();
    let mut bytes = TokenBytes::with_capacity(tokens.len());
    let mut utf8 = [0u8; 4];
    for (text, t) in tokens.iter().zip(types) {
        if *t == TYPE_CONTROL || *t == TYPE_USER_DEFINED {
            bytes.extend(text.as_bytes());
        } else {
            for c in text.chars() {
                match byte_of.get(&c) {
                    Some(b) => bytes.extend(&[*b]),
                    None => bytes.extend(c.encode_utf8(&mut utf8).as_bytes()),
                }
            }
        }
        bytes.finish_token();
    }
    Ok((Model::Bpe(Box::new(inner)), bytes))
}

/// The SentencePiece model and each token's bytes.
fn spm_model(
    gguf: &GgufFile,
    tokens: &[&str],
    types: &[usize],
    vocab: HashMap<String, u32>,
    unknown: Option<u32>,
    add_space_prefix: bool,
) -> Result<(Model, TokenBytes)> {
    let scores = gguf.floats("tokenizer.ggml.scores")?;
    if scores.len() != tokens.len() {
        return Err(LlmError::metadata(
            "tokenizer.ggml.scores",
            format!("has {} entries for {} tokens", scores.len(), tokens.len()),
        ));
    }
    let mut byte_tokens = vec![None; 256];
    let mut bytes = TokenBytes::with_capacity(tokens.len());
    for (id, (text, t)) in tokens.iter().zip(types).enumerate() {
        let token_bytes = match *t {
            TYPE_BYTE => match spm::byte_of_token(text) {
                Some(b) => {
                    byte_tokens[b as usize] = Some(id as u32);
                    vec![b]
                }
                None => text.as_bytes().to_vec(),
            },
            TYPE_CONTROL | TYPE_USER_DEFINED | TYPE_UNKNOWN => text.as_bytes().to_vec(),
            TYPE_UNUSED => Vec::new(),
            _ => text.replace(spm::SPACE, " ").into_bytes(),
        };
        bytes.extend(&token_bytes);
        bytes.finish_token();
    }
    // A vocabulary without byte tokens may still have the byte as a piece.
    for (b, slot) in byte_tokens.iter_mut().enumerate() {
        if slot.is_none() && b < 0x80 {
            *slot = vocab.get(char::from(b as u8).to_string().as_str()).copied();
        }
    }
    // llama.cpp splits control, user-defined and unknown tokens out of the
    // text. For Phi-3 it also drops the whitespace after them (its chat
    // template writes "<|user|>\n"), except after <unk>, <s> and <|endoftext|>.
    let phi3 = gguf.has("general.name") && {
        let name = gguf.string("general.name")?.to_lowercase();
        name.contains("phi-3") || name.contains("phi3")
    };
    let mut specials: Vec<Special> = tokens
        .iter()
        .zip(types)
        .enumerate()
        .filter(|(_, (text, t))| {
            !text.is_empty() && matches!(**t, TYPE_CONTROL | TYPE_USER_DEFINED | TYPE_UNKNOWN)
        })
        .map(|(id, (text, _))| Special {
            text: text.to_string(),
            id: id as u32,
            strip_after: phi3 && !matches!(*text, "<unk>" | "<s>" | "<|endoftext|>"),
        })
        .collect();
    specials.sort_by_key(|s| std::cmp::Reverse(s.text.len()));
    let spm = Spm::new(vocab, scores, byte_tokens, unknown, add_space_prefix);
    Ok((Model::Spm { spm, specials }, bytes))
}

/// A special token SentencePiece text is split around.
struct Special {
    text: String,
    id: u32,
    /// Whitespace right after the token is dropped (llama.cpp's `rstrip`).
    strip_after: bool,
}

/// A piece of the input: plain text, or a special token written in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fragment<'a> {
    Text(&'a str),
    Token(u32),
}

/// `text` cut around the special tokens written in it. As in llama.cpp, the
/// longest token is split out everywhere first, then the next longest from
/// what text is left, and so on.
fn split_specials<'a>(text: &'a str, specials: &[Special]) -> Vec<Fragment<'a>> {
    let mut fragments = vec![Fragment::Text(text)];
    for Special {
        text: special,
        id,
        strip_after,
    } in specials
    {
        if !text.contains(special.as_str()) {
            continue;
        }
        let mut next = Vec::with_capacity(fragments.len() + 2);
        for fragment in fragments {
            let Fragment::Text(mut rest) = fragment else {
                next.push(fragment);
                continue;
            };
            while let Some(at) = rest.find(special.as_str()) {
                if at > 0 {
                    next.push(Fragment::Text(&rest[..at]));
                }
                next.push(Fragment::Token(*id));
                rest = &rest[at + special.len()..];
                if *strip_after {
                    // C's isspace: space, \t, \n, \v, \f, \r.
                    rest = rest.trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r']);
                }
            }
            if !rest.is_empty() {
                next.push(Fragment::Text(rest));
            }
        }
        fragments = next;
    }
    fragments
}

/// Pre-tokenizer names llama.cpp treats as Llama 3's.
fn llama3_family(pre: &str) -> bool {
    matches!(
        pre,
        "llama-bpe" | "llama3" | "llama-v3" | "falcon3" | "pixtral"
    )
}

fn pre_tokenizer(name: &str) -> Result<PreTokenizerWrapper> {
    let split = |pattern: &str| -> Result<PreTokenizerWrapper> {
        let split = Split::new(
            SplitPattern::Regex(pattern.to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| LlmError::Tokenizer(e.to_string()))?;
        Ok(PreTokenizerWrapper::Sequence(Sequence::new(vec![
            split.into(),
            ByteLevel::new(false, false, false).into(),
        ])))
    };
    match name {
        _ if llama3_family(name) => split(LLAMA3_SPLIT),
        "smaug-bpe" => split(LLAMA3_SPLIT),
        "qwen2" | "deepseek-r1-qwen" => split(QWEN2_SPLIT),
        "smollm" | "starcoder" | "refact" | "codeshell" => {
            Ok(PreTokenizerWrapper::Sequence(Sequence::new(vec![
                Digits::new(true).into(),
                ByteLevel::new(false, false, true).into(),
            ])))
        }
        "gpt2" | "default" | "gpt-2" | "olmo" | "jais" => {
            Ok(ByteLevel::new(false, false, true).into())
        }
        other => {
            tracing::warn!(
                pre = other,
                "unknown tokenizer.ggml.pre; using GPT-2's pre-tokenizer, ids may differ from llama.cpp"
            );
            Ok(ByteLevel::new(false, false, true).into())
        }
    }
}

/// GPT-2's byte-level alphabet, reversed: the character each byte is shown
/// as in the vocabulary → the byte.
fn byte_decoder() -> HashMap<char, u8> {
    let mut map = HashMap::with_capacity(256);
    let mut shifted = 0u32;
    for b in 0..=255u8 {
        let printable = matches!(b, 33..=126 | 161..=172 | 174..=255);
        let c = if printable {
            char::from(b)
        } else {
            shifted += 1;
            char::from_u32(255 + shifted).unwrap_or('\u{fffd}')
        };
        map.insert(c, b);
    }
    map
}

/// Turns a stream of token bytes into text without ever splitting a
/// character: bytes of an incomplete UTF-8 sequence wait for the next token.
#[derive(Debug, Default, Clone)]
pub struct StreamDecoder {
    pending: Vec<u8>,
}

impl StreamDecoder {
    /// A decoder with nothing pending.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a token's bytes; returns the text that is now complete.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // SAFETY-free: the prefix was just validated.
                    out.push_str(&String::from_utf8_lossy(&self.pending[..valid]));
                    match e.error_len() {
                        // Incomplete at the end: wait for more bytes.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        // Invalid bytes in the middle: replace and go on.
                        Some(bad) => {
                            out.push('\u{fffd}');
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// Whatever is pending at the end (an incomplete character becomes U+FFFD).
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_decoder_never_splits_a_character() {
        let text = "注意🦀x";
        let bytes = text.as_bytes();
        let mut decoder = StreamDecoder::new();
        let mut out = String::new();
        for b in bytes {
            let piece = decoder.push(std::slice::from_ref(b));
            assert!(!piece.contains('\u{fffd}'));
            out.push_str(&piece);
        }
        out.push_str(&decoder.finish());
        assert_eq!(out, text);
    }

    #[test]
    fn stream_decoder_replaces_invalid_bytes() {
        let mut decoder = StreamDecoder::new();
        assert_eq!(decoder.push(&[b'a', 0xff, b'b']), "a\u{fffd}b");
        assert_eq!(decoder.push(&[0xe6]), "");
        assert_eq!(decoder.finish(), "\u{fffd}");
    }

    #[test]
    fn byte_alphabet_is_a_bijection() {
        let map = byte_decoder();
        assert_eq!(map.len(), 256);
        assert_eq!(map.get(&'Ġ'), Some(&b' '));
        assert_eq!(map.get(&'Ċ'), Some(&b'\n'));
    }
}
