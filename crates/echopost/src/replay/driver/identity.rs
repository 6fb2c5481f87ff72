//! The dedupe identity that travels with verbatim replays (issue: "dedupe identity
//! travels with verbatim replays"): `Sink/Deliver` carries `(source, sequence)` in its
//! message; a forwarded request carries it in a header or metadata.

use echopost_proto::v1::Record;

use crate::replay::dead_letters::original_sequence;

/// The `Idempotency-Key` header (IETF httpapi draft "The Idempotency-Key HTTP Header
/// Field") of a verbatim HTTP replay, unless the record carries one: the record's `id` when
/// set, else `SOURCE:SEQUENCE`, which stays the same however often the record is replayed
/// (for a requeued record, the sequence it was first stored under).
pub(super) fn add_idempotency_key(record: &mut Record, source: &str, seq: u64) {
    let seq = original_sequence(record, seq);
    if record
        .headers
        .keys()
        .any(|k| k.eq_ignore_ascii_case("idempotency-key"))
    {
        return;
    }
    let key = if record.id.is_empty() {
        format!("{source}:{seq}")
    } else {
        record.id.clone()
    };
    record.headers.insert("idempotency-key".to_owned(), key);
}

/// The dedupe identity of a verbatim gRPC replay, as metadata: `echopost-source` and
/// `echopost-sequence` (the same pair `Sink/Deliver` carries in its message; for a
/// requeued record, the sequence it was first stored under).
pub(super) fn add_identity_metadata(record: &mut Record, source: &str, seq: u64) {
    let seq = original_sequence(record, seq);
    record
        .headers
        .insert("echopost-source".to_owned(), source.to_owned());
    record
        .headers
        .insert("echopost-sequence".to_owned(), seq.to_string());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbatim_replays_carry_a_stable_dedupe_identity() {
        let mut r = Record::default();
        add_idempotency_key(&mut r, "src", 7);
        assert_eq!(r.headers["idempotency-key"], "src:7");
        let mut r = Record {
            id: "order-1".into(),
            ..Record::default()
        };
        add_idempotency_key(&mut r, "src", 7);
        assert_eq!(r.headers["idempotency-key"], "order-1");
        let mut r = Record::default();
        r.headers.insert("Idempotency-Key".into(), "mine".into());
        add_idempotency_key(&mut r, "src", 7);
        assert_eq!(r.headers.len(), 1, "the record's own key is kept");
        let mut r = Record::default();
        add_identity_metadata(&mut r, "src", 9);
        assert_eq!(r.headers["echopost-source"], "src");
        assert_eq!(r.headers["echopost-sequence"], "9");
        // A requeued record keeps the identity it was first stored under.
        let mut r = Record::default();
        r.headers
            .insert("echopost-original-sequence".into(), "3".into());
        let mut g = r.clone();
        add_idempotency_key(&mut r, "src", 70);
        assert_eq!(r.headers["idempotency-key"], "src:3");
        add_identity_metadata(&mut g, "src", 70);
        assert_eq!(g.headers["echopost-sequence"], "3");
    }
}
