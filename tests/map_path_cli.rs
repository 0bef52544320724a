//! `relayarr map-path SOURCE PATH`: a Windows Sonarr's path goes through the source's rules,
//! then the Plex server's, and the section with the longest matching `Location` is chosen,
//! with every step explained. The sections come from a fake Plex that speaks Plex's wire
//! format; an unreachable Plex still shows the mapping and says why no section is known.

mod common;

use common::fake_plex::FakePlex;
use common::test_config_text;
use tokio::process::Command;

const TOKEN: &str = "plex-token-map-path";

fn config(dir: &std::path::Path, plex_url: &str) -> std::path::PathBuf {
    let extra = format!(
        r#"
[[source]]
name = "sonarr-windows"
kind = "sonarr"
auth = {{ basic = {{ username = "sonarr", password = "change-me-windows" }} }}
path_rules = [{{ from = 'D:\TV', to = "/tv" }}]

[[plex]]
name = "home"
url = "{plex_url}"
token = "{TOKEN}"
path_rules = [{{ from = "/tv", to = "/data/tv" }}]
"#
    );
    let path = dir.join("relayarr.toml");
    std::fs::write(&path, test_config_text(dir, &extra)).expect("write config");
    path
}

async fn map_path(config: &std::path::Path, source: &str, path: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_relayarr"))
        .args(["map-path", source, path, "--config"])
        .arg(config)
        .output()
        .await
        .expect("run relayarr map-path")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_path_cli_windows_path_to_the_longest_plex_location() {
    let plex = FakePlex::start(TOKEN).await;
    plex.add_section("1", "movie", "Movies", &["/data/movies"]);
    plex.add_section("2", "show", "TV Shows", &["/data/tv"]);
    plex.add_section("3", "show", "Anime", &["/data/tv/anime"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), &plex.url());

    let out = map_path(
        &cfg,
        "sonarr-windows",
        r"D:\TV\anime\Frieren (2023)\Season 01\Frieren - S01E05.mkv",
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("mapped:   /data/tv/anime/Frieren (2023)/Season 01/Frieren - S01E05.mkv"),
        "{stdout}"
    );
    assert!(
        stdout.contains("scanned:  /data/tv/anime/Frieren (2023)/Season 01"),
        "{stdout}"
    );
    assert!(stdout.contains("section:  Anime (key 3)"), "{stdout}");
    // Why: both rule steps and the losing candidate are explained.
    assert!(
        stdout.contains("source `sonarr-windows` rules:"),
        "{stdout}"
    );
    assert!(stdout.contains("plex `home` rules:"), "{stdout}");
    assert!(stdout.contains("\"TV Shows\""), "{stdout}");
    // The dry run read the sections and nothing else: no scan was sent.
    assert!(plex.scans().is_empty());
    assert!(plex
        .calls()
        .iter()
        .all(|c| c.method == "GET" && c.path == "/library/sections"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_path_cli_explains_an_unreachable_plex_and_unknown_sources() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), &format!("http://{dead}"));

    let out = map_path(&cfg, "sonarr-windows", r"D:\TV\Show\Season 01\a.mkv").await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("mapped:   /data/tv/Show/Season 01/a.mkv"),
        "{stdout}"
    );
    assert!(stdout.contains("section:  (none"), "{stdout}");
    assert!(
        stdout.contains("cannot read Plex's library sections"),
        "{stdout}"
    );
    assert!(!stdout.contains(TOKEN), "the token never appears: {stdout}");

    let out = map_path(&cfg, "nope", "/tv/x.mkv").await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("no [[source]] named `nope`"), "{stderr}");
    assert!(
        stderr.contains("sonarr-windows"),
        "lists the configured sources: {stderr}"
    );
}
