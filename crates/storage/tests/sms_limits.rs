//! SMS sending limits on both engines: windows, all-or-nothing, giving back, and exactness
//! when many senders race.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test bodies may panic: that is a failed test"
)]

mod common;

use common::{NOW, TestDb, race};
use storage::repo::{Limit, LimitReached};

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
    // After the cooldown, the hourly cap is what stops.
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
            retry_at: NOW + 3_600
        })
    );
    // A new window starts once the old one has passed.
    limits
        .take(&[COOLDOWN, HOURLY], NOW + 3_600)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        limits
            .current(HOURLY.key, 3_600, NOW + 3_600)
            .await
            .unwrap()
            .0,
        1
    );
    // Giving back after the window moved on takes nothing from the new one.
    limits.give_back(&taken).await.unwrap();
    assert_eq!(
        limits
            .current(HOURLY.key, 3_600, NOW + 3_600)
            .await
            .unwrap()
            .0,
        1
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
    // Old windows are cleaned up; current ones stay.
    assert!(
        limits.delete_older_than(NOW + 1).await.unwrap() >= 1,
        "the counters of NOW's windows"
    );
    assert_eq!(
        limits
            .current(HOURLY.key, 3_600, NOW + 3_600)
            .await
            .unwrap()
            .0,
        1
    );
    let bad = Limit { max: 0, ..HOURLY };
    assert!(limits.take(&[bad], NOW).await.is_err());
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
    windows_all_or_nothing_and_giving_back,
    racing_senders_never_exceed_a_limit,
);
