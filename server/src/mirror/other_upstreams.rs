//! Where a mirror gets a NAR file when the upstream whose narinfo it served lacks the file,
//! fails, or sent bytes that failed their check: from another upstream, but only one whose
//! own narinfo of the path, signed by an upstream key, describes the very same file. The
//! client holds the narinfo already served (its `Compression`, `FileHash`, `FileSize`), so
//! a different file of the same NAR (other compression) cannot take its place.

use oranc_core::registry::ByteStream;
use oranc_core::NarInfo;

use super::{Mirror, Pending};

/// Which upstream answered, and its answer (`None`: it lacks the file).
pub(super) type Opened = (usize, oranc_core::Result<Option<ByteStream>>);

/// Whether `other` (another upstream's narinfo of the same path) describes the file
/// `served` names: the same NAR, compressed the same way, and the same file where both
/// say which.
fn same_file(served: &NarInfo, other: &NarInfo) -> bool {
    fn agree<T: PartialEq>(a: Option<T>, b: Option<T>) -> bool {
        a.is_none() || b.is_none() || a == b
    }
    other.store_path == served.store_path
        && other.nar_hash == served.nar_hash
        && other.nar_size == served.nar_size
        && other.compression.as_deref().unwrap_or("bzip2")
            == served.compression.as_deref().unwrap_or("bzip2")
        && agree(other.file_hash, served.file_hash)
        && agree(other.file_size, served.file_size)
}

impl Mirror {
    /// The NAR file of `pending`, asked of the upstream that served its narinfo first, then
    /// of the others that have the same file (`same_file`); upstreams whose file failed its
    /// check for this NAR are asked last. The first that has it, or the first answer when
    /// none does.
    pub(super) async fn upstream_nar(&self, pending: &Pending) -> Opened {
        let failed = pending
            .failed_upstreams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let others = (0..self.upstreams.len()).filter(|index| *index != pending.upstream);
        let mut order: Vec<usize> = std::iter::once(pending.upstream).chain(others).collect();
        order.sort_by_key(|index| failed.contains(index));
        let mut first_answer = None;
        for index in order {
            let url = if index == pending.upstream {
                pending.upstream_url.clone()
            } else {
                match self.same_file_at(index, pending).await {
                    Some(url) => url,
                    None => continue,
                }
            };
            let opened = self.upstreams[index].open_file(&url).await;
            if matches!(opened, Ok(Some(_))) {
                if index != pending.upstream {
                    tracing::info!(cache = %self.name, path = %pending.narinfo.store_path, upstream = self.upstreams[index].url(), "NAR file from another upstream with the same file");
                }
                return (index, opened);
            }
            first_answer.get_or_insert((index, opened));
        }
        first_answer.unwrap_or((pending.upstream, Ok(None)))
    }

    /// The `URL` of upstream `index`'s NAR file of `pending`'s path, when its narinfo is
    /// signed by an upstream key and names the same file.
    async fn same_file_at(&self, index: usize, pending: &Pending) -> Option<String> {
        let upstream = &self.upstreams[index];
        let hash_part = pending.narinfo.store_path.hash_part();
        let narinfo = upstream
            .narinfo_by_hash(&self.store_dir, hash_part)
            .await
            .ok()
            .flatten()?;
        (narinfo.is_signed_by_any(&self.keys) && same_file(&pending.narinfo, &narinfo))
            .then_some(narinfo.url)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const NARINFO: &str = "StorePath: /nix/store/0i2jd68mp5g6h2sa5k9c85rb80sn8hi9-hello-2.12\nURL: nar/aa.nar.xz\nCompression: xz\nFileHash: sha256:1ycjsfv3i1ljvr5wv3r3n5v3pn3j0jfm7l5gfgpkbn4rr2kyp1k4\nFileSize: 50000\nNarHash: sha256:1ycjsfv3i1ljvr5wv3r3n5v3pn3j0jfm7l5gfgpkbn4rr2kyp1k5\nNarSize: 226552\nReferences: \n";

    fn narinfo(edit: impl Fn(String) -> String) -> NarInfo {
        NarInfo::parse(&edit(NARINFO.to_owned())).unwrap()
    }

    #[test]
    fn only_the_very_file_a_served_narinfo_describes_may_come_from_another_upstream() {
        let served = narinfo(|text| text);
        assert!(same_file(
            &served,
            &narinfo(|text| text.replace("aa.nar", "bb.nar"))
        ));
        assert!(same_file(
            &served,
            &narinfo(|text| text.replace("FileSize: 50000\n", ""))
        ));
        for other in [
            narinfo(|text| text.replace("Compression: xz", "Compression: zstd")),
            narinfo(|text| text.replace("FileSize: 50000", "FileSize: 50001")),
            narinfo(|text| text.replace("NarSize: 226552", "NarSize: 226553")),
            narinfo(|text| text.replace("k5\n", "k6\n")),
            narinfo(|text| text.replace("hello-2.12", "hello-2.13")),
        ] {
            assert!(!same_file(&served, &other), "{other}");
        }
    }
}
