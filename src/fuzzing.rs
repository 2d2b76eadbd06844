//! Property-based fuzzing on stable Rust: every decoder that reads bytes
//! from outside — peer frames and messages, client contexts, stored
//! objects, plan files, cluster files, HTTP keys and queries — is fed
//! arbitrary and mutated inputs and must answer with an error, never a
//! panic. This module is the harness; each target lives beside the decoder
//! it feeds (tests named `fuzz_…`), so the harness depends on nothing.
//!
//! Each target runs `FUZZ_CASES` inputs (2,000 in the ordinary test run;
//! `scripts/fuzz` runs them by the hundred thousand in release mode) and
//! prints how many it ran.

use std::time::Instant;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// Inputs per target.
pub fn cases() -> u32 {
    std::env::var("FUZZ_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(2_000)
}

/// Runs `check` on `cases()` inputs drawn from `strategy`; a panic in
/// `check` fails the test with the input that caused it (shrunk).
pub fn run<S: Strategy>(target: &str, strategy: S, check: impl Fn(S::Value)) {
    let cases = cases();
    let config = Config { cases, failure_persistence: None, ..Config::default() };
    let started = Instant::now();
    TestRunner::new(config)
        .run(&strategy, |input| {
            check(input);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("fuzz target {target}: {e}"));
    eprintln!("fuzz {target}: {cases} inputs in {:.1} s, none panicked", started.elapsed().as_secs_f64());
}

/// Arbitrary bytes, and mutations of `valid` (bytes flipped, cut short,
/// extended), which reach far deeper into a decoder than noise does.
pub fn bytes_near(valid: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let noise = proptest::collection::vec(any::<u8>(), 0..256);
    let mutated = (
        proptest::sample::select(valid),
        proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        any::<usize>(),
    )
        .prop_map(|(mut bytes, flips, cut)| {
            for (at, byte) in flips {
                if !bytes.is_empty() {
                    let at = at % bytes.len();
                    bytes[at] = byte;
                }
            }
            let keep = cut % (bytes.len() + 2);
            bytes.truncate(keep.max(bytes.len().saturating_sub(1)));
            if cut % 7 == 0 {
                bytes.extend_from_slice(&cut.to_le_bytes());
            }
            bytes
        });
    prop_oneof![1 => noise, 3 => mutated]
}

/// Text near valid JSON documents: arbitrary strings, and the documents
/// with characters replaced, numbers made huge or negative, and cut short.
pub fn json_near(valid: &[&str]) -> impl Strategy<Value = String> {
    let docs: Vec<String> = valid.iter().map(|s| s.to_string()).collect();
    let noise = "\\PC{0,200}";
    let weird_numbers = ["1e308", "-1", "1e400", "18446744073709551616", "NaN", "0", "-0.0", "4294967296", "\"\""];
    let mutated =
        (proptest::sample::select(docs), any::<usize>(), proptest::sample::select(weird_numbers.to_vec()), any::<u8>())
            .prop_map(|(doc, at, number, mode)| {
                let mut chars: Vec<char> = doc.chars().collect();
                let at = at % (chars.len() + 1);
                match mode % 3 {
                    // Replace the number (or token) starting near `at`.
                    0 => {
                        let end = chars[at..].iter().position(|c| ",}]".contains(*c)).map_or(chars.len(), |p| at + p);
                        let start = chars[..at].iter().rposition(|c| ":[,".contains(*c)).map_or(0, |p| p + 1);
                        chars.splice(start..end, number.chars());
                    }
                    1 => chars.truncate(at),
                    _ => chars.insert(at, ['"', '{', '[', ':', ',', '\\', '\u{0}'][at % 7]),
                }
                chars.into_iter().collect()
            });
    prop_oneof![1 => noise, 4 => mutated]
}
