//! Tools and agents: ReAct, chain-of-thought, self-consistency, tree-of-thoughts.
