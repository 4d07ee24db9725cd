-- Seed schema, part 7: reports and moderator_actions (as in the seed).

CREATE TABLE reports (
    report_id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    reporter_id UUID NOT NULL REFERENCES users(user_id),
    reported_entity_type entity_type_enum NOT NULL,
    reported_entity_id UUID NOT NULL,
    reported_user_id UUID REFERENCES users(user_id),
    category report_category_enum NOT NULL,
    severity report_severity_enum NOT NULL,
    status report_status_enum NOT NULL DEFAULT 'pending',
    title VARCHAR(255) NOT NULL,
    description TEXT NOT NULL,
    evidence JSONB DEFAULT '[]', -- Screenshots, URLs, etc.
    metadata JSONB DEFAULT '{}',
    assigned_moderator UUID REFERENCES users(user_id),
    assigned_at TIMESTAMP,
    resolved_by UUID REFERENCES users(user_id),
    resolved_at TIMESTAMP,
    resolution TEXT,
    resolution_notes TEXT,
    escalated_to UUID REFERENCES users(user_id),
    escalated_at TIMESTAMP,
    escalation_reason TEXT,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX idx_reports_reporter ON reports(reporter_id);
CREATE INDEX idx_reports_entity ON reports(reported_entity_type, reported_entity_id);
CREATE INDEX idx_reports_status ON reports(status);
CREATE INDEX idx_reports_assigned ON reports(assigned_moderator);

CREATE TABLE moderator_actions (
    action_id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    moderator_id UUID NOT NULL REFERENCES users(user_id),
    report_id UUID REFERENCES reports(report_id),
    target_entity_type entity_type_enum NOT NULL,
    target_entity_id UUID NOT NULL,
    target_user_id UUID REFERENCES users(user_id),
    action_type action_type_enum NOT NULL,
    severity action_severity_enum NOT NULL,
    reason TEXT NOT NULL,
    description TEXT,
    metadata JSONB DEFAULT '{}',
    duration INTEGER, -- Duration in hours for temporary actions
    expires_at TIMESTAMP,
    is_active BOOLEAN DEFAULT TRUE,
    reversed_by UUID REFERENCES users(user_id),
    reversed_at TIMESTAMP,
    reversal_reason TEXT,
    evidence JSONB DEFAULT '[]',
    notification_sent BOOLEAN DEFAULT FALSE,
    internal_notes TEXT,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX idx_moderator_actions_moderator ON moderator_actions(moderator_id);
CREATE INDEX idx_moderator_actions_target ON moderator_actions(target_entity_type, target_entity_id);
CREATE INDEX idx_moderator_actions_user ON moderator_actions(target_user_id);
CREATE INDEX idx_moderator_actions_active ON moderator_actions(is_active, expires_at);
