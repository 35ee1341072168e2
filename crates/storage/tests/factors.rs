//! Factors: sealed seeds, activation with recovery codes in one transaction, the replay
//! guard under contention, removal, expiry and key rotation, on both engines.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test bodies may panic: that is a failed test"
)]

mod common;

use common::{NOW, TestDb, keyring, race};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, EntityTrait, QueryOrder};
use storage::crypto::CryptoError;
use storage::entity::enums::{FactorKind, FactorStatus};
use storage::entity::{audit_event, factor};
use storage::repo::{
    Acceptance, Accepted, Activation, Lockouts, NewAuditEvent, NewSession, OtpParams,
};
use storage::{Storage, StorageError, Uuid};

const SEED: &[u8] = b"12345678901234567890";
const TOTP: OtpParams = OtpParams {
    algorithm: "SHA1",
    digits: 6,
    period: Some(30),
};

async fn user(storage: &Storage, email: &str) -> Uuid {
    storage.users().create(email, None, NOW).await.unwrap().id
}

/// An event of the user acting on their own account.
fn own_event(user: Uuid, kind: &str) -> NewAuditEvent<'_> {
    NewAuditEvent {
        occurred_at: NOW,
        org_id: None,
        actor_id: Some(user),
        subject_id: Some(user),
        kind,
        details: "{}",
        client: Default::default(),
    }
}

/// The kinds of the audit log's events, oldest first.
async fn audit_kinds(storage: &Storage) -> Vec<String> {
    let events = audit_event::Entity::find()
        .order_by_asc(audit_event::Column::Id)
        .all(storage.db())
        .await
        .unwrap();
    events.into_iter().map(|e| e.kind).collect()
}

async fn pending_totp(storage: &Storage, user_id: Uuid) -> factor::Model {
    storage
        .factors()
        .create_otp_pending(
            user_id,
            FactorKind::Totp,
            "phone",
            SEED,
            TOTP,
            None,
            NOW,
            NOW + 600,
            &[],
        )
        .await
        .unwrap()
}

async fn active_totp(storage: &Storage, user_id: Uuid) -> factor::Model {
    let f = pending_totp(storage, user_id).await;
    storage
        .factors()
        .activate(f.id, user_id, Some(100), None, NOW)
        .await
        .unwrap();
    storage.factors().get(f.id).await.unwrap().unwrap()
}

async fn seeds_are_sealed_and_bound_to_their_row(db: &TestDb) {
    let s = &db.storage;
    let uid = user(s, "a@example.com").await;
    let a = active_totp(s, uid).await;
    let b = active_totp(s, uid).await;
    let sealed = a.secret_sealed.clone().unwrap();
    assert!(
        !sealed.windows(SEED.len()).any(|w| w == SEED),
        "no plaintext at rest"
    );
    assert_eq!(a.secret_key_id, Some(1));
    assert_eq!(s.factors().open_secret(&a).unwrap().as_slice(), SEED);
    let shown = format!("{a:?}");
    assert!(
        !shown.contains("secret_sealed"),
        "Debug leaves the sealed seed out: {shown}"
    );
    assert!(
        !shown.contains(&format!("{:?}", sealed[..8].to_vec())),
        "{shown}"
    );

    // A ciphertext copied onto another row does not open there.
    let mut swapped: factor::ActiveModel = b.clone().into();
    swapped.secret_sealed = Set(Some(sealed.clone()));
    let b2 = swapped.update(s.db()).await.unwrap();
    assert_eq!(
        s.factors().open_secret(&b2).unwrap_err().to_string(),
        StorageError::Crypto(CryptoError::Authentication).to_string()
    );

    // A tampered ciphertext does not open.
    let mut tampered = sealed.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let mut row: factor::ActiveModel = a.clone().into();
    row.secret_sealed = Set(Some(tampered));
    let a2 = row.update(s.db()).await.unwrap();
    assert!(matches!(
        s.factors().open_secret(&a2),
        Err(StorageError::Crypto(CryptoError::Authentication))
    ));

    // A ring without the sealing key names the missing key.
    let other = db.reopen(keyring(9, &[9])).await;
    assert!(matches!(
        other.factors().open_secret(&a),
        Err(StorageError::Crypto(CryptoError::UnknownKey(1)))
    ));
}

