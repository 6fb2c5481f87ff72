//! The oracle: what the main server received and what every producer was told, held
//! against each other after the fact.
//!
//! # What is checked
//! Every `Deliver` the main server accepts is logged with the daemon *life* that sent it
//! (each life is started with `--upstream-header "x-torture-life: N"`, so the tag comes
//! from the daemon itself, not from the test's guess about timing), the acknowledgement
//! cursor is read from `DIR/cursor` before each life starts and after each kill, and:
//!
//! 1. every acknowledged record reached the main server at least once, under the sequence
//!    its append was acknowledged with, byte for byte, with `source` equal to
//!    `DIR/source-id`;
//! 2. first deliveries come in sequence order and cover `1..=max` with no gap (records that
//!    were in flight at a kill may or may not be stored, both are fine, but whatever was
//!    stored is delivered and nothing is skipped); the final cursor is `max`;
//! 3. re-deliveries are only of records not yet acknowledged: within one life deliveries
//!    are `cursor+1, cursor+2, ...` exactly (strictly increasing, contiguous, nothing sent
//!    twice), where `cursor` is what the previous life persisted; the cursor never moves
//!    back and never covers a record that was not delivered; and a record delivered but
//!    not covered by the cursor at a kill was delivered at most [`ACK_LAG_LIMIT`] before the
//!    kill. That last bound is what the replayer's ack cadence allows: it acknowledges
//!    every `ACK_INTERVAL` (50 ms) in the background (one cursor write: two fsyncs) and
//!    flushes before idling or backing off, so only records delivered during the last
//!    interval plus one ack's duration can be re-delivered. A count bound (N batches)
//!    would not be sound: the cadence is time-based, and a fast replay delivers many
//!    batches per interval. The largest re-delivery after one restart is reported;
//! 4. one append is one storage: a record id never appears under two sequences, a
//!    sequence always carries the same bytes, a batch is stored whole or not at all, and
//!    the batches of one producer (a sequence of unary calls, or one pipelined
//!    `AppendStream`) are stored as a prefix of what it sent, in order;
//! 5. no segment holding an unacknowledged record is ever deleted (after every kill the
//!    oldest segment file starts at or before `cursor+1`). Bulk producers (records of 64
//!    to 512 KiB) push the log through several 64 MiB segments, so rolls and deletions
//!    after acknowledgement happen under the kills too.
//!
//! Each kill is classified after the fact (the ids say in which cycle a record was
//! appended, the life tags who delivered what): during startup (before the socket
//! answered), ingest only (nothing delivered in that life), replay only or replay +
//! ingest (deliveries in that life and a backlog left at the kill), caught up, idle.
//! The test asserts that at least a tenth of the kills landed in the middle of a replay.
//!
//! [`verify`] runs all of these on the final state of the many-cycles test;
//! [`check_producers`] (checks 1 and 4 against what each producer was told) is shared with
//! the pipelined-streams test, which reads the stored records back over the socket instead.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::time::{Duration, Instant};

use super::LIFE_HEADER;
use super::producers::ProducerLog;
use super::records::cycle_of;
use super::sink::Arrival;

/// A record delivered but not acknowledged when its daemon was killed must have been
/// delivered at most this long before the kill (see the module documentation, check 3).
/// The replayer's cadence gives 50 ms plus one cursor write; the rest is slack for a
/// loaded machine.
pub const ACK_LAG_LIMIT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------
// Checks shared by both tests: what the producers were told against what was stored
// ---------------------------------------------------------------------------------------

#[derive(Debug, Default)]
pub struct RequestStats {
    pub requests: u64,
    pub acked_requests: u64,
    pub acked_records: u64,
    pub stored_unacked_records: u64,
    pub lost_unacked_records: u64,
}

