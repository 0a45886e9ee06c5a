//! `<hash>.ls`: the JSON listing of a NAR's files that Nix writes with
//! `write-nar-listing = true` (read by nix-index style tools and Hydra's file browser; Nix
//! 2.8's own `nix store ls` still downloads the NAR), and the NAR's ELF debug files
//! (`lib/debug/.build-id/…`) for `debuginfo/` entries.
//!
//! Built from the NAR bytes as they stream past the hasher: a second reader of the same
//! bytes (nix-nar's decoder, which reports each file's offset in the NAR) runs on its own
//! thread, fed through a small bounded channel. The store path is never walked twice.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::mpsc;

use serde::Serialize;

/// Chunks of NAR in flight to the listing thread.
const DEPTH: usize = 8;

/// One node of the listing, in Nix's JSON shape.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Node {
    Directory {
        entries: BTreeMap<String, Node>,
    },
    Regular {
        size: u64,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        executable: bool,
        #[serde(rename = "narOffset")]
        nar_offset: u64,
    },
    Symlink {
        target: String,
    },
}

#[derive(Debug, Serialize)]
struct Listing {
    version: u32,
    root: Node,
}

/// What one pass over a NAR found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NarContents {
    /// `<hash>.ls` JSON.
    pub listing: Vec<u8>,
    /// The regular files Nix indexes as debug info: (build id, path in the NAR).
    pub debug_files: Vec<(String, String)>,
}

/// Reads what the sender hands over, in order.
struct ChannelReader {
    receiver: mpsc::Receiver<Vec<u8>>,
    current: Vec<u8>,
    position: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.position == self.current.len() {
            match self.receiver.recv() {
                Ok(chunk) => {
                    self.current = chunk;
                    self.position = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len() - self.position);
        out[..n].copy_from_slice(&self.current[self.position..self.position + n]);
        self.position += n;
        Ok(n)
    }
}

/// Builds the listing of the NAR fed to it.
#[derive(Debug)]
pub struct ListingBuilder {
    sender: Option<mpsc::SyncSender<Vec<u8>>>,
    thread: std::thread::JoinHandle<std::io::Result<NarContents>>,
}

impl ListingBuilder {
    pub fn start() -> Self {
        let (sender, receiver) = mpsc::sync_channel(DEPTH);
        let thread = std::thread::spawn(move || {
            list(ChannelReader {
                receiver,
                current: Vec::new(),
                position: 0,
            })
        });
        Self {
            sender: Some(sender),
            thread,
        }
    }

    /// Hands the next bytes of the NAR over. A listing that failed stops listening; its
    /// error comes from [`Self::finish`].
    pub fn feed(&mut self, bytes: &[u8]) {
        if let Some(sender) = &self.sender {
            if sender.send(bytes.to_vec()).is_err() {
                self.sender = None;
            }
        }
    }

    /// The listing and debug files, once the whole NAR was fed.
    pub fn finish(mut self) -> std::io::Result<NarContents> {
        self.sender = None;
        self.thread
            .join()
            .map_err(|_| std::io::Error::other("the NAR listing thread panicked"))?
    }
}

fn list(reader: impl Read) -> std::io::Result<NarContents> {
    let invalid = |e: nix_nar::NarError| std::io::Error::other(format!("listing the NAR: {e}"));
    let decoder = nix_nar::Decoder::new(reader).map_err(invalid)?;
    let mut root: Option<Node> = None;
    let mut debug_files = Vec::new();
    for entry in decoder.entries().map_err(invalid)? {
        let entry = entry.map_err(invalid)?;
        let node = match entry.content {
            nix_nar::Content::Directory => Node::Directory {
                entries: BTreeMap::new(),
            },
            nix_nar::Content::Symlink { target } => Node::Symlink {
                target: target.into_string(),
            },
            nix_nar::Content::File {
                executable,
                size,
                offset,
                ..
            } => Node::Regular {
                size,
                executable,
                nar_offset: offset,
            },
        };
        let components: Vec<String> = entry
            .path
            .iter()
            .flat_map(|path| path.components())
            .map(|c| c.as_str().to_owned())
            .collect();
        if matches!(node, Node::Regular { .. }) {
            let member = components.join("/");
            if let Some(build_id) = oranc_core::DebugInfoEntry::build_id_of(&member) {
                debug_files.push((build_id, member));
            }
        }
        insert(&mut root, &components, node)?;
    }
    let root = root.ok_or_else(|| std::io::Error::other("listing the NAR: it is empty"))?;
    let listing =
        serde_json::to_vec(&Listing { version: 1, root }).map_err(std::io::Error::other)?;
    Ok(NarContents {
        listing,
        debug_files,
    })
}

/// Puts `node` at `path` below `root` (the root itself when `path` is empty); entries come
/// in NAR order, so every parent exists before its children.
fn insert(root: &mut Option<Node>, path: &[String], node: Node) -> std::io::Result<()> {
    let Some((name, parents)) = path.split_last() else {
        *root = Some(node);
        return Ok(());
    };
    let mut directory = root.as_mut();
    for parent in parents {
        directory = match directory {
            Some(Node::Directory { entries }) => entries.get_mut(parent),
            _ => None,
        };
    }
    match directory {
        Some(Node::Directory { entries }) => {
            entries.insert(name.clone(), node);
            Ok(())
        }
        _ => Err(std::io::Error::other(format!(
            "listing the NAR: {} has no parent directory",
            path.join("/")
        ))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn lists_a_tree_with_offsets_fed_in_small_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::create_dir_all(root.join("empty")).unwrap();
        std::fs::write(root.join("bin/tool"), b"#!/bin/sh\necho hi\n").unwrap();
        std::fs::write(root.join("data"), vec![7u8; 1000]).unwrap();
        std::os::unix::fs::symlink("bin/tool", root.join("link")).unwrap();
        let build_ids = root.join("lib/debug/.build-id/0f");
        std::fs::create_dir_all(&build_ids).unwrap();
        std::fs::write(
            build_ids.join("1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c.debug"),
            b"ELF",
        )
        .unwrap();
        std::os::unix::fs::symlink(
            "1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c.debug",
            build_ids.join("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.debug"),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(
            root.join("bin/tool"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let mut nar = Vec::new();
        nix_nar::Encoder::new(&root)
            .unwrap()
            .read_to_end(&mut nar)
            .unwrap();

        let mut builder = ListingBuilder::start();
        for piece in nar.chunks(7) {
            builder.feed(piece);
        }
        let contents = builder.finish().unwrap();
        assert_eq!(
            contents.debug_files,
            [(
                "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c".to_owned(),
                "lib/debug/.build-id/0f/1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c.debug".to_owned()
            )]
        );
        let listing: serde_json::Value = serde_json::from_slice(&contents.listing).unwrap();
        assert_eq!(listing["version"], 1);
        let entries = &listing["root"]["entries"];
        assert_eq!(entries["empty"]["type"], "directory");
        assert_eq!(entries["link"]["type"], "symlink");
        assert_eq!(entries["link"]["target"], "bin/tool");
        let tool = &entries["bin"]["entries"]["tool"];
        assert_eq!(tool["executable"], true);
        assert_eq!(tool["size"], 18);
        // narOffset points at the file's bytes inside the NAR.
        let offset = tool["narOffset"].as_u64().unwrap() as usize;
        assert_eq!(&nar[offset..offset + 18], b"#!/bin/sh\necho hi\n");
        let data = &entries["data"];
        assert!(data.get("executable").is_none());
        let offset = data["narOffset"].as_u64().unwrap() as usize;
        assert_eq!(&nar[offset..offset + 1000], &[7u8; 1000][..]);
    }
}
