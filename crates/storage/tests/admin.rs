//! Administrators' changes as single transactions: a policy change with the sessions it
//! revokes and its audit event, a 2FA reset with everything it removes, and the audit log of
//! an organization with its members' account events. On both engines.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test bodies may panic: that is a failed test"
)]

mod common;

use common::{NOW, TestDb};
use storage::entity::enums::{FactorKind, Role, SsoMode};
use storage::repo::{
    AuditFilter, AuditOf, NewAuditEvent, NewSession, OtpParams, PolicyUpdate, ResetPlan,
    SessionsToRevoke,
};
use storage::{Storage, StorageError, Uuid};

async fn user(storage: &Storage, email: &str) -> Uuid {
    storage.users().create(email, None, NOW).await.unwrap().id
}

async fn session(s: &Storage, token: &str, user: Uuid, org: Option<Uuid>, assurance: i16) {
    s.sessions()
        .create(
            token,
            NewSession {
                user_id: user,
                org_id: org,
                assurance,
                now: NOW,
                idle_ttl: 600,
                absolute_ttl: 3_600,
                client: Default::default(),
                trusted_device_id: None,
            },
        )
        .await
        .unwrap();
}

async fn live(s: &Storage, token: &str) -> bool {
    s.sessions().find_valid(token, NOW).await.unwrap().is_some()
}

async fn events(s: &Storage, org: Option<Uuid>) -> Vec<storage::entity::audit_event::Model> {
    let filter = AuditFilter {
        org_id: org,
        ..AuditFilter::default()
    };
    s.audit().list(&filter, None, 1_000).await.unwrap().items
}

const REQUIRED: PolicyUpdate = PolicyUpdate {
    mfa_required: true,
    allowed_methods: 0b001,
    sso_enabled: false,
    sso_mode: SsoMode::Enforce,
    trusted_device_days: 0,
};

const ADMIN: AuditOf<'static> = AuditOf::by_caller("mfa_policy.updated");