/// `stored`: the id of every stored record by sequence, each already checked to hold
/// exactly the bytes appended under that id, and to be unique (`id_to_seq` is the
/// reverse map). Checks 1 and 4 of the module documentation for every producer.
pub fn check_producers(
    logs: &[ProducerLog],
    stored: &BTreeMap<u64, &str>,
    id_to_seq: &HashMap<String, u64>,
) -> RequestStats {
    let mut st = RequestStats::default();
    let mut known: HashSet<&str> = HashSet::new();
    for log in logs {
        let name = log.name();
        if let Some(e) = &log.protocol_error {
            panic!("{name}: {e}");
        }
        let mut prev_last = 0u64;
        let mut unstored_at: Option<usize> = None;
        let mut unacked_at: Option<usize> = None;
        for (i, req) in log.requests.iter().enumerate() {
            st.requests += 1;
            for id in &req.ids {
                assert!(known.insert(id), "{name}: id {id} sent twice by the test");
            }
            let seqs: Vec<Option<u64>> = req
                .ids
                .iter()
                .map(|id| id_to_seq.get(id).copied())
                .collect();
            let n_stored = seqs.iter().filter(|s| s.is_some()).count();
            assert!(
                n_stored == 0 || n_stored == seqs.len(),
                "{name}: request {i} ({} records, ids {}..) was stored in part: {seqs:?} (a batch must be all or nothing)",
                seqs.len(),
                req.ids[0]
            );
            match req.ack {
                Some(_) => assert!(
                    unacked_at.is_none(),
                    "{name}: request {i} acknowledged after request {} was not",
                    unacked_at.unwrap_or_default()
                ),
                None => {
                    unacked_at.get_or_insert(i);
                }
            }
            if n_stored == 0 {
                assert!(
                    req.ack.is_none(),
                    "{name}: request {i} was acknowledged as {:?} but its records {:?}.. were never stored/delivered",
                    req.ack,
                    req.ids.first()
                );
                unstored_at.get_or_insert(i);
                st.lost_unacked_records += req.ids.len() as u64;
                continue;
            }
            assert!(
                unstored_at.is_none(),
                "{name}: request {i} was stored but the earlier request {} was not: the order of a producer's requests did not survive",
                unstored_at.unwrap_or_default()
            );
            let first = seqs[0].unwrap_or_default();
            for (k, s) in seqs.iter().enumerate() {
                let s = s.unwrap_or_default();
                assert_eq!(
                    s,
                    first + k as u64,
                    "{name}: request {i}: record {k} ({}) stored as {s}, not contiguous with the batch starting at {first}",
                    req.ids[k]
                );
                assert_eq!(
                    stored.get(&s).copied(),
                    Some(req.ids[k].as_str()),
                    "{name}: sequence {s} does not hold the record that was appended"
                );
            }
            let last = first + seqs.len() as u64 - 1;
            assert!(
                first > prev_last,
                "{name}: request {i} stored at {first}..={last}, not after the previous request (..={prev_last})"
            );
            prev_last = last;
            match req.ack {
                Some((f, l)) => {
                    assert_eq!(
                        (f, l),
                        (first, last),
                        "{name}: request {i} was acknowledged as {f}..={l} but stored as {first}..={last}"
                    );
                    st.acked_requests += 1;
                    st.acked_records += req.ids.len() as u64;
                }
                None => st.stored_unacked_records += req.ids.len() as u64,
            }
        }
    }
    for (seq, id) in stored {
        assert!(
            known.contains(id),
            "sequence {seq} holds record {id:?}, which no producer sent"
        );
    }
    st
}

// ---------------------------------------------------------------------------------------
// The many-cycles test: daemon lives, kill classification, summary
// ---------------------------------------------------------------------------------------

/// How a daemon life ended, when it was killed (the final, draining life is not).
#[derive(Debug, Clone)]
pub struct Kill {
    pub at: Instant,
    /// Killed before it answered (during recovery or startup).
    pub during_startup: bool,
    /// Producers appended during this life.
    pub with_producers: bool,
}

/// One daemon life.
#[derive(Debug, Clone)]
pub struct Life {
    pub cursor_before: u64,
    /// After the kill (or the final exit).
    pub cursor_after: u64,
    /// `None` for the final, draining life.
    pub kill: Option<Kill>,
    /// First sequences of the segment files left after the kill (or the final exit).
    pub segments: Vec<u64>,
}
#[derive(Debug, Default)]
pub struct Kills {
    pub startup: u64,
    pub ingest_only: u64,
    pub replay_only: u64,
    pub replay_and_ingest: u64,
    pub caught_up: u64,
    pub idle: u64,
}

impl Kills {
    pub fn mid_replay(&self) -> u64 {
        self.replay_only + self.replay_and_ingest
    }
}

