//! Store paths as users give them (`/nix/store/…-name`, a path inside one, or a link to
//! one such as `./result`), for push and gc.

use std::path::Path;

use anyhow::Context as _;
use oranc_core::{StoreDir, StorePath};

/// Turns what the user gave (store paths, paths inside them, symlinks like ./result) into
/// store paths.
pub fn resolve_path(store_dir: &StoreDir, given: &str) -> anyhow::Result<StorePath> {
    let given = given.trim();
    let inside_store = |absolute: &str| -> Option<anyhow::Result<StorePath>> {
        let rest = absolute
            .strip_prefix(store_dir.as_str())?
            .strip_prefix('/')?;
        let base = rest.split('/').next().unwrap_or(rest);
        Some(StorePath::from_base_name(base).map_err(anyhow::Error::from))
    };
    if let Some(path) = inside_store(given) {
        return path;
    }
    let resolved = std::fs::canonicalize(Path::new(given))
        .with_context(|| format!("{given:?} is neither a store path nor an existing file"))?;
    let resolved = resolved.to_string_lossy();
    inside_store(&resolved).unwrap_or_else(|| {
        anyhow::bail!("{given:?} resolves to {resolved}, which is not in {store_dir}")
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn resolves_paths_inside_store_paths() {
        let dir = StoreDir::default();
        let path = resolve_path(
            &dir,
            "/nix/store/5kk4mwqi310s9ssry90al6mxrb47vdiw-app/bin/x",
        )
        .unwrap();
        assert_eq!(path.name(), "app");
        assert!(resolve_path(&dir, "/definitely/not/here").is_err());
    }
}
