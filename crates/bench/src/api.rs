//! The bench's HTTP client for pgplane's REST API (reqwest, keep-alive connections, bearer
//! token): the calls each scenario makes, each checking the status code the DigitalOcean
//! clients expect and that the change was applied on the target (status "ready").

use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

/// A client for one pgplane.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    pub base: String,
    token: String,
}

/// A failed call: what was expected and what came back.
pub type CallResult = std::result::Result<(), String>;

impl Api {
    pub fn new(base: String, token: String) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .build()
            .expect("HTTP client");
        Self { http, base, token }
    }

    /// The id part of the bench's token.
    pub fn token_id(&self) -> &str {
        pgplane_core::tokens::token_id(&self.token).unwrap_or_default()
    }

    pub async fn ready(&self) -> bool {
        matches!(
            self.http.get(format!("{}/readyz", self.base)).send().await,
            Ok(r) if r.status().is_success()
        )
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> std::result::Result<(u16, bytes_body::Body), String> {
        let mut request = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(|e| e.to_string())?;
        Ok((status, bytes_body::Body(bytes)))
    }

    /// Registers a target; returns the cluster id once it is online.
    pub async fn register(&self, body: Value) -> Result<String> {
        let (status, body) = self
            .send(reqwest::Method::POST, "/v2/databases", Some(body))
            .await
            .map_err(anyhow::Error::msg)?;
        let v = body.json().context("registration answer")?;
        if status != 201 || v["database"]["status"] != "online" {
            bail!("registering a cluster: {status} {v}");
        }
        Ok(v["database"]["id"].as_str().context("cluster id")?.to_string())
    }

    /// `POST .../users`: 201 and ready.
    pub async fn create_user(&self, cluster: &str, name: &str) -> CallResult {
        let path = format!("/v2/databases/{cluster}/users");
        let (status, body) = self.send(reqwest::Method::POST, &path, Some(json!({ "name": name }))).await?;
        expect_ready(status, 201, &body, "user")
    }

    /// `POST .../users/{name}/reset_auth`: 200 and ready.
    pub async fn reset_user(&self, cluster: &str, name: &str) -> CallResult {
        let path = format!("/v2/databases/{cluster}/users/{name}/reset_auth");
        let (status, body) = self.send(reqwest::Method::POST, &path, Some(json!({}))).await?;
        expect_ready(status, 200, &body, "user")
    }

    /// `POST .../users` of a lease (`ttl`): 201 and ready.
    pub async fn create_lease(&self, cluster: &str, name: &str, ttl: &str) -> CallResult {
        let path = format!("/v2/databases/{cluster}/users");
        let body = json!({ "name": name, "ttl": ttl });
        let (status, body) = self.send(reqwest::Method::POST, &path, Some(body)).await?;
        expect_ready(status, 201, &body, "user")
    }

    /// `POST path` with `body`, expecting `expected` and a ready user; returns the answer's
    /// `user` (its password, its rotation's grace).
    pub async fn user_call(&self, path: &str, body: Value, expected: u16) -> Result<Value> {
        let (status, answer) =
            self.send(reqwest::Method::POST, path, Some(body)).await.map_err(anyhow::Error::msg)?;
        expect_ready(status, expected, &answer, "user").map_err(anyhow::Error::msg)?;
        Ok(answer.json()?["user"].take())
    }

    /// `DELETE .../users/{name}`: 204.
    pub async fn delete_user(&self, cluster: &str, name: &str) -> CallResult {
        let path = format!("/v2/databases/{cluster}/users/{name}");
        let (status, body) = self.send(reqwest::Method::DELETE, &path, None).await?;
        expect_status(status, 204, &body)
    }

    /// `POST .../dbs`: 201 and in sync (a db in sync is just `{"name"}`).
    pub async fn create_db(&self, cluster: &str, name: &str) -> CallResult {
        let path = format!("/v2/databases/{cluster}/dbs");
        let (status, body) = self.send(reqwest::Method::POST, &path, Some(json!({ "name": name }))).await?;
        expect_status(status, 201, &body)?;
        let v = body.json().map_err(|e| e.to_string())?;
        match v["db"].get("status") {
            None => Ok(()),
            Some(s) => Err(format!("db not in sync: {s} {v}")),
        }
    }

    /// `DELETE .../dbs/{name}`: 204.
    pub async fn delete_db(&self, cluster: &str, name: &str) -> CallResult {
        let path = format!("/v2/databases/{cluster}/dbs/{name}");
        let (status, body) = self.send(reqwest::Method::DELETE, &path, None).await?;
        expect_status(status, 204, &body)
    }

    /// `POST path` with `body`: the status and the JSON answer, whatever they are.
    pub async fn post_json(&self, path: &str, body: Value) -> Result<(u16, Value)> {
        let (status, answer) =
            self.send(reqwest::Method::POST, path, Some(body)).await.map_err(anyhow::Error::msg)?;
        Ok((status, answer.json()?))
    }

    /// `DELETE path`: 204.
    pub async fn delete(&self, path: &str) -> Result<()> {
        let (status, body) =
            self.send(reqwest::Method::DELETE, path, None).await.map_err(anyhow::Error::msg)?;
        expect_status(status, 204, &body).map_err(anyhow::Error::msg)
    }

    /// `GET path`: 200; returns the body size.
    pub async fn get(&self, path: &str) -> std::result::Result<usize, String> {
        let (status, body) = self.send(reqwest::Method::GET, path, None).await?;
        expect_status(status, 200, &body)?;
        Ok(body.0.len())
    }

    /// `GET path` as JSON.
    pub async fn get_json(&self, path: &str) -> Result<Value> {
        let (status, body) = self.send(reqwest::Method::GET, path, None).await.map_err(anyhow::Error::msg)?;
        expect_status(status, 200, &body).map_err(anyhow::Error::msg)?;
        body.json()
    }
}

fn expect_status(status: u16, expected: u16, body: &bytes_body::Body) -> CallResult {
    if status == expected {
        Ok(())
    } else {
        Err(format!("expected {expected}, got {status}: {}", body.text_prefix()))
    }
}

fn expect_ready(status: u16, expected: u16, body: &bytes_body::Body, key: &str) -> CallResult {
    expect_status(status, expected, body)?;
    let mut v = body.json().map_err(|e| e.to_string())?;
    if v[key]["status"] == "ready" {
        return Ok(());
    }
    // The answer carries the user's password: the message keeps everything else.
    if let Some(object) = v[key].as_object_mut() {
        object.remove("password");
    }
    Err(format!("{key} not ready: {v}"))
}

mod bytes_body {
    /// A response body.
    pub struct Body(pub bytes::Bytes);

    impl Body {
        pub fn json(&self) -> anyhow::Result<serde_json::Value> {
            Ok(serde_json::from_slice(&self.0)?)
        }

        /// The start of the body, for error messages.
        pub fn text_prefix(&self) -> String {
            String::from_utf8_lossy(&self.0[..self.0.len().min(300)]).into_owned()
        }
    }
}