async fn activation_and_recovery_codes_are_one_transaction(db: &TestDb) {
    let s = &db.storage;
    let uid = user(s, "b@example.com").await;
    let f = s
        .factors()
        .create_otp_pending(
            uid,
            FactorKind::Totp,
            "",
            SEED,
            TOTP,
            None,
            NOW,
            NOW + 600,
            &[],
        )
        .await
        .unwrap();
    // A duplicate code in the set fails the insert: the factor stays pending, no code stays.
    let err = s
        .factors()
        .activate(f.id, uid, Some(5), Some(&["AAAA-BBBB", "aaaabbbb"]), NOW)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::Conflict("recovery code")),
        "{err:?}"
    );
    let after = s.factors().get(f.id).await.unwrap().unwrap();
    assert_eq!(after.status, FactorStatus::Pending);
    assert_eq!(after.last_step, None);
    assert_eq!(s.recovery_codes().remaining(uid).await.unwrap(), 0);

    let codes = ["AAAA-0001", "AAAA-0002", "AAAA-0003"];
    s.factors()
        .activate(f.id, uid, Some(5), Some(&codes), NOW)
        .await
        .unwrap();
    let active = s.factors().get(f.id).await.unwrap().unwrap();
    assert_eq!(active.status, FactorStatus::Active);
    assert_eq!(active.activated_at, Some(NOW));
    assert_eq!(active.pending_expires_at, None);
    assert_eq!(s.recovery_codes().remaining(uid).await.unwrap(), 3);
    // Only once; and the confirming step is used up.
    assert!(matches!(
        s.factors().activate(f.id, uid, Some(6), None, NOW).await,
        Err(StorageError::NotFound(_))
    ));
    assert!(
        !s.factors().accept_step(f.id, 5, NOW).await.unwrap(),
        "the confirming code cannot log in"
    );
    assert!(s.factors().accept_step(f.id, 6, NOW).await.unwrap());

    // Someone else's factor, or an expired enrollment, does not activate.
    let other = user(s, "c@example.com").await;
    let g = s
        .factors()
        .create_otp_pending(
            uid,
            FactorKind::Hotp,
            "",
            SEED,
            OtpParams {
                period: None,
                ..TOTP
            },
            Some(7),
            NOW,
            NOW + 600,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        g.last_step,
        Some(6),
        "HOTP: the counter before the token's next one"
    );
    assert!(matches!(
        s.factors().activate(g.id, other, Some(7), None, NOW).await,
        Err(StorageError::NotFound(_))
    ));
    assert!(
        matches!(
            s.factors()
                .activate(g.id, uid, Some(7), None, NOW + 600)
                .await,
            Err(StorageError::NotFound(_))
        ),
        "expired"
    );
    assert_eq!(
        s.factors().delete_expired_pending(NOW + 600).await.unwrap(),
        1
    );
    assert!(s.factors().get(g.id).await.unwrap().is_none());
}

async fn a_step_is_accepted_once_in_order(db: &TestDb) {
    let s = &db.storage;
    let uid = user(s, "d@example.com").await;
    let f = active_totp(s, uid).await;
    assert!(!s.factors().accept_step(f.id, 100, NOW).await.unwrap());
    assert!(!s.factors().accept_step(f.id, 99, NOW).await.unwrap());
    assert!(s.factors().accept_step(f.id, 101, NOW + 30).await.unwrap());
    assert!(!s.factors().accept_step(f.id, 101, NOW + 31).await.unwrap());
    assert!(s.factors().accept_step(f.id, 103, NOW + 90).await.unwrap());
    assert!(
        !s.factors().accept_step(f.id, 102, NOW + 91).await.unwrap(),
        "never backwards"
    );
    let f = s.factors().get(f.id).await.unwrap().unwrap();
    assert_eq!((f.last_step, f.last_used_at), (Some(103), Some(NOW + 90)));
    // A pending factor accepts nothing.
    let p = s
        .factors()
        .create_otp_pending(
            uid,
            FactorKind::Totp,
            "",
            SEED,
            TOTP,
            None,
            NOW,
            NOW + 60,
            &[],
        )
        .await
        .unwrap();
    assert!(!s.factors().accept_step(p.id, 1, NOW).await.unwrap());
}

async fn of_32_concurrent_callers_with_one_step_exactly_one_wins(db: &TestDb) {
    let s = &db.storage;
    let uid = user(s, "e@example.com").await;
    let f = active_totp(s, uid).await;
    for step in [200, 201, 202] {
        let wins = race(s, 32, |s, _| async move {
            s.factors().accept_step(f.id, step, NOW).await.unwrap()
        })
        .await;
        assert_eq!(wins.iter().filter(|&&w| w).count(), 1, "step {step}");
    }
    // A second replica (another pool on the same database) races too.
    let replica = db.reopen(keyring(1, &[1])).await;
    let (a, b) = tokio::join!(
        race(s, 16, |s, _| async move {
            s.factors().accept_step(f.id, 300, NOW).await.unwrap()
        }),
        race(&replica, 16, |s, _| async move {
            s.factors().accept_step(f.id, 300, NOW).await.unwrap()
        }),
    );
    assert_eq!(a.iter().chain(&b).filter(|&&w| w).count(), 1);
}

