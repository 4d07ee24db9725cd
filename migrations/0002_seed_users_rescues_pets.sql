-- Seed schema, part 2: users, rescues, pets.
--
-- Fixes relative to the seed (see docs/schema.md):
-- * users.email was unique three times (inline UNIQUE, uk_users_email, and the
--   plain idx_users_email); one unique constraint remains, named uk_users_email.
-- * rescues.email was unique twice (inline UNIQUE, uk_rescues_email); one
--   remains, named uk_rescues_email.
-- * pets.rescue_id had two identical foreign keys (inline, fk_pets_rescue); one
--   remains, named fk_pets_rescue.
-- * pets.status defaulted to 'available', which is not a label of
--   pet_status_enum; the default is 'AVAILABLE'.
-- * pets.location is created as POINT here and becomes GEOGRAPHY(POINT, 4326)
--   in 0003 when PostGIS is available; its index is created there too.

CREATE TABLE users (
    user_id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    email VARCHAR(255) NOT NULL CONSTRAINT uk_users_email UNIQUE,
    password_hash VARCHAR(255) NOT NULL,
    first_name VARCHAR(100) NOT NULL,
    last_name VARCHAR(100) NOT NULL,
    phone_number VARCHAR(20),
    user_type user_type_enum NOT NULL DEFAULT 'ADOPTER',
    status user_status_enum NOT NULL DEFAULT 'ACTIVE',
    email_verified BOOLEAN DEFAULT FALSE,
    email_verification_token VARCHAR(255),
    email_verification_expires TIMESTAMP,
    password_reset_token VARCHAR(255),
    password_reset_expires TIMESTAMP,
    profile_image_url TEXT,
    bio TEXT,
    location VARCHAR(255),
    preferences JSONB DEFAULT '{}',
    last_login_at TIMESTAMP,
    login_count INTEGER DEFAULT 0,
    failed_login_attempts INTEGER DEFAULT 0,
    locked_until TIMESTAMP,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    deleted_at TIMESTAMP
);

-- idx_users_email is not created: uk_users_email already indexes users(email).
CREATE INDEX idx_users_type ON users(user_type);
CREATE INDEX idx_users_status ON users(status);
CREATE INDEX idx_users_created_at ON users(created_at);

CREATE TABLE rescues (
    rescue_id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    name VARCHAR(255) NOT NULL,
    email VARCHAR(255) NOT NULL CONSTRAINT uk_rescues_email UNIQUE,
    phone VARCHAR(20),
    address TEXT NOT NULL,
    city VARCHAR(100) NOT NULL,
    state VARCHAR(100) NOT NULL,
    zip_code VARCHAR(20) NOT NULL,
    country VARCHAR(100) NOT NULL DEFAULT 'United States',
    website VARCHAR(255),
    description TEXT,
    mission TEXT,
    ein VARCHAR(20), -- Tax ID
    registration_number VARCHAR(100),
    contact_person VARCHAR(255) NOT NULL,
    contact_title VARCHAR(100),
    contact_email VARCHAR(255),
    contact_phone VARCHAR(20),
    status rescue_status_enum NOT NULL DEFAULT 'pending',
    verified_at TIMESTAMP,
    verified_by UUID REFERENCES users(user_id),
    settings JSONB DEFAULT '{}',
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    deleted_at TIMESTAMP
);

CREATE INDEX idx_rescues_status ON rescues(status);
CREATE INDEX idx_rescues_location ON rescues(city, state);
CREATE INDEX idx_rescues_verified ON rescues(verified_at);

CREATE TABLE pets (
    pet_id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    rescue_id UUID NOT NULL CONSTRAINT fk_pets_rescue REFERENCES rescues(rescue_id),
    name VARCHAR(100) NOT NULL,
    short_description TEXT,
    long_description TEXT,
    age_years INTEGER,
    age_months INTEGER,
    age_group age_group_enum NOT NULL,
    gender gender_enum NOT NULL,
    status pet_status_enum NOT NULL DEFAULT 'AVAILABLE',
    type pet_type_enum NOT NULL,
    breed VARCHAR(100),
    secondary_breed VARCHAR(100),
    weight_kg DECIMAL(5,2),
    size size_enum NOT NULL,
    color VARCHAR(100),
    markings TEXT,
    microchip_id VARCHAR(50),

    -- Behavioral attributes
    special_needs BOOLEAN DEFAULT FALSE,
    special_needs_description TEXT,
    house_trained BOOLEAN DEFAULT FALSE,
    good_with_children BOOLEAN,
    good_with_dogs BOOLEAN,
    good_with_cats BOOLEAN,
    good_with_small_animals BOOLEAN,
    energy_level energy_level_enum NOT NULL,
    exercise_needs TEXT,
    grooming_needs TEXT,
    training_notes TEXT,
    temperament TEXT[],

    -- Medical information
    medical_notes TEXT,
    vaccination_status vaccination_status_enum NOT NULL,
    vaccination_date DATE,
    spay_neuter_status spay_neuter_status_enum NOT NULL,
    spay_neuter_date DATE,
    last_vet_checkup DATE,

    -- Administrative
    behavioral_notes TEXT,
    surrender_reason TEXT,
    intake_date DATE,
    adoption_fee DECIMAL(8,2),

    -- Media and location
    images JSONB DEFAULT '[]',
    videos JSONB DEFAULT '[]',
    location POINT, -- the seed's GEOGRAPHY(POINT, 4326): set in 0003

    -- Timestamps and status
    available_since TIMESTAMP,
    adopted_date TIMESTAMP,
    foster_start_date TIMESTAMP,
    foster_end_date TIMESTAMP,

    -- Metrics
    view_count INTEGER DEFAULT 0,
    favorite_count INTEGER DEFAULT 0,
    application_count INTEGER DEFAULT 0,

    -- Search
    search_vector TSVECTOR,
    tags TEXT[],

    -- Audit
    archived BOOLEAN DEFAULT FALSE,
    featured BOOLEAN DEFAULT FALSE,
    priority_listing BOOLEAN DEFAULT FALSE,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    deleted_at TIMESTAMP
);

-- idx_pets_location is created in 0003, once the column has its final type.
CREATE INDEX idx_pets_rescue ON pets(rescue_id);
CREATE INDEX idx_pets_type ON pets(type);
CREATE INDEX idx_pets_status ON pets(status);
CREATE INDEX idx_pets_size ON pets(size);
CREATE INDEX idx_pets_age_group ON pets(age_group);
CREATE INDEX idx_pets_search ON pets USING GIN(search_vector);
CREATE INDEX idx_pets_featured ON pets(featured, created_at);
CREATE INDEX idx_pets_available ON pets(status, available_since);

-- Full-text search trigger
CREATE OR REPLACE FUNCTION update_pet_search_vector()
RETURNS TRIGGER AS $$
BEGIN
    NEW.search_vector :=
        setweight(to_tsvector('english', COALESCE(NEW.name, '')), 'A') ||
        setweight(to_tsvector('english', COALESCE(NEW.breed, '')), 'B') ||
        setweight(to_tsvector('english', COALESCE(NEW.short_description, '')), 'C') ||
        setweight(to_tsvector('english', COALESCE(NEW.long_description, '')), 'D');
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER update_pet_search_trigger
    BEFORE INSERT OR UPDATE ON pets
    FOR EACH ROW EXECUTE FUNCTION update_pet_search_vector();
