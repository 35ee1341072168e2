//! Recovery codes, SMS codes, login challenges and failure counters: each used exactly
//! once, each counter exact, under contention, on both engines.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test bodies may panic: that is a failed test"
)]

mod common;

use common::{NOW, TestDb, race};
use sea_orm::EntityTrait;
use storage::entity::enums::ChallengePurpose;
use storage::entity::{factor, login_challenge, recovery_code, sms_code};
use storage::repo::{Failure, Lockouts};
use storage::{Storage, StorageError, Uuid};

/// A failure counter no test locks unless it means to.
const KEY: &str = "mfa:test";

async fn user(storage: &Storage, email: &str) -> Uuid {
    storage.users().create(email, None, NOW).await.unwrap().id
}

/// A new user with a pending SMS factor.
async fn phone(storage: &Storage, email: &str) -> (Uuid, factor::Model) {
    let uid = user(storage, email).await;
    let factor = storage
        .factors()
        .create_sms_pending(uid, "", "+4915112345678", NOW, NOW + 600, &[])
        .await
        .unwrap();
    (uid, factor)
}

async fn recovery_codes_work_once_each(db: &TestDb) {
    let s = &db.storage;
    let uid = user(s, "a@example.com").await;
    s.recovery_codes()
        .replace(uid, &["ABCD-EFGH-1234", "WXYZ-0000-9999"], NOW, &[])
        .await
        .unwrap();
    // Stored only as hashes.
    let hashes: Vec<Vec<u8>> = recovery_code::Entity::find()
        .all(s.db())
        .await
        .unwrap()
        .into_iter()
        .map(|row| row.code_hash)
        .collect();
    let expected = s.hasher().hash(
        storage::crypto::HashPurpose::RecoveryCode,
        &[uid.as_bytes(), b"ABCDEFGH1234"],
    );
    assert!(
        hashes.contains(&expected.0.to_vec()),
        "keyed hash of the normalized code"
    );
    assert!(hashes.iter().all(|h| h.len() == 32));
    // Looked up without being used (typed loosely), then used once.
    let codes = s.recovery_codes();
    assert!(codes.is_unused(uid, "abcd efgh 1234").await.unwrap());
    assert!(codes.is_unused(uid, "ABCD-EFGH-1234").await.unwrap());
    assert!(!codes.is_unused(uid, "ABCD-EFGH-1235").await.unwrap());
    let other = user(s, "stranger@example.com").await;
    assert!(
        !codes.is_unused(other, "ABCD-EFGH-1234").await.unwrap(),
        "someone else's"
    );
    assert!(
        s.recovery_codes()
            .consume(uid, "abcd efgh 1234", NOW)
            .await
            .unwrap()
    );
    assert!(
        !s.recovery_codes()
            .consume(uid, "ABCD-EFGH-1234", NOW)
            .await
            .unwrap()
    );
    assert!(
        !codes.is_unused(uid, "ABCD-EFGH-1234").await.unwrap(),
        "used"
    );
    assert_eq!(s.recovery_codes().remaining(uid).await.unwrap(), 1);
    // Not another user's.
    let other = user(s, "someone-else@example.com").await;
    assert!(
        !s.recovery_codes()
            .consume(other, "WXYZ-0000-9999", NOW)
            .await
            .unwrap()
    );
    // 32 concurrent uses of the last code: one wins.
    let wins = race(s, 32, |s, _| async move {
        s.recovery_codes()
            .consume(uid, "WXYZ-0000-9999", NOW)
            .await
            .unwrap()
    })
    .await;
    assert_eq!(wins.iter().filter(|&&w| w).count(), 1);
    assert_eq!(s.recovery_codes().remaining(uid).await.unwrap(), 0);
    // Regeneration replaces the whole set.
    s.recovery_codes()
        .replace(uid, &["NEW1", "NEW2"], NOW, &[])
        .await
        .unwrap();
    assert_eq!(s.recovery_codes().remaining(uid).await.unwrap(), 2);
    assert!(
        !s.recovery_codes()
            .consume(uid, "WXYZ-0000-9999", NOW)
            .await
            .unwrap()
    );
}

