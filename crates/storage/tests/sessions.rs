//! Sessions and the audit log on both engines.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test bodies may panic: that is a failed test"
)]

mod common;

use common::{NOW, TestDb, race};
use sea_orm::EntityTrait;
use storage::entity::enums::SsoMode;
use storage::entity::session;
use storage::repo::{AuditFilter, Lockouts, NewAuditEvent, NewSession, second_factor_counter};
use storage::{Storage, Uuid};

async fn user(storage: &Storage, email: &str) -> Uuid {
    storage.users().create(email, None, NOW).await.unwrap().id
}

fn new(user_id: Uuid, org_id: Option<Uuid>, assurance: i16) -> NewSession<'static> {
    NewSession {
        user_id,
        org_id,
        assurance,
        now: NOW,
        idle_ttl: 600,
        absolute_ttl: 3_600,
        client: Default::default(),
        trusted_device_id: None,
    }
}

async fn sessions_expire_touch_and_revoke(db: &TestDb) {
    let s = &db.storage;
    let uid = user(s, "a@example.com").await;
    let created = s
        .sessions()
        .create("tok-a", new(uid, None, 1))
        .await
        .unwrap();
    let stored = session::Entity::find_by_id(created.id)
        .one(s.db())
        .await
        .unwrap()
        .unwrap();
    let expected = s
        .hasher()
        .hash(storage::crypto::HashPurpose::SessionToken, &[b"tok-a"]);
    assert_eq!(
        stored.token_hash,
        expected.0.to_vec(),
        "only the keyed hash is stored"
    );
    assert_eq!(
        s.sessions()
            .find_valid("tok-a", NOW)
            .await
            .unwrap()
            .unwrap()
            .id,
        created.id
    );
    assert!(
        s.sessions()
            .find_valid("tok-b", NOW)
            .await
            .unwrap()
            .is_none()
    );
    // Idle expiry, pushed by use but never past the absolute expiry.
    assert!(
        s.sessions()
            .find_valid("tok-a", NOW + 600)
            .await
            .unwrap()
            .is_none()
    );
    s.sessions()
        .touch(created.id, NOW + 500, 600)
        .await
        .unwrap();
    assert!(
        s.sessions()
            .find_valid("tok-a", NOW + 1_000)
            .await
            .unwrap()
            .is_some()
    );
    // Used every 500 s, it lives until its absolute expiry and no longer.
    for at in (1_000..=3_500).step_by(500) {
        s.sessions().touch(created.id, NOW + at, 600).await.unwrap();
    }
    let row = s
        .sessions()
        .find_valid("tok-a", NOW + 3_550)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.idle_expires_at, NOW + 3_600);
    assert!(
        s.sessions()
            .find_valid("tok-a", NOW + 3_600)
            .await
            .unwrap()
            .is_none(),
        "absolute expiry"
    );
    // An expired session is never revived by use.
    let err = s
        .sessions()
        .touch(created.id, NOW + 3_700, 600)
        .await
        .unwrap_err();
    assert!(
        matches!(err, storage::StorageError::NotFound("live session")),
        "{err:?}"
    );
    assert!(
        !s.sessions()
            .step_up(created.id, true, NOW + 3_700, &[])
            .await
            .unwrap()
    );
    // Step-up and revocation.
    let b = s
        .sessions()
        .create("tok-b", new(uid, None, 1))
        .await
        .unwrap();
    assert!(s.sessions().step_up(b.id, true, NOW, &[]).await.unwrap());
    assert_eq!(
        s.sessions()
            .find_valid("tok-b", NOW)
            .await
            .unwrap()
            .unwrap()
            .assurance,
        2
    );
    // An event the log refuses leaves the session live; the revocation commits with its
    // event, and a second one records nothing.
    let event = |kind| NewAuditEvent {
        occurred_at: NOW,
        org_id: None,
        actor_id: Some(uid),
        subject_id: Some(uid),
        kind,
        details: "{}",
        client: Default::default(),
    };
    let revoked_events = || async {
        let filter = AuditFilter {
            kinds: vec!["session.revoked".to_owned()],
            ..AuditFilter::default()
        };
        s.audit().list(&filter, None, 10).await.unwrap().items.len()
    };
    let refused = s.sessions().revoke(b.id, NOW, &[event("")]).await;
    assert!(
        matches!(
            refused,
            Err(storage::StorageError::Invalid { field: "kind", .. })
        ),
        "{refused:?}"
    );
    assert!(
        s.sessions()
            .find_valid("tok-b", NOW)
            .await
            .unwrap()
            .is_some()
    );
    let revoked = [event("session.revoked")];
    assert!(s.sessions().revoke(b.id, NOW, &revoked).await.unwrap());
    assert_eq!(revoked_events().await, 1);
    assert!(!s.sessions().revoke(b.id, NOW, &revoked).await.unwrap());
    assert_eq!(revoked_events().await, 1, "recorded once");
    assert!(
        s.sessions()
            .find_valid("tok-b", NOW)
            .await
            .unwrap()
            .is_none()
    );
    let err = s
        .sessions()
        .create(
            "tok-c",
            NewSession {
                assurance: 3,
                ..new(uid, None, 1)
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            storage::StorageError::Invalid {
                field: "assurance",
                ..
            }
        ),
        "{err:?}"
    );
}

