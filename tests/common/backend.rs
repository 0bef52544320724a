//! Which store the integration tests run on. By default, a SQLite file in each test's data
//! dir. With `RELAYARR_TEST_STORE=postgres` and `RELAYARR_TEST_POSTGRES` (a server URL where
//! the tests may create databases, e.g. `postgres://postgres@127.0.0.1:55439/postgres`),
//! the same tests run on PostgreSQL: every data dir gets a database of its own, named in a
//! file in the dir, so a relay restarted on that dir finds its data again.

use std::path::Path;

/// The PostgreSQL server the tests may use, if any.
pub fn postgres_admin_url() -> Option<String> {
    std::env::var("RELAYARR_TEST_POSTGRES")
        .ok()
        .filter(|u| !u.trim().is_empty())
}

/// True when the integration suite runs on PostgreSQL.
pub fn on_postgres() -> bool {
    let wanted = std::env::var("RELAYARR_TEST_STORE").is_ok_and(|s| s == "postgres");
    assert!(
        !wanted || postgres_admin_url().is_some(),
        "RELAYARR_TEST_STORE=postgres needs RELAYARR_TEST_POSTGRES (a server URL)"
    );
    wanted
}

/// The store URL for a data dir: `None` for SQLite, else the dir's own database (created on
/// first use).
pub fn store_url(dir: &Path) -> Option<String> {
    if !on_postgres() {
        return None;
    }
    let file = dir.join("postgres-url");
    if let Ok(url) = std::fs::read_to_string(&file) {
        return Some(url);
    }
    let admin = postgres_admin_url().expect("checked by on_postgres");
    let name = format!(
        "relayarr_t_{}",
        ulid::Ulid::new().to_string().to_lowercase()
    );
    let (base, _) = admin
        .rsplit_once('/')
        .expect("RELAYARR_TEST_POSTGRES is a URL with a database path");
    let url = format!("{base}/{name}");
    // A thread of its own: callers may be sync or inside a runtime.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| panic!("connect to RELAYARR_TEST_POSTGRES ({admin}): {e}"));
            tokio::spawn(conn);
            client
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .await
                .unwrap_or_else(|e| panic!("create test database {name}: {e}"));
        });
    })
    .join()
    .expect("create the test database");
    std::fs::write(&file, &url).expect("remember the test database");
    Some(url)
}

/// Adds the dir's store URL to a config's text (into its `[store]` table if it has one).
pub fn with_store(text: String, dir: &Path) -> String {
    let Some(url) = store_url(dir) else {
        return text;
    };
    let line = format!("url = {url:?}\n");
    match text.find("[store]\n") {
        Some(at) => {
            let at = at + "[store]\n".len();
            format!("{}{line}{}", &text[..at], &text[at..])
        }
        None => format!("{text}\n[store]\n{line}"),
    }
}
