//! Users, organizations and memberships on both engines.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test bodies may panic: that is a failed test"
)]

mod common;

use common::{NOW, TestDb};
use sea_orm::EntityTrait;
use storage::entity::audit_event;
use storage::entity::enums::{Role, SsoMode};
use storage::repo::{AuditOf, PolicyUpdate};
use storage::{StorageError, Uuid};

async fn emails_are_unique_ignoring_case(db: &TestDb) {
    let users = db.storage.users();
    let alice = users
        .create("  Alice@Example.COM ", Some("$argon2id$x".into()), NOW)
        .await
        .unwrap();
    assert_eq!(alice.email, "Alice@Example.COM");
    assert_eq!(alice.email_normalized, "alice@example.com");
    let err = users
        .create("alice@example.com", None, NOW)
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::Conflict("user")), "{err:?}");
    assert_eq!(
        users
            .find_by_email("ALICE@example.com")
            .await
            .unwrap()
            .unwrap()
            .id,
        alice.id
    );
    // Debug never shows the password hash.
    assert!(!format!("{alice:?}").contains("argon2"));
}

async fn bad_input_is_refused_and_writes_nothing(db: &TestDb) {
    let users = db.storage.users();
    for bad in ["", "no-at-sign", "@example.com", "a@", "a b@example.com"] {
        let err = users.create(bad, None, NOW).await.unwrap_err();
        assert!(
            matches!(err, StorageError::Invalid { field: "email", .. }),
            "{bad:?}: {err:?}"
        );
    }
    let long = format!("{}@example.com", "a".repeat(250));
    assert!(matches!(
        users.create(&long, None, NOW).await,
        Err(StorageError::Invalid { .. })
    ));
    let orgs = db.storage.organizations();
    assert!(matches!(
        orgs.create("   ", NOW).await,
        Err(StorageError::Invalid { field: "name", .. })
    ));
    let user = users.create("b@example.com", None, NOW).await.unwrap();
    let err = db
        .storage
        .factors()
        .create_sms_pending(user.id, "phone", "0612345678", NOW, NOW + 600, &[])
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        StorageError::Invalid {
            field: "phone_number",
            ..
        }
    ));
    // Only the one valid user exists: nothing of the refused input was written.
    use sea_orm::{EntityTrait, PaginatorTrait};
    assert_eq!(
        storage::entity::user::Entity::find()
            .count(db.storage.db())
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        storage::entity::organization::Entity::find()
            .count(db.storage.db())
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        storage::entity::factor::Entity::find()
            .count(db.storage.db())
            .await
            .unwrap(),
        0
    );
}

/// A password set, with the revocation of the user's other sessions and its audit event in
/// the same transaction (none for an unknown user, none of it when the log refuses the
/// event), and the account's flags.
async fn passwords_and_flags_update(db: &TestDb) {
    let users = db.storage.users();
    let user = users.create("c@example.com", None, NOW).await.unwrap();
    assert!(user.password_hash.is_none());
    let sessions = db.storage.sessions();
    let new = storage::repo::NewSession {
        user_id: user.id,
        org_id: None,
        assurance: 1,
        now: NOW,
        idle_ttl: 600,
        absolute_ttl: 3600,
        client: Default::default(),
        trusted_device_id: None,
    };
    let kept = sessions.create("kept", new).await.unwrap();
    let other = sessions.create("other", new).await.unwrap();
    let third = sessions.create("third", new).await.unwrap();
    let live = || async {
        let mut ids: Vec<_> = db
            .storage
            .sessions()
            .list_active(user.id, None, NOW + 1, None, 10)
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|s| s.id)
            .collect();
        ids.sort();
        ids
    };
    let set = AuditOf::by_caller("password.set");
    let events = || async {
        audit_event::Entity::find()
            .all(db.storage.db())
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.kind, e.subject_id))
            .collect::<Vec<_>>()
    };
    assert!(matches!(
        users
            .set_password_hash(Uuid::now_v7(), "$argon2id$v=19$x".into(), None, set, NOW)
            .await,
        Err(StorageError::NotFound("user"))
    ));
    let refused = AuditOf {
        actor_id: None,
        kind: "",
        client: Default::default(),
    };
    assert!(matches!(
        users
            .set_password_hash(user.id, "$argon2id$v=19$x".into(), None, refused, NOW)
            .await,
        Err(StorageError::Invalid { field: "kind", .. })
    ));
    assert!(
        users
            .get(user.id)
            .await
            .unwrap()
            .unwrap()
            .password_hash
            .is_none()
    );
    assert_eq!(events().await, []);
    assert_eq!(live().await.len(), 3, "a refused event revokes nothing");
    let revoked = users
        .set_password_hash(
            user.id,
            "$argon2id$v=19$new".into(),
            Some(kept.id),
            set,
            NOW + 1,
        )
        .await
        .unwrap();
    assert_eq!(revoked, 2);
    assert_eq!(
        live().await,
        [kept.id],
        "{other:?} {third:?} end with the change"
    );
    assert_eq!(events().await, [("password.set".to_owned(), Some(user.id))]);
    let details = audit_event::Entity::find()
        .all(db.storage.db())
        .await
        .unwrap();
    assert_eq!(
        details[0].details,
        r#"{"sessions_revoked": 2, "trusted_devices_revoked": 0}"#
    );
    // Without a session to keep (a reset by the calling service), every session ends.
    users
        .set_password_hash(user.id, "$argon2id$v=19$newer".into(), None, set, NOW + 1)
        .await
        .unwrap();
    assert!(live().await.is_empty());
    users
        .set_must_reenroll(user.id, true, NOW + 2)
        .await
        .unwrap();
    let user = users.get(user.id).await.unwrap().unwrap();
    assert_eq!(user.password_hash.as_deref(), Some("$argon2id$v=19$newer"));
    assert!(user.must_reenroll);
    assert_eq!(user.updated_at, NOW + 2);
    let missing = users
        .set_must_reenroll(Uuid::now_v7(), true, NOW)
        .await
        .unwrap_err();
    assert!(matches!(missing, StorageError::NotFound("user")));
}

