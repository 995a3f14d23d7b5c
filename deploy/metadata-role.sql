-- Least privilege for pgplane on its metadata database: a plain login role that owns one
-- database and nothing else (no SUPERUSER, CREATEDB, CREATEROLE or REPLICATION). It needs to own
-- the database so that `pgplane migrate` can create its tables; LISTEN/NOTIFY and advisory locks
-- need no grants. Run as a superuser with psql, setting the password variable:
--   psql -v pgplane_password="'…'" -f deploy/metadata-role.sql
-- then use postgres://pgplane:…@host:5432/pgplane as PGPLANE_DATABASE_URL.
create role pgplane login nosuperuser nocreatedb nocreaterole noreplication password :pgplane_password;
create database pgplane owner pgplane;
\connect pgplane
-- PostgreSQL 14 and older: public is owned by the bootstrap superuser and open to everyone.
alter schema public owner to pgplane;
revoke create on schema public from public;
revoke all on database pgplane from public;