/// The replay guard that also settles against a failure budget: refused (the step left
/// unused) while a lockout on the counter is in force, whoever else's counter is locked;
/// accepted once it is over, or when there is no counter at all.
async fn a_step_is_not_accepted_under_a_lockout(db: &TestDb) {
    let s = &db.storage;
    let uid = user(s, "locked@example.com").await;
    let f = active_totp(s, uid).await;
    let key = format!("mfa:{uid}");
    let unless_locked = |step: i64, now: i64| {
        let (s, key) = (s.clone(), key.clone());
        async move {
            let acceptance = Acceptance {
                factor_id: f.id,
                step,
                now,
                lock_key: &key,
                raise: None,
                audit: None,
            };
            let factors = s.factors();
            factors.accept_code(&acceptance).await.unwrap().accepted
        }
    };
    let last_step = |s: &Storage| {
        let s = s.clone();
        async move { s.factors().get(f.id).await.unwrap().unwrap().last_step }
    };
    assert!(unless_locked(101, NOW).await, "no counter");
    s.attempts()
        .record_failure(&key, NOW, &Lockouts::new(0, &[30]), None)
        .await
        .unwrap();
    s.attempts()
        .record_failure("mfa:someone-else", NOW, &Lockouts::new(0, &[300]), None)
        .await
        .unwrap();
    assert!(!unless_locked(102, NOW + 29).await);
    assert_eq!(last_step(s).await, Some(101), "left unused");
    // The guard alone does not look at the counter.
    assert!(s.factors().accept_step(f.id, 102, NOW + 29).await.unwrap());
    assert!(unless_locked(103, NOW + 30).await, "the lockout is over");
    assert!(!unless_locked(103, NOW + 30).await, "still a replay guard");
    assert_eq!(last_step(s).await, Some(103));
}

/// A code's acceptance writes the step, the session's raise and the event together, each
/// only when the one before it took: a replayed step or a lockout writes nothing, a session
/// revoked meanwhile is not raised and no step-up is recorded.
async fn a_code_is_accepted_with_its_raise_and_event_or_not_at_all(db: &TestDb) {
    let s = &db.storage;
    let uid = user(s, "stepup@example.com").await;
    let f = active_totp(s, uid).await;
    let key = format!("mfa:{uid}");
    let session = |token: &'static str| {
        let s = s.clone();
        async move {
            s.sessions()
                .create(
                    token,
                    NewSession {
                        user_id: uid,
                        org_id: None,
                        assurance: 1,
                        now: NOW,
                        idle_ttl: 600,
                        absolute_ttl: 3600,
                        client: Default::default(),
                        trusted_device_id: None,
                    },
                )
                .await
                .unwrap()
        }
    };
    let live = session("tok-live").await;
    let org = s.organizations().create("Acme", NOW).await.unwrap().id;
    let admin = user(s, "stepup-admin@example.com").await;
    let accept = |step: i64, now: i64, raise: Option<Uuid>| Acceptance {
        factor_id: f.id,
        step,
        now,
        lock_key: &key,
        raise,
        audit: Some(NewAuditEvent {
            occurred_at: NOW - 1,
            org_id: Some(org),
            actor_id: Some(admin),
            details: r#"{"via":"hotp"}"#,
            client: storage::repo::ClientInfo {
                ip: Some("203.0.113.7"),
                user_agent: Some("Firefox/140"),
            },
            ..own_event(uid, "session.stepped_up")
        }),
    };
    let last_step = || async { s.factors().get(f.id).await.unwrap().unwrap().last_step };
    let before = audit_kinds(s).await.len();
    let accepted = |raised| Accepted {
        accepted: true,
        raised,
    };

    let done = s
        .factors()
        .accept_code(&accept(101, NOW, Some(live.id)))
        .await
        .unwrap();
    assert_eq!(done, accepted(true));
    let raised = s.sessions().find_valid("tok-live", NOW).await.unwrap();
    assert_eq!(raised.unwrap().assurance, 2);
    assert_eq!(audit_kinds(s).await[before..], ["session.stepped_up"]);
    let event = audit_event::Entity::find()
        .order_by_desc(audit_event::Column::Id)
        .one(s.db())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            event.occurred_at,
            event.org_id,
            event.actor_id,
            event.subject_id,
            event.details.as_str(),
            event.client_ip.as_deref(),
            event.client_user_agent.as_deref(),
        ),
        (
            NOW - 1,
            Some(org),
            Some(admin),
            Some(uid),
            r#"{"via":"hotp"}"#,
            Some("203.0.113.7"),
            Some("Firefox/140"),
        ),
        "every column of the event as given"
    );

    // A replayed step writes nothing.
    let replay = s
        .factors()
        .accept_code(&accept(101, NOW, Some(live.id)))
        .await
        .unwrap();
    assert_eq!(replay, Accepted::default());
    assert_eq!(audit_kinds(s).await.len(), before + 1);

    // Under a lockout: nothing, and the step is left for after it.
    s.attempts()
        .record_failure(&key, NOW, &Lockouts::new(0, &[30]), None)
        .await
        .unwrap();
    let locked = s
        .factors()
        .accept_code(&accept(102, NOW + 29, Some(live.id)))
        .await
        .unwrap();
    assert_eq!(locked, Accepted::default());
    assert_eq!(last_step().await, Some(101));
    assert_eq!(audit_kinds(s).await.len(), before + 1);
    let after = s
        .factors()
        .accept_code(&accept(102, NOW + 30, Some(live.id)))
        .await
        .unwrap();
    assert_eq!(after, accepted(true), "a session at 2 stays live");

    // A session revoked meanwhile: the code is used, the session not raised, no step-up
    // recorded.
    let gone = session("tok-gone").await;
    assert!(s.sessions().revoke(gone.id, NOW + 30, &[]).await.unwrap());
    let events = audit_kinds(s).await.len();
    let late = s
        .factors()
        .accept_code(&accept(103, NOW + 30, Some(gone.id)))
        .await
        .unwrap();
    assert_eq!(late, accepted(false));
    assert_eq!(last_step().await, Some(103));
    assert_eq!(audit_kinds(s).await.len(), events);

    // No session to raise (a proof): the code and its event.
    let proof = s
        .factors()
        .accept_code(&accept(104, NOW + 30, None))
        .await
        .unwrap();
    assert_eq!(proof, accepted(false));
    assert_eq!(audit_kinds(s).await.len(), events + 1);
    // A kind the log refuses writes nothing at all.
    let bad = Acceptance {
        audit: Some(own_event(uid, "")),
        ..accept(105, NOW + 30, None)
    };
    assert!(s.factors().accept_code(&bad).await.is_err());
    assert_eq!(last_step().await, Some(104));
}