async fn revoking_all_of_a_user_or_an_org_below_a_level(db: &TestDb) {
    let s = &db.storage;
    let org = s.organizations().create("ACME", NOW).await.unwrap().id;
    let other_org = s.organizations().create("Other", NOW).await.unwrap().id;
    let (u1, u2) = (
        user(s, "b@example.com").await,
        user(s, "c@example.com").await,
    );
    // u1 is a member of `org`; u2 is not.
    s.memberships()
        .add(
            org,
            u1,
            storage::entity::enums::Role::Member,
            NOW,
            storage::repo::AuditOf::by_caller("member.added"),
        )
        .await
        .unwrap();
    for (token, uid, org, level) in [
        ("s1", u1, Some(org), 1),
        ("s2", u1, Some(org), 2),
        ("s3", u2, Some(org), 1),
        ("s4", u2, Some(other_org), 1),
        ("s5", u2, None, 1),
        ("s6", u1, None, 1),
        ("s7", u1, Some(other_org), 1),
    ] {
        s.sessions()
            .create(token, new(uid, org, level))
            .await
            .unwrap();
    }
    // The org's level-1 sessions, and its member's session naming no organization.
    assert_eq!(s.sessions().revoke_org_below(org, 2, NOW).await.unwrap(), 3);
    let live =
        |t: &'static str| async move { s.sessions().find_valid(t, NOW).await.unwrap().is_some() };
    for (token, expected) in [
        ("s1", false),
        ("s2", true),
        ("s3", false),
        ("s4", true),
        ("s5", true),
        ("s6", false),
        ("s7", true),
    ] {
        assert_eq!(live(token).await, expected, "{token}");
    }
    assert_eq!(s.sessions().revoke_all_of_user(u2, NOW).await.unwrap(), 2);
    assert!(!live("s4").await && !live("s5").await && live("s2").await);
}