pub struct Summary {
    pub seed: u64,
    pub cycles: u64,
    pub kills: Kills,
    pub req: RequestStats,
    pub stored: u64,
    pub stored_bytes: u64,
    pub deliveries: u64,
    pub redeliveries: u64,
    pub max_redelivered_after_restart: u64,
    pub max_unacked_window: u64,
    pub max_ack_lag: Duration,
    pub segments_seen: u64,
    pub segments_deleted: u64,
    pub max_segments_on_disk: u64,
    pub deliver_calls: u64,
    pub refused_calls: u64,
    pub wall: Duration,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = &self.kills;
        write!(
            f,
            "torture seed={} cycles={}: kills during startup {}, ingest only (upstream down or not yet healthy) {}, \
             replay only {}, replay + ingest {}, caught up {}, idle {} (mid-replay total {}); \
             requests {} (acknowledged {}), records acknowledged {}, stored but unacknowledged {}, \
             unacknowledged and not stored {}, records stored {} ({:.1} MiB of payload); deliveries {}, re-deliveries {}, \
             max re-deliveries after one restart {}, max unacked window at a kill {}, max ack lag at a kill {:?}; \
             segment files seen after kills {} ({} deleted after acknowledgement, at most {} on disk); \
             Deliver calls {} (scripted UNAVAILABLE {}); wall time {:.1?}",
            self.seed,
            self.cycles,
            k.startup,
            k.ingest_only,
            k.replay_only,
            k.replay_and_ingest,
            k.caught_up,
            k.idle,
            k.mid_replay(),
            self.req.requests,
            self.req.acked_requests,
            self.req.acked_records,
            self.req.stored_unacked_records,
            self.req.lost_unacked_records,
            self.stored,
            self.stored_bytes as f64 / f64::from(1 << 20),
            self.deliveries,
            self.redeliveries,
            self.max_redelivered_after_restart,
            self.max_unacked_window,
            self.max_ack_lag,
            self.segments_seen,
            self.segments_deleted,
            self.max_segments_on_disk,
            self.deliver_calls,
            self.refused_calls,
            self.wall,
        )
    }
}

