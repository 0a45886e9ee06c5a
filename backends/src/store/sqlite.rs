//! The Nix SQLite database (`/nix/var/nix/db/db.sqlite`), read directly: the fastest source,
//! one query per batch of paths.
//!
//! Nix keeps the DB in WAL mode, so even a read-only connection needs to create the `-shm`
//! and `-wal` files beside it. Where the directory is not writable (a user without access,
//! a read-only mount), `immutable=1` opens it without them; that is only safe while no Nix
//! process writes, so it takes an explicit `--allow-immutable-db`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use oranc_core::{Error, PathInfo, Result, Sha256Hash, StoreDir, StorePath};
use rusqlite::{Connection, OpenFlags, OptionalExtension as _};

pub const DEFAULT_DB: &str = "/nix/var/nix/db/db.sqlite";

#[derive(Debug)]
pub struct SqliteSource {
    store_dir: StoreDir,
    db: PathBuf,
    connection: Arc<Mutex<Connection>>,
    /// immutable=1 reads only the main DB file, not the WAL: paths registered since Nix's
    /// last checkpoint are invisible, and errors must say so.
    immutable: bool,
}

fn sqlite_error(db: &Path) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |e| Error::Unavailable {
        what: format!("Nix DB {}", db.display()),
        reason: e.to_string(),
    }
}

impl SqliteSource {
    /// Opens `db` read-only; with `allow_immutable`, falls back to `immutable=1` when
    /// read-only fails (the directory is not writable). Errors name push's flags.
    pub fn open(store_dir: StoreDir, db: &Path, allow_immutable: bool) -> Result<Self> {
        match Self::open_read_only(store_dir.clone(), db) {
            Err(Error::NotFound { what }) => Err(Error::NotFound {
                what: format!("{what} (pass --nix-db, or --store-source nix)"),
            }),
            Err(Error::Denied { what, .. }) if allow_immutable => {
                tracing::info!(db = %db.display(), error = %what, "opening the Nix DB with immutable=1");
                Self::open_immutable(store_dir, db)
            }
            Err(Error::Denied { what, .. }) => Err(Error::Denied {
                what,
                hint: Some(
                    "its directory must be writable for the WAL files; pass --allow-immutable-db to read it with immutable=1 while no Nix process writes, or use --store-source nix".into(),
                ),
            }),
            opened => opened,
        }
    }

    /// Opens `db` read-only, seeing what Nix writes (the WAL too), or fails: `NotFound`
    /// without the file, `Denied` where its directory is not writable.
    pub fn open_read_only(store_dir: StoreDir, db: &Path) -> Result<Self> {
        if !db.exists() {
            return Err(Error::NotFound {
                what: format!("Nix DB {}", db.display()),
            });
        }
        let connection = open_read_only(db).map_err(|e| Error::Denied {
            what: format!("cannot open Nix DB {} read-only: {e}", db.display()),
            hint: Some("its directory must be writable for the WAL files".into()),
        })?;
        Ok(Self {
            store_dir,
            db: db.to_owned(),
            connection: Arc::new(Mutex::new(connection)),
            immutable: false,
        })
    }

    /// Opens `db` with `immutable=1` straight away.
    pub fn open_immutable(store_dir: StoreDir, db: &Path) -> Result<Self> {
        let connection = open_immutable(db).map_err(sqlite_error(db))?;
        Ok(Self {
            store_dir,
            db: db.to_owned(),
            connection: Arc::new(Mutex::new(connection)),
            immutable: true,
        })
    }
}

/// Watching for new paths (`oranc watch-store`). Nix gives every path it registers a new
/// row id in `ValidPaths` (AUTOINCREMENT: ids only grow, and a path deleted and built
/// again comes back with a higher one), so "what became valid since" is one indexed range
/// query on the primary key.
impl SqliteSource {
    /// The newest row id: where watching starts (paths at or below it are not new).
    pub async fn newest_path_id(&self) -> Result<i64> {
        self.query(|connection| {
            connection.query_row("SELECT coalesce(max(id), 0) FROM ValidPaths", [], |r| {
                r.get(0)
            })
        })
        .await
    }

