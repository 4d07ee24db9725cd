-- Seed schema, part 10: the seed's "Database Constraints and Rules" section.
--
-- Declared earlier, in their tables, because each duplicated an inline one:
--   fk_pets_rescue (0002), fk_applications_user, fk_applications_pet,
--   chk_applications_score_valid (0004), fk_chat_participants_chat (0005),
--   uk_users_email, uk_rescues_email (0002).
-- Left out: uk_applications_user_pet, an invalid partial UNIQUE constraint;
--   the partial unique index idx_applications_user_pet (0004) enforces it.

-- Data validation constraints
ALTER TABLE pets ADD CONSTRAINT chk_pets_age_valid
    CHECK (age_years >= 0 AND age_years <= 30);

ALTER TABLE pets ADD CONSTRAINT chk_pets_weight_valid
    CHECK (weight_kg > 0 AND weight_kg <= 200);

-- As in the seed. It passes when max_retries is NULL, and it rejects any
-- UPDATE that would take current_retries past max_retries, so a row's final
-- failure must not increment current_retries beyond max_retries.
ALTER TABLE email_queue ADD CONSTRAINT chk_email_retries_valid
    CHECK (current_retries >= 0 AND current_retries <= max_retries);
