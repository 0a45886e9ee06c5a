//! What a store source knows about one valid store path: the facts a narinfo and its
//! signature are made from.

use crate::hash::Sha256Hash;
use crate::signing::{fingerprint, PublicKey, Signature};
use crate::store_path::{StoreDir, StorePath};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathInfo {
    pub path: StorePath,
    pub nar_hash: Sha256Hash,
    pub nar_size: u64,
    /// Sorted, as Nix keeps them.
    pub references: Vec<StorePath>,
    pub deriver: Option<StorePath>,
    pub signatures: Vec<Signature>,
    /// Content address (`fixed:r:sha256:...`, `text:sha256:...`) for CA paths.
    pub ca: Option<String>,
}

impl PathInfo {
    pub fn fingerprint(&self, store_dir: &StoreDir) -> String {
        fingerprint(
            store_dir,
            &self.path,
            &self.nar_hash,
            self.nar_size,
            &self.references,
        )
    }

    /// The first signature that one of `keys` verifies, if any.
    pub fn verified_signature<'a>(
        &'a self,
        store_dir: &StoreDir,
        keys: &[PublicKey],
    ) -> Option<&'a Signature> {
        let fp = self.fingerprint(store_dir);
        self.signatures
            .iter()
            .find(|sig| keys.iter().any(|key| key.verifies(&fp, sig)))
    }
}
