"""PyDo 0.44.0 against pgplane: every clusters, users, dbs, connection pools, firewall, CA and
events method of DigitalOcean's Managed Databases API, with the statuses PyDo checks, the shapes
it returns, the errors the way a PyDo user meets them, and each call's effect checked on the
target PostgreSQL (and through PgBouncer for pools)."""

import time

import psycopg
import pytest
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

from conftest import client_for, database_owner, login, role, target_params, unique


def headers_of(call, *args, **kwargs):
    """Calls a PyDo method and returns (status, headers, body) through its `cls` hook."""
    seen = {}

    def hook(pipeline_response, body, headers):
        seen["status"] = pipeline_response.http_response.status_code
        seen["headers"] = dict(pipeline_response.http_response.headers)
        return body

    body = call(*args, cls=hook, **kwargs)
    return seen["status"], seen["headers"], body


def test_create_get_and_list_clusters(db, cluster, target, env):
    assert cluster["status"] == "online"
    assert cluster["engine"] == "pg"
    primary = unique("doadmin")
    default_db = unique("defaultdb")
    assert cluster["db_names"] == [default_db]
    assert cluster["connection"]["user"] == primary
    assert cluster["users"][0]["role"] == "primary"
    # On the target: the primary user (CREATEROLE from PostgreSQL 16 on) and the default
    # database, owned by it.
    version = int(target.execute("SHOW server_version_num").fetchone()[0])
    assert role(target, primary) == (True, False, True, version >= 160000, False)
    assert database_owner(target, default_db) == primary
    with login(primary, cluster["connection"]["password"], default_db) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == primary

    got = db.get_cluster(cluster["id"])["database"]
    assert got["id"] == cluster["id"] and got["name"] == cluster["name"]
    assert any(c["id"] == cluster["id"] for c in db.list_clusters()["databases"])
    assert [c["id"] for c in db.list_clusters(tag_name="pydo")["databases"]] == [cluster["id"]]
    assert db.list_clusters(tag_name="no-such-tag")["databases"] == []


def test_users_lifecycle(db, cluster, target):
    cid = cluster["id"]
    name = unique("app01")
    user = db.add_user(cid, {"name": name})["user"]
    assert user["name"] == name and user["role"] == "normal"
    assert role(target, name) == (True, False, False, False, False)
    with login(name, user["password"], unique("defaultdb")):
        pass

    assert name in [u["name"] for u in db.list_users(cid)["users"]]
    assert db.get_user(cid, name)["user"]["password"] == user["password"]

    # PUT answers 201, and PyDo accepts nothing else.
    updated = db.update_user(cid, name, {"settings": {"pg_allow_replication": True}})["user"]
    assert updated["settings"]["pg_allow_replication"] is True
    assert role(target, name)[4] is True

    # reset_auth answers 200 with a new password; the old one stops working at once.
    new = db.reset_auth(cid, name, {})["user"]["password"]
    assert new != user["password"]
    with login(name, new, unique("defaultdb")):
        pass
    with pytest.raises(psycopg.OperationalError):
        login(name, user["password"], unique("defaultdb"))

    assert db.delete_user(cid, name) is None
    assert role(target, name) is None
    missing = db.get_user(cid, name)
    assert missing["id"] == "not_found", missing


