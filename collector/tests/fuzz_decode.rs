//! Seeded fuzzing of what the collector does with an agent's bytes: decoding a `DeviationBatch`
//! and validating it. Mutations of valid batches (bit flips, truncations, huge length prefixes,
//! spliced and random bytes) must never panic, and every refusal must say why.
//!
//! Deterministic (a fixed seed, a small xorshift generator) so a failure reproduces; the case
//! number is in the panic message. `FUZZ_CASES` raises the count for a longer run.

mod common;

use collector::decode_error::describe;
use collector::ingest::validate;
use common::{batch, deviation};
use prost::Message as _;
use proto::v1::{
    Deviation, DeviationBatch, DeviationKind, FileAccess, NetworkDestination, Novelty, Severity,
    novelty::What,
};
use tonic::{Code, Status};

const SEED: u64 = 0x5eed_c011_ec70_2026;
const DEFAULT_CASES: usize = 50_000;

/// xorshift64*: enough to spread mutations; not for anything secret.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Valid batches of different shapes to start from.
fn seeds() -> Vec<Vec<u8>> {
    let d = |id: &str, what: What| Deviation {
        novelty: Some(Novelty { what: Some(what) }),
        signals: vec!["credential".to_owned()],
        ..deviation(
            id,
            1_700_000_000,
            "github:acme/app/ci/build",
            DeviationKind::NewFileAccess,
            Severity::High,
        )
    };
    vec![
        batch("agent-a", 1, Vec::new()).encode_to_vec(),
        batch(
            "agent-a",
            7,
            vec![
                d(
                    "f",
                    What::File(FileAccess {
                        path: "/home/u/.ssh/id_ed25519".to_owned(),
                        intent: "read".to_owned(),
                    }),
                ),
                d(
                    "n",
                    What::Destination(NetworkDestination {
                        address: "203.0.113.9".to_owned(),
                        port: 443,
                        protocol: "tcp".to_owned(),
                        dns_name: "evil.example".to_owned(),
                    }),
                ),
            ],
        )
        .encode_to_vec(),
    ]
}

/// A varint of `value`.
fn varint(mut value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes = seeds[rng.below(seeds.len())].clone();
    for _ in 0..=rng.below(3) {
        let at = rng.below(bytes.len() + 1);
        match rng.below(7) {
            // Flip one bit.
            0 if !bytes.is_empty() => {
                let i = rng.below(bytes.len());
                bytes[i] ^= 1 << rng.below(8);
            }
            // Truncate.
            1 => bytes.truncate(at),
            // A length-delimited field claiming far more bytes than follow.
            2 => {
                let mut field = vec![(rng.below(16) as u8) << 3 | 2];
                field.extend(varint(rng.next() >> rng.below(64)));
                bytes.splice(at..at, field);
            }
            // Overwrite a run with random bytes.
            3 => {
                for b in bytes.iter_mut().skip(at).take(1 + rng.below(16)) {
                    *b = rng.next() as u8;
                }
            }
            // Duplicate a slice of itself (repeated fields, nested garbage).
            4 if !bytes.is_empty() => {
                let from = rng.below(bytes.len());
                let to = from + rng.below(bytes.len() - from + 1);
                let copy = bytes[from..to].to_vec();
                bytes.splice(at..at, copy);
            }
            // Only random bytes.
            5 => bytes = (0..rng.below(256)).map(|_| rng.next() as u8).collect(),
            // A varint of ten 0xff bytes (overlong).
            _ => {
                bytes.splice(at..at, [0xff; 10]);
            }
        }
    }
    bytes
}

#[test]
fn decoding_and_validation_never_panic_and_always_explain() {
    let cases = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    let seeds = seeds();
    let mut rng = Rng(SEED);
    let (mut undecodable, mut invalid, mut accepted) = (0usize, 0usize, 0usize);
    for case in 0..cases {
        let bytes = mutate(&mut rng, &seeds);
        let outcome = std::panic::catch_unwind(|| match DeviationBatch::decode(&bytes[..]) {
            Err(e) => {
                // What the agent is told, as the server builds it from tonic's status.
                let status = describe(Status::internal(format!(
                    "failed to decode Protobuf message: {e}"
                )));
                assert_eq!(status.code(), Code::InvalidArgument);
                assert!(status.message().len() > 60, "{status:?}");
                Err(None)
            }
            Ok(batch) => match validate(&batch) {
                Err(status) => {
                    assert!(
                        matches!(
                            status.code(),
                            Code::InvalidArgument | Code::ResourceExhausted
                        ),
                        "{status:?}"
                    );
                    assert!(!status.message().is_empty());
                    Err(Some(status))
                }
                Ok(()) => Ok(batch),
            },
        });
        match outcome {
            Err(_) => panic!("case {case} (seed {SEED:#x}) panicked on {bytes:02x?}"),
            Ok(Err(None)) => undecodable += 1,
            Ok(Err(Some(_))) => invalid += 1,
            Ok(Ok(_)) => accepted += 1,
        }
    }
    eprintln!(
        "{cases} cases: {undecodable} undecodable, {invalid} decoded but invalid, {accepted} accepted"
    );
    // The mutations reach every outcome, so the test exercises each path it claims to.
    assert!(undecodable > cases / 10, "{undecodable}");
    assert!(invalid > 0, "{invalid}");
    assert!(accepted > 0, "{accepted}");
}
