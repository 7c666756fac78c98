//! Conversation memory: what earlier turns a chain remembers.

use std::collections::VecDeque;

use kb_core::Message;

/// The remembered turns of a conversation.
///
/// ```
/// use kb_chains::{Memory, WindowMemory};
///
/// let mut memory = WindowMemory::new(1);
/// memory.save("What is BM25?", "A ranking function [1].");
/// memory.save("Who made it?", "Robertson and others [2].");
/// let messages = memory.messages();
/// assert_eq!(messages.len(), 2); // only the last turn
/// assert_eq!(messages[0].content, "Who made it?");
/// ```
pub trait Memory: Send + Sync {
    /// The remembered messages, oldest first.
    fn messages(&self) -> Vec<Message>;

    /// Remembers one turn.
    fn save(&mut self, user: &str, assistant: &str);

    /// Forgets everything.
    fn clear(&mut self);
}

/// Remembers every turn.
#[derive(Debug, Clone, Default)]
pub struct BufferMemory {
    messages: Vec<Message>,
}

impl BufferMemory {
    /// An empty memory.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Memory for BufferMemory {
    fn messages(&self) -> Vec<Message> {
        self.messages.clone()
    }

    fn save(&mut self, user: &str, assistant: &str) {
        self.messages.push(Message::user(user));
        self.messages.push(Message::assistant(assistant));
    }

    fn clear(&mut self) {
        self.messages.clear();
    }
}

/// Remembers the last `turns` turns.
#[derive(Debug, Clone)]
pub struct WindowMemory {
    turns: usize,
    kept: VecDeque<(Message, Message)>,
}

impl WindowMemory {
    /// A memory of the last `turns` turns.
    pub fn new(turns: usize) -> Self {
        WindowMemory {
            turns,
            kept: VecDeque::new(),
        }
    }
}

impl Memory for WindowMemory {
    fn messages(&self) -> Vec<Message> {
        self.kept
            .iter()
            .flat_map(|(u, a)| [u.clone(), a.clone()])
            .collect()
    }

    fn save(&mut self, user: &str, assistant: &str) {
        self.kept
            .push_back((Message::user(user), Message::assistant(assistant)));
        while self.kept.len() > self.turns {
            self.kept.pop_front();
        }
    }

    fn clear(&mut self) {
        self.kept.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_keeps_everything_window_keeps_the_tail() {
        let mut buffer = BufferMemory::new();
        let mut window = WindowMemory::new(2);
        for i in 0..3 {
            buffer.save(&format!("q{i}"), &format!("a{i}"));
            window.save(&format!("q{i}"), &format!("a{i}"));
        }
        assert_eq!(buffer.messages().len(), 6);
        let kept: Vec<String> = window.messages().into_iter().map(|m| m.content).collect();
        assert_eq!(kept, ["q1", "a1", "q2", "a2"]);
        window.clear();
        assert!(window.messages().is_empty());
        let mut none = WindowMemory::new(0);
        none.save("q", "a");
        assert!(none.messages().is_empty());
    }
}
