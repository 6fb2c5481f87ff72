//! Property tests of the dedupe and version rules ([`super::tables`]) against a model
//! written from issue 14's wording, and of the state's recovery: tables rebuilt from a
//! checkpoint taken anywhere plus the batches after it equal the live ones.

use std::collections::HashMap;

use proptest::prelude::*;

use super::codec::{decode_tables, encode_tables};
use super::tables::{
    Admission, BatchIdentity, RECENT_BATCHES, Refusal, StreamCount, Tables, count_streams,
};

/// A stored batch in the model: (producer_sequence, records, first, last, version).
type ModelBatch = (u64, u64, u64, u64, Option<u64>);
/// A duplicate's answer: (first, last, version).
type Original = (u64, u64, Option<u64>);

/// The rules, kept as plainly as possible: every stored batch of every producer,
/// versions as sums, recency as a list.
#[derive(Default)]
struct Model {
    /// Stored batches per producer.
    batches: HashMap<String, Vec<ModelBatch>>,
    /// Producer ids, least recently stored first.
    recency: Vec<String>,
    versions: HashMap<String, u64>,
    next_seq: u64,
}

impl Model {
    fn decide(
        &self,
        b: &BatchIdentity,
        max_producers: usize,
        max_streams: usize,
    ) -> Result<Option<Original>, &'static str> {
        let _ = max_producers;
        // expected_stream_version needs every record on one named stream.
        let single = match b.streams.as_slice() {
            [one] if one.records == b.records => Some(one.stream.as_str()),
            _ => None,
        };
        if b.expected_stream_version.is_some() && single.is_none() {
            return Err("single");
        }
        if let Some((id, pseq)) = &b.producer
            && let Some(stored) = self.batches.get(id)
            && let Some(&(lp, lr, ..)) = stored.last()
        {
            let next = lp + lr;
            if *pseq != next {
                let recent = &stored[stored.len().saturating_sub(RECENT_BATCHES)..];
                return match recent.iter().find(|r| r.0 == *pseq && r.1 == b.records) {
                    Some(&(_, _, f, l, v)) => Ok(Some((f, l, v))),
                    None => Err("sequence"),
                };
            }
        }
        if let (Some(expected), Some(stream)) = (b.expected_stream_version, single)
            && self.versions.get(stream).copied().unwrap_or(0) != expected
        {
            return Err("version");
        }
        let new = b
            .streams
            .iter()
            .filter(|c| !self.versions.contains_key(&c.stream))
            .count();
        if new > 0 && self.versions.len() + new > max_streams {
            return Err("streams");
        }
        Ok(None)
    }

    fn store(&mut self, b: &BatchIdentity, max_producers: usize) -> (u64, u64, Option<u64>) {
        let first = self.next_seq;
        let last = first + b.records - 1;
        self.next_seq = last + 1;
        for c in &b.streams {
            *self.versions.entry(c.stream.clone()).or_default() += c.records;
        }
        let version = match b.streams.as_slice() {
            [c] if c.records == b.records => Some(self.versions[&c.stream]),
            _ => None,
        };
        if let Some((id, pseq)) = &b.producer {
            self.recency.retain(|r| r != id);
            if !self.batches.contains_key(id) && self.batches.len() >= max_producers {
                let oldest = self.recency.remove(0);
                self.batches.remove(&oldest);
            }
            self.recency.push(id.clone());
            self.batches
                .entry(id.clone())
                .or_default()
                .push((*pseq, b.records, first, last, version));
        }
        (first, last, version)
    }
}

fn code(r: &Refusal) -> &'static str {
    match r {
        Refusal::Sequence { .. } => "sequence",
        Refusal::Version { .. } => "version",
        Refusal::NotSingleStream { .. } => "single",
        Refusal::TooManyStreams { .. } => "streams",
        Refusal::Overflow { .. } => "overflow",
    }
}

/// A batch: producer index (3 = none), how to pick its number, its streams (one letter
/// per record, '-' for none), whether to expect a version and how far off.
type Op = (u8, u8, u64, String, Option<i8>);

fn op() -> impl Strategy<Value = Op> {
    (
        0u8..4,
        0u8..4,
        0u64..50,
        "[ab-]{1,4}",
        prop::option::of(-1i8..2),
    )
}