/// All the checks of the module documentation, on the final state.
pub fn verify(
    arrivals: &[Arrival],
    lives: &[Life],
    producers: &[ProducerLog],
    source_id: &str,
    next_seq: u64,
    final_cursor: u64,
) -> Summary {
    let n_lives = lives.len() as u64;

    // Check 4 (part) and 1 (source): one sequence, one content; one id, one sequence.
    let mut stored: BTreeMap<u64, &str> = BTreeMap::new();
    let mut stored_bytes = 0u64;
    let mut id_to_seq: HashMap<String, u64> = HashMap::new();
    let mut first_life: HashMap<u64, u64> = HashMap::new();
    let mut expected_first = 1u64;
    let mut redeliveries = 0u64;
    let mut redelivered_in_life: Vec<u64> = vec![0; lives.len()];
    for (i, a) in arrivals.iter().enumerate() {
        assert_eq!(
            &*a.source, source_id,
            "arrival {i} (sequence {}) has source {:?}, not DIR/source-id {source_id:?}",
            a.seq, a.source
        );
        assert!(
            a.life < n_lives,
            "arrival {i} (sequence {}) has no valid {LIFE_HEADER} tag: the daemon dropped --upstream-header",
            a.seq
        );
        let Some(id) = a.id.as_deref() else {
            panic!("arrival {i}: sequence {} came without its record", a.seq);
        };
        assert!(
            a.exact,
            "arrival {i}: sequence {} (record {id}, life {}) does not hold the bytes that were appended as {id}",
            a.seq, a.life
        );
        match stored.get(&a.seq) {
            Some(prev) => {
                assert_eq!(
                    *prev, id,
                    "sequence {} was delivered again as a different record (life {})",
                    a.seq, a.life
                );
                let fl = first_life[&a.seq];
                assert!(
                    fl != a.life,
                    "sequence {} delivered twice within life {} (first in life {fl})",
                    a.seq,
                    a.life
                );
                redeliveries += 1;
                redelivered_in_life[a.life as usize] += 1;
            }
            None => {
                // Check 2: first deliveries are exactly 1, 2, 3, ... in arrival order.
                assert_eq!(
                    a.seq, expected_first,
                    "arrival {i}: sequence {} delivered for the first time while {expected_first} never was (skipped or out of order)",
                    a.seq
                );
                expected_first += 1;
                stored.insert(a.seq, id);
                stored_bytes += a.payload_len;
                first_life.insert(a.seq, a.life);
                if let Some(other) = id_to_seq.insert(id.to_owned(), a.seq) {
                    panic!(
                        "record {id} was stored twice, as sequences {other} and {}",
                        a.seq
                    );
                }
            }
        }
    }
    let max_seq = expected_first - 1;
    assert_eq!(
        next_seq,
        max_seq + 1,
        "the log holds sequences up to {} but only 1..={max_seq} were delivered",
        next_seq - 1
    );
    assert_eq!(
        final_cursor, max_seq,
        "after the final run the cursor is {final_cursor}, not the last sequence {max_seq}"
    );

    // Check 3: per life, deliveries are exactly cursor+1, cursor+2, ...; the cursor moves
    // forward only over delivered records; unacked deliveries at a kill are recent.
    let mut per_life: Vec<Vec<&Arrival>> = vec![Vec::new(); lives.len()];
    for a in arrivals {
        per_life[a.life as usize].push(a);
    }
    let mut max_delivered_before = 0u64;
    let mut max_unacked_window = 0u64;
    let mut max_ack_lag = Duration::ZERO;
    let mut max_delivered_by: Vec<u64> = Vec::new();
    for (l, life) in lives.iter().enumerate() {
        let got = &per_life[l];
        if l > 0 {
            assert_eq!(
                life.cursor_before,
                lives[l - 1].cursor_after,
                "life {l}: the cursor changed between two lives"
            );
        }
        assert!(
            life.cursor_after >= life.cursor_before,
            "life {l}: the cursor went back from {} to {}",
            life.cursor_before,
            life.cursor_after
        );
        max_unacked_window =
            max_unacked_window.max(max_delivered_before.saturating_sub(life.cursor_before));
        for (k, a) in got.iter().enumerate() {
            let want = life.cursor_before + 1 + k as u64;
            assert_eq!(
                a.seq, want,
                "life {l}: delivery {k} was sequence {}, expected {want} (the persisted cursor was {}; deliveries within one life must resume right after it and be contiguous)",
                a.seq, life.cursor_before
            );
        }
        let last = got.last().map_or(life.cursor_before, |a| a.seq);
        assert!(
            life.cursor_after <= last,
            "life {l}: the cursor ({}) covers records this life never delivered (last delivered {last})",
            life.cursor_after
        );
        if let Some(kill) = &life.kill {
            for a in got.iter().filter(|a| a.seq > life.cursor_after) {
                let lag = kill.at.saturating_duration_since(a.at);
                max_ack_lag = max_ack_lag.max(lag);
                assert!(
                    lag <= ACK_LAG_LIMIT,
                    "life {l}: sequence {} was delivered {lag:?} before the kill and still not acknowledged (cursor {}): acks lag far behind delivery",
                    a.seq,
                    life.cursor_after
                );
            }
        }
        max_delivered_before = max_delivered_before.max(last);
        max_delivered_by.push(max_delivered_before);
    }
    let max_redelivered_after_restart = redelivered_in_life.iter().copied().max().unwrap_or(0);

    // Segments: nothing unacknowledged was ever deleted (the oldest segment left after a
    // kill starts at or before the first unacknowledged record), and segments did roll
    // and get deleted (reported).
    let mut seen: HashSet<u64> = HashSet::new();
    let mut max_segments_on_disk = 0u64;
    for (l, life) in lives.iter().enumerate() {
        if let Some(&oldest) = life.segments.first() {
            assert!(
                oldest <= life.cursor_after + 1,
                "life {l}: the oldest segment left starts at {oldest}, after the first unacknowledged record {} (segments {:?})",
                life.cursor_after + 1,
                life.segments
            );
        }
        seen.extend(life.segments.iter().copied());
        max_segments_on_disk = max_segments_on_disk.max(life.segments.len() as u64);
    }
    let remaining = lives.last().map_or(0, |l| l.segments.len() as u64);
    let segments_seen = seen.len() as u64;
    let segments_deleted = segments_seen - remaining;

    // Where each kill landed: backlog at the kill = stored by then - delivered by then.
    let mut max_stored_by = vec![0u64; lives.len()];
    for (seq, id) in &stored {
        let c = cycle_of(id) as usize;
        max_stored_by[c] = max_stored_by[c].max(*seq);
    }
    let mut running = 0;
    for m in &mut max_stored_by {
        running = running.max(*m);
        *m = running;
    }
    let mut kills = Kills::default();
    for (l, life) in lives.iter().enumerate() {
        let Some(kill) = &life.kill else { continue };
        let delivered = !per_life[l].is_empty();
        let backlog = max_stored_by[l] > max_delivered_by[l];
        let ingest = kill.with_producers;
        let k = if kill.during_startup {
            &mut kills.startup
        } else if !delivered {
            if ingest {
                &mut kills.ingest_only
            } else {
                &mut kills.idle
            }
        } else if !backlog {
            &mut kills.caught_up
        } else if ingest {
            &mut kills.replay_and_ingest
        } else {
            &mut kills.replay_only
        };
        *k += 1;
    }

    // Checks 1 and 4 against what every producer was told.
    let req = check_producers(producers, &stored, &id_to_seq);

    Summary {
        seed: 0,
        cycles: 0,
        kills,
        req,
        stored: max_seq,
        stored_bytes,
        deliveries: arrivals.len() as u64,
        redeliveries,
        max_redelivered_after_restart,
        max_unacked_window,
        max_ack_lag,
        segments_seen,
        segments_deleted,
        max_segments_on_disk,
        deliver_calls: 0,
        refused_calls: 0,
        wall: Duration::ZERO,
    }
}