/// A user's active sessions newest first, page by page, of one organization when asked; and
/// the revocation of all but one, with its event in the same transaction.
async fn listing_and_revoking_the_other_sessions(db: &TestDb) {
    let s = &db.storage;
    let uid = user(s, "l@example.com").await;
    let other_user = user(s, "m@example.com").await;
    let org = s.organizations().create("ACME", NOW).await.unwrap().id;
    let sessions = s.sessions();
    let mut made = Vec::new();
    for (i, org_id) in [None, Some(org), Some(org), None].into_iter().enumerate() {
        made.push(
            sessions
                .create(&format!("l-{i}"), new(uid, org_id, 1))
                .await
                .unwrap(),
        );
    }
    sessions
        .create("m-0", new(other_user, None, 1))
        .await
        .unwrap();
    let revoked = sessions
        .create("l-revoked", new(uid, None, 1))
        .await
        .unwrap();
    sessions.revoke(revoked.id, NOW, &[]).await.unwrap();
    let newest_first: Vec<Uuid> = made.iter().rev().map(|m| m.id).collect();
    let first = sessions.list_active(uid, None, NOW, None, 3).await.unwrap();
    let ids = |items: &[session::Model]| items.iter().map(|m| m.id).collect::<Vec<_>>();
    assert_eq!(
        ids(&first.items),
        newest_first[..3],
        "newest first, revoked left out"
    );
    let second = sessions
        .list_active(uid, None, NOW, first.next, 3)
        .await
        .unwrap();
    assert_eq!(ids(&second.items), newest_first[3..]);
    assert_eq!(second.next, None);
    let of_org = sessions
        .list_active(uid, Some(org), NOW, None, 10)
        .await
        .unwrap();
    assert_eq!(ids(&of_org.items), [made[2].id, made[1].id]);
    let expired = sessions
        .list_active(uid, None, NOW + 601, None, 10)
        .await
        .unwrap();
    assert!(expired.items.is_empty(), "idle expiry passed");

    let kept = made[1].id;
    let count = sessions
        .revoke_others(uid, kept, NOW, |details| NewAuditEvent {
            occurred_at: NOW,
            org_id: Some(org),
            actor_id: Some(uid),
            subject_id: Some(uid),
            kind: "session.others_revoked",
            details,
            client: Default::default(),
        })
        .await
        .unwrap();
    assert_eq!(count, 3);
    let left = sessions
        .list_active(uid, None, NOW, None, 10)
        .await
        .unwrap();
    assert_eq!(ids(&left.items), [kept]);
    assert!(
        sessions.find_valid("m-0", NOW).await.unwrap().is_some(),
        "another user's stays"
    );
    let events = s.audit().list(&AuditFilter::default(), None, 10).await;
    let events = events.unwrap().items;
    let event = events
        .iter()
        .find(|e| e.kind == "session.others_revoked")
        .unwrap();
    assert_eq!(event.details, r#"{"sessions_revoked": 3}"#);
}

async fn the_audit_log_filters_and_pages(db: &TestDb) {
    let s = &db.storage;
    let (org_a, org_b) = (Uuid::now_v7(), Uuid::now_v7());
    let (alice, bob) = (Uuid::now_v7(), Uuid::now_v7());
    for i in 0..25i64 {
        let (org, actor, kind) = match i % 3 {
            0 => (org_a, alice, "factor.enrolled"),
            1 => (org_a, bob, "factor.removed"),
            _ => (org_b, alice, "policy.updated"),
        };
        s.audit()
            .append(NewAuditEvent {
                occurred_at: NOW + i,
                org_id: Some(org),
                actor_id: Some(actor),
                subject_id: Some(bob),
                kind,
                details: r#"{"note":"test"}"#,
                client: Default::default(),
            })
            .await
            .unwrap();
    }
    // All of org A, newest first, in pages of 4 that neither overlap nor skip.
    let filter = AuditFilter {
        org_id: Some(org_a),
        ..AuditFilter::default()
    };
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = s.audit().list(&filter, before, 4).await.unwrap();
        seen.extend(page.items.iter().map(|e| (e.id, e.occurred_at)));
        match page.next {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    assert_eq!(seen.len(), 17);
    assert!(
        seen.windows(2).all(|w| w[0].0 > w[1].0),
        "newest first, no repeats"
    );
    // Kind, actor and time filters.
    let removed = AuditFilter {
        kinds: vec!["factor.removed".into()],
        ..filter.clone()
    };
    assert_eq!(
        s.audit()
            .list(&removed, None, 100)
            .await
            .unwrap()
            .items
            .len(),
        8
    );
    let by_alice = AuditFilter {
        actor_id: Some(alice),
        ..AuditFilter::default()
    };
    assert_eq!(
        s.audit()
            .list(&by_alice, None, 100)
            .await
            .unwrap()
            .items
            .len(),
        17
    );
    let window = AuditFilter {
        since: Some(NOW + 10),
        until: Some(NOW + 20),
        ..AuditFilter::default()
    };
    let events = s.audit().list(&window, None, 100).await.unwrap().items;
    assert_eq!(events.len(), 10);
    assert!(
        events
            .iter()
            .all(|e| (NOW + 10..NOW + 20).contains(&e.occurred_at))
    );
    let none = AuditFilter {
        subject_id: Some(alice),
        ..AuditFilter::default()
    };
    assert!(
        s.audit()
            .list(&none, None, 100)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        s.audit()
            .append(NewAuditEvent {
                occurred_at: NOW,
                org_id: None,
                actor_id: None,
                subject_id: None,
                kind: "",
                details: "{}",
                client: Default::default(),
            })
            .await
            .is_err()
    );
}

/// Events appended together are committed together, each exactly once; one whose caller
/// stops waiting is written all the same.
async fn concurrent_audit_events_are_each_written_once(db: &TestDb) {
    let s = &db.storage;
    let appended = race(s, 64, |s, i| async move {
        let details = format!(r#"{{"n":{i}}}"#);
        s.audit()
            .append(NewAuditEvent {
                occurred_at: NOW + i64::try_from(i).unwrap(),
                org_id: None,
                actor_id: None,
                subject_id: None,
                kind: "test.raced",
                details: &details,
                client: Default::default(),
            })
            .await
    })
    .await;
    assert!(appended.iter().all(Result::is_ok), "{appended:?}");
    let raced = AuditFilter {
        kinds: vec!["test.raced".to_owned()],
        ..AuditFilter::default()
    };
    let page = s.audit().list(&raced, None, 100).await.unwrap();
    let mut times: Vec<i64> = page.items.iter().map(|e| e.occurred_at).collect();
    times.sort_unstable();
    assert_eq!(times, (NOW..NOW + 64).collect::<Vec<_>>());
    for event in &page.items {
        assert_eq!(
            event.details,
            format!(r#"{{"n":{}}}"#, event.occurred_at - NOW)
        );
    }

    // Each polled once (queued, and almost always not yet written), then dropped, as a
    // cancelled RPC is.
    let audit = s.audit();
    for i in 0..10 {
        let append = audit.append(NewAuditEvent {
            occurred_at: NOW + i,
            org_id: None,
            actor_id: None,
            subject_id: None,
            kind: "test.abandoned",
            details: "{}",
            client: Default::default(),
        });
        let _ = tokio::time::timeout(std::time::Duration::ZERO, append).await;
    }
    let abandoned = AuditFilter {
        kinds: vec!["test.abandoned".to_owned()],
        ..AuditFilter::default()
    };
    let mut written = 0;
    for _ in 0..200 {
        written = s
            .audit()
            .list(&abandoned, None, 100)
            .await
            .unwrap()
            .items
            .len();
        if written == 10 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(written, 10);
}

/// A step-up's one read: the valid session, only its user's active factors (oldest first),
/// and only its user's failure counter, under the key the rest of the code counts with.
async fn a_session_is_read_with_its_users_factors_and_counter(db: &TestDb) {
    let s = &db.storage;
    let uid = user(s, "a@example.com").await;
    let other = user(s, "b@example.com").await;
    let bare = user(s, "c@example.com").await;
    let first = common::totp_factor(s, uid, true).await;
    let second = common::totp_factor(s, uid, true).await;
    common::totp_factor(s, uid, false).await;
    common::totp_factor(s, other, true).await;
    let session = s
        .sessions()
        .create("tok-f", new(uid, None, 1))
        .await
        .unwrap();
    s.sessions()
        .create("tok-bare", new(bare, None, 1))
        .await
        .unwrap();
    let lockouts = Lockouts::new(0, &[30]);
    let attempts = s.attempts();
    attempts
        .record_failure(&second_factor_counter(other), NOW, &lockouts, None)
        .await
        .unwrap();

    let read = s
        .sessions()
        .find_valid_with_factors("tok-f", NOW)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.session, session);
    let ids: Vec<Uuid> = read.factors.iter().map(|f| f.id).collect();
    assert_eq!(
        ids,
        vec![first, second],
        "active factors only, oldest first"
    );
    assert!(
        read.counter.is_none(),
        "another user's counter is not theirs"
    );

    attempts
        .record_failure(&second_factor_counter(uid), NOW, &lockouts, None)
        .await
        .unwrap();
    let read = s
        .sessions()
        .find_valid_with_factors("tok-f", NOW + 1)
        .await
        .unwrap()
        .unwrap();
    let counter = read.counter.unwrap();
    assert_eq!(counter.key, second_factor_counter(uid));
    assert_eq!(
        (counter.failures, counter.locked_until, counter.updated_at),
        (1, Some(NOW + 30), NOW)
    );
    assert_eq!(read.factors.len(), 2, "one row per factor, one counter");

    let bare = s
        .sessions()
        .find_valid_with_factors("tok-bare", NOW)
        .await
        .unwrap()
        .unwrap();
    assert!(bare.factors.is_empty() && bare.counter.is_none());

    // Invalid as find_valid says: unknown, expired, revoked.
    let sessions = s.sessions();
    assert!(
        sessions
            .find_valid_with_factors("tok-x", NOW)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        sessions
            .find_valid_with_factors("tok-f", NOW + 3_600)
            .await
            .unwrap()
            .is_none()
    );
    assert!(sessions.revoke(session.id, NOW + 2, &[]).await.unwrap());
    assert!(
        sessions
            .find_valid_with_factors("tok-f", NOW + 2)
            .await
            .unwrap()
            .is_none()
    );
}

/// Reads of many sessions at the same moment (on PostgreSQL run together as one statement
/// each time, `storage::batched`), each answered as if it ran alone: by its own token and
/// its own time, a token wanted twice answered twice.
async fn sessions_read_at_once_are_each_answered_as_alone(db: &TestDb) {
    let s = &db.storage;
    let uid = user(s, "a@example.com").await;
    let bare = user(s, "b@example.com").await;
    let first = common::totp_factor(s, uid, true).await;
    let second = common::totp_factor(s, uid, true).await;
    let counter = second_factor_counter(uid);
    s.attempts()
        .record_failure(&counter, NOW, &Lockouts::new(0, &[30]), None)
        .await
        .unwrap();
    let org = s.organizations().create("ACME", NOW).await.unwrap().id;
    let session = |token: &'static str, user: Uuid, org: Option<Uuid>, assurance: i16| async move {
        let new = new(user, org, assurance);
        s.sessions().create(token, new).await.unwrap().id
    };
    let live = session("tok-live", uid, None, 1).await;
    let other = session("tok-bare", bare, None, 1).await;
    let revoked = session("tok-gone", uid, None, 1).await;
    assert!(s.sessions().revoke(revoked, NOW, &[]).await.unwrap());
    session("tok-org-1", bare, Some(org), 1).await;
    let stepped = session("tok-org-2", bare, Some(org), 2).await;
    let policy = storage::repo::PolicyUpdate {
        mfa_required: true,
        allowed_methods: 0b001,
        sso_enabled: false,
        sso_mode: SsoMode::Exempt,
        trusted_device_days: 0,
    };
    s.organizations()
        .update_policy(org, policy, NOW)
        .await
        .unwrap();
    // The token, now, the session valid then, its factors, whether its counter comes with it.
    type Case = (&'static str, i64, Option<Uuid>, Vec<Uuid>, bool);
    let cases: [Case; 7] = [
        ("tok-live", NOW, Some(live), vec![first, second], true),
        ("tok-live", NOW + 601, None, vec![], false), // idle for longer than its 600 s
        ("tok-bare", NOW + 1, Some(other), vec![], false),
        ("tok-gone", NOW, None, vec![], false),
        ("tok-none", NOW, None, vec![], false),
        ("tok-org-1", NOW, None, vec![], false), // one factor where 2FA is required
        ("tok-org-2", NOW, Some(stepped), vec![], false),
    ];
    let valid = race(s, 42, |s, i| {
        let (token, now, ..) = cases[i % cases.len()];
        async move { s.sessions().find_valid(token, now).await.unwrap() }
    })
    .await;
    let with_factors = race(s, 42, |s, i| {
        let (token, now, ..) = cases[i % cases.len()];
        async move {
            s.sessions()
                .find_valid_with_factors(token, now)
                .await
                .unwrap()
        }
    })
    .await;
    for (i, (valid, with_factors)) in valid.into_iter().zip(with_factors).enumerate() {
        let (token, now, wanted, factors, counted) = &cases[i % cases.len()];
        assert_eq!(valid.map(|s| s.id), *wanted, "{token} at {now}");
        let read = with_factors.map(|read| {
            let ids: Vec<Uuid> = read.factors.iter().map(|f| f.id).collect();
            (read.session.id, ids, read.counter.map(|c| c.key))
        });
        let expected = wanted.map(|id| (id, factors.clone(), counted.then(|| counter.clone())));
        assert_eq!(read, expected, "{token} at {now}");
    }
}

both!(
    a_session_is_read_with_its_users_factors_and_counter,
    sessions_read_at_once_are_each_answered_as_alone,
    listing_and_revoking_the_other_sessions,
    concurrent_audit_events_are_each_written_once,
    sessions_expire_touch_and_revoke,
    revoking_all_of_a_user_or_an_org_below_a_level,
    the_audit_log_filters_and_pages,
);
