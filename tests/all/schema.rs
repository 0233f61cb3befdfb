//! The schema across releases and hosts: ten hosts starting at once on an
//! empty PostgreSQL database make one schema without an error; a database
//! made by the previous release (schema version 1, `tests/fixtures/schema-v1`)
//! is upgraded in place with its data, on PostgreSQL and SQLite; a host
//! refuses a database made by a newer release.

use std::path::PathBuf;
use std::time::Duration;

use leansync_tests::db::{Backend, TestDb};
use leansync_tests::host::Host;
use leansync_tests::plugins::repo_root;
use serde_json::Value;
use sqlx::Connection;

fn fixture(name: &str) -> PathBuf {
    repo_root().join("tests/fixtures/schema-v1").join(name)
}

/// What the fixture's tenant on `backend` was made with (see
/// `make_schema_v1_fixture`).
fn facts(backend: Backend) -> Value {
    let all: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("facts.json")).unwrap()).unwrap();
    all[format!("{backend:?}")].clone()
}

async fn schema_version(url: &str) -> i64 {
    let db = leansync_host::store::Db::connect(url).await.unwrap();
    sqlx::query_scalar("SELECT version FROM schema_versions WHERE component = 'host'")
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

/// `key` written to `dir/secret.key` with mode 0600; its path.
fn private_copy(dir: &tempfile::TempDir, key: &[u8]) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.path().join("secret.key");
    std::fs::write(&path, key).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.display().to_string()
}