    /// Paths registered after row id `after`, oldest first, with the newest id among them
    /// (`after` itself when there are none). Rows that are not paths of this store are
    /// skipped with a warning.
    pub async fn paths_registered_after(&self, after: i64) -> Result<(Vec<StorePath>, i64)> {
        let rows: Vec<(i64, String)> = self
            .query(move |connection| {
                let mut statement = connection
                    .prepare_cached("SELECT id, path FROM ValidPaths WHERE id > ?1 ORDER BY id")?;
                let rows = statement.query_map([after], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect()
            })
            .await?;
        let newest = rows.last().map_or(after, |(id, _)| *id);
        let paths = rows
            .into_iter()
            .filter_map(|(_, path)| match self.store_dir.parse_path(&path) {
                Ok(parsed) => Some(parsed),
                Err(error) => {
                    tracing::warn!(path, %error, "the Nix DB lists a path outside the store; ignored");
                    None
                }
            })
            .collect();
        Ok((paths, newest))
    }

    /// [`Self::with_connection`] for a plain SQLite query, its errors named by the DB.
    async fn query<T: Send + 'static>(
        &self,
        query: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T> {
        let db = self.db.clone();
        self.with_connection(move |connection| query(connection).map_err(sqlite_error(&db)))
            .await
    }

    /// Runs `work` on the connection off the async threads.
    async fn with_connection<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let connection = self.connection.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let connection = connection.lock().unwrap_or_else(|p| p.into_inner());
            work(&connection)
        })
        .await;
        joined.map_err(|e| Error::Io {
            what: format!("reading {}", self.db.display()),
            source: std::io::Error::other(e),
        })?
    }
}

fn open_read_only(db: &Path) -> rusqlite::Result<Connection> {
    let connection = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // Opening is lazy; a query shows whether the WAL files can be made.
    connection.query_row("SELECT count(*) FROM ValidPaths LIMIT 1", [], |_| Ok(()))?;
    Ok(connection)
}

fn open_immutable(db: &Path) -> rusqlite::Result<Connection> {
    let uri = format!("file:{}?immutable=1", db.display());
    let connection = Connection::open_with_flags(
        uri,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    connection.query_row("SELECT count(*) FROM ValidPaths LIMIT 1", [], |_| Ok(()))?;
    Ok(connection)
}

struct Row {
    id: i64,
    hash: String,
    deriver: Option<String>,
    nar_size: Option<i64>,
    sigs: Option<String>,
    ca: Option<String>,
}

fn query_paths(
    connection: &Connection,
    store_dir: &StoreDir,
    paths: &[StorePath],
    immutable: bool,
) -> Result<Vec<PathInfo>> {
    let db_error = |e: rusqlite::Error| Error::Unavailable {
        what: "querying the Nix DB".into(),
        reason: e.to_string(),
    };
    let mut by_path = connection
        .prepare_cached(
            "SELECT id, hash, deriver, narSize, sigs, ca FROM ValidPaths WHERE path = ?1",
        )
        .map_err(db_error)?;
    let mut refs = connection
        .prepare_cached("SELECT v.path FROM Refs r JOIN ValidPaths v ON v.id = r.reference WHERE r.referrer = ?1")
        .map_err(db_error)?;
    let mut infos = Vec::with_capacity(paths.len());
    for path in paths {
        let absolute = store_dir.display(path);
        let row = by_path
            .query_row([&absolute], |r| {
                Ok(Row {
                    id: r.get(0)?,
                    hash: r.get(1)?,
                    deriver: r.get(2)?,
                    nar_size: r.get(3)?,
                    sigs: r.get(4)?,
                    ca: r.get(5)?,
                })
            })
            .optional()
            .map_err(db_error)?
            .ok_or_else(|| Error::NotFound {
                what: if immutable {
                    format!("{absolute} in the Nix DB (opened with immutable=1, which does not see paths registered since Nix last checkpointed its DB; use --store-source nix for fresh paths)")
                } else {
                    format!("{absolute} in the Nix DB (is it a valid store path?)")
                },
            })?;
        let invalid = |reason: String| Error::Protocol {
            what: format!("the Nix DB entry of {absolute}"),
            reason,
        };
        let mut references = refs
            .query_map([row.id], |r| r.get::<_, String>(0))
            .map_err(db_error)?
            .map(|r| {
                let r = r.map_err(db_error)?;
                store_dir.parse_path(&r).map_err(|e| invalid(e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        references.sort();
        infos.push(PathInfo {
            path: path.clone(),
            nar_hash: row
                .hash
                .parse::<Sha256Hash>()
                .map_err(|e| invalid(e.to_string()))?,
            nar_size: row
                .nar_size
                .and_then(|s| u64::try_from(s).ok())
                .ok_or_else(|| invalid("no NAR size".into()))?,
            references,
            deriver: row
                .deriver
                .filter(|d| !d.is_empty())
                .map(|d| store_dir.parse_path(&d))
                .transpose()
                .map_err(|e| invalid(e.to_string()))?,
            signatures: row
                .sigs
                .unwrap_or_default()
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_>>()
                .map_err(|e| invalid(e.to_string()))?,
            ca: row.ca.filter(|c| !c.is_empty()),
        });
    }
    Ok(infos)
}

#[async_trait]
impl oranc_core::StoreSource for SqliteSource {
    fn store_dir(&self) -> &StoreDir {
        &self.store_dir
    }

    async fn path_infos(&self, paths: &[StorePath]) -> Result<Vec<PathInfo>> {
        let store_dir = self.store_dir.clone();
        let paths = paths.to_vec();
        let immutable = self.immutable;
        self.with_connection(move |connection| {
            query_paths(connection, &store_dir, &paths, immutable)
        })
        .await
    }
}
