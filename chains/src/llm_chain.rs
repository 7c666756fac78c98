//! [`LlmChain`]: prompt template → model → output parser.

use std::sync::Arc;

use async_trait::async_trait;
use kb_core::{
    ChatModel, ChatPromptTemplate, GenerateOptions, Message, Result, Runnable, StrOutputParser,
};
use serde_json::Value;

/// A chat prompt template filled from variables, sent to a model, the reply
/// parsed by `P` ([`StrOutputParser`], [`JsonOutputParser`](crate::JsonOutputParser),
/// [`ListOutputParser`](crate::ListOutputParser) or any runnable from a
/// [`Message`]).
///
/// ```no_run
/// # async fn demo(model: std::sync::Arc<dyn kb_core::ChatModel>) -> kb_core::Result<()> {
/// use kb_chains::{LlmChain, ListOutputParser};
/// use kb_core::{ChatPromptTemplate, Runnable};
///
/// let prompt = ChatPromptTemplate::new().user("List three uses of {{ topic }}, one per line.")?;
/// let chain = LlmChain::new(prompt, model).parser(ListOutputParser);
/// let uses: Vec<String> = chain.invoke(serde_json::json!({"topic": "BM25"})).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct LlmChain<P = StrOutputParser> {
    prompt: ChatPromptTemplate,
    model: Arc<dyn ChatModel>,
    options: GenerateOptions,
    parser: P,
}

impl<P> std::fmt::Debug for LlmChain<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmChain")
            .field("model", &self.model.name())
            .field("prompt", &self.prompt)
            .finish_non_exhaustive()
    }
}

impl LlmChain<StrOutputParser> {
    /// A chain answering `prompt` with `model` as plain text.
    pub fn new(prompt: ChatPromptTemplate, model: Arc<dyn ChatModel>) -> Self {
        LlmChain {
            prompt,
            model,
            options: GenerateOptions::default(),
            parser: StrOutputParser,
        }
    }
}

impl<P> LlmChain<P> {
    /// Replaces the output parser.
    pub fn parser<Q>(self, parser: Q) -> LlmChain<Q> {
        LlmChain {
            prompt: self.prompt,
            model: self.model,
            options: self.options,
            parser,
        }
    }

    /// Decoding options.
    pub fn options(mut self, options: GenerateOptions) -> Self {
        self.options = options;
        self
    }
}

#[async_trait]
impl<P> Runnable for LlmChain<P>
where
    P: Runnable<Input = Message>,
{
    type Input = Value;
    type Output = P::Output;

    async fn invoke(&self, vars: Value) -> Result<P::Output> {
        let messages = self.prompt.format_messages(&vars)?;
        let reply = self.model.chat(&messages, &self.options).await?;
        self.parser.invoke(reply.message).await
    }
}