#[test]
fn a_host_refuses_a_secret_key_others_can_read_and_never_replaces_it() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("secret.key");
    std::fs::write(&key, [3u8; 32]).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = std::process::Command::new(leansync_tests::host::leansync_bin())
        .arg("serve")
        .env("LEANSYNC_DATA_DIR", dir.path().join("data"))
        .env("LEANSYNC_SECRET_KEY_FILE", &key)
        .env(
            "LEANSYNC_LISTEN",
            format!("127.0.0.1:{}", leansync_tests::host::free_port()),
        )
        .env("LEANSYNC_PLUGINS_DIR", dir.path().join("plugins"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "started with a world-readable key:\n{err}"
    );
    assert!(
        err.contains("mode 644") && err.contains("chmod 600"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&key).unwrap(),
        [3u8; 32],
        "the key was replaced"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_hosts_start_at_once_on_an_empty_database() {
    let db = TestDb::new(Backend::Postgres).await;
    let keys = tempfile::tempdir().unwrap();
    let key = private_copy(&keys, &[7u8; 32]);
    let env = [("LEANSYNC_SECRET_KEY_FILE", key.as_str())];
    let hosts = futures::future::join_all((0..10).map(|_| Host::serve_only(&db.url, &env))).await;
    for (i, h) in hosts.iter().enumerate() {
        let log = h.log();
        assert!(
            !log.contains(" ERROR ") && !log.contains("Error:"),
            "host {i} logged an error while ten started at once:\n{log}"
        );
        let (s, _) = h.call("GET", "/readyz", None, None).await;
        assert_eq!(s, 200, "host {i} is not ready");
    }
    assert_eq!(
        schema_version(&db.url).await,
        leansync_host::store::SCHEMA_VERSION
    );
    drop(hosts);
    db.drop_db().await;
}

/// Loads the fixture's SQL into `backend`'s fresh database.
async fn load_fixture(db: &TestDb, backend: Backend) {
    match backend {
        Backend::Postgres => {
            let sql = std::fs::read_to_string(fixture("postgres.sql")).unwrap();
            let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
            sqlx::raw_sql(&sql).execute(&mut c).await.unwrap();
            c.close().await.unwrap();
        }
        Backend::Sqlite => {
            let sql = std::fs::read_to_string(fixture("sqlite.sql")).unwrap();
            let mut c = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
            sqlx::raw_sql(&sql).execute(&mut c).await.unwrap();
            c.close().await.unwrap();
        }
    }
}

async fn a_database_of_the_previous_release_is_upgraded_in_place(backend: Backend) {
    let db = TestDb::new(backend).await;
    load_fixture(&db, backend).await;
    let f = facts(backend);
    // The fixture's key, as an operator would install it (a checkout gives 0644).
    let keys = tempfile::tempdir().unwrap();
    let key_file = private_copy(&keys, &std::fs::read(fixture("secret.key")).unwrap());
    let mut h = Host::serve_only(&db.url, &[("LEANSYNC_SECRET_KEY_FILE", &key_file)]).await;
    h.token = f["operator_token"].as_str().unwrap().to_owned();
    assert_eq!(
        schema_version(&db.url).await,
        leansync_host::store::SCHEMA_VERSION
    );

    // The previous release's operator, customer and LeanSync Key work.
    let customers = h.op("GET", "/api/v1/customers", None).await;
    assert!(
        customers
            .to_string()
            .contains(f["customer"].as_str().unwrap()),
        "{customers}"
    );
    let key = f["key"].as_str().unwrap();
    let (s, body) = h
        .call("GET", "/api/v1/calls/call_none", Some(key), None)
        .await;
    assert_eq!(s, 404, "the key made before the upgrade is refused: {body}");
    // New tables work: a call for the licensed number is stored and
    // streamed.
    let mut live = h.sse(key).await;
    h.op(
        "POST",
        "/api/v1/sim/calls",
        Some(serde_json::json!({ "to": f["number"], "from": "+41 79 555 77 77" })),
    )
    .await;
    let e = live
        .next(Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("no live event after the upgrade:\n{}", h.log()));
    assert_eq!(e["caller"], "+41795557777");
    drop(h);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_database_of_the_previous_release_is_upgraded_in_place() {
    a_database_of_the_previous_release_is_upgraded_in_place(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sqlite_database_of_the_previous_release_is_upgraded_in_place() {
    a_database_of_the_previous_release_is_upgraded_in_place(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_refuses_a_database_made_by_a_newer_release() {
    let db = TestDb::new(Backend::Sqlite).await;
    drop(leansync_host::store::Db::connect(&db.url).await.unwrap());
    let newer = leansync_host::store::SCHEMA_VERSION + 1;
    {
        let mut c = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
        sqlx::query("UPDATE schema_versions SET version = $1")
            .bind(newer)
            .execute(&mut c)
            .await
            .unwrap();
    }
    let err = match leansync_host::store::Db::connect(&db.url).await {
        Ok(_) => panic!("a host opened a database of schema version {newer}"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains(&format!("schema version {newer}")) && err.contains("newer LeanSync release"),
        "{err}"
    );
}

/// Makes `tests/fixtures/schema-v1` with the previous release's binary:
/// `LEANSYNC_TEST_BIN=/path/to/old/leansync cargo test -p leansync-tests
/// --test all -- --ignored make_schema_v1_fixture`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "makes the upgrade fixture with an older release's binary"]
async fn make_schema_v1_fixture() {
    use leansync_tests::host::Tenant;
    let dir = fixture("");
    std::fs::create_dir_all(&dir).unwrap();
    // The previous release's binary makes the key there if it is missing.
    let key_file = fixture("secret.key").display().to_string();
    let env = [("LEANSYNC_SECRET_KEY_FILE", key_file.as_str())];
    let mut facts = serde_json::Map::new();
    for backend in [Backend::Postgres, Backend::Sqlite] {
        let db = TestDb::new(backend).await;
        let h = Host::start_with(&db.url, &env).await;
        let t = Tenant::create(&h, "Upgrade AG", &["044 668 18 90"], "http://127.0.0.1:9/").await;
        let token = h.token.clone();
        drop(h);
        let (name, sql) = match backend {
            Backend::Postgres => {
                let out = std::process::Command::new("pg_dump")
                    .args(["--inserts", "--no-owner", "--no-privileges", &db.url])
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                // `\restrict` lines are psql commands, not SQL.
                let sql = String::from_utf8(out.stdout).unwrap();
                let sql: Vec<&str> = sql.lines().filter(|l| !l.starts_with('\\')).collect();
                ("postgres.sql", sql.join("\n"))
            }
            Backend::Sqlite => {
                let file = db
                    .url
                    .trim_start_matches("sqlite://")
                    .split('?')
                    .next()
                    .unwrap();
                let out = std::process::Command::new("sqlite3")
                    .args([file, ".dump"])
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                ("sqlite.sql", String::from_utf8(out.stdout).unwrap())
            }
        };
        std::fs::write(fixture(name), sql).unwrap();
        let entry = serde_json::json!({
            "operator_token": token,
            "customer": t.customer,
            "key": t.key,
            "number": t.number,
        });
        facts.insert(format!("{backend:?}"), entry);
        db.drop_db().await;
    }
    std::fs::write(
        fixture("facts.json"),
        serde_json::to_string_pretty(&facts).unwrap(),
    )
    .unwrap();
}
