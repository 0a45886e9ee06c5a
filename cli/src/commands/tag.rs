//! `oranc tag encode|decode`: the key <-> tag mapping, for inspecting a cache by hand.

use std::io::Write as _;

use anyhow::Context as _;
use oranc_core::layout::KEY_ANNOTATION;
use oranc_core::tag::{is_long_key_tag, MAX_TAG_LEN};
use oranc_core::Tag;

use crate::cli::TagCommand;

pub fn run(command: TagCommand) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match command {
        TagCommand::Encode {
            key,
            fallbacks,
            encodings,
        } => {
            let mut chosen = vec![encodings.tag_encoding];
            if fallbacks {
                chosen.extend(
                    encodings
                        .fallback_encodings
                        .into_iter()
                        .filter(|e| *e != encodings.tag_encoding),
                );
            }
            // Alone, the bare tag (for scripts); with its fallbacks, each labelled with
            // its encoding (`custom: nar_L_x.nar`), the one written first.
            for encoding in chosen {
                let tag = encoding.tag_for(&key);
                let label = if is_long_key_tag(&tag) {
                    eprintln!(
                        "note: the key does not fit a {encoding} tag ({MAX_TAG_LEN} characters at most), so it is stored under its long-key tag (the key's SHA-256), with the key in the manifest's {KEY_ANNOTATION} annotation; the original oranc cannot store such keys"
                    );
                    format!("{encoding} (long key)")
                } else {
                    encoding.to_string()
                };
                if fallbacks {
                    writeln!(out, "{label}: {tag}")?;
                } else {
                    writeln!(out, "{tag}")?;
                }
            }
        }
        TagCommand::Decode { tag, encodings } => {
            let tag: Tag = tag.parse()?;
            if is_long_key_tag(&tag) {
                anyhow::bail!(
                    "{tag} is a long-key tag: it is the SHA-256 of its key, which only its manifest's {KEY_ANNOTATION} annotation holds"
                );
            }
            let key = encodings.tag_encoding.decode(&tag).with_context(|| {
                format!("decoding with --tag-encoding {}", encodings.tag_encoding)
            })?;
            writeln!(out, "{key}")?;
        }
    }
    Ok(())
}