/// A change of method: the new factor is activated, the old one removed and the events
/// that record it appended in one transaction; a replacement that is not another active
/// factor of the user rolls the activation and the events back too.
async fn a_new_factor_replaces_an_old_one_in_one_transaction(db: &TestDb) {
    let s = &db.storage;
    let uid = user(s, "replace@example.com").await;
    let other = user(s, "other-user@example.com").await;
    let old = active_totp(s, uid).await;
    let theirs = active_totp(s, other).await;
    let stale = pending_totp(s, uid).await;
    let new = pending_totp(s, uid).await;
    let status = |id: Uuid| {
        let s = s.clone();
        async move { s.factors().get(id).await.unwrap().map(|f| f.status) }
    };
    let event = |kind| own_event(uid, kind);
    let events = [event("factor.enrolled"), event("factor.removed")];
    let kinds = || audit_kinds(s);
    let replacing = |replaces| Activation {
        recovery_codes: None,
        replaces: Some(replaces),
        retires: &[],
        credential: None,
        audit: &events,
    };
    for replaces in [theirs.id, stale.id, new.id, Uuid::now_v7()] {
        let err = s
            .factors()
            .activate_with(new.id, uid, Some(200), replacing(replaces), NOW)
            .await
            .unwrap_err();
        assert!(
            matches!(err, StorageError::NotFound("factor to replace")),
            "{err:?}"
        );
        assert_eq!(
            status(new.id).await,
            Some(FactorStatus::Pending),
            "rolled back"
        );
        assert_eq!(status(old.id).await, Some(FactorStatus::Active));
        assert_eq!(status(theirs.id).await, Some(FactorStatus::Active));
        assert_eq!(kinds().await, Vec::<String>::new(), "no event either");
    }
    s.factors()
        .activate_with(new.id, uid, Some(200), replacing(old.id), NOW)
        .await
        .unwrap();
    assert_eq!(status(new.id).await, Some(FactorStatus::Active));
    assert_eq!(status(old.id).await, None, "removed");
    assert_eq!(kinds().await, ["factor.enrolled", "factor.removed"]);
    // An event the log refuses (no kind) takes the activation back with it.
    let another = pending_totp(s, uid).await;
    let refused = [event("")];
    let with = Activation {
        audit: &refused,
        ..Activation::default()
    };
    let err = s
        .factors()
        .activate_with(another.id, uid, Some(300), with, NOW)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::Invalid { field: "kind", .. }),
        "{err:?}"
    );
    assert_eq!(status(another.id).await, Some(FactorStatus::Pending));
    assert_eq!(kinds().await.len(), 2);
    assert_eq!(
        s.factors().get(new.id).await.unwrap().unwrap().last_step,
        Some(200)
    );
}

