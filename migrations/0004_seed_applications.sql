-- Seed schema, part 4: applications and application_questions.
--
-- Fixes relative to the seed (see docs/schema.md):
-- * "references" is a reserved word and is quoted; every query must quote it.
-- * applications.user_id and applications.pet_id each had two identical
--   foreign keys (inline, and fk_applications_user / fk_applications_pet);
--   one of each remains, with the seed's name.
-- * The score check existed twice (inline, chk_applications_score_valid); one
--   remains, named chk_applications_score_valid.
-- * The seed's `ALTER TABLE applications ADD CONSTRAINT uk_applications_user_pet
--   UNIQUE (user_id, pet_id) WHERE deleted_at IS NULL` is not valid SQL (a
--   table constraint cannot be partial). The partial unique index
--   idx_applications_user_pet below, which the seed also declares, enforces
--   exactly that rule, so the ALTER is left out. Note that a rejected,
--   withdrawn or expired application that is not soft-deleted still blocks a
--   new application by the same user for the same pet.
-- * idx_app_questions_key_rescue is NULLS NOT DISTINCT (PostgreSQL 15+): core
--   questions have rescue_id NULL, and with the default NULLS DISTINCT the
--   index would let two core questions share a question_key.

CREATE TABLE applications (
    application_id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id UUID NOT NULL CONSTRAINT fk_applications_user REFERENCES users(user_id),
    pet_id UUID NOT NULL CONSTRAINT fk_applications_pet REFERENCES pets(pet_id),
    rescue_id UUID NOT NULL REFERENCES rescues(rescue_id),
    status application_status_enum NOT NULL DEFAULT 'draft',
    priority application_priority_enum NOT NULL DEFAULT 'normal',

    -- Decision tracking
    actioned_by UUID REFERENCES users(user_id),
    actioned_at TIMESTAMP,
    rejection_reason TEXT,
    conditional_requirements TEXT[],

    -- Application data
    answers JSONB NOT NULL DEFAULT '{}',
    "references" JSONB DEFAULT '[]',
    documents JSONB DEFAULT '[]',

    -- Process notes
    interview_notes TEXT,
    home_visit_notes TEXT,
    score INTEGER CONSTRAINT chk_applications_score_valid CHECK (score >= 0 AND score <= 100),
    tags TEXT[],
    notes TEXT,

    -- Timeline
    submitted_at TIMESTAMP,
    reviewed_at TIMESTAMP,
    decision_at TIMESTAMP,
    expires_at TIMESTAMP,
    follow_up_date DATE,

    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    deleted_at TIMESTAMP
);

CREATE INDEX idx_applications_user ON applications(user_id);
CREATE INDEX idx_applications_pet ON applications(pet_id);
CREATE INDEX idx_applications_rescue ON applications(rescue_id);
CREATE INDEX idx_applications_status ON applications(status);
CREATE INDEX idx_applications_submitted ON applications(submitted_at);
CREATE UNIQUE INDEX idx_applications_user_pet ON applications(user_id, pet_id) WHERE deleted_at IS NULL;

CREATE TABLE application_questions (
    question_id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    rescue_id UUID REFERENCES rescues(rescue_id), -- NULL for core questions
    question_key VARCHAR(100) NOT NULL,
    scope question_scope_enum NOT NULL,
    category question_category_enum NOT NULL,
    question_type question_type_enum NOT NULL,
    question_text TEXT NOT NULL,
    help_text TEXT,
    placeholder TEXT,
    options TEXT[], -- For select/multi-select questions
    validation_rules JSONB,
    display_order INTEGER NOT NULL DEFAULT 0,
    is_enabled BOOLEAN DEFAULT TRUE,
    is_required BOOLEAN DEFAULT FALSE,
    conditional_logic JSONB, -- Show/hide based on other answers
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    deleted_at TIMESTAMP
);

CREATE INDEX idx_app_questions_rescue ON application_questions(rescue_id);
CREATE INDEX idx_app_questions_scope ON application_questions(scope);
CREATE INDEX idx_app_questions_category ON application_questions(category);
CREATE UNIQUE INDEX idx_app_questions_key_rescue ON application_questions(question_key, rescue_id) NULLS NOT DISTINCT;