async fn organizations_policies_and_members(db: &TestDb) {
    let orgs = db.storage.organizations();
    let org = orgs.create("ACME", NOW).await.unwrap();
    assert!(!org.mfa_required);
    assert_eq!(
        org.allowed_methods, 0b1111,
        "every method, WebAuthn included"
    );
    let on = PolicyUpdate {
        mfa_required: true,
        allowed_methods: 0b001,
        sso_enabled: true,
        sso_mode: SsoMode::Enforce,
        trusted_device_days: 0,
    };
    let org2 = orgs.update_policy(org.id, on, NOW + 10).await.unwrap();
    assert_eq!(org2.mfa_required_since, Some(NOW + 10));
    // Still on: the date stays. Off: cleared.
    let again = orgs.update_policy(org.id, on, NOW + 20).await.unwrap();
    assert_eq!(again.mfa_required_since, Some(NOW + 10));
    let off = orgs
        .update_policy(
            org.id,
            PolicyUpdate {
                mfa_required: false,
                ..on
            },
            NOW + 30,
        )
        .await
        .unwrap();
    assert_eq!(off.mfa_required_since, None);
    assert!(matches!(
        orgs.update_policy(
            org.id,
            PolicyUpdate {
                allowed_methods: 16,
                ..on
            },
            NOW
        )
        .await,
        Err(StorageError::Invalid {
            field: "allowed_methods",
            ..
        })
    ));

    let members = db.storage.memberships();
    let mut ids = Vec::new();
    for i in 0..7 {
        let user = db
            .storage
            .users()
            .create(&format!("m{i}@example.com"), None, NOW)
            .await
            .unwrap();
        members
            .add(
                org.id,
                user.id,
                if i == 0 { Role::Owner } else { Role::Member },
                NOW,
                AuditOf::by_caller("member.added"),
            )
            .await
            .unwrap();
        ids.push(user.id);
    }
    let dup = members
        .add(
            org.id,
            ids[0],
            Role::Admin,
            NOW,
            AuditOf::by_caller("member.added"),
        )
        .await
        .unwrap_err();
    assert!(matches!(dup, StorageError::Conflict("membership")));
    // Pages of 3 cover everyone once, in order.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = members.list(org.id, cursor, 3).await.unwrap();
        assert!(page.items.len() <= 3);
        seen.extend(page.items.iter().map(|m| m.user_id));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    ids.sort();
    assert_eq!(seen, ids);
    let owner = members.get(org.id, ids[0]).await.unwrap().unwrap();
    assert_eq!(owner.role, Role::Owner);
    assert_eq!(members.of_user(ids[1]).await.unwrap().len(), 1);
}

/// The audit log's events as (kind, organization, subject, details), oldest first.
async fn events(s: &storage::Storage) -> Vec<(String, Option<Uuid>, Option<Uuid>, String)> {
    audit_event::Entity::find()
        .all(s.db())
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.kind, e.org_id, e.subject_id, e.details))
        .collect()
}

