//! The crash simulation's model: what the documented producer and stream rules decide,
//! folded from the batches that survived, independently of [`Tables`](super::super::tables::Tables).

use std::collections::HashMap;

use super::super::tables::{Admission, BatchIdentity, RECENT_BATCHES, Refusal, count_streams};
use super::MAX_PRODUCERS;
use super::MAX_STREAMS;

/// A decision, as the tables take it and as the model predicts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Decision {
    Store,
    Duplicate {
        first: u64,
        last: u64,
        version: Option<u64>,
    },
    Sequence {
        expected: u64,
    },
    Version {
        current: u64,
    },
    NotSingleStream,
    TooManyStreams,
    Overflow,
}

pub(super) fn decision_of(r: Result<Admission, Refusal>) -> Decision {
    match r {
        Ok(Admission::Store) => Decision::Store,
        Ok(Admission::Duplicate(b)) => Decision::Duplicate {
            first: b.first_seq,
            last: b.last_seq,
            version: b.stream_version,
        },
        Err(Refusal::Sequence { expected, .. }) => Decision::Sequence { expected },
        Err(Refusal::Version { current, .. }) => Decision::Version { current },
        Err(Refusal::NotSingleStream { .. }) => Decision::NotSingleStream,
        Err(Refusal::TooManyStreams { .. }) => Decision::TooManyStreams,
        Err(Refusal::Overflow { .. }) => Decision::Overflow,
    }
}

/// A batch staged (or whose staging failed part-way: a crash may keep it or not).
#[derive(Debug, Clone)]
pub(super) struct Sent {
    pub(super) first_seq: u64,
    pub(super) producer: Option<(String, u64)>,
    /// Each record's stream ("" for none).
    pub(super) streams: Vec<String>,
}

impl Sent {
    pub(super) fn end(&self) -> u64 {
        self.first_seq + self.streams.len() as u64
    }
}

/// One stored batch of a producer, as the model remembers it.
#[derive(Debug, Clone, Copy)]
pub(super) struct ModelBatch {
    pub(super) pseq: u64,
    pub(super) records: u64,
    pub(super) first: u64,
    pub(super) last: u64,
    pub(super) version: Option<u64>,
}

#[derive(Debug, Default)]
pub(super) struct ModelProducer {
    /// Batches since the producer was (last) first seen, oldest first.
    pub(super) batches: Vec<ModelBatch>,
    pub(super) last_use: u64,
}

/// The state the documented rules give for a sequence of stored batches.
#[derive(Debug, Default)]
pub(super) struct Model {
    /// stream → (version, sequence of its newest record)
    pub(super) streams: HashMap<String, (u64, u64)>,
    pub(super) producers: HashMap<String, ModelProducer>,
    pub(super) uses: u64,
}

impl Model {
    pub(super) fn fold<'a>(batches: impl IntoIterator<Item = &'a Sent>) -> Model {
        let mut m = Model::default();
        for b in batches {
            m.apply(b);
        }
        m
    }

    pub(super) fn apply(&mut self, b: &Sent) {
        for (i, s) in b.streams.iter().enumerate() {
            if !s.is_empty() {
                let e = self.streams.entry(s.clone()).or_default();
                e.0 += 1;
                e.1 = b.first_seq + i as u64;
            }
        }
        let single = single_named(&b.streams);
        let version = single.map(|s| self.streams[s].0);
        if let Some((id, pseq)) = &b.producer {
            self.uses += 1;
            if !self.producers.contains_key(id) && self.producers.len() >= MAX_PRODUCERS {
                let lru = self
                    .producers
                    .iter()
                    .min_by_key(|(_, p)| p.last_use)
                    .map(|(k, _)| k.clone());
                if let Some(k) = lru {
                    self.producers.remove(&k);
                }
            }
            let p = self.producers.entry(id.clone()).or_default();
            p.last_use = self.uses;
            p.batches.push(ModelBatch {
                pseq: *pseq,
                records: b.streams.len() as u64,
                first: b.first_seq,
                last: b.end() - 1,
                version,
            });
        }
    }

    pub(super) fn next_of(&self, id: &str) -> Option<u64> {
        let b = self.producers.get(id)?.batches.last()?;
        Some(b.pseq.saturating_add(b.records))
    }

    pub(super) fn decide(
        &self,
        producer: Option<(&str, u64)>,
        streams: &[String],
        expected: Option<u64>,
    ) -> Decision {
        let records = streams.len() as u64;
        let single = single_named(streams);
        if expected.is_some() && single.is_none() {
            return Decision::NotSingleStream;
        }
        if let Some((id, pseq)) = producer {
            if pseq.checked_add(records).is_none() {
                return Decision::Overflow;
            }
            if let Some(next) = self.next_of(id)
                && pseq != next
            {
                let batches = &self.producers[id].batches;
                let recent = &batches[batches.len().saturating_sub(RECENT_BATCHES)..];
                return match recent
                    .iter()
                    .find(|b| b.pseq == pseq && b.records == records)
                {
                    Some(b) => Decision::Duplicate {
                        first: b.first,
                        last: b.last,
                        version: b.version,
                    },
                    None => Decision::Sequence { expected: next },
                };
            }
        }
        if let (Some(expected), Some(stream)) = (expected, single) {
            let current = self.streams.get(stream).map_or(0, |s| s.0);
            if current != expected {
                return Decision::Version { current };
            }
        }
        let mut new: Vec<&String> = streams
            .iter()
            .filter(|s| !s.is_empty() && !self.streams.contains_key(*s))
            .collect();
        new.sort();
        new.dedup();
        if !new.is_empty() && self.streams.len() + new.len() > MAX_STREAMS {
            return Decision::TooManyStreams;
        }
        Decision::Store
    }
}

/// The one named stream every record is on, if there is one.
pub(super) fn single_named(streams: &[String]) -> Option<&str> {
    let first = streams.first()?;
    (!first.is_empty() && streams.iter().all(|s| s == first)).then_some(first.as_str())
}

pub(super) fn identity(
    producer: Option<(&str, u64)>,
    streams: &[String],
    expected: Option<u64>,
) -> BatchIdentity {
    BatchIdentity {
        producer: producer.map(|(id, n)| (id.to_owned(), n)),
        records: streams.len() as u64,
        streams: count_streams(streams.iter().map(String::as_str)),
        expected_stream_version: expected,
    }
}
