//! The model's chat template (`tokenizer.chat_template`, Jinja as Hugging Face
//! writes it), rendered with minijinja the way `transformers` renders it:
//! `trim_blocks` and `lstrip_blocks` on, Python's string methods available,
//! `raise_exception` and `strftime_now` defined.

use minijinja::syntax::SyntaxConfig;
use minijinja::value::Serde;
use minijinja::{Environment, Error, ErrorKind, Value, context};
use serde::Serialize;

/// ChatML, for models whose file has no template (llama-server falls back to it too).
pub const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// One message of a conversation.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Message {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The text.
    pub content: String,
}

/// A compiled chat template.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

/// Why a template could not be compiled or rendered.
#[derive(Debug, thiserror::Error)]
#[error("chat template: {0}")]
pub struct TemplateError(String);

fn describe(e: &Error) -> String {
    // minijinja's message plus where it happened, without the template dump.
    match e.detail() {
        Some(detail) if e.kind() == ErrorKind::InvalidOperation => detail.to_string(),
        _ => e.to_string(),
    }
}

impl ChatTemplate {
    /// Compiles `source`; `bos_token` and `eos_token` are the texts the template may insert.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.set_syntax(
            SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()
                .map_err(|e| TemplateError(describe(&e)))?,
        );
        env.add_function(
            "raise_exception",
            |message: String| -> Result<Value, Error> {
                Err(Error::new(ErrorKind::InvalidOperation, message))
            },
        );
        env.add_function("strftime_now", |format: String| -> String {
            chrono::Local::now().format(&format).to_string()
        });
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| TemplateError(describe(&e)))?;
        Ok(Self {
            env,
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
        })
    }

    /// The prompt for `messages`, ending where the assistant's answer begins.
    pub fn render(&self, messages: &[Message]) -> Result<String, TemplateError> {
        let template = self
            .env
            .get_template("chat")
            .map_err(|e| TemplateError(describe(&e)))?;
        template
            .render(context! {
                messages => Serde(messages),
                add_generation_prompt => true,
                bos_token => self.bos_token.as_str(),
                eos_token => self.eos_token.as_str(),
            })
            .map_err(|e| TemplateError(describe(&e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: &str, content: &str) -> Message {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }

    #[test]
    fn chatml_renders_the_generation_prompt() {
        let t = ChatTemplate::new(CHATML, "", "<|im_end|>").expect("compiles");
        let out = t.render(&[msg("user", "Hi")]).expect("renders");
        assert_eq!(
            out,
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn raise_exception_is_an_error_with_its_message() {
        let source = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversation roles must alternate user/assistant') }}{% endif %}ok";
        let t = ChatTemplate::new(source, "", "").expect("compiles");
        let err = t.render(&[msg("assistant", "x")]).expect_err("raises");
        assert!(err.to_string().contains("roles must alternate"), "{err}");
        assert_eq!(t.render(&[msg("user", "x")]).expect("renders"), "ok");
    }

    #[test]
    fn python_string_methods_and_block_trimming_work() {
        // Mistral-style: bos_token, .strip(), trim_blocks.
        let source = "{{ bos_token }}{% for m in messages %}\n{% if m['role'] == 'user' %}\n[INST] {{ m['content'].strip() }} [/INST]\n{% endif %}\n{% endfor %}";
        let t = ChatTemplate::new(source, "<s>", "</s>").expect("compiles");
        let out = t.render(&[msg("user", "  hello  ")]).expect("renders");
        assert_eq!(out, "<s>[INST] hello [/INST]\n");
    }

    #[test]
    fn a_broken_template_is_an_error() {
        assert!(ChatTemplate::new("{% for %}", "", "").is_err());
    }
}
