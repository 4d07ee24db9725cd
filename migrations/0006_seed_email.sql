-- Seed schema, part 6: email_templates, email_queue, email_preferences.
--
-- Fix relative to the seed: email_preferences.unsubscribe_token was indexed
-- twice (its inline UNIQUE, and the plain idx_email_preferences_unsubscribe);
-- one unique constraint remains, with the seed's index name.
-- The seed's chk_email_retries_valid on email_queue is added, unchanged, in
-- 0010 with the seed's other CHECK constraints.

CREATE TABLE email_templates (
    template_id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    name VARCHAR(255) NOT NULL,
    description TEXT,
    type template_type_enum NOT NULL,
    category template_category_enum NOT NULL,
    status template_status_enum NOT NULL DEFAULT 'draft',
    subject VARCHAR(500) NOT NULL,
    html_content TEXT NOT NULL,
    text_content TEXT,
    variables JSONB DEFAULT '[]', -- Template variables definition
    metadata JSONB DEFAULT '{}',
    locale VARCHAR(10) DEFAULT 'en-US',
    parent_template_id UUID REFERENCES email_templates(template_id),
    versions JSONB DEFAULT '[]', -- Version history
    current_version INTEGER DEFAULT 1,
    is_default BOOLEAN DEFAULT FALSE,
    priority INTEGER DEFAULT 0,
    tags TEXT[],
    created_by UUID NOT NULL REFERENCES users(user_id),
    last_modified_by UUID REFERENCES users(user_id),
    last_used_at TIMESTAMP,
    usage_count INTEGER DEFAULT 0,
    test_emails_sent INTEGER DEFAULT 0,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    deleted_at TIMESTAMP
);

CREATE INDEX idx_email_templates_type ON email_templates(type);
CREATE INDEX idx_email_templates_category ON email_templates(category);
CREATE INDEX idx_email_templates_status ON email_templates(status);
CREATE UNIQUE INDEX idx_email_templates_name ON email_templates(name) WHERE deleted_at IS NULL;

CREATE TABLE email_queue (
    email_id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    template_id UUID REFERENCES email_templates(template_id),
    from_email VARCHAR(255) NOT NULL,
    from_name VARCHAR(255),
    to_email VARCHAR(255) NOT NULL,
    to_name VARCHAR(255),
    cc_emails TEXT[],
    bcc_emails TEXT[],
    reply_to_email VARCHAR(255),
    subject VARCHAR(500) NOT NULL,
    html_content TEXT NOT NULL,
    text_content TEXT,
    template_data JSONB,
    attachments JSONB DEFAULT '[]',
    type email_type_enum NOT NULL,
    priority email_priority_enum NOT NULL DEFAULT 'normal',
    status email_status_enum NOT NULL DEFAULT 'queued',
    scheduled_for TIMESTAMP,
    max_retries INTEGER DEFAULT 3,
    current_retries INTEGER DEFAULT 0,
    last_attempt_at TIMESTAMP,
    sent_at TIMESTAMP,
    failure_reason TEXT,
    provider_id VARCHAR(255), -- External email service ID
    provider_message_id VARCHAR(255),
    tracking JSONB DEFAULT '{}', -- Open/click tracking
    metadata JSONB DEFAULT '{}',
    campaign_id VARCHAR(255),
    user_id UUID REFERENCES users(user_id),
    created_by UUID REFERENCES users(user_id),
    tags TEXT[],
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX idx_email_queue_status ON email_queue(status);
CREATE INDEX idx_email_queue_scheduled ON email_queue(scheduled_for);
CREATE INDEX idx_email_queue_priority ON email_queue(priority, created_at);
CREATE INDEX idx_email_queue_user ON email_queue(user_id);
CREATE INDEX idx_email_queue_template ON email_queue(template_id);

CREATE TABLE email_preferences (
    preference_id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id UUID NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
    is_email_enabled BOOLEAN DEFAULT TRUE,
    global_unsubscribe BOOLEAN DEFAULT FALSE,
    preferences JSONB NOT NULL DEFAULT '[]', -- Notification preferences array
    language VARCHAR(10) DEFAULT 'en-US',
    timezone VARCHAR(50) DEFAULT 'UTC',
    email_format email_format_enum DEFAULT 'html',
    digest_frequency digest_frequency_enum DEFAULT 'daily',
    digest_time TIME DEFAULT '09:00:00',
    unsubscribe_token VARCHAR(255) CONSTRAINT idx_email_preferences_unsubscribe UNIQUE,
    last_digest_sent TIMESTAMP,
    bounce_count INTEGER DEFAULT 0,
    last_bounce_at TIMESTAMP,
    is_blacklisted BOOLEAN DEFAULT FALSE,
    blacklist_reason TEXT,
    blacklisted_at TIMESTAMP,
    metadata JSONB DEFAULT '{}',
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);

-- idx_email_preferences_unsubscribe is the unique constraint on unsubscribe_token above.
CREATE UNIQUE INDEX idx_email_preferences_user ON email_preferences(user_id);
CREATE INDEX idx_email_preferences_digest ON email_preferences(digest_frequency, digest_time);
