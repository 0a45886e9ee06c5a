//! `oranc tag encode|decode`: the key <-> tag mapping, for inspecting a cache by hand.

use std::io::Write as _;

use anyhow::Context as _;
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
                let tag = encoding.encode(&key)?;
                if fallbacks {
                    writeln!(out, "{encoding}: {tag}")?;
                } else {
                    writeln!(out, "{tag}")?;
                }
            }
        }
        TagCommand::Decode { tag, encodings } => {
            let tag: Tag = tag.parse()?;
            let key = encodings.tag_encoding.decode(&tag).with_context(|| {
                format!("decoding with --tag-encoding {}", encodings.tag_encoding)
            })?;
            writeln!(out, "{key}")?;
        }
    }
    Ok(())
}
