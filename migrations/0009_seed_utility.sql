-- Seed schema, part 9: feature_flags and user_favorites.
--
-- Fix relative to the seed: feature_flags.name was unique twice (inline
-- UNIQUE, and the unique index idx_feature_flags_name); one unique constraint
-- remains, with the seed's index name. idx_user_favorites_user repeats the
-- leading column of idx_user_favorites_unique; it is not a duplicate and is
-- kept as the seed declares it.
-- The seed inserts no rows into any table (its seeding section is a
-- TypeScript example), so no data is created here.

CREATE TABLE feature_flags (
    flag_id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    name VARCHAR(100) NOT NULL CONSTRAINT idx_feature_flags_name UNIQUE,
    description TEXT,
    enabled BOOLEAN DEFAULT FALSE,
    config JSONB DEFAULT '{}',
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);

-- idx_feature_flags_name is the unique constraint on name above.
CREATE INDEX idx_feature_flags_enabled ON feature_flags(enabled);

CREATE TABLE user_favorites (
    favorite_id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id UUID NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
    pet_id UUID NOT NULL REFERENCES pets(pet_id) ON DELETE CASCADE,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);

CREATE UNIQUE INDEX idx_user_favorites_unique ON user_favorites(user_id, pet_id);
CREATE INDEX idx_user_favorites_user ON user_favorites(user_id);
CREATE INDEX idx_user_favorites_pet ON user_favorites(pet_id);
