//! Both store sources give the same facts about real store paths as Nix itself.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: helpers outside #[test] panic on purpose"
)]

use oranc_backends::store::{NixCliSource, SqliteSource};
use oranc_core::{StoreDir, StoreSource};
use oranc_tests::nix::{path_info_from_nix, SignedClosure};

#[tokio::test]
async fn sqlite_nix_cli_and_immutable_sources_agree_with_nix() {
    let closure = SignedClosure::build(5_000);
    let store_dir = StoreDir::default();
    let root = store_dir.parse_path(&closure.root).unwrap();
    let db = std::path::Path::new(oranc_backends::store::sqlite::DEFAULT_DB);

    let sqlite = SqliteSource::open(store_dir.clone(), db, false).unwrap();
    // immutable=1 reads only the main file: move the WAL's new paths into it first, as Nix
    // does on its own from time to time.
    oranc_tests::run_ok(
        std::process::Command::new("sqlite3")
            .arg(db)
            .arg("PRAGMA wal_checkpoint(TRUNCATE);"),
    );
    let immutable = SqliteSource::open_immutable(store_dir.clone(), db).unwrap();
    let cli = NixCliSource::new(store_dir.clone(), None);
    let from_sqlite = sqlite.closure(std::slice::from_ref(&root)).await.unwrap();
    let from_immutable = immutable
        .closure(std::slice::from_ref(&root))
        .await
        .unwrap();
    let from_cli = cli.closure(std::slice::from_ref(&root)).await.unwrap();
    assert_eq!(from_sqlite.len(), 3);
    assert_eq!(from_sqlite, from_cli);
    assert_eq!(from_sqlite, from_immutable);

    let mut from_nix: Vec<_> = closure
        .path_info_json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| path_info_from_nix(&store_dir, e))
        .collect();
    from_nix.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!(from_sqlite, from_nix);
}

#[tokio::test]
async fn unknown_paths_and_missing_databases_are_clear_errors() {
    let store_dir = StoreDir::default();
    let absent = store_dir
        .parse_path("/nix/store/00000000000000000000000000000000-absent")
        .unwrap();
    let db = std::path::Path::new(oranc_backends::store::sqlite::DEFAULT_DB);
    let sqlite = SqliteSource::open(store_dir.clone(), db, false).unwrap();
    let error = sqlite
        .path_infos(std::slice::from_ref(&absent))
        .await
        .unwrap_err();
    assert!(
        matches!(error, oranc_core::Error::NotFound { .. }),
        "{error}"
    );
    let error = NixCliSource::new(store_dir.clone(), None)
        .path_infos(std::slice::from_ref(&absent))
        .await
        .unwrap_err();
    assert!(
        matches!(error, oranc_core::Error::NotFound { .. }),
        "{error}"
    );
    let error = SqliteSource::open(
        store_dir,
        std::path::Path::new("/nonexistent/db.sqlite"),
        false,
    )
    .unwrap_err();
    assert!(error.to_string().contains("--nix-db"), "{error}");
}