async fn sms_codes_replace_expire_and_work_once(db: &TestDb) {
    let s = &db.storage;
    let (_, f) = phone(s, "c@example.com").await;
    s.sms_codes()
        .issue(f.id, "111111", NOW, NOW + 300)
        .await
        .unwrap();
    s.sms_codes()
        .issue(f.id, "222222", NOW + 40, NOW + 340)
        .await
        .unwrap();
    assert_eq!(
        sms_code::Entity::find().all(s.db()).await.unwrap().len(),
        1,
        "a new code replaces the old"
    );
    assert_eq!(
        s.sms_codes().current(f.id).await.unwrap().unwrap().sent_at,
        NOW + 40
    );
    assert!(
        !s.sms_codes()
            .consume(f.id, "111111", NOW + 50, KEY)
            .await
            .unwrap(),
        "replaced"
    );
    assert!(
        !s.sms_codes()
            .consume(f.id, "222222", NOW + 340, KEY)
            .await
            .unwrap(),
        "expired"
    );
    assert!(
        !s.sms_codes()
            .take_attempt(f.id, 3, NOW + 340)
            .await
            .unwrap(),
        "expired"
    );
    let wins = race(s, 32, |s, _| async move {
        s.sms_codes()
            .consume(f.id, "222222", NOW + 60, KEY)
            .await
            .unwrap()
    })
    .await;
    assert_eq!(wins.iter().filter(|&&w| w).count(), 1);
    // 32 guesses race for a budget of 3: exactly 3 may check a code, then none.
    s.sms_codes()
        .issue(f.id, "333333", NOW + 100, NOW + 400)
        .await
        .unwrap();
    let taken = race(s, 32, |s, _| async move {
        s.sms_codes()
            .take_attempt(f.id, 3, NOW + 110)
            .await
            .unwrap()
    })
    .await;
    assert_eq!(taken.iter().filter(|&&t| t).count(), 3);
    assert_eq!(
        s.sms_codes().current(f.id).await.unwrap().unwrap().attempts,
        3
    );
    assert!(s.sms_codes().withdraw(f.id).await.unwrap());
    assert!(s.sms_codes().current(f.id).await.unwrap().is_none());
    // A code for a factor that does not exist is refused.
    let err = s
        .sms_codes()
        .issue(Uuid::now_v7(), "1", NOW, NOW + 1)
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::NotFound("factor")), "{err:?}");
}

/// A right SMS code is not used up while the user's failure counter has a lockout in force
/// (in the same statement as the use), so it still works once the lockout ends; another
/// counter's lockout does not stop it.
async fn sms_codes_wait_out_a_lockout_unused(db: &TestDb) {
    let s = &db.storage;
    let (uid, f) = phone(s, "sms-locked@example.com").await;
    s.sms_codes()
        .issue(f.id, "123456", NOW, NOW + 300)
        .await
        .unwrap();
    let key = format!("mfa:{uid}");
    s.attempts()
        .record_failure(&key, NOW, &Lockouts::new(0, &[30]), None)
        .await
        .unwrap();
    s.attempts()
        .record_failure(KEY, NOW, &Lockouts::new(0, &[300]), None)
        .await
        .unwrap();
    assert!(
        !s.sms_codes()
            .consume(f.id, "123456", NOW + 29, &key)
            .await
            .unwrap(),
        "refused under the lockout"
    );
    let current = s.sms_codes().current(f.id).await.unwrap().unwrap();
    assert_eq!(current.consumed_at, None, "left unused");
    assert!(
        s.sms_codes()
            .consume(f.id, "123456", NOW + 30, &key)
            .await
            .unwrap(),
        "the lockout is over"
    );
    assert!(
        !s.sms_codes()
            .consume(f.id, "123456", NOW + 30, &key)
            .await
            .unwrap(),
        "still used once"
    );
    let current = s.sms_codes().current(f.id).await.unwrap().unwrap();
    assert_eq!(current.consumed_at, Some(NOW + 30));
}

