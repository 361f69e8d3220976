//! Conversations: a user's questions and the answers they got, private to that user (another
//! user, an admin included, gets 404 for them).

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::Citation;
use crate::auth::Principal;
use crate::kb::{KbError, KnowledgeBase};
use crate::store::now_ms;

/// Longest chat title, in characters.
const MAX_TITLE_CHARS: usize = 200;
/// Chats listed per page at most.
const MAX_LIST: usize = 200;

/// Body of `POST /api/v1/chats`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewChat {
    /// A title; the first question's start when absent.
    pub title: Option<String>,
}

/// A chat without its messages.
#[derive(Debug, Clone, Serialize)]
pub struct ChatSummary {
    /// Id.
    pub id: i64,
    /// Title.
    pub title: String,
    /// Questions asked in it.
    pub questions: i64,
    /// Created, Unix milliseconds.
    pub created_at: i64,
    /// Last question, Unix milliseconds.
    pub updated_at: i64,
}

/// A chat with its messages, oldest first.
#[derive(Debug, Clone, Serialize)]
pub struct Chat {
    /// The chat.
    #[serde(flatten)]
    pub summary: ChatSummary,
    /// Its questions and answers.
    pub messages: Vec<ChatEntry>,
}

/// One question or answer of a chat.
#[derive(Debug, Clone, Serialize)]
pub struct ChatEntry {
    /// Id.
    pub id: i64,
    /// `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
    /// The sources an answer was given with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub citations: Option<Vec<Citation>>,
    /// The generator that wrote an answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generator: Option<String>,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// Checks that a chat exists and is the caller's; 404 otherwise, whoever asks.
pub(super) fn owned(conn: &Connection, who: &Principal, chat: i64) -> Result<(), KbError> {
    let found: Option<i64> = conn
        .query_row(
            "SELECT id FROM chats WHERE id = ?1 AND user_id = ?2",
            params![chat, who.user_id],
            |r| r.get(0),
        )
        .optional()?;
    found
        .map(|_| ())
        .ok_or_else(|| KbError::NotFound(format!("no chat {chat}")))
}

/// The last `turns` question/answer pairs of a chat, oldest first.
pub(super) fn history(
    conn: &Connection,
    chat: i64,
    turns: usize,
) -> Result<Vec<(String, String)>, KbError> {
    let mut stmt = conn.prepare(
        "SELECT role, content FROM chat_messages WHERE chat_id = ?1 ORDER BY id DESC LIMIT ?2",
    )?;
    let rows: Vec<(String, String)> = stmt
        .query_map(params![chat, (turns * 2) as i64], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut pairs = Vec::new();
    let mut answer: Option<String> = None;
    for (role, content) in rows {
        match (role.as_str(), answer.take()) {
            ("assistant", _) => answer = Some(content),
            ("user", Some(a)) => pairs.push((content, a)),
            _ => {}
        }
    }
    pairs.reverse();
    Ok(pairs)
}

/// Appends a question and its answer to a chat in one transaction.
pub(super) fn record(
    conn: &mut Connection,
    chat: i64,
    question: &str,
    answer: &str,
    citations: &[Citation],
    generator: Option<&str>,
) -> Result<(), KbError> {
    let citations = serde_json::to_string(citations)
        .map_err(|e| KbError::Internal(format!("cannot encode citations: {e}")))?;
    let now = now_ms();
    let tx = conn.transaction()?;
    tx.execute(
        "INSERT INTO chat_messages (chat_id, role, content, created_at) VALUES (?1, 'user', ?2, ?3)",
        params![chat, question, now],
    )?;
    tx.execute(
        "INSERT INTO chat_messages (chat_id, role, content, citations, generator, created_at)
         VALUES (?1, 'assistant', ?2, ?3, ?4, ?5)",
        params![chat, answer, citations, generator, now],
    )?;
    // An untitled chat is named after its first question.
    let title: String = question.chars().take(80).collect();
    tx.execute(
        "UPDATE chats SET updated_at = ?2, title = CASE WHEN title = '' THEN ?3 ELSE title END
         WHERE id = ?1",
        params![chat, now, title],
    )?;
    tx.commit()?;
    Ok(())
}

fn summary(conn: &Connection, chat: i64) -> Result<ChatSummary, KbError> {
    Ok(conn.query_row(
        "SELECT c.id, c.title, c.created_at, c.updated_at,
                (SELECT COUNT(*) FROM chat_messages m WHERE m.chat_id = c.id AND m.role = 'user')
         FROM chats c WHERE c.id = ?1",
        [chat],
        |r| {
            Ok(ChatSummary {
                id: r.get(0)?,
                title: r.get(1)?,
                created_at: r.get(2)?,
                updated_at: r.get(3)?,
                questions: r.get(4)?,
            })
        },
    )?)
}

impl KnowledgeBase {
    /// Starts a chat for the caller.
    pub async fn create_chat(&self, who: &Principal, new: NewChat) -> Result<ChatSummary, KbError> {
        let title = new.title.unwrap_or_default().trim().to_string();
        if title.chars().count() > MAX_TITLE_CHARS {
            return Err(KbError::Invalid(format!(
                "title is longer than {MAX_TITLE_CHARS} characters"
            )));
        }
        let user = who.user_id;
        self.store
            .run(move |conn| -> Result<ChatSummary, KbError> {
                let now = now_ms();
                conn.execute(
                    "INSERT INTO chats (user_id, title, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)",
                    params![user, title, now],
                )?;
                summary(conn, conn.last_insert_rowid())
            })
            .await
    }

    /// The caller's chats, most recent first.
    pub async fn list_chats(&self, who: &Principal) -> Result<Vec<ChatSummary>, KbError> {
        let user = who.user_id;
        self.store
            .run(move |conn| -> Result<Vec<ChatSummary>, KbError> {
                let mut stmt = conn.prepare(
                    "SELECT id FROM chats WHERE user_id = ?1 ORDER BY updated_at DESC, id DESC LIMIT ?2",
                )?;
                let ids: Vec<i64> = stmt
                    .query_map(params![user, MAX_LIST as i64], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                ids.into_iter().map(|id| summary(conn, id)).collect()
            })
            .await
    }

    /// One of the caller's chats with its messages.
    pub async fn chat(&self, who: &Principal, chat: i64) -> Result<Chat, KbError> {
        let who = who.clone();
        self.store
            .run(move |conn| -> Result<Chat, KbError> {
                owned(conn, &who, chat)?;
                let mut stmt = conn.prepare(
                    "SELECT id, role, content, citations, generator, created_at
                     FROM chat_messages WHERE chat_id = ?1 ORDER BY id",
                )?;
                let messages = stmt
                    .query_map([chat], |r| {
                        let citations: Option<String> = r.get(3)?;
                        Ok(ChatEntry {
                            id: r.get(0)?,
                            role: r.get(1)?,
                            content: r.get(2)?,
                            citations: citations.and_then(|c| serde_json::from_str(&c).ok()),
                            generator: r.get(4)?,
                            created_at: r.get(5)?,
                        })
                    })?
                    .collect::<rusqlite::Result<_>>()?;
                Ok(Chat {
                    summary: summary(conn, chat)?,
                    messages,
                })
            })
            .await
    }

    /// Deletes one of the caller's chats.
    pub async fn delete_chat(&self, who: &Principal, chat: i64) -> Result<(), KbError> {
        let who = who.clone();
        self.store
            .run(move |conn| -> Result<(), KbError> {
                owned(conn, &who, chat)?;
                conn.execute("DELETE FROM chats WHERE id = ?1", [chat])?;
                Ok(())
            })
            .await
    }
}
