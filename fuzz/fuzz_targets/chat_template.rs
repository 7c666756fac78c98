//! A ChatML template (the shape SmolLM2 and Qwen ship) rendered over hostile
//! message contents and roles: special tokens, template syntax, control
//! characters. Rendering must not panic, and contents are never evaluated as
//! template code.
#![no_main]

use kb_core::Message;
use kb_llm::ChatTemplate;
use libfuzzer_sys::fuzz_target;

const TEMPLATE: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] | trim + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let template = ChatTemplate::new(TEMPLATE, "<|im_start|>", "<|im_end|>").expect("template");
    let messages: Vec<Message> = text
        .split('\u{0}')
        .enumerate()
        .map(|(i, part)| match i % 3 {
            0 => Message::user(part),
            1 => Message::assistant(part),
            _ => Message::system(part),
        })
        .collect();
    if let Ok(prompt) = template.render(&messages, true) {
        for message in &messages {
            assert!(prompt.contains(message.content.trim()), "content changed");
        }
    }
});