async fn challenges_are_consumed_once_and_count_attempts(db: &TestDb) {
    let s = &db.storage;
    let uid = user(s, "d@example.com").await;
    let c = s
        .challenges()
        .create(
            "token-1",
            uid,
            None,
            ChallengePurpose::SecondFactor,
            NOW,
            NOW + 300,
            None,
            Default::default(),
        )
        .await
        .unwrap();
    let row = login_challenge::Entity::find_by_id(c.id)
        .one(s.db())
        .await
        .unwrap()
        .unwrap();
    // The stored hash is the keyed hash of the token, not the token.
    let expected = s
        .hasher()
        .hash(storage::crypto::HashPurpose::ChallengeToken, &[b"token-1"]);
    assert_eq!(row.token_hash, expected.0.to_vec());
    assert_eq!(
        s.challenges()
            .find_active("token-1", NOW)
            .await
            .unwrap()
            .unwrap()
            .id,
        c.id
    );
    assert!(
        s.challenges()
            .find_active("token-1", NOW + 300)
            .await
            .unwrap()
            .is_none(),
        "expired"
    );
    assert!(
        s.challenges()
            .find_active("token-2", NOW)
            .await
            .unwrap()
            .is_none()
    );
    // 32 guesses race for a budget of 5: exactly 5 are counted.
    let counted = race(s, 32, |s, _| async move {
        s.challenges().take_attempt(c.id, 5, NOW).await.unwrap()
    })
    .await;
    assert_eq!(counted.iter().filter(|&&w| w).count(), 5);
    assert_eq!(
        s.challenges()
            .find_active("token-1", NOW)
            .await
            .unwrap()
            .unwrap()
            .attempts,
        5
    );
    // 32 concurrent consumers: one gets it.
    let got = race(s, 32, |s, _| async move {
        s.challenges()
            .consume("token-1", NOW)
            .await
            .unwrap()
            .is_some()
    })
    .await;
    assert_eq!(got.iter().filter(|&&w| w).count(), 1);
    assert!(
        s.challenges()
            .find_active("token-1", NOW)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        !s.challenges().take_attempt(c.id, 10, NOW).await.unwrap(),
        "used up"
    );
    s.challenges()
        .create(
            "token-3",
            uid,
            None,
            ChallengePurpose::Enrollment,
            NOW,
            NOW + 1,
            None,
            Default::default(),
        )
        .await
        .unwrap();
    assert!(
        s.challenges()
            .consume("token-3", NOW + 1)
            .await
            .unwrap()
            .is_none(),
        "expired"
    );
    assert_eq!(s.challenges().delete_expired(NOW + 301).await.unwrap(), 2);
}

/// Failures that never lock: no increment is lost under contention, and keys count apart.
async fn failure_counters_lose_no_increment(db: &TestDb) {
    let s = &db.storage;
    let key = "mfa:user-1";
    let never = Lockouts::new(0, &[]);
    let mut counts = race(s, 32, |s, _| {
        let never = never.clone();
        async move {
            match s
                .attempts()
                .record_failure("mfa:user-1", NOW, &never, None)
                .await
                .unwrap()
            {
                Failure::Counted {
                    failures,
                    locked_until: None,
                } => failures,
                other => panic!("never locks: {other:?}"),
            }
        }
    })
    .await;
    counts.sort_unstable();
    assert_eq!(
        counts,
        (1..=32).collect::<Vec<i64>>(),
        "every caller saw its own increment"
    );
    assert_eq!(s.attempts().get(key).await.unwrap().unwrap().failures, 32);
    s.attempts().reset(key).await.unwrap();
    assert!(s.attempts().get(key).await.unwrap().is_none());
    let first = Failure::Counted {
        failures: 1,
        locked_until: None,
    };
    assert_eq!(
        s.attempts()
            .record_failure(key, NOW, &never, None)
            .await
            .unwrap(),
        first
    );
    // Separate keys count separately.
    assert_eq!(
        s.attempts()
            .record_failure("password:user-1", NOW, &never, None)
            .await
            .unwrap(),
        first
    );
}

