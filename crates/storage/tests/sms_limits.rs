//! SMS sending limits on both engines: sliding windows (no double burst across a boundary),
//! all-or-nothing, giving back, the pumping guard decided in the take's transaction, and
//! exactness when many senders race.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test bodies may panic: that is a failed test"
)]

mod common;

use common::{NOW, TestDb, race};
use storage::repo::{Limit, LimitReached, PumpingGuard, Refused};

const COOLDOWN: Limit<'static> = Limit {
    key: "sms:number:a",
    max: 1,
    window_secs: 30,
};
const HOURLY: Limit<'static> = Limit {
    key: "sms:user:a",
    max: 3,
    window_secs: 3_600,
};

async fn windows_all_or_nothing_and_giving_back(db: &TestDb) {
    let limits = db.storage.sms_limits();
    let taken = limits
        .take(&[COOLDOWN, HOURLY], NOW)
        .await
        .unwrap()
        .unwrap();
    // The cooldown is reached: nothing is counted, not even the hourly slot.
    assert_eq!(
        limits.take(&[HOURLY, COOLDOWN], NOW + 10).await.unwrap(),
        Err(LimitReached {
            index: 1,
            retry_at: NOW + 30
        })
    );
    assert_eq!(
        limits.current(HOURLY.key, 3_600, NOW + 10).await.unwrap().0,
        1
    );
    // A send that failed gives its slots back: the cooldown is free again at once.
    limits.give_back(&taken).await.unwrap();
    assert_eq!(
        limits.current(HOURLY.key, 3_600, NOW + 10).await.unwrap().0,
        0
    );
    limits
        .take(&[COOLDOWN, HOURLY], NOW + 10)
        .await
        .unwrap()
        .unwrap();
    // After the cooldown, the hourly cap is what stops (sends at +10, +40, +80), until the
    // oldest of them has been an hour old.
    limits
        .take(&[COOLDOWN, HOURLY], NOW + 40)
        .await
        .unwrap()
        .unwrap();
    limits
        .take(&[COOLDOWN, HOURLY], NOW + 80)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        limits.take(&[COOLDOWN, HOURLY], NOW + 120).await.unwrap(),
        Err(LimitReached {
            index: 1,
            retry_at: NOW + 3_610
        })
    );
    assert!(
        limits
            .take(&[COOLDOWN, HOURLY], NOW + 3_609)
            .await
            .unwrap()
            .is_err()
    );
    limits
        .take(&[COOLDOWN, HOURLY], NOW + 3_610)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        limits
            .current(HOURLY.key, 3_600, NOW + 3_610)
            .await
            .unwrap(),
        (3, NOW + 40 + 3_600)
    );
    // Giving back sends that left the window takes nothing from the current one.
    limits.give_back(&taken).await.unwrap();
    assert_eq!(
        limits
            .current(HOURLY.key, 3_600, NOW + 3_610)
            .await
            .unwrap()
            .0,
        3
    );
    // Uncapped event counts, and bad limits.
    for _ in 0..3 {
        limits
            .count_event("sms:verified", 3_600, NOW)
            .await
            .unwrap();
    }
    assert_eq!(
        limits.current("sms:verified", 3_600, NOW).await.unwrap(),
        (3, NOW + 3_600)
    );
    assert_eq!(
        limits
            .current("sms:verified", 3_600, NOW + 3_600)
            .await
            .unwrap()
            .0,
        0
    );
    // Old sends are cleaned up; current ones stay.
    assert!(
        limits.delete_older_than(NOW + 11).await.unwrap() >= 1,
        "the sends before NOW + 11, out of the window"
    );
    assert_eq!(
        limits
            .current(HOURLY.key, 3_600, NOW + 3_610)
            .await
            .unwrap()
            .0,
        3
    );
    let bad = Limit { max: 0, ..HOURLY };
    assert!(limits.take(&[bad], NOW).await.is_err());
}

/// A cap spent at the end of one hour is still spent at the start of the next: no span of
/// an hour ever holds more than the cap (fixed windows let twice the cap through there).
async fn no_double_burst_across_a_window_boundary(db: &TestDb) {
    let limits = db.storage.sms_limits();
    let hour_start = NOW - NOW.rem_euclid(3_600);
    for at in [hour_start + 3_597, hour_start + 3_598, hour_start + 3_599] {
        limits.take(&[HOURLY], at).await.unwrap().unwrap();
    }
    for at in [hour_start + 3_600, hour_start + 3_601, hour_start + 7_196] {
        assert_eq!(
            limits.take(&[HOURLY], at).await.unwrap(),
            Err(LimitReached {
                index: 0,
                retry_at: hour_start + 3_597 + 3_600
            }),
            "{at}"
        );
    }
    limits
        .take(&[HOURLY], hour_start + 7_197)
        .await
        .unwrap()
        .unwrap();
}

/// The pumping guard is decided in the transaction of the send: its sends and verifications
/// over the last window, this send counted under its key when it passes.
async fn the_pumping_guard_decides_in_the_send_transaction(db: &TestDb) {
    let limits = db.storage.sms_limits();
    let guard = PumpingGuard {
        sent_key: "sms:pumping:sent",
        verified_key: "sms:pumping:verified",
        window_secs: 3_600,
        min_sends: 3,
        max_ratio: 1,
    };
    let user = |n: usize| format!("sms:user:{n}");
    for n in 0..3 {
        let key = user(n);
        let limit = Limit {
            key: &key,
            max: 5,
            window_secs: 3_600,
        };
        limits
            .take_guarded(Some(guard), &[limit], NOW + i64::try_from(n).unwrap())
            .await
            .unwrap()
            .unwrap();
    }
    // Three sent, none verified: the fourth is refused, and counted nowhere.
    let key = user(3);
    let limit = Limit {
        key: &key,
        max: 5,
        window_secs: 3_600,
    };
    assert_eq!(
        limits
            .take_guarded(Some(guard), &[limit], NOW + 10)
            .await
            .unwrap(),
        Err(Refused::Pumping {
            sent: 3,
            verified: 0,
            retry_at: NOW + 3_600
        })
    );
    assert_eq!(limits.current(&key, 3_600, NOW + 10).await.unwrap().0, 0);
    // Verifications catch up: sending goes on.
    for _ in 0..3 {
        limits
            .count_event("sms:pumping:verified", 3_600, NOW + 11)
            .await
            .unwrap();
    }
    limits
        .take_guarded(Some(guard), &[limit], NOW + 12)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        limits
            .current("sms:pumping:sent", 3_600, NOW + 12)
            .await
            .unwrap()
            .0,
        4
    );
}

async fn racing_senders_never_exceed_a_limit(db: &TestDb) {
    let results = race(&db.storage, 32, |storage, _| async move {
        let limit = Limit {
            key: "sms:org:race",
            max: 5,
            window_secs: 86_400,
        };
        storage
            .sms_limits()
            .take(&[limit], NOW)
            .await
            .unwrap()
            .is_ok()
    })
    .await;
    assert_eq!(results.iter().filter(|ok| **ok).count(), 5);
    assert_eq!(
        db.storage
            .sms_limits()
            .current("sms:org:race", 86_400, NOW)
            .await
            .unwrap(),
        (5, NOW + 86_400)
    );
}

both!(
    no_double_burst_across_a_window_boundary,
    the_pumping_guard_decides_in_the_send_transaction,
    windows_all_or_nothing_and_giving_back,
    racing_senders_never_exceed_a_limit,
);
