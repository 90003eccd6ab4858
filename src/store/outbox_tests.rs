use super::*;

fn conn() -> Connection {
    let c = Connection::open_in_memory().unwrap_or_else(|e| panic!("{e}"));
    c.execute_batch(SCHEMA).unwrap_or_else(|e| panic!("{e}"));
    c
}

fn series(n: usize) -> Vec<(SeriesKey, Samples)> {
    let mut s = Samples::default();
    for i in 0..n {
        s.push(i as i64 * 1000, i as f64);
    }
    let key = SeriesKey {
        metric: "cpu".into(),
        labels: vec![("client".into(), "web".into())],
    };
    vec![(key, s)]
}

fn ok<T>(r: rusqlite::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

const ROOMY: QueueLimits = QueueLimits {
    max_bytes: 1 << 30,
    piece_samples: 10,
};

#[test]
fn enqueued_pieces_are_peeked_in_order_and_acked_away() {
    let mut c = conn();
    let e = ok(enqueue(&c, ROOMY, &series(25), 1000));
    assert_eq!(
        e,
        Enqueued {
            samples: 25,
            dropped: 0
        }
    );
    let s = ok(stats(&c));
    assert_eq!(s.queued_samples, 25);
    assert!(s.queued_bytes > 0);
    let b = ok(peek(&c, Taker::new(20, 1 << 20))).unwrap_or_else(|| panic!("queued"));
    assert_eq!((b.ids.len(), b.samples, b.oldest_ms), (2, 20, 1000));
    ok(ack(&mut c, &b, Acked::Sent));
    let b = ok(peek(&c, Taker::new(20, 1 << 20))).unwrap_or_else(|| panic!("queued"));
    assert_eq!(b.samples, 5);
    ok(ack(&mut c, &b, Acked::Rejected));
    assert!(ok(peek(&c, Taker::new(20, 1 << 20))).is_none());
    let s = ok(stats(&c));
    assert_eq!(
        (
            s.queued_samples,
            s.queued_bytes,
            s.sent_samples,
            s.rejected_samples
        ),
        (0, 0, 20, 5)
    );
}

#[test]
fn a_full_queue_drops_and_counts_with_a_reason_never_silently() {
    let c = conn();
    let one = ok(enqueue(&c, ROOMY, &series(10), 1));
    assert_eq!(one.samples, 10);
    let used = ok(stats(&c)).queued_bytes;
    let tight = QueueLimits {
        max_bytes: used + 1,
        piece_samples: 10,
    };
    let e = ok(enqueue(&c, tight, &series(30), 2));
    assert_eq!(
        e,
        Enqueued {
            samples: 0,
            dropped: 30
        }
    );
    let s = ok(stats(&c));
    assert_eq!((s.queued_samples, s.dropped_samples), (10, 30));
    let why = s.last_drop.unwrap_or_default();
    assert!(why.contains("30 samples") && why.contains("bytes"), "{why}");
}

#[test]
fn a_rolled_back_commit_leaves_nothing_queued() {
    let mut c = conn();
    {
        let tx = ok(c.transaction());
        ok(enqueue(&tx, ROOMY, &series(5), 1));
        // dropped without commit: rolled back
    }
    assert_eq!(ok(stats(&c)), QueueStats::default());
    assert!(ok(peek(&c, Taker::new(20, 1 << 20))).is_none());
}