/// Each failure past the free budget locks for the schedule's next delay (the last one
/// repeating), counted in the same statement; during a lockout nothing is counted.
async fn failures_lock_by_the_schedule(db: &TestDb) {
    let s = &db.storage;
    let key = "mfa:user-1";
    let lockouts = Lockouts::new(2, &[30, 60, 120]);
    let fail = |now: i64| {
        let lockouts = lockouts.clone();
        async move {
            s.attempts()
                .record_failure(key, now, &lockouts, None)
                .await
                .unwrap()
        }
    };
    let counted = |failures: i64, locked_until: Option<i64>| Failure::Counted {
        failures,
        locked_until,
    };
    assert_eq!(fail(NOW).await, counted(1, None));
    assert_eq!(fail(NOW).await, counted(2, None));
    assert_eq!(fail(NOW).await, counted(3, Some(NOW + 30)));
    assert_eq!(fail(NOW + 29).await, Failure::Locked { until: NOW + 30 });
    assert_eq!(s.attempts().get(key).await.unwrap().unwrap().failures, 3);
    // The lockout ends at its second: one more failure, the next delay.
    assert_eq!(fail(NOW + 30).await, counted(4, Some(NOW + 90)));
    assert_eq!(fail(NOW + 90).await, counted(5, Some(NOW + 210)));
    assert_eq!(fail(NOW + 210).await, counted(6, Some(NOW + 330)));
    assert_eq!(fail(NOW + 330).await, counted(7, Some(NOW + 450)));
    // A budget of none locks at the first failure.
    assert_eq!(
        s.attempts()
            .record_failure("password:x", NOW, &Lockouts::new(0, &[5]), None)
            .await
            .unwrap(),
        counted(1, Some(NOW + 5))
    );
}

/// A count that forgets: it starts over once its window has passed since the last failure,
/// but never while a lockout is in force (the lockout stands and the failure is refused).
async fn a_windowed_count_starts_over_after_a_quiet_window(db: &TestDb) {
    let s = &db.storage;
    let key = "client:ip:192.0.2.7";
    let lockouts = Lockouts::new(2, &[600]).forgetting_after(100);
    let fail = |now: i64| {
        let lockouts = lockouts.clone();
        async move {
            s.attempts()
                .record_failure(key, now, &lockouts, None)
                .await
                .unwrap()
        }
    };
    let counted = |failures: i64, locked_until: Option<i64>| Failure::Counted {
        failures,
        locked_until,
    };
    assert_eq!(fail(NOW).await, counted(1, None));
    assert_eq!(fail(NOW + 99).await, counted(2, None), "within the window");
    // 100 s after the last failure: the count starts over.
    assert_eq!(fail(NOW + 199).await, counted(1, None));
    assert_eq!(fail(NOW + 200).await, counted(2, None));
    assert_eq!(fail(NOW + 201).await, counted(3, Some(NOW + 801)));
    // Quiet for longer than the window, but locked: refused, not forgotten.
    assert_eq!(fail(NOW + 500).await, Failure::Locked { until: NOW + 801 });
    // After the lockout, and the window since the last counted failure: a fresh start.
    assert_eq!(fail(NOW + 801).await, counted(1, None));
}

