//! The reply splitter's invariants over generated replies (proptest): it returns; every chunk
//! fits the limit in UTF-16 units; every chunk's fences are balanced; the chunks, without the
//! fence lines the splitter added, give back the text. The same generator runs 1,000,000 times
//! in `benches/chunking.rs`.

use crate::support;

use actors::discord::chunking::{split_message, verify, MIN_LIMIT};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(600))]

    #[test]
    fn every_reply_splits_within_the_limit_with_balanced_fences(
        text in support::replies::reply(),
        limit in support::replies::limit(),
    ) {
        prop_assert_eq!(verify(&text, limit), Ok(()));
        for m in split_message(&text, limit) {
            prop_assert!(m.encode_utf16().count() <= limit.max(MIN_LIMIT));
            prop_assert!(!m.trim().is_empty());
        }
    }
}
