-- Seed schema, part 5: chats, chat_participants, messages.
--
-- Fix relative to the seed: chat_participants.chat_id had two identical
-- foreign keys (inline, and fk_chat_participants_chat, both ON DELETE
-- CASCADE); one remains, named fk_chat_participants_chat.

CREATE TABLE chats (
    chat_id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    application_id UUID REFERENCES applications(application_id),
    rescue_id UUID NOT NULL REFERENCES rescues(rescue_id),
    status chat_status_enum NOT NULL DEFAULT 'active',
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX idx_chats_application ON chats(application_id);
CREATE INDEX idx_chats_rescue ON chats(rescue_id);
CREATE INDEX idx_chats_status ON chats(status);

CREATE TABLE chat_participants (
    chat_participant_id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    chat_id UUID NOT NULL CONSTRAINT fk_chat_participants_chat REFERENCES chats(chat_id) ON DELETE CASCADE,
    participant_id UUID NOT NULL REFERENCES users(user_id),
    role participant_role_enum NOT NULL,
    last_read_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);

CREATE UNIQUE INDEX idx_chat_participants_unique ON chat_participants(chat_id, participant_id);
CREATE INDEX idx_chat_participants_user ON chat_participants(participant_id);

CREATE TABLE messages (
    message_id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    chat_id UUID NOT NULL REFERENCES chats(chat_id) ON DELETE CASCADE,
    sender_id UUID NOT NULL REFERENCES users(user_id),
    content TEXT NOT NULL,
    content_format message_format_enum DEFAULT 'plain',
    attachments JSONB DEFAULT '[]',
    reactions JSONB DEFAULT '[]',
    read_status JSONB DEFAULT '[]',
    search_vector TSVECTOR,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX idx_messages_chat ON messages(chat_id, created_at);
CREATE INDEX idx_messages_sender ON messages(sender_id);
CREATE INDEX idx_messages_search ON messages USING GIN(search_vector);

-- Message search trigger
CREATE OR REPLACE FUNCTION update_message_search_vector()
RETURNS TRIGGER AS $$
BEGIN
    NEW.search_vector := to_tsvector('english', COALESCE(NEW.content, ''));
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER update_message_search_trigger
    BEFORE INSERT OR UPDATE ON messages
    FOR EACH ROW EXECUTE FUNCTION update_message_search_vector();
