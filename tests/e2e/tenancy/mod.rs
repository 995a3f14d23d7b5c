//! The tenancy attack suite. Two teams' clusters share one PostgreSQL server; the second team
//! (its token, and its primary user, which holds CREATEROLE from PostgreSQL 16 on) or a fake
//! server tries each attack a feature makes possible, and every test asserts on the server
//! itself (catalogs, logins, the data it tried to read) that the attack failed. A feature that
//! touches a target adds its attacks here; SECURITY.md maps each threat to its test.

mod budgets;
mod credentials;
mod discovery;
mod groups;
mod heirs;
mod limits;
mod pools;
mod powers;
mod primary;
mod settings;
mod wire;

use pgplane_testkit::TestApp;
use reqwest::Method;
use serde_json::{json, Value};
use tokio_postgres::Client;

/// Another team's cluster on the test's own server, registered through the API with a token
/// of that team (all scopes), its own primary user and default database.
pub struct Rival {
    pub token: String,
    pub cluster_id: String,
    pub primary_user: String,
    pub primary_password: String,
    pub default_db: String,
}

impl Rival {
    /// Registers team `team` (made unique to the test) on `app`'s server, reached as
    /// `localhost`.
    pub async fn register(app: &TestApp, team: &str) -> Rival {
        let token = app.issue_token(&app.unique(team), &["*"]).await;
        let primary_user = app.unique(&format!("{team}_admin"));
        let default_db = app.unique(&format!("{team}_db"));
        let mut body = app.registration(&app.unique(team).replace('_', "-"));
        body["pgplane"]["host"] = json!("localhost");
        body["pgplane"]["primary_user"] = json!(primary_user);
        body["pgplane"]["default_database"] = json!(default_db);
        let (status, answer) = app.call_as(&token, Method::POST, "/v2/databases", Some(body)).await;
        assert_eq!(status, 201, "registering team {team}: {answer}");
        let cluster = &answer["database"];
        Rival {
            token,
            cluster_id: cluster["id"].as_str().expect("id").to_string(),
            primary_password: cluster["connection"]["password"].as_str().expect("password").to_string(),
            primary_user,
            default_db,
        }
    }

    /// The path of the rival's cluster, plus `rest`.
    pub fn path(&self, rest: &str) -> String {
        format!("/v2/databases/{}{rest}", self.cluster_id)
    }

    /// A request with the rival's token.
    pub async fn call(&self, app: &TestApp, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        app.call_as(&self.token, method, path, body).await
    }

    /// A session on `database` as the rival's primary user.
    pub async fn session(&self, app: &TestApp, database: &str) -> Client {
        app.target
            .login(&self.primary_user, &self.primary_password, database)
            .await
            .expect("the rival's primary user logs in")
    }
}
