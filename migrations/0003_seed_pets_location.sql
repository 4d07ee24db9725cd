-- Seed schema, part 3: pets.location and idx_pets_location.
--
-- The seed declares pets.location GEOGRAPHY(POINT, 4326), a PostGIS type.
-- * If PostGIS is installed on the server (pg_available_extensions lists it,
--   or the extension already exists in this database), the extension is
--   created and the column becomes geography(Point, 4326), as in the seed.
-- * Otherwise the column stays a core POINT (x = longitude, y = latitude,
--   WGS 84 by convention), and the contrib extensions cube and earthdistance
--   are created when available, so that `location <@> point(lon, lat)` gives a
--   distance in statute miles.
-- Which one a database got is recorded in the column's comment:
--   SELECT col_description('pets'::regclass,
--          (SELECT attnum FROM pg_attribute
--            WHERE attrelid = 'pets'::regclass AND attname = 'location'));
-- Dynamic SQL keeps the PostGIS statements from being parsed when the
-- extension is absent.

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'postgis')
       OR EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'postgis') THEN
        BEGIN
            EXECUTE 'CREATE EXTENSION IF NOT EXISTS postgis';
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE EXCEPTION 'PostGIS is installed on the server but this role may not create the extension'
                USING HINT = 'Run CREATE EXTENSION postgis; as a superuser in this database, then migrate again.';
        END;
        EXECUTE 'ALTER TABLE pets ALTER COLUMN location TYPE geography(Point, 4326) USING NULL';
        EXECUTE $c$COMMENT ON COLUMN pets.location IS 'PostGIS geography(Point,4326)'$c$;
        RAISE NOTICE 'pets.location: PostGIS geography(Point,4326)';
    ELSE
        IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'cube')
           AND EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'earthdistance') THEN
            BEGIN
                EXECUTE 'CREATE EXTENSION IF NOT EXISTS cube';
                EXECUTE 'CREATE EXTENSION IF NOT EXISTS earthdistance';
            EXCEPTION WHEN insufficient_privilege THEN
                RAISE NOTICE 'cube/earthdistance not created (insufficient privilege); the point column works without them';
            END;
        END IF;
        EXECUTE $c$COMMENT ON COLUMN pets.location IS 'fallback: point (x=longitude, y=latitude), PostGIS not installed'$c$;
        RAISE NOTICE 'pets.location: fallback point (x=longitude, y=latitude), PostGIS not installed';
    END IF;
END
$$;

-- GiST works for both: gist_geography_ops with PostGIS, the core point_ops otherwise.
CREATE INDEX idx_pets_location ON pets USING GIST(location);
