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

/// The instructions one render may run: a real template spends a few thousand per
/// conversation; a template from a hostile file that loops for ever stops here, in
/// well under a second.
pub const FUEL: u64 = 20_000_000;

/// The most text one render may write.
pub const MAX_OUTPUT: usize = 32 << 20;

/// A compiled chat template.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

/// Why a template could not be compiled or rendered.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The template is wrong, or raised an error for these messages.
    #[error("chat template: {0}")]
    Invalid(String),
    /// The template ran out of fuel or wrote past [`MAX_OUTPUT`].
    #[error(
        "the model's chat template is too expensive: it ran past {0} (a template from the model file that loops or grows without end); nothing was generated"
    )]
    TooExpensive(&'static str),
}

/// A writer that refuses past [`MAX_OUTPUT`].
struct Bounded(String);

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len().saturating_add(buf.len()) > MAX_OUTPUT {
            return Err(std::io::Error::other("output limit"));
        }
        self.0.push_str(&String::from_utf8_lossy(buf));
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

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
        env.set_fuel(Some(FUEL));
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.set_syntax(
            SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()
                .map_err(|e| TemplateError::Invalid(describe(&e)))?,
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
            .map_err(|e| TemplateError::Invalid(describe(&e)))?;
        Ok(Self {
            env,
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
        })
    }

    /// The prompt for `messages`, ending where the assistant's answer begins; at most
    /// [`FUEL`] instructions and [`MAX_OUTPUT`] bytes. It runs on the calling thread:
    /// callers on an async runtime run it in `spawn_blocking`.
    pub fn render(&self, messages: &[Message]) -> Result<String, TemplateError> {
        let template = self
            .env
            .get_template("chat")
            .map_err(|e| TemplateError::Invalid(describe(&e)))?;
        let mut out = Bounded(String::new());
        let rendered = template.render_captured_to(
            context! {
                messages => Serde(messages),
                add_generation_prompt => true,
                bos_token => self.bos_token.as_str(),
                eos_token => self.eos_token.as_str(),
            },
            &mut out,
        );
        match rendered {
            Ok(_) => Ok(out.0),
            Err(e) if e.kind() == ErrorKind::OutOfFuel => {
                Err(TemplateError::TooExpensive("its instruction budget"))
            }
            Err(e) if e.kind() == ErrorKind::WriteFailure => {
                Err(TemplateError::TooExpensive("32 MiB of output"))
            }
            Err(e) => Err(TemplateError::Invalid(describe(&e))),
        }
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

    #[test]
    fn a_template_that_loops_for_ever_runs_out_of_fuel_fast() {
        let bomb = "{% for a in range(100000) %}{% for b in range(100000) %}{% for c in range(100000) %}x{% endfor %}{% endfor %}{% endfor %}";
        let t = ChatTemplate::new(bomb, "", "").expect("compiles");
        let err = t.render(&[msg("user", "x")]).expect_err("stops");
        assert!(matches!(err, TemplateError::TooExpensive(_)), "{err}");
        assert!(err.to_string().contains("too expensive"), "{err}");
        let grows = "{% for a in range(100000) %}{{ 'x' * 1000 }}{% endfor %}";
        let t = ChatTemplate::new(grows, "", "").expect("compiles");
        let err = t.render(&[msg("user", "x")]).expect_err("stops");
        assert!(matches!(err, TemplateError::TooExpensive(_)), "{err}");
    }
}
