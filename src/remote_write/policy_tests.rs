use proptest::prelude::*;

use super::*;

const S: fn(u64) -> Duration = Duration::from_secs;
const MS: fn(u64) -> Duration = Duration::from_millis;

#[test]
fn the_first_piece_always_goes_then_while_it_fits() {
    let mut t = Taker::new(100, 1000);
    assert!(t.admit(150, 10), "a piece over the batch still goes, alone");
    assert!(!t.admit(1, 1));
    let mut t = Taker::new(100, 1000);
    assert!(t.admit(60, 10));
    assert!(t.admit(40, 10));
    assert!(!t.admit(1, 1), "samples full");
    assert_eq!(t.samples(), 100);
    let mut t = Taker::new(100, 25);
    assert!(t.admit(1, 20));
    assert!(!t.admit(1, 10), "bytes full");
}

#[test]
fn a_partial_batch_waits_out_the_interval_a_full_one_goes() {
    assert_eq!(wait_for_more(100, 100, MS(0), S(1)), None);
    assert_eq!(wait_for_more(10, 100, MS(300), S(1)), Some(MS(700)));
    assert_eq!(wait_for_more(10, 100, S(1), S(1)), None);
    assert_eq!(wait_for_more(10, 100, S(5), S(1)), None);
}

#[test]
fn backoff_doubles_to_the_cap_and_starts_over_after_a_success() {
    let mut b = Backoff::new(MS(250), S(2));
    let full = |b: &mut Backoff| b.failed(1.0, None).as_millis();
    assert_eq!(full(&mut b), 250);
    assert_eq!(full(&mut b), 500);
    assert_eq!(full(&mut b), 1000);
    assert_eq!(full(&mut b), 2000);
    assert_eq!(full(&mut b), 2000);
    b.succeeded();
    assert_eq!(b.failed(0.0, None), MS(125), "jitter 0: half the pause");
}

#[test]
fn retry_after_is_honoured_up_to_a_cap() {
    let mut b = Backoff::new(MS(250), S(2));
    assert_eq!(b.failed(0.0, Some(S(10))), S(10));
    assert_eq!(b.failed(0.0, Some(S(100_000))), MAX_RETRY_AFTER);
    assert_eq!(
        b.failed(0.0, Some(S(0))),
        MS(500),
        "never sooner than the backoff"
    );
}

#[test]
fn answers_are_classified_as_remote_write_receivers_mean_them() {
    assert_eq!(classify(204, "", None), Verdict::Sent);
    assert_eq!(classify(200, "ok", None), Verdict::Sent);
    assert_eq!(
        classify(429, "slow down", Some("7")),
        Verdict::Retry {
            reason: "HTTP 429: slow down".into(),
            after: Some(S(7))
        }
    );
    assert!(matches!(
        classify(503, "", Some("Wed, 21 Oct 2015 07:28:00 GMT")),
        Verdict::Retry { after: None, .. }
    ));
    assert!(matches!(classify(408, "", None), Verdict::Retry { .. }));
    assert_eq!(
        classify(400, "  out of order sample\n", None),
        Verdict::Rejected {
            reason: "HTTP 400: out of order sample".into()
        }
    );
    assert!(
        matches!(classify(404, "", None), Verdict::Rejected { reason } if reason == "HTTP 404")
    );
    assert!(
        matches!(classify(301, "", None), Verdict::Retry { reason, .. } if reason.contains("remote_write_url"))
    );
}

proptest! {
    /// Every pause lies in [min/2, max], whatever the jitter and the run of failures.
    #[test]
    fn pauses_stay_within_bounds(jitters in proptest::collection::vec(0.0f64..1.0, 1..80)) {
        let mut b = Backoff::new(MS(250), S(30));
        for j in jitters {
            let p = b.failed(j, None);
            prop_assert!(p >= MS(125) && p <= S(30), "{:?}", p);
        }
    }

    /// The pieces taken never exceed the batch unless the first alone does, and a request
    /// takes a prefix of the queue.
    #[test]
    fn taker_takes_a_prefix_within_the_batch(
        sizes in proptest::collection::vec((1u64..200, 1u64..500), 1..30),
        max in 1u64..400,
    ) {
        let mut t = Taker::new(max, 2000);
        let taken = sizes.iter().take_while(|(s, b)| t.admit(*s, *b)).count();
        prop_assert!(taken >= 1);
        let sum: u64 = sizes[..taken].iter().map(|x| x.0).sum();
        prop_assert!(taken == 1 || sum <= max);
        prop_assert_eq!(t.samples(), sum);
    }
}