/// An organization's creation and a new member commit with the events that record them: an
/// event the log refuses, an unknown owner or a second membership leaves nothing behind.
async fn organizations_and_members_commit_with_their_events(db: &TestDb) {
    let s = &db.storage;
    let owner = s
        .users()
        .create("own@example.com", None, NOW)
        .await
        .unwrap();
    let member = s
        .users()
        .create("mem@example.com", None, NOW)
        .await
        .unwrap();
    let event = |kind| AuditOf {
        actor_id: None,
        kind,
        client: Default::default(),
    };
    let organizations = || async {
        storage::entity::organization::Entity::find()
            .all(s.db())
            .await
            .unwrap()
            .len()
    };

    let refused = s
        .organizations()
        .create_with_owner("Acme", owner.id, NOW, event(""))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, StorageError::Invalid { field: "kind", .. }),
        "{refused:?}"
    );
    let unknown = s
        .organizations()
        .create_with_owner("Acme", Uuid::now_v7(), NOW, event("organization.created"))
        .await
        .unwrap_err();
    assert!(
        matches!(unknown, StorageError::NotFound("user")),
        "{unknown:?}"
    );
    assert_eq!(organizations().await, 0, "no organization left behind");
    assert!(s.memberships().of_user(owner.id).await.unwrap().is_empty());
    assert!(events(s).await.is_empty(), "no event either");

    let org = s
        .organizations()
        .create_with_owner("Acme", owner.id, NOW, event("organization.created"))
        .await
        .unwrap();
    let created = (
        "organization.created".to_owned(),
        Some(org.id),
        Some(owner.id),
        "{}".to_owned(),
    );
    assert_eq!(events(s).await, std::slice::from_ref(&created));

    let refused = s
        .memberships()
        .add(org.id, member.id, Role::Admin, NOW, event(""))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, StorageError::Invalid { field: "kind", .. }),
        "{refused:?}"
    );
    assert_eq!(s.memberships().get(org.id, member.id).await.unwrap(), None);
    s.memberships()
        .add(org.id, member.id, Role::Admin, NOW, event("member.added"))
        .await
        .unwrap();
    let added = (
        "member.added".to_owned(),
        Some(org.id),
        Some(member.id),
        r#"{"role":"admin"}"#.to_owned(),
    );
    assert_eq!(events(s).await, [created.clone(), added.clone()]);
    // A second membership of the pair changes nothing and records nothing.
    let again = s
        .memberships()
        .add(org.id, member.id, Role::Owner, NOW, event("member.added"))
        .await
        .unwrap_err();
    assert!(
        matches!(again, StorageError::Conflict("membership")),
        "{again:?}"
    );
    let kept = s
        .memberships()
        .get(org.id, member.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept.role, Role::Admin);
    assert_eq!(events(s).await, [created, added]);
}

/// A user the API creates commits with its `user.created` event: a refused event, a bad
/// email or a taken one leaves no user and no event.
async fn a_user_commits_with_its_event(db: &TestDb) {
    let s = &db.storage;
    let created = AuditOf::by_caller("user.created");
    let refused = s
        .users()
        .create_with("new@example.com", None, NOW, AuditOf::by_caller(""))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, StorageError::Invalid { field: "kind", .. }),
        "{refused:?}"
    );
    assert_eq!(
        s.users().find_by_email("new@example.com").await.unwrap(),
        None
    );
    let bad = s
        .users()
        .create_with("not an email", None, NOW, created)
        .await
        .unwrap_err();
    assert!(
        matches!(bad, StorageError::Invalid { field: "email", .. }),
        "{bad:?}"
    );
    assert!(events(s).await.is_empty(), "nothing recorded");

    let user = s
        .users()
        .create_with("new@example.com", None, NOW, created)
        .await
        .unwrap();
    let recorded = (
        "user.created".to_owned(),
        None,
        Some(user.id),
        "{}".to_owned(),
    );
    assert_eq!(events(s).await, std::slice::from_ref(&recorded));
    let taken = s
        .users()
        .create_with("NEW@example.com", None, NOW, created)
        .await
        .unwrap_err();
    assert!(matches!(taken, StorageError::Conflict("user")), "{taken:?}");
    assert_eq!(
        events(s).await,
        [recorded],
        "the second one records nothing"
    );
}

both!(
    a_user_commits_with_its_event,
    emails_are_unique_ignoring_case,
    bad_input_is_refused_and_writes_nothing,
    passwords_and_flags_update,
    organizations_policies_and_members,
    organizations_and_members_commit_with_their_events,
);