/// Failures sent together, half through each of two replicas: the budget's failures are
/// counted (the last one locking) and every other one finds the lockout in force.
async fn failures_in_flight_stop_at_the_budget(db: &TestDb) {
    let other = db.reopen(db.storage.keyring().clone()).await;
    let key = "mfa:user-1";
    let storages = [db.storage.clone(), other];
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(32));
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let s = storages[i % 2].clone();
            let barrier = std::sync::Arc::clone(&barrier);
            tokio::spawn(async move {
                barrier.wait().await;
                s.attempts()
                    .record_failure(key, NOW, &Lockouts::new(5, &[30]), None)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut counted = Vec::new();
    let mut locked = 0;
    for task in tasks {
        match task.await.unwrap() {
            Failure::Counted {
                failures,
                locked_until,
            } => counted.push((failures, locked_until)),
            Failure::Locked { until } => {
                assert_eq!(until, NOW + 30);
                locked += 1;
            }
        }
    }
    counted.sort_unstable();
    assert_eq!(
        counted,
        [
            (1, None),
            (2, None),
            (3, None),
            (4, None),
            (5, None),
            (6, Some(NOW + 30))
        ]
    );
    assert_eq!(locked, 26);
    assert_eq!(
        db.storage
            .attempts()
            .get(key)
            .await
            .unwrap()
            .unwrap()
            .failures,
        6
    );
}

/// A success is settled against the counter: refused while locked (the counter kept), else
/// the failures are cleared; a key with none stays without a row.
async fn successes_settle_against_the_lockout(db: &TestDb) {
    let s = &db.storage;
    let key = "password:a";
    let lockouts = Lockouts::new(1, &[30]);
    assert_eq!(s.attempts().settle_success(key, NOW).await.unwrap(), None);
    assert!(s.attempts().get(key).await.unwrap().is_none());
    s.attempts()
        .record_failure(key, NOW, &lockouts, None)
        .await
        .unwrap();
    assert_eq!(s.attempts().settle_success(key, NOW).await.unwrap(), None);
    assert!(s.attempts().get(key).await.unwrap().is_none(), "cleared");
    s.attempts()
        .record_failure(key, NOW, &lockouts, None)
        .await
        .unwrap();
    s.attempts()
        .record_failure(key, NOW, &lockouts, None)
        .await
        .unwrap();
    assert_eq!(
        s.attempts().settle_success(key, NOW + 29).await.unwrap(),
        Some(NOW + 30)
    );
    let kept = s.attempts().get(key).await.unwrap().unwrap();
    assert_eq!((kept.failures, kept.locked_until), (2, Some(NOW + 30)));
    // Once the lockout is over, a success clears it all.
    assert_eq!(
        s.attempts().settle_success(key, NOW + 30).await.unwrap(),
        None
    );
    assert!(s.attempts().get(key).await.unwrap().is_none());
}

/// A success settled while the failure that spends the budget is in flight: either the
/// success comes first (it clears the count, and the failure counts anew) or the failure
/// does (its lockout refuses the success, and the count stays), never a cleared lockout.
async fn a_success_and_the_locking_failure_race_one_way_or_the_other(db: &TestDb) {
    let lockouts = Lockouts::new(5, &[30]);
    let (mut first, mut second) = (0, 0);
    for round in 0..20 {
        let key = format!("mfa:round-{round}");
        for _ in 0..5 {
            db.storage
                .attempts()
                .record_failure(&key, NOW, &lockouts, None)
                .await
                .unwrap();
        }
        let (a, b) = (db.storage.clone(), db.storage.clone());
        let (settled, failed) = tokio::join!(
            tokio::spawn({
                let key = key.clone();
                async move { a.attempts().settle_success(&key, NOW).await.unwrap() }
            }),
            tokio::spawn({
                let (key, lockouts) = (key.clone(), lockouts.clone());
                async move {
                    b.attempts()
                        .record_failure(&key, NOW, &lockouts, None)
                        .await
                        .unwrap()
                }
            }),
        );
        let counter = db.storage.attempts().get(&key).await.unwrap().unwrap();
        match (settled.unwrap(), failed.unwrap()) {
            (
                None,
                Failure::Counted {
                    failures: 1,
                    locked_until: None,
                },
            ) => {
                assert_eq!((counter.failures, counter.locked_until), (1, None));
                first += 1;
            }
            (
                Some(until),
                Failure::Counted {
                    failures: 6,
                    locked_until: Some(locked),
                },
            ) => {
                assert_eq!((until, locked), (NOW + 30, NOW + 30));
                assert_eq!(
                    (counter.failures, counter.locked_until),
                    (6, Some(NOW + 30))
                );
                second += 1;
            }
            other => panic!("round {round}: {other:?}"),
        }
    }
    assert_eq!(first + second, 20);
}

both!(
    recovery_codes_work_once_each,
    sms_codes_replace_expire_and_work_once,
    sms_codes_wait_out_a_lockout_unused,
    challenges_are_consumed_once_and_count_attempts,
    failure_counters_lose_no_increment,
    failures_lock_by_the_schedule,
    a_windowed_count_starts_over_after_a_quiet_window,
    failures_in_flight_stop_at_the_budget,
    successes_settle_against_the_lockout,
    a_success_and_the_locking_failure_race_one_way_or_the_other,
);
