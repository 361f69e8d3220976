//! Chat prompts: the model's Jinja chat template rendered the way Hugging Face's
//! `apply_chat_template` does (blocks trimmed, Python string methods, `raise_exception`), or a
//! plain fallback for models without one.

use minijinja::{Environment, ErrorKind, context};

use super::{ChatMessage, GenerateError};

/// Roles a message may have.
const ROLES: &[&str] = &["system", "user", "assistant"];

/// A rendered conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Rendered {
    /// The prompt text.
    pub text: String,
    /// The BOS token still has to be put before it: templates write it themselves (as
    /// `{{ bos_token }}`), the fallback does not.
    pub add_bos: bool,
}

/// How a model's conversations become prompt text.
pub(super) struct ChatFormat {
    env: Option<Environment<'static>>,
    bos_token: String,
    eos_token: String,
}

/// The template's name in its environment.
const NAME: &str = "chat";

impl ChatFormat {
    /// Compiles the template, when there is one.
    pub fn new(
        template: Option<&str>,
        bos_token: String,
        eos_token: String,
    ) -> Result<ChatFormat, GenerateError> {
        let env = match template {
            None => None,
            Some(source) => {
                let mut env = Environment::new();
                // As transformers compiles chat templates: templates are written for it.
                env.set_trim_blocks(true);
                env.set_lstrip_blocks(true);
                env.set_unknown_method_callback(
                    minijinja_contrib::pycompat::unknown_method_callback,
                );
                env.add_function(
                    "raise_exception",
                    |message: String| -> Result<String, minijinja::Error> {
                        Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
                    },
                );
                env.add_template_owned(NAME, source.to_string())
                    .map_err(|e| {
                        GenerateError::Invalid(format!("the chat template does not compile: {e}"))
                    })?;
                Some(env)
            }
        };
        Ok(ChatFormat {
            env,
            bos_token,
            eos_token,
        })
    }

    /// The model has its own template.
    pub fn has_template(&self) -> bool {
        self.env.is_some()
    }

    /// Renders a conversation, ending with the prompt for the assistant's turn.
    pub fn render(&self, messages: &[ChatMessage]) -> Result<Rendered, GenerateError> {
        if messages.is_empty() {
            return Err(GenerateError::Invalid(
                "the conversation has no messages".into(),
            ));
        }
        if let Some(bad) = messages.iter().find(|m| !ROLES.contains(&m.role.as_str())) {
            return Err(GenerateError::Invalid(format!(
                "unknown role {:?}: use system, user or assistant",
                bad.role
            )));
        }
        let Some(env) = &self.env else {
            return Ok(Rendered {
                text: fallback(messages),
                add_bos: true,
            });
        };
        let template = env
            .get_template(NAME)
            .map_err(|e| GenerateError::Internal(format!("the chat template is gone: {e}")))?;
        let text = template
            .render(context! {
                messages => messages,
                bos_token => self.bos_token,
                eos_token => self.eos_token,
                add_generation_prompt => true,
            })
            .map_err(|e| match e.kind() {
                // The template refused the conversation, in its own words.
                ErrorKind::InvalidOperation => {
                    GenerateError::Invalid(e.detail().map_or_else(|| e.to_string(), String::from))
                }
                _ => GenerateError::Invalid(format!("the chat template failed: {e}")),
            })?;
        Ok(Rendered {
            text,
            add_bos: false,
        })
    }
}

/// `System: …\nUser: …\nAssistant: …\nAssistant:`: a line per message, roles capitalised, and
/// the assistant's cue last.
fn fallback(messages: &[ChatMessage]) -> String {
    let mut text = String::new();
    for m in messages {
        let role = match m.role.as_str() {
            "system" => "System",
            "user" => "User",
            _ => "Assistant",
        };
        text.push_str(role);
        text.push_str(": ");
        text.push_str(&m.content);
        text.push('\n');
    }
    text.push_str("Assistant:");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: &str, content: &str) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }

    #[test]
    fn fallback_is_plain_lines() {
        let chat = ChatFormat::new(None, "<s>".into(), "</s>".into()).expect("format");
        assert!(!chat.has_template());
        let r = chat
            .render(&[
                msg("system", "Be kind."),
                msg("user", "Hi"),
                msg("assistant", "Hello"),
                msg("user", "Bye"),
            ])
            .expect("render");
        assert_eq!(
            r.text,
            "System: Be kind.\nUser: Hi\nAssistant: Hello\nUser: Bye\nAssistant:"
        );
        assert!(r.add_bos);
    }

    /// Llama 2's template, as its tokenizer_config.json has it: Python methods, raise_exception.
    const LLAMA2: &str = "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}";

    #[test]
    fn renders_a_transformers_template() {
        let chat = ChatFormat::new(Some(LLAMA2), "<s>".into(), "</s>".into()).expect("format");
        assert!(chat.has_template());
        let r = chat
            .render(&[
                msg("system", "Be brief."),
                msg("user", "Hi  "),
                msg("assistant", "Hello"),
            ])
            .expect("render");
        assert_eq!(
            r.text,
            "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello </s>"
        );
        assert!(!r.add_bos);
    }

    #[test]
    fn template_refusals_and_bad_roles_are_invalid() {
        let chat = ChatFormat::new(Some(LLAMA2), "<s>".into(), "</s>".into()).expect("format");
        let err = chat
            .render(&[msg("user", "a"), msg("user", "b")])
            .unwrap_err();
        assert_eq!(
            err,
            GenerateError::Invalid(
                "Conversation roles must alternate user/assistant/user/assistant/...".into()
            )
        );
        let err = chat.render(&[msg("tool", "x")]).unwrap_err();
        assert!(err.to_string().contains("unknown role"), "{err}");
        assert!(chat.render(&[]).is_err());
    }

    #[test]
    fn generation_prompt_flag_is_passed() {
        let t = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}";
        let chat = ChatFormat::new(Some(t), String::new(), String::new()).expect("format");
        let r = chat.render(&[msg("user", "Hi")]).expect("render");
        assert_eq!(r.text, "<|user|>Hi<|assistant|>");
    }

    #[test]
    fn broken_template_is_refused_at_load() {
        let err = ChatFormat::new(Some("{% for %}"), String::new(), String::new())
            .err()
            .expect("error");
        assert!(err.to_string().contains("does not compile"), "{err}");
    }
}