/// Removing a factor, regenerating recovery codes and a reset: each one transaction with
/// the audit events that record it (none when nothing was removed).
async fn removal_and_reset(db: &TestDb) {
    let s = &db.storage;
    let uid = user(s, "f@example.com").await;
    let a = active_totp(s, uid).await;
    let b = active_totp(s, uid).await;
    s.recovery_codes()
        .replace(
            uid,
            &["R1", "R2"],
            NOW,
            &[own_event(uid, "recovery_codes.regenerated")],
        )
        .await
        .unwrap();
    assert_eq!(audit_kinds(s).await, ["recovery_codes.regenerated"]);
    let removed = [own_event(uid, "factor.removed")];
    let other = user(s, "g@example.com").await;
    assert!(
        !s.factors()
            .remove(other, a.id, false, NOW, &removed)
            .await
            .unwrap(),
        "not someone else's"
    );
    assert_eq!(
        audit_kinds(s).await.len(),
        1,
        "nothing removed, nothing recorded"
    );
    assert!(
        s.factors()
            .remove(uid, a.id, false, NOW, &removed)
            .await
            .unwrap()
    );
    assert_eq!(
        audit_kinds(s).await,
        ["recovery_codes.regenerated", "factor.removed"]
    );
    assert!(
        !s.factors()
            .remove(uid, a.id, false, NOW, &removed)
            .await
            .unwrap(),
        "removed once"
    );
    assert_eq!(audit_kinds(s).await.len(), 2, "and recorded once");
    assert_eq!(s.recovery_codes().remaining(uid).await.unwrap(), 2);
    // An event the log refuses takes the removal back, codes and all.
    let refused = [own_event(uid, "")];
    assert!(matches!(
        s.factors().remove(uid, b.id, true, NOW, &refused).await,
        Err(StorageError::Invalid { field: "kind", .. })
    ));
    assert_eq!(s.factors().of_user(uid, true).await.unwrap().len(), 1);
    assert_eq!(s.recovery_codes().remaining(uid).await.unwrap(), 2);
    assert!(matches!(
        s.recovery_codes()
            .replace(uid, &["R9"], NOW, &refused)
            .await,
        Err(StorageError::Invalid { field: "kind", .. })
    ));
    assert_eq!(
        s.recovery_codes().remaining(uid).await.unwrap(),
        2,
        "the old codes stay"
    );
    assert!(s.factors().remove(uid, b.id, true, NOW, &[]).await.unwrap());
    assert_eq!(
        s.recovery_codes().remaining(uid).await.unwrap(),
        0,
        "the codes went with the last factor"
    );
    active_totp(s, uid).await;
    s.recovery_codes()
        .replace(uid, &["R3"], NOW, &[])
        .await
        .unwrap();
    let reset = s
        .factors()
        .reset(
            uid,
            storage::repo::ResetPlan {
                org_id: None,
                must_reenroll: false,
                revoke: storage::repo::SessionsToRevoke::None,
            },
            storage::repo::AuditOf {
                actor_id: Some(uid),
                kind: "mfa.reset",
                client: Default::default(),
            },
            |_| "{}".into(),
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(reset.factors_removed, 1);
    assert!(s.factors().of_user(uid, false).await.unwrap().is_empty());
    assert_eq!(s.recovery_codes().remaining(uid).await.unwrap(), 0);
}

async fn key_rotation_reseals_and_resumes_after_an_interruption(db: &TestDb) {
    let uid = user(&db.storage, "h@example.com").await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(active_totp(&db.storage, uid).await.id);
    }
    // Key 2 becomes primary; key 1 stays to open what it sealed.
    let rotating = db.reopen(keyring(2, &[1, 2])).await;
    let first = rotating.factors().reseal_batch(None, 2).await.unwrap();
    assert_eq!((first.resealed, first.remaining), (2, 3));
    drop(rotating); // interrupted
    let resumed = db.reopen(keyring(2, &[1, 2])).await;
    let rest = resumed.factors().reseal_batch(None, 100).await.unwrap();
    assert_eq!((rest.resealed, rest.remaining), (3, 0));
    assert!(rest.failed.is_empty());
    assert_eq!(
        resumed
            .factors()
            .reseal_batch(None, 100)
            .await
            .unwrap()
            .resealed,
        0
    );
    // Key 1 can now go: everything opens with key 2 alone.
    let only_new = db.reopen(keyring(2, &[2])).await;
    for id in ids {
        let f = only_new.factors().get(id).await.unwrap().unwrap();
        assert_eq!(f.secret_key_id, Some(2));
        assert_eq!(only_new.factors().open_secret(&f).unwrap().as_slice(), SEED);
    }
}

async fn sms_factors_store_e164_numbers(db: &TestDb) {
    let s = &db.storage;
    let uid = user(s, "i@example.com").await;
    let f = s
        .factors()
        .create_sms_pending(uid, "work", "+33612345678", NOW, NOW + 600, &[])
        .await
        .unwrap();
    assert_eq!(f.phone_e164.as_deref(), Some("+33612345678"));
    assert!(f.secret_sealed.is_none());
    for bad in ["+", "+0123", "33612345678", "+3361234567890123", "+33 6 12"] {
        let err = s
            .factors()
            .create_sms_pending(uid, "x", bad, NOW, NOW + 600, &[])
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                StorageError::Invalid {
                    field: "phone_number",
                    ..
                }
            ),
            "{bad}"
        );
    }
    assert!(factor::Entity::find().all(s.db()).await.unwrap().len() == 1);
}

async fn rotation_reports_a_bad_row_and_goes_past_it(db: &TestDb) {
    let s = &db.storage;
    let uid = user(s, "j@example.com").await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(active_totp(s, uid).await.id);
    }
    // The first row's ciphertext is damaged.
    let bad = s.factors().get(ids[0]).await.unwrap().unwrap();
    let mut damaged = bad.secret_sealed.clone().unwrap();
    let last = damaged.len() - 1;
    damaged[last] ^= 0xff;
    let mut row: factor::ActiveModel = bad.into();
    row.secret_sealed = Set(Some(damaged));
    row.update(s.db()).await.unwrap();

    let rotating = db.reopen(keyring(2, &[1, 2])).await;
    let first = rotating.factors().reseal_batch(None, 1).await.unwrap();
    assert_eq!(first.failed, vec![ids[0]]);
    assert_eq!(first.resealed, 0);
    // Resuming after it, the others are re-sealed; the bad row stays, reported.
    let rest = rotating
        .factors()
        .reseal_batch(first.last_seen, 10)
        .await
        .unwrap();
    assert_eq!(rest.resealed, 2);
    assert_eq!(rest.remaining, 1);
}