def test_user_settings_pass_through_add_and_update_user(db, cluster, target):
    """pgplane's settings extensions (connection_limit, parameters) go through PyDo's add_user
    and update_user unchanged, and land on the server."""
    cid = cluster["id"]
    name = unique("tuned01")
    settings = {
        "connection_limit": 2,
        "parameters": [{"name": "statement_timeout", "value": "100ms"}],
    }
    user = db.add_user(cid, {"name": name, "settings": settings})["user"]
    assert user["settings"]["connection_limit"] == 2
    assert user["settings"]["parameters"] == settings["parameters"]
    limit = "SELECT rolconnlimit FROM pg_roles WHERE rolname = %s"
    assert target.execute(limit, (name,)).fetchone()[0] == 2
    with psycopg.connect(**target_params(name, user["password"], unique("defaultdb")), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(1)")

    updated = db.update_user(cid, name, {"settings": {"connection_limit": -1, "parameters": []}})["user"]
    assert updated["settings"]["connection_limit"] == -1 and updated["settings"]["parameters"] == []
    assert target.execute(limit, (name,)).fetchone()[0] == -1
    with login(name, user["password"], unique("defaultdb")) as conn:
        conn.execute("SELECT pg_sleep(0.2)")

    # PyDo's update_user returns a 422 as the error object, as it does a 404.
    refused = db.update_user(cid, name, {"settings": {"parameters": [{"name": "role", "value": "postgres"}]}})
    assert refused["id"] == "unprocessable_entity", refused
    assert 'parameter "role" cannot be set' in refused["message"]


def test_expiry_lease_and_grace_pass_through_pydo(db, cluster, target):
    """pgplane's credential lifecycle extensions go through PyDo unchanged: an expiry in
    update_user's settings, a lease's ttl in add_user, and a grace in reset_auth's body."""
    cid = cluster["id"]
    name = unique("expiring01")
    user = db.add_user(cid, {"name": name})["user"]
    updated = db.update_user(cid, name, {"settings": {"valid_until": "2030-01-31T18:00:00Z"}})["user"]
    assert updated["settings"]["valid_until"] == "2030-01-31T18:00:00Z"
    until = "SELECT to_char(rolvaliduntil AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') FROM pg_roles WHERE rolname = %s"
    assert target.execute(until, (name,)).fetchone()[0] == "2030-01-31 18:00:00"

    lease = unique("lease01")
    made = db.add_user(cid, {"name": lease, "ttl": "1h"})["user"]
    assert made["lease"]["ttl_seconds"] == 3600 and made["settings"]["valid_until"]

    rotated = db.reset_auth(cid, name, {"grace": "10m"})["user"]
    assert rotated["login"] == f"{name}_alt" and rotated["grace"]["login"] == name
    with login(name, user["password"], unique("defaultdb")):
        pass
    with login(f"{name}_alt", rotated["password"], unique("defaultdb")) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == name


def test_dbs_lifecycle(db, cluster, target):
    cid = cluster["id"]
    name = unique("alpha")
    assert db.add(cid, {"name": name})["db"] == {"name": name}
    assert database_owner(target, name) == unique("doadmin")
    assert {"name": name} in db.list(cid)["dbs"]
    assert db.get(cid, name)["db"]["name"] == name
    assert db.delete(cid, name) is None
    assert database_owner(target, name) is None
    assert db.get(cid, name)["id"] == "not_found"


def test_the_primary_user_and_default_database_cannot_be_deleted(db, cluster, target):
    cid = cluster["id"]
    for call, name in ((db.delete_user, unique("doadmin")), (db.delete, unique("defaultdb"))):
        with pytest.raises(HttpResponseError) as raised:
            call(cid, name)
        assert raised.value.status_code == 422
        assert raised.value.response.json()["id"] == "unprocessable_entity"
        assert raised.value.error.message
    assert role(target, unique("doadmin")) is not None
    assert database_owner(target, unique("defaultdb")) == unique("doadmin")


def test_duplicates_and_bad_names_raise_422(db, cluster):
    cid = cluster["id"]
    with pytest.raises(HttpResponseError) as raised:
        db.add_user(cid, {"name": unique("doadmin")})
    assert raised.value.status_code == 422
    assert raised.value.response.json()["id"] == "unprocessable_entity"
    for bad in ("", "postgres", "pg_" + unique("x"), "x" * 64):
        with pytest.raises(HttpResponseError) as raised:
            db.add_user(cid, {"name": bad})
        assert raised.value.status_code == 422, bad


def test_a_bad_token_raises_client_authentication_error(cluster):
    stranger = client_for("pgp_aaaaaaaaaaaa_" + "b" * 40).databases
    with pytest.raises(ClientAuthenticationError) as raised:
        stranger.list_users(cluster["id"])
    assert raised.value.response.json()["id"] == "unauthorized"
    with pytest.raises(ClientAuthenticationError):
        stranger.list_clusters()


def test_missing_objects_are_not_found_dicts(db, cluster):
    cid = cluster["id"]
    assert db.get_user(cid, unique("nobody"))["id"] == "not_found"
    assert db.get(cid, unique("nothing"))["id"] == "not_found"
    assert db.get_cluster("00000000-0000-0000-0000-000000000000")["id"] == "not_found"
    assert db.delete_user(cid, unique("nobody"))["id"] == "not_found"


def test_percent_encoded_names_round_trip(db, cluster, target):
    cid = cluster["id"]
    name = unique("a b/c?d%e")
    user = db.add_user(cid, {"name": name})["user"]
    assert role(target, name) is not None
    assert db.get_user(cid, name)["user"]["name"] == name
    assert db.reset_auth(cid, name, {})["user"]["password"] != user["password"]
    assert db.delete_user(cid, name) is None
    assert role(target, name) is None


def test_no_retry_after_and_integer_rate_limit_headers(db, cluster):
    status, headers, _ = headers_of(db.list_users, cluster["id"])
    assert status == 200
    lowered = {k.lower(): v for k, v in headers.items()}
    assert "retry-after" not in lowered
    for key in ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"):
        if key in lowered:
            int(lowered[key])
    status, headers, body = headers_of(db.get_user, cluster["id"], unique("nobody"))
    assert status == 404 and body["id"] == "not_found"
    assert "retry-after" not in {k.lower() for k in headers}


def wait_for(check, seconds=30):
    """Calls check until it returns something true; returns that."""
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"still not true after {seconds} s"
        time.sleep(0.2)


def add_pool(db, cid, body):
    """add_connection_pool, tried again while the pooler beside the server has not registered."""
    def attempt():
        try:
            return db.add_connection_pool(cid, body)["pool"]
        except HttpResponseError as e:
            if e.status_code == 422 and "no pooler" in e.response.json()["message"]:
                return None
            raise
    return wait_for(attempt)


def ready_pool(db, cid, name):
    return wait_for(lambda: (p := db.get_connection_pool(cid, name)["pool"])["status"] == "ready" and p)


def through_pool(connection, user, password):
    """Logs in through a pool with its connection details (as the pool's user, or as oneself)."""
    return psycopg.connect(host=connection["host"], port=connection["port"], dbname=connection["database"],
                           user=user, password=password, connect_timeout=5)


def test_connection_pools_lifecycle(db, cluster, target):
    """Every connection pool method, with PgBouncer really serving: logins through the pool as
    its fixed user and as oneself, a reset reaching the pool, an update, and a delete."""
    cid = cluster["id"]
    default_db = unique("defaultdb")
    name = unique("pooled01")
    user = db.add_user(cid, {"name": name})["user"]
    # godo and PyDo users send "user": "" for a pool whose clients log in as themselves.
    mine = add_pool(db, cid, {"name": "pydo-own", "mode": "transaction", "size": 2, "db": default_db, "user": ""})
    fixed = add_pool(db, cid, {"name": "pydo-fixed", "mode": "session", "size": 1, "db": default_db, "user": name})
    assert fixed["connection"]["database"] == "pydo-fixed" and fixed["connection"]["user"] == name
    assert fixed["connection"]["password"] == user["password"]
    assert fixed["private_connection"] == fixed["connection"]
    assert mine["user"] == "" and mine["connection"]["port"] == fixed["connection"]["port"]
    ready_pool(db, cid, "pydo-own")
    ready_pool(db, cid, "pydo-fixed")
    assert {p["name"] for p in db.list_connection_pools(cid)["pools"]} >= {"pydo-own", "pydo-fixed"}

    primary = unique("doadmin")
    with through_pool(mine["connection"], primary, cluster["connection"]["password"]) as conn:
        assert conn.execute("SELECT current_user, current_database()").fetchone() == (primary, default_db)
    with through_pool(fixed["connection"], name, user["password"]) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == name

    # A reset reaches PgBouncer: the new password logs in through the pool, the old no longer.
    new = db.reset_auth(cid, name, {})["user"]["password"]

    def new_works():
        try:
            through_pool(fixed["connection"], name, new).close()
        except psycopg.OperationalError:
            return False
        return True
    wait_for(new_works)
    with pytest.raises(psycopg.OperationalError):
        through_pool(fixed["connection"], name, user["password"])

    # PUT answers 204 (None); the pool then runs as updated.
    assert db.update_connection_pool(cid, "pydo-own", {"mode": "session", "size": 3, "db": default_db}) is None
    updated = db.get_connection_pool(cid, "pydo-own")["pool"]
    assert (updated["mode"], updated["size"]) == ("session", 3)
    ready_pool(db, cid, "pydo-own")

    with pytest.raises(HttpResponseError) as raised:
        db.add_connection_pool(cid, {"name": "pydo-bad", "mode": "sometimes", "size": 1, "db": default_db})
    assert raised.value.status_code == 422

    assert db.delete_connection_pool(cid, "pydo-fixed") is None
    assert db.get_connection_pool(cid, "pydo-fixed")["id"] == "not_found"
    wait_for(lambda: "pydo-fixed" not in {p["name"] for p in db.list_connection_pools(cid)["pools"]})
    assert db.delete_connection_pool(cid, "pydo-own") is None


def test_firewall_rules_ca_and_events(db, cluster):
    """Trusted sources replaced and listed in DigitalOcean's rule shape (godo's empty fields
    accepted), no CA for a target registered without one, and the cluster's events."""
    cid = cluster["id"]
    rules = [{"type": "ip_addr", "value": "127.0.0.2", "uuid": "", "cluster_uuid": "",
              "created_at": "0001-01-01T00:00:00Z"}, {"type": "ip_addr", "value": "10.0.0.0/8"}]
    assert db.update_firewall_rules(cid, {"rules": rules}) is None
    listed = db.list_firewall_rules(cid)["rules"]
    assert sorted(r["value"] for r in listed) == ["10.0.0.0/8", "127.0.0.2/32"]
    assert all(r["cluster_uuid"] == cid and r["type"] == "ip_addr" and r["uuid"] and r["created_at"] for r in listed)
    with pytest.raises(HttpResponseError) as raised:
        db.update_firewall_rules(cid, {"rules": [{"type": "droplet", "value": "163973392"}]})
    assert raised.value.status_code == 422
    assert len(db.list_firewall_rules(cid)["rules"]) == 2, "a refused replacement changed nothing"
    assert db.update_firewall_rules(cid, {"rules": []}) is None
    assert db.list_firewall_rules(cid)["rules"] == []

    assert db.get_ca(cid)["id"] == "not_found"

    events = db.list_events_logs(cid)["events"]
    assert {e["event_type"] for e in events} <= {"cluster_create", "cluster_update"}
    assert events[-1]["event_type"] == "cluster_create" and events[-1]["cluster_name"] == cluster["name"]
    assert any(e["pgplane"]["action"] == "firewall_update" for e in events)