async fn a_policy_change_revokes_and_audits_in_one_transaction(db: &TestDb) {
    let s = &db.storage;
    let owner = user(s, "owner@example.com").await;
    let member = user(s, "member@example.com").await;
    let org = s
        .organizations()
        .create_with_owner(
            "Acme",
            owner,
            NOW,
            AuditOf::by_caller("organization.created"),
        )
        .await
        .unwrap();
    s.memberships()
        .add(
            org.id,
            member,
            Role::Member,
            NOW,
            AuditOf::by_caller("member.added"),
        )
        .await
        .unwrap();
    session(s, "org-1", member, Some(org.id), 1).await;
    session(s, "org-2", owner, Some(org.id), 2).await;
    session(s, "none-1", member, None, 1).await;
    // The set-up's own events (organization.created, member.added), written with it.
    let set_up = events(s, Some(org.id)).await.len();
    assert_eq!(set_up, 2);

    // A change decided on a policy that is no longer there changes nothing.
    let mut stale = org.clone();
    stale.sso_enabled = true;
    let err = s
        .organizations()
        .change_policy(&stale, REQUIRED, Some(2), ADMIN, |_, _| "{}".into(), NOW)
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::Stale(_)), "{err:?}");
    // An audit event that cannot be written undoes the policy and the revocations.
    let bad_audit = AuditOf { kind: "", ..ADMIN };
    let err = s
        .organizations()
        .change_policy(&org, REQUIRED, Some(2), bad_audit, |_, _| "{}".into(), NOW)
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::Invalid { .. }), "{err:?}");
    // Unknown method bits are refused before anything is written.
    let err = s
        .organizations()
        .change_policy(
            &org,
            PolicyUpdate {
                allowed_methods: 0b1_0000,
                ..REQUIRED
            },
            Some(2),
            ADMIN,
            |_, _| "{}".into(),
            NOW,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::Invalid { .. }), "{err:?}");
    assert_eq!(s.organizations().get(org.id).await.unwrap().unwrap(), org);
    assert!(live(s, "org-1").await && live(s, "none-1").await);
    assert_eq!(events(s, Some(org.id)).await.len(), set_up, "no event");

    let changed = s
        .organizations()
        .change_policy(
            &org,
            REQUIRED,
            Some(2),
            AuditOf {
                actor_id: Some(owner),
                kind: "mfa_policy.updated",
                client: Default::default(),
            },
            |revoked, _| format!(r#"{{"sessions_revoked":{revoked}}}"#),
            NOW + 5,
        )
        .await
        .unwrap();
    assert_eq!(changed.sessions_revoked, 2);
    assert!(changed.organization.mfa_required);
    assert_eq!(changed.organization.mfa_required_since, Some(NOW + 5));
    assert_eq!(changed.organization.allowed_methods, 0b001);
    assert!(!live(s, "org-1").await && !live(s, "none-1").await);
    assert!(live(s, "org-2").await, "assurance 2 stays");
    // A single-factor session created after the change (a login that read the old policy)
    // is never valid while the organization requires 2FA; elsewhere it is.
    session(s, "late-1", member, Some(org.id), 1).await;
    session(s, "late-none", member, None, 1).await;
    assert!(!live(s, "late-1").await && live(s, "late-none").await);
    let logged = events(s, Some(org.id)).await;
    assert_eq!(logged.len(), set_up + 1);
    let change = logged
        .iter()
        .find(|e| e.kind == "mfa_policy.updated")
        .unwrap();
    assert_eq!(change.actor_id, Some(owner));
    assert_eq!(change.details, r#"{"sessions_revoked":2}"#);

    // The old policy is stale now; the new one is the base of the next change.
    let err = s
        .organizations()
        .change_policy(&org, REQUIRED, None, ADMIN, |_, _| "{}".into(), NOW)
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::Stale(_)), "{err:?}");
    let mut gone = changed.organization.clone();
    gone.id = Uuid::now_v7();
    let err = s
        .organizations()
        .change_policy(&gone, REQUIRED, None, ADMIN, |_, _| "{}".into(), NOW)
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::NotFound(_)), "{err:?}");
    let off = s
        .organizations()
        .change_policy(
            &changed.organization,
            PolicyUpdate {
                mfa_required: false,
                ..REQUIRED
            },
            None,
            ADMIN,
            |_, _| "{}".into(),
            NOW + 9,
        )
        .await
        .unwrap();
    assert_eq!(off.sessions_revoked, 0);
    assert_eq!(off.organization.mfa_required_since, None);
    assert!(
        live(s, "late-1").await,
        "valid again once 2FA is not required"
    );
}