async fn activation_never_lowers_the_hotp_baseline(db: &TestDb) {
    let s = &db.storage;
    let uid = user(s, "k@example.com").await;
    let hotp = OtpParams {
        period: None,
        ..TOTP
    };
    let f = s
        .factors()
        .create_otp_pending(
            uid,
            FactorKind::Hotp,
            "token",
            SEED,
            hotp,
            Some(50),
            NOW,
            NOW + 600,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(f.last_step, Some(49));
    // A confirming counter behind the token's position is refused and changes nothing.
    let err = s
        .factors()
        .activate(f.id, uid, Some(10), None, NOW)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::NotFound("pending factor")),
        "{err:?}"
    );
    assert_eq!(
        s.factors().get(f.id).await.unwrap().unwrap().last_step,
        Some(49)
    );
    s.factors()
        .activate(f.id, uid, Some(52), None, NOW)
        .await
        .unwrap();
    assert_eq!(
        s.factors().get(f.id).await.unwrap().unwrap().last_step,
        Some(52)
    );
    // Without a step (SMS), activation leaves the guard as it is.
    let g = s
        .factors()
        .create_otp_pending(
            uid,
            FactorKind::Hotp,
            "",
            SEED,
            hotp,
            Some(7),
            NOW,
            NOW + 600,
            &[],
        )
        .await
        .unwrap();
    s.factors()
        .activate(g.id, uid, None, None, NOW)
        .await
        .unwrap();
    assert_eq!(
        s.factors().get(g.id).await.unwrap().unwrap().last_step,
        Some(6)
    );
}

async fn active_factors_come_with_the_failure_counter(db: &TestDb) {
    let s = &db.storage;
    let alice = user(s, "alice@example.com").await;
    let bob = user(s, "bob@example.com").await;
    let key = format!("mfa:{alice}");
    // No factor: no row carries the counter.
    assert_eq!(
        s.factors().active_with_counter(alice, &key).await.unwrap(),
        (vec![], None)
    );
    let first = active_totp(s, alice).await;
    let second = active_totp(s, alice).await;
    // A pending factor and another user's factor are left out.
    pending_totp(s, alice).await;
    active_totp(s, bob).await;
    let (factors, counter) = s.factors().active_with_counter(alice, &key).await.unwrap();
    assert_eq!(factors, vec![first.clone(), second.clone()]);
    assert_eq!(counter, None);
    // Failures on record, then a lock: read with the factors, under the key asked for only.
    let lockouts = Lockouts::new(2, &[60]);
    s.attempts()
        .record_failure(&key, NOW, &lockouts, None)
        .await
        .unwrap();
    s.attempts()
        .record_failure(&key, NOW + 1, &lockouts, None)
        .await
        .unwrap();
    s.attempts()
        .record_failure(&format!("mfa:{bob}"), NOW, &lockouts, None)
        .await
        .unwrap();
    let (factors, counter) = s.factors().active_with_counter(alice, &key).await.unwrap();
    assert_eq!(factors.len(), 2);
    let counter = counter.unwrap();
    assert_eq!((counter.key.as_str(), counter.failures), (key.as_str(), 2));
    assert_eq!(counter.locked_until, None);
    assert_eq!(counter, s.attempts().get(&key).await.unwrap().unwrap());
    s.attempts()
        .record_failure(&key, NOW, &lockouts, None)
        .await
        .unwrap();
    let (_, counter) = s.factors().active_with_counter(alice, &key).await.unwrap();
    assert_eq!(counter.unwrap().locked_until, Some(NOW + 60));
}

