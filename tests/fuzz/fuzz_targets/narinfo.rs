//! Any text: the narinfo parser answers Ok or Err, never panics, and what it accepts renders
//! back to text that parses to the same narinfo.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oranc_core::NarInfo;

fuzz_target!(|text: &str| {
    if let Ok(narinfo) = NarInfo::parse(text) {
        let rendered = narinfo.to_string();
        let again = NarInfo::parse(&rendered).expect("a rendered narinfo parses");
        assert_eq!(again, narinfo);
        assert_eq!(again.to_string(), rendered);
    }
});