async fn a_reset_removes_everything_or_nothing(db: &TestDb) {
    let s = &db.storage;
    let admin = user(s, "admin@example.com").await;
    let alice = user(s, "alice@example.com").await;
    let bob = user(s, "bob@example.com").await;
    let params = OtpParams {
        algorithm: "SHA1",
        digits: 6,
        period: Some(30),
    };
    for someone in [alice, bob] {
        let totp = s
            .factors()
            .create_otp_pending(
                someone,
                FactorKind::Totp,
                "app",
                &[7u8; 20],
                params,
                None,
                NOW,
                NOW + 600,
                &[],
            )
            .await
            .unwrap();
        s.factors()
            .activate(totp.id, someone, Some(1), Some(&["code-1", "code-2"]), NOW)
            .await
            .unwrap();
        s.factors()
            .create_sms_pending(someone, "phone", "+14155550100", NOW, NOW + 600, &[])
            .await
            .unwrap();
    }
    session(s, "alice-a", alice, None, 2).await;
    session(s, "alice-b", alice, None, 1).await;
    session(s, "bob-a", bob, None, 2).await;

    // An audit event that cannot be written leaves every factor, code and session.
    let err = s
        .factors()
        .reset(
            alice,
            ResetPlan {
                org_id: None,
                must_reenroll: true,
                revoke: SessionsToRevoke::All,
            },
            AuditOf {
                actor_id: Some(admin),
                kind: "",
                client: Default::default(),
            },
            |_| "{}".into(),
            NOW,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::Invalid { .. }), "{err:?}");
    assert_eq!(s.factors().of_user(alice, false).await.unwrap().len(), 2);
    assert_eq!(s.recovery_codes().remaining(alice).await.unwrap(), 2);
    assert!(live(s, "alice-a").await && live(s, "alice-b").await);
    assert!(!s.users().get(alice).await.unwrap().unwrap().must_reenroll);

    let reset = s
        .factors()
        .reset(
            alice,
            ResetPlan {
                org_id: None,
                must_reenroll: true,
                revoke: SessionsToRevoke::All,
            },
            AuditOf {
                actor_id: Some(admin),
                kind: "member.mfa_reset",
                client: Default::default(),
            },
            |r| format!(r#"{{"factors_removed":{}}}"#, r.factors_removed),
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(
        (
            reset.factors_removed,
            reset.recovery_codes_removed,
            reset.sessions_revoked
        ),
        (2, 2, 2)
    );
    assert!(s.factors().of_user(alice, false).await.unwrap().is_empty());
    assert_eq!(s.recovery_codes().remaining(alice).await.unwrap(), 0);
    assert!(!live(s, "alice-a").await && !live(s, "alice-b").await);
    assert!(s.users().get(alice).await.unwrap().unwrap().must_reenroll);
    let logged = events(s, None).await;
    assert_eq!(logged.len(), 1);
    assert_eq!(
        (logged[0].actor_id, logged[0].subject_id),
        (Some(admin), Some(alice))
    );
    assert_eq!(logged[0].details, r#"{"factors_removed":2}"#);
    // Nobody else was touched.
    assert_eq!(s.factors().of_user(bob, false).await.unwrap().len(), 2);
    assert!(live(s, "bob-a").await);

    // The own reset keeps the session it came from and sets nothing else.
    session(s, "bob-b", bob, None, 2).await;
    let keep = s
        .sessions()
        .find_valid("bob-b", NOW)
        .await
        .unwrap()
        .unwrap();
    let own = s
        .factors()
        .reset(
            bob,
            ResetPlan {
                org_id: None,
                must_reenroll: false,
                revoke: SessionsToRevoke::AllExcept(keep.id),
            },
            AuditOf {
                actor_id: Some(bob),
                kind: "mfa.reset",
                client: Default::default(),
            },
            |_| "{}".into(),
            NOW,
        )
        .await
        .unwrap();
    assert_eq!((own.factors_removed, own.sessions_revoked), (2, 1));
    assert!(live(s, "bob-b").await && !live(s, "bob-a").await);
    assert!(!s.users().get(bob).await.unwrap().unwrap().must_reenroll);

    let err = s
        .factors()
        .reset(
            Uuid::now_v7(),
            ResetPlan {
                org_id: None,
                must_reenroll: true,
                revoke: SessionsToRevoke::All,
            },
            ADMIN,
            |_| "{}".into(),
            NOW,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::NotFound(_)), "{err:?}");
}

async fn an_organizations_log_includes_its_members_account_events(db: &TestDb) {
    let s = &db.storage;
    let owner = user(s, "owner@example.com").await;
    let outsider = user(s, "outsider@example.com").await;
    let org = s
        .organizations()
        .create_with_owner(
            "Acme",
            owner,
            NOW,
            AuditOf::by_caller("organization.created"),
        )
        .await
        .unwrap();
    let other = s
        .organizations()
        .create_with_owner(
            "Other",
            outsider,
            NOW,
            AuditOf::by_caller("organization.created"),
        )
        .await
        .unwrap();
    for (org_id, subject, kind) in [
        (Some(org.id), Some(owner), "factor.enrolled"),
        (None, Some(owner), "user.locked_out"),
        (None, Some(outsider), "user.locked_out"),
        (Some(other.id), Some(owner), "login.succeeded"),
        (None, None, "system.note"),
    ] {
        s.audit()
            .append(NewAuditEvent {
                occurred_at: NOW,
                org_id,
                actor_id: None,
                subject_id: subject,
                kind,
                details: "{}",
                client: Default::default(),
            })
            .await
            .unwrap();
    }
    let with_members = AuditFilter {
        org_id: Some(org.id),
        with_members_account_events: true,
        ..AuditFilter::default()
    };
    let mut kinds: Vec<String> = s
        .audit()
        .list(&with_members, None, 100)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|e| e.kind)
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        ["factor.enrolled", "organization.created", "user.locked_out"]
    );
    // Without the flag, only the organization's own events.
    let own = AuditFilter {
        with_members_account_events: false,
        ..with_members
    };
    assert_eq!(
        s.audit().list(&own, None, 100).await.unwrap().items.len(),
        2
    );
}