/// The login's read: a user with the summary of their second factors (active ones by kind,
/// unused recovery codes; nobody else's), and the organizations asked for: none, those they
/// belong to (by id, nobody else's), or one by id.
async fn a_user_comes_with_their_factor_summary_and_organizations(db: &TestDb) {
    use storage::entity::enums::Role;
    use storage::repo::{MfaSummary, OrganizationsToRead};
    let s = &db.storage;
    let alice = user(s, "alice@example.com").await;
    let bob = user(s, "bob@example.com").await;
    // The user's read; every one below is of an existing user.
    let get = |id, organizations| async move {
        s.users()
            .get_with_mfa(id, organizations)
            .await
            .unwrap()
            .unwrap()
    };
    for read in [
        OrganizationsToRead::None,
        OrganizationsToRead::Memberships,
        OrganizationsToRead::Only(Uuid::now_v7()),
    ] {
        assert_eq!(
            s.users().get_with_mfa(Uuid::now_v7(), read).await.unwrap(),
            None
        );
        let (model, summary, organizations) = get(alice, read).await;
        assert_eq!(model, s.users().get(alice).await.unwrap().unwrap());
        assert_eq!(summary, MfaSummary::default());
        assert!(organizations.is_empty(), "{read:?}");
    }
    // Two apps (one with recovery codes), a pending app, an SMS phone; Bob's factor apart.
    active_totp(s, alice).await;
    let with_codes = pending_totp(s, alice).await;
    s.factors()
        .activate(
            with_codes.id,
            alice,
            Some(100),
            Some(&["aaaa-bbbb", "cccc-dddd", "eeee-ffff"]),
            NOW,
        )
        .await
        .unwrap();
    pending_totp(s, alice).await;
    let phone = s
        .factors()
        .create_sms_pending(alice, "phone", "+14155550100", NOW, NOW + 600, &[])
        .await
        .unwrap();
    s.factors()
        .activate(phone.id, alice, None, None, NOW)
        .await
        .unwrap();
    active_totp(s, bob).await;
    assert!(
        s.recovery_codes()
            .consume(alice, "cccc-dddd", NOW)
            .await
            .unwrap()
    );
    let (_, summary, _) = get(alice, OrganizationsToRead::None).await;
    assert_eq!(
        summary,
        MfaSummary {
            totp: 2,
            hotp: 0,
            sms: 1,
            webauthn: 0,
            recovery_codes_left: 2,
        }
    );
    let (_, summary, _) = get(bob, OrganizationsToRead::None).await;
    assert_eq!((summary.totp, summary.recovery_codes_left), (1, 0));

    // Organizations: none, then two (by id), Bob's own apart.
    assert!(
        s.memberships()
            .organizations_of(alice)
            .await
            .unwrap()
            .is_empty()
    );
    let acme = s.organizations().create("ACME", NOW).await.unwrap();
    let other = s.organizations().create("Other", NOW).await.unwrap();
    let bobs = s.organizations().create("Bob's", NOW).await.unwrap();
    for org in [&other, &acme] {
        s.memberships()
            .add(
                org.id,
                alice,
                Role::Member,
                NOW,
                storage::repo::AuditOf::by_caller("member.added"),
            )
            .await
            .unwrap();
    }
    s.memberships()
        .add(
            bobs.id,
            bob,
            Role::Owner,
            NOW,
            storage::repo::AuditOf::by_caller("member.added"),
        )
        .await
        .unwrap();
    let mut expected = vec![acme.clone(), other];
    expected.sort_by_key(|o| o.id);
    assert_eq!(
        s.memberships().organizations_of(alice).await.unwrap(),
        expected
    );
    // The same with the user, once per organization; the summary is the same on every row.
    let (model, summary, organizations) = get(alice, OrganizationsToRead::Memberships).await;
    assert_eq!(model.id, alice);
    assert_eq!(
        (summary.totp, summary.sms, summary.recovery_codes_left),
        (2, 1, 2)
    );
    assert_eq!(organizations, expected);
    let (_, _, organizations) = get(alice, OrganizationsToRead::None).await;
    assert!(organizations.is_empty(), "none asked for, none read");
    // One by id, a member or not (a challenge names the organization); none for an unknown.
    for (org, of) in [(&acme, alice), (&bobs, alice), (&acme, bob)] {
        let (model, _, organizations) = get(of, OrganizationsToRead::Only(org.id)).await;
        assert_eq!((model.id, organizations), (of, vec![org.clone()]));
    }
    let (_, _, organizations) = get(alice, OrganizationsToRead::Only(Uuid::now_v7())).await;
    assert!(organizations.is_empty());
}

