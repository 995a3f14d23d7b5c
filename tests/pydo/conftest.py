"""Fixtures for the PyDo compatibility suite: a PyDo client pointed at a live pgplane, a
cluster registered through PyDo itself, and a superuser connection to the target server so
that every call's effect can be checked in PostgreSQL's catalogs.

The suite is started by the Rust end-to-end test `pydo_compat` (tests/e2e/pydo.rs), which
spawns pgplane and passes everything through PGPLANE_* environment variables."""

import os

import psycopg
import pytest
from azure.core.pipeline.policies import HeadersPolicy
from pydo import Client

ENV = {key: os.environ[key] for key in os.environ if key.startswith("PGPLANE_")}


def client_for(token):
    # PyDo refuses bearer tokens over plain http unless the authentication policy is replaced
    # (do-api.md section 3); the header on the wire is the same.
    return Client(
        token=token,
        endpoint=ENV["PGPLANE_API_URL"],
        retry_total=0,
        authentication_policy=HeadersPolicy({"Authorization": f"Bearer {token}"}),
    )


@pytest.fixture(scope="session")
def env():
    return ENV


@pytest.fixture(scope="session")
def db():
    return client_for(ENV["PGPLANE_TOKEN"]).databases


@pytest.fixture(scope="session")
def target():
    """A superuser session on the target server (autocommit)."""
    conn = psycopg.connect(**target_params(ENV["PGPLANE_TARGET_ADMIN_USER"], ENV["PGPLANE_TARGET_ADMIN_PASSWORD"]),
                           autocommit=True)
    yield conn
    conn.close()


def target_params(user, password, dbname="postgres"):
    return dict(host=ENV["PGPLANE_TARGET_HOST"], port=int(ENV["PGPLANE_TARGET_PORT"]), user=user,
                password=password, dbname=dbname, connect_timeout=5)


def login(user, password, dbname):
    """Logs in to the target as a user; returns the connection (caller closes it)."""
    return psycopg.connect(**target_params(user, password, dbname))


def unique(base):
    return f"{base}_{ENV['PGPLANE_SUFFIX']}"


@pytest.fixture(scope="session")
def cluster(db, target):
    """A cluster registered through PyDo's create_cluster; unregistered at the end."""
    body = {
        "name": f"pydo-{ENV['PGPLANE_SUFFIX']}",
        "engine": "pg",
        "region": "nyc3",
        "size": "db-s-1vcpu-1gb",
        "num_nodes": 1,
        "tags": ["pydo"],
        "pgplane": {
            "host": ENV["PGPLANE_TARGET_HOST"],
            "port": int(ENV["PGPLANE_TARGET_PORT"]),
            "user": ENV["PGPLANE_TARGET_ADMIN_USER"],
            "password": ENV["PGPLANE_TARGET_ADMIN_PASSWORD"],
            "sslmode": "disable",
            "primary_user": unique("doadmin"),
            "default_database": unique("defaultdb"),
        },
    }
    created = db.create_cluster(body)["database"]
    yield created
    assert db.destroy_cluster(created["id"]) is None


def role(target, name):
    """The catalog row of a role, or None."""
    return target.execute(
        "SELECT rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolreplication FROM pg_roles WHERE rolname = %s",
        (name,),
    ).fetchone()


def database_owner(target, name):
    row = target.execute(
        "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (name,)
    ).fetchone()
    return row[0] if row else None
