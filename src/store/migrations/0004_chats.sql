-- Conversations: a user's questions and the answers they got, private to that user.
CREATE TABLE chats (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX chats_by_user ON chats (user_id, updated_at);

-- One question or answer. `citations` is the JSON list the answer was given with.
CREATE TABLE chat_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    chat_id INTEGER NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    content TEXT NOT NULL,
    citations TEXT,
    generator TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX chat_messages_by_chat ON chat_messages (chat_id, id);