/// The start of an enrollment, a resync and a counted failure commit with their audit
/// events or not at all: an event the log refuses (a kind over 64 bytes) takes its change
/// with it.
async fn begun_enrollments_resyncs_and_lockouts_commit_with_their_events(db: &TestDb) {
    let s = &db.storage;
    let uid = user(s, "audited@example.com").await;
    let refused_kind = "k".repeat(65);
    let refused = own_event(uid, &refused_kind);
    let begin = async |audit: &[NewAuditEvent<'_>]| {
        s.factors()
            .create_otp_pending(
                uid,
                FactorKind::Hotp,
                "token",
                SEED,
                TOTP,
                Some(1),
                NOW,
                NOW + 600,
                audit,
            )
            .await
    };
    assert!(begin(std::slice::from_ref(&refused)).await.is_err());
    assert!(s.factors().of_user(uid, false).await.unwrap().is_empty());
    let pending = begin(&[own_event(uid, "factor.enrollment_begun")])
        .await
        .unwrap();
    assert_eq!(audit_kinds(s).await, ["factor.enrollment_begun"]);
    s.factors()
        .activate(pending.id, uid, None, None, NOW)
        .await
        .unwrap();

    // A resync: the counter moves with its event, or neither.
    assert!(
        s.factors()
            .resync(pending.id, 5, NOW, std::slice::from_ref(&refused))
            .await
            .is_err()
    );
    let last_step = |f: factor::Model| f.last_step;
    assert_eq!(
        s.factors().get(pending.id).await.unwrap().map(last_step),
        Some(Some(0))
    );
    assert!(
        s.factors()
            .resync(pending.id, 5, NOW, &[own_event(uid, "factor.resynced")])
            .await
            .unwrap()
    );
    assert_eq!(
        s.factors().get(pending.id).await.unwrap().map(last_step),
        Some(Some(5))
    );
    // Not beyond the last counter: refused, no event.
    assert!(
        !s.factors()
            .resync(pending.id, 5, NOW, &[own_event(uid, "factor.resynced")])
            .await
            .unwrap()
    );
    assert_eq!(
        audit_kinds(s).await,
        ["factor.enrollment_begun", "factor.resynced"]
    );

    // A counted failure and its lockout event.
    let key = storage::repo::second_factor_counter(uid);
    let refusing =
        |_: i64, _: Option<i64>| vec![(String::leak("k".repeat(65)) as &str, "{}".to_owned())];
    let audit = storage::repo::FailureAudit {
        subject_id: Some(uid),
        events: &refusing,
        client: Default::default(),
    };
    let lockouts = Lockouts::new(0, &[30]);
    assert!(
        s.attempts()
            .record_failure(&key, NOW, &lockouts, Some(audit))
            .await
            .is_err()
    );
    assert!(
        s.attempts().get(&key).await.unwrap().is_none(),
        "nothing counted"
    );
    let locking = |_: i64, until: Option<i64>| {
        until
            .map(|_| ("user.locked_out", r#"{"factor":"second"}"#.to_owned()))
            .into_iter()
            .collect()
    };
    let audit = storage::repo::FailureAudit {
        subject_id: Some(uid),
        events: &locking,
        client: Default::default(),
    };
    s.attempts()
        .record_failure(&key, NOW, &lockouts, Some(audit))
        .await
        .unwrap();
    assert_eq!(s.attempts().get(&key).await.unwrap().unwrap().failures, 1);
    assert_eq!(
        audit_kinds(s).await,
        [
            "factor.enrollment_begun",
            "factor.resynced",
            "user.locked_out"
        ]
    );
}

/// A WebAuthn credential belongs to one user: activating a second factor with the same
/// credential id, whoever's, is refused and activates nothing.
async fn a_webauthn_credential_is_registered_once(db: &TestDb) {
    let s = &db.storage;
    let alice = user(s, "alice-key@example.com").await;
    let mallory = user(s, "mallory-key@example.com").await;
    let credential_id: &[u8] = b"the same credential id";
    let activate = |owner: Uuid| async move {
        let pending = s
            .factors()
            .create_webauthn_pending(owner, "key", false, NOW, NOW + 600, &[])
            .await
            .unwrap();
        let with = Activation {
            credential: Some((credential_id, "{}")),
            ..Activation::default()
        };
        (
            pending.id,
            s.factors()
                .activate_with(pending.id, owner, None, with, NOW)
                .await,
        )
    };
    let (first, activated) = activate(alice).await;
    activated.unwrap();
    let (second, refused) = activate(mallory).await;
    assert!(
        matches!(refused, Err(StorageError::Conflict("credential"))),
        "{refused:?}"
    );
    let status = |id| async move { s.factors().get(id).await.unwrap().map(|f| f.status) };
    assert_eq!(status(first).await, Some(FactorStatus::Active));
    assert_eq!(
        status(second).await,
        Some(FactorStatus::Pending),
        "nothing activated"
    );
    let found = s.factors().by_credential_id(credential_id).await.unwrap();
    assert_eq!(found.map(|f| f.user_id), Some(alice));
}

/// A code's acceptance where it cannot run on the calling thread (a database in memory, or a
/// file busy): the same statements in a transaction on the pool, with the same outcomes.
mod on_the_pool {
    use super::common::TestDb;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_code_is_accepted_with_its_raise_and_event_or_not_at_all() {
        let db = TestDb::sqlite_in_memory().await;
        super::a_code_is_accepted_with_its_raise_and_event_or_not_at_all(&db).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_step_is_not_accepted_under_a_lockout() {
        let db = TestDb::sqlite_in_memory().await;
        super::a_step_is_not_accepted_under_a_lockout(&db).await;
    }
}

both!(
    a_code_is_accepted_with_its_raise_and_event_or_not_at_all,
    a_webauthn_credential_is_registered_once,
    begun_enrollments_resyncs_and_lockouts_commit_with_their_events,
    a_new_factor_replaces_an_old_one_in_one_transaction,
    a_step_is_not_accepted_under_a_lockout,
    a_user_comes_with_their_factor_summary_and_organizations,
    active_factors_come_with_the_failure_counter,
    rotation_reports_a_bad_row_and_goes_past_it,
    activation_never_lowers_the_hotp_baseline,
    seeds_are_sealed_and_bound_to_their_row,
    activation_and_recovery_codes_are_one_transaction,
    a_step_is_accepted_once_in_order,
    of_32_concurrent_callers_with_one_step_exactly_one_wins,
    removal_and_reset,
    key_rotation_reseals_and_resumes_after_an_interruption,
    sms_factors_store_e164_numbers,
);
