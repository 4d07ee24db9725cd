-- Seed schema, part 1: the 34 enum types of seed/database-schema.md.
-- The seed declares each type after the table that uses it, which fails
-- ("type ... does not exist"); here every type is created first, in the seed's
-- order, with the seed's labels unchanged (upper case for users, pets and
-- audit levels, lower case everywhere else).

-- users
CREATE TYPE user_type_enum AS ENUM ('ADOPTER', 'RESCUE_STAFF', 'ADMIN');
CREATE TYPE user_status_enum AS ENUM ('ACTIVE', 'INACTIVE', 'PENDING_VERIFICATION', 'SUSPENDED');

-- rescues
CREATE TYPE rescue_status_enum AS ENUM ('pending', 'verified', 'suspended', 'inactive');

-- pets
CREATE TYPE pet_type_enum AS ENUM ('DOG', 'CAT', 'RABBIT', 'BIRD', 'REPTILE', 'SMALL_MAMMAL', 'FISH', 'OTHER');
CREATE TYPE gender_enum AS ENUM ('MALE', 'FEMALE', 'UNKNOWN');
CREATE TYPE size_enum AS ENUM ('EXTRA_SMALL', 'SMALL', 'MEDIUM', 'LARGE', 'EXTRA_LARGE');
CREATE TYPE age_group_enum AS ENUM ('BABY', 'YOUNG', 'ADULT', 'SENIOR');
CREATE TYPE energy_level_enum AS ENUM ('LOW', 'MEDIUM', 'HIGH', 'VERY_HIGH');
CREATE TYPE pet_status_enum AS ENUM ('AVAILABLE', 'PENDING', 'ADOPTED', 'FOSTER', 'MEDICAL_HOLD', 'BEHAVIORAL_HOLD', 'NOT_AVAILABLE', 'DECEASED');
CREATE TYPE vaccination_status_enum AS ENUM ('UP_TO_DATE', 'PARTIAL', 'NOT_VACCINATED', 'UNKNOWN');
CREATE TYPE spay_neuter_status_enum AS ENUM ('SPAYED', 'NEUTERED', 'NOT_ALTERED', 'UNKNOWN');

-- applications
CREATE TYPE application_status_enum AS ENUM (
    'draft', 'submitted', 'under_review', 'pending_references',
    'reference_check', 'interview_scheduled', 'interview_completed',
    'home_visit_scheduled', 'home_visit_completed', 'approved',
    'conditionally_approved', 'rejected', 'withdrawn', 'expired'
);
CREATE TYPE application_priority_enum AS ENUM ('low', 'normal', 'high', 'urgent');

-- application_questions
CREATE TYPE question_scope_enum AS ENUM ('core', 'rescue_specific');
CREATE TYPE question_category_enum AS ENUM (
    'personal_information', 'household_information', 'pet_ownership_experience',
    'lifestyle_compatibility', 'pet_care_commitment', 'references_verification',
    'final_acknowledgments'
);
CREATE TYPE question_type_enum AS ENUM (
    'text', 'email', 'phone', 'number', 'boolean', 'select',
    'multi_select', 'address', 'date', 'file'
);

-- chats, chat_participants, messages
CREATE TYPE chat_status_enum AS ENUM ('active', 'locked', 'archived');
CREATE TYPE participant_role_enum AS ENUM ('rescue', 'user');
CREATE TYPE message_format_enum AS ENUM ('plain', 'markdown', 'html');

-- email_templates
CREATE TYPE template_type_enum AS ENUM ('transactional', 'notification', 'marketing', 'system', 'administrative');
CREATE TYPE template_category_enum AS ENUM (
    'welcome', 'password_reset', 'email_verification', 'application_update',
    'adoption_confirmation', 'rescue_verification', 'staff_invitation',
    'notification_digest', 'reminder', 'announcement', 'newsletter', 'system_alert'
);
CREATE TYPE template_status_enum AS ENUM ('draft', 'active', 'inactive', 'archived');

-- email_queue (declaration order is sort order: ORDER BY priority DESC puts 'urgent' first)
CREATE TYPE email_type_enum AS ENUM ('transactional', 'notification', 'marketing', 'system');
CREATE TYPE email_priority_enum AS ENUM ('low', 'normal', 'high', 'urgent');
CREATE TYPE email_status_enum AS ENUM (
    'queued', 'sending', 'sent', 'delivered', 'opened',
    'clicked', 'failed', 'bounced', 'unsubscribed'
);

-- email_preferences
CREATE TYPE email_format_enum AS ENUM ('html', 'text', 'both');
CREATE TYPE digest_frequency_enum AS ENUM ('immediate', 'daily', 'weekly', 'monthly', 'never');

-- reports
CREATE TYPE entity_type_enum AS ENUM ('user', 'rescue', 'pet', 'application', 'message', 'conversation');
CREATE TYPE report_category_enum AS ENUM (
    'inappropriate_content', 'spam', 'harassment', 'false_information',
    'scam', 'animal_welfare', 'identity_theft', 'other'
);
CREATE TYPE report_severity_enum AS ENUM ('low', 'medium', 'high', 'critical');
CREATE TYPE report_status_enum AS ENUM ('pending', 'under_review', 'resolved', 'dismissed', 'escalated');

-- moderator_actions
CREATE TYPE action_type_enum AS ENUM (
    'warning_issued', 'content_removed', 'user_suspended', 'user_banned',
    'account_restricted', 'content_flagged', 'report_dismissed',
    'escalation', 'appeal_reviewed', 'no_action'
);
CREATE TYPE action_severity_enum AS ENUM ('low', 'medium', 'high', 'critical');

-- audit_logs
CREATE TYPE audit_level_enum AS ENUM ('INFO', 'WARNING', 'ERROR');
