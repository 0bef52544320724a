//! One PostgreSQL database shared by several relay processes (the multi-instance tests).
//! [`super::backend::store_url`] gives each data dir a database of its own, and only when
//! the whole suite runs on PostgreSQL; these tests need one database for several data dirs,
//! whatever `RELAYARR_TEST_STORE` says, and a plain client to look at the claims.

use tokio_postgres::{Client, NoTls};

/// Creates a fresh database on the server at `admin` (`RELAYARR_TEST_POSTGRES`) and returns
/// its URL.
pub async fn create_database(admin: &str) -> String {
    let name = format!(
        "relayarr_m_{}",
        ulid::Ulid::new().to_string().to_lowercase()
    );
    let (base, _) = admin
        .rsplit_once('/')
        .expect("RELAYARR_TEST_POSTGRES is a URL with a database path");
    let client = connect(admin).await;
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap_or_else(|e| panic!("create test database {name}: {e}"));
    format!("{base}/{name}")
}

/// A plain client on `url` (its connection runs in a task of its own).
pub async fn connect(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    tokio::spawn(conn);
    client
}
