//! Any key: each encoding either refuses it or gives a valid tag that decodes back to it.
//! Any tag: decoding answers Ok or Err, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oranc_core::{Tag, TagEncoding};

fuzz_target!(|text: &str| {
    for encoding in [TagEncoding::Custom, TagEncoding::Base32Dnssec] {
        if let Ok(tag) = encoding.encode(text) {
            let reparsed: Tag = tag.as_str().parse().expect("an encoded tag is a valid tag");
            assert_eq!(encoding.decode(&reparsed).expect("decodes"), text);
        }
        if let Ok(tag) = text.parse::<Tag>() {
            let _ = encoding.decode(&tag);
        }
    }
});