fn identity(op: &Op, model: &Model, rng_pick: usize) -> BatchIdentity {
    let (p, how, n, streams, expect) = op;
    let names: Vec<&str> = streams
        .chars()
        .map(|c| match c {
            'a' => "a",
            'b' => "b",
            _ => "",
        })
        .collect();
    let records = names.len() as u64;
    let producer = (*p < 3).then(|| {
        let id = format!("p{p}");
        let stored = model.batches.get(&id);
        let next = stored
            .and_then(|s| s.last())
            .map_or(1, |&(lp, lr, ..)| lp + lr);
        let pseq = match how {
            0 | 1 => next,
            // A retry of an earlier batch (maybe beyond the remembered ones).
            2 => stored
                .filter(|s| !s.is_empty())
                .map_or(next, |s| s[rng_pick % s.len()].0),
            _ => *n,
        };
        (id, pseq)
    });
    let streams = count_streams(names.iter().copied());
    let expected_stream_version = expect.map(|off| {
        let s = streams
            .first()
            .map_or("", |c: &StreamCount| c.stream.as_str());
        model
            .versions
            .get(s)
            .copied()
            .unwrap_or(0)
            .saturating_add_signed(i64::from(off))
    });
    BatchIdentity {
        producer,
        records,
        streams,
        expected_stream_version,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Every decision (store, duplicate with the original sequences and version, or the
    /// refusal's kind) is the model's; recovery from a checkpoint taken after any batch
    /// plus the stored batches after it rebuilds the same tables.
    #[test]
    fn decisions_follow_the_rules_and_recovery_rebuilds_the_tables(
        ops in prop::collection::vec((op(), any::<usize>()), 1..80),
        max_producers in 1usize..4,
        max_streams in 1usize..3,
        checkpoint_at in any::<prop::sample::Index>(),
    ) {
        let mut tables = Tables::new(max_producers, max_streams);
        let mut model = Model { next_seq: 1, ..Model::default() };
        let mut stored: Vec<(BatchIdentity, u64, u64)> = Vec::new();
        let at = checkpoint_at.index(ops.len());
        let mut checkpoint = None;
        for (i, (op, pick)) in ops.iter().enumerate() {
            if i == at {
                checkpoint = Some((encode_tables(&tables), stored.len()));
            }
            let b = identity(op, &model, *pick);
            let want = model.decide(&b, max_producers, max_streams);
            match (tables.admit(&b), want) {
                (Ok(Admission::Store), Ok(None)) => {
                    let (first, last, version) = model.store(&b, max_producers);
                    prop_assert_eq!(tables.apply(&b, first, last), version);
                    stored.push((b, first, last));
                }
                (Ok(Admission::Duplicate(d)), Ok(Some((f, l, v)))) => {
                    prop_assert_eq!((d.first_seq, d.last_seq, d.stream_version), (f, l, v));
                }
                (Err(r), Err(kind)) => prop_assert_eq!(code(&r), kind, "{}", r),
                (got, want) => prop_assert!(false, "batch {:?}: got {:?}, the rules say {:?}", b, got, want),
            }
        }
        for (s, v) in &model.versions {
            prop_assert_eq!(tables.streams[s].version, *v);
        }
        prop_assert_eq!(tables.producers.len(), model.batches.len());
        let (data, from) = checkpoint.unwrap_or_else(|| (encode_tables(&tables), stored.len()));
        let mut rebuilt = decode_tables(&data, max_producers, max_streams, 1).unwrap();
        for (b, first, last) in &stored[from..] {
            rebuilt.apply(b, *first, *last);
        }
        prop_assert_eq!(encode_tables(&rebuilt).len(), encode_tables(&tables).len());
        prop_assert_eq!(rebuilt.streams, tables.streams.clone());
        prop_assert_eq!(rebuilt.producers, tables.producers.clone());
        prop_assert_eq!(rebuilt.backlog, tables.backlog.clone());
    }

    /// Of any number of batches expecting the same version of one stream, exactly one is
    /// stored; the others are told the current version.
    #[test]
    fn one_winner_per_expected_version(contenders in 2usize..10, stream in "[a-z]{1,8}", before in 0u64..5) {
        let mut tables = Tables::new(10, 10);
        let one = |expected| BatchIdentity {
            producer: None,
            records: 1,
            streams: count_streams([stream.as_str()]),
            expected_stream_version: expected,
        };
        for i in 0..before {
            tables.apply(&one(None), i + 1, i + 1);
        }
        let mut winners = 0;
        for i in 0..contenders {
            match tables.admit(&one(Some(before))) {
                Ok(Admission::Store) => {
                    winners += 1;
                    let seq = before + 1 + i as u64;
                    prop_assert_eq!(tables.apply(&one(Some(before)), seq, seq), Some(before + 1));
                }
                Err(Refusal::Version { current, expected, .. }) => {
                    prop_assert_eq!((current, expected), (before + 1, before));
                }
                other => prop_assert!(false, "{:?}", other),
            }
        }
        prop_assert_eq!(winners, 1);
    }
}