/// A reset decides on the member's roles inside its transaction: a role granted before it
/// (even after the caller read the roles) is what `decide` sees, and on PostgreSQL a role
/// being granted while the reset runs holds the reset until it commits, then is seen.
async fn a_reset_decides_on_the_roles_inside_its_transaction(db: &TestDb) {
    let s = &db.storage;
    let member = user(s, "member@example.com").await;
    let here = s.organizations().create("Here", NOW).await.unwrap();
    let there = s.organizations().create("There", NOW).await.unwrap();
    s.memberships()
        .add(
            here.id,
            member,
            Role::Member,
            NOW,
            AuditOf::by_caller("member.added"),
        )
        .await
        .unwrap();
    let plan = ResetPlan {
        org_id: Some(here.id),
        must_reenroll: true,
        revoke: SessionsToRevoke::All,
    };
    // Refuses when the member administers another organization.
    let decide = |memberships: &[storage::entity::membership::Model]| {
        if memberships
            .iter()
            .any(|m| m.org_id != here.id && m.role != Role::Member)
        {
            Err("ADMINISTERS_ELSEWHERE")
        } else {
            Ok(plan)
        }
    };
    let reset = || async {
        s.factors()
            .reset_if(
                member,
                decide,
                AuditOf::by_caller("member.mfa_reset"),
                |_| "{}".to_owned(),
                NOW,
            )
            .await
            .unwrap()
    };
    assert!(reset().await.is_ok());
    if db.backend == storage::testing::Backend::Postgres {
        use sea_orm::{ConnectionTrait as _, TransactionTrait as _};
        // Another replica grants the member a role elsewhere, and has not committed yet.
        let granting = s.db().begin().await.unwrap();
        granting
            .execute_unprepared(&format!(
                "INSERT INTO memberships (org_id, user_id, role, created_at) \
                 VALUES ('{}', '{member}', 'admin', {NOW})",
                there.id
            ))
            .await
            .unwrap();
        let racing = tokio::spawn({
            let s = s.clone();
            async move {
                s.factors()
                    .reset_if(
                        member,
                        |memberships: &[storage::entity::membership::Model]| {
                            if memberships.iter().any(|m| m.role != Role::Member) {
                                Err("ADMINISTERS_ELSEWHERE")
                            } else {
                                Ok(plan)
                            }
                        },
                        AuditOf::by_caller("member.mfa_reset"),
                        |_| "{}".to_owned(),
                        NOW,
                    )
                    .await
                    .unwrap()
            }
        });
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(!racing.is_finished(), "the reset waits for the grant");
        granting.commit().await.unwrap();
        assert_eq!(racing.await.unwrap(), Err("ADMINISTERS_ELSEWHERE"));
    } else {
        // SQLite writes one at a time: a grant committed before the reset is seen by it.
        s.memberships()
            .add(
                there.id,
                member,
                Role::Admin,
                NOW,
                AuditOf::by_caller("member.added"),
            )
            .await
            .unwrap();
        assert_eq!(reset().await, Err("ADMINISTERS_ELSEWHERE"));
    }
}

both!(
    a_reset_decides_on_the_roles_inside_its_transaction,
    a_policy_change_revokes_and_audits_in_one_transaction,
    a_reset_removes_everything_or_nothing,
    an_organizations_log_includes_its_members_account_events,
);
