//! Every combination of role, organization policy, SSO mode, login kind and factor state,
//! checked against the invariants the product promises. A login's outcome does not take the
//! role (roles matter to administration, checked below with every policy pair).

#![allow(
    clippy::unwrap_used,
    reason = "test helpers may panic: that is a failed test"
)]

use policy::{
    AccountStatus, Actor, AdminRefusal, Assurance, Denial, EnrollmentReason, EnumSet, FactorKind,
    FactorRefusal, Factors, LoginKind, LoginOutcome, Method, NoSecondFactorReason, OrgPolicy,
    Proof, Role, SsoMode, UserState, login_outcome, remove_factor, reset_member_mfa,
    update_mfa_policy,
};

const NOW: u64 = 1_700_000_000;
const ROLES: [Role; 3] = [Role::Owner, Role::Admin, Role::Member];
const KINDS: [FactorKind; 3] = [FactorKind::Totp, FactorKind::Hotp, FactorKind::Sms];

fn all_policies() -> Vec<OrgPolicy> {
    let mut out = Vec::new();
    for mfa_required in [false, true] {
        for allowed_bits in 0u8..8 {
            let allowed_methods: EnumSet<FactorKind> = KINDS
                .into_iter()
                .enumerate()
                .filter(|(i, _)| allowed_bits & (1 << i) != 0)
                .map(|(_, k)| k)
                .collect();
            for sso_enabled in [false, true] {
                for sso_mode in [SsoMode::Exempt, SsoMode::Enforce] {
                    out.push(OrgPolicy {
                        mfa_required,
                        allowed_methods,
                        sso_enabled,
                        sso_mode,
                    });
                }
            }
        }
    }
    out
}

fn all_factors() -> Vec<Factors> {
    let mut out = Vec::new();
    for totp in 0..=2 {
        for hotp in 0..=1 {
            for sms in 0..=1 {
                out.push(Factors { totp, hotp, sms });
            }
        }
    }
    out
}

fn all_users() -> Vec<UserState> {
    let mut out = Vec::new();
    for status in [AccountStatus::Active, AccountStatus::Disabled] {
        for has_password in [false, true] {
            for factors in all_factors() {
                for recovery_codes_left in [0, 1, 10] {
                    for must_reenroll in [false, true] {
                        for locked_until in [None, Some(NOW - 1), Some(NOW), Some(NOW + 60)] {
                            out.push(UserState {
                                status,
                                has_password,
                                factors,
                                recovery_codes_left,
                                must_reenroll,
                                locked_until,
                            });
                        }
                    }
                }
            }
        }
    }
    out
}

/// The denial the rules promise, if any, in the order they are checked.
fn expected_denial(org: &OrgPolicy, user: &UserState, kind: LoginKind) -> Option<Denial> {
    if user.status == AccountStatus::Disabled {
        return Some(Denial::AccountDisabled);
    }
    if let Some(until) = user.locked_until.filter(|&u| u > NOW) {
        return Some(Denial::LockedOut { until });
    }
    match kind {
        LoginKind::Password if !user.has_password => Some(Denial::NoPassword),
        LoginKind::Sso if !org.sso_enabled => Some(Denial::SsoNotEnabled),
        _ => None,
    }
}

#[test]
fn login_outcomes_keep_every_invariant() {
    let policies = all_policies();
    let users = all_users();
    let mut checked = 0u64;
    for org in &policies {
        for user in &users {
            for kind in [LoginKind::Password, LoginKind::Sso] {
                let outcome = login_outcome(org, user, kind, NOW);
                let ctx = format!("{org:?} {user:?} {kind:?} => {outcome:?}");
                let exempt =
                    kind == LoginKind::Sso && org.sso_enabled && org.sso_mode == SsoMode::Exempt;

                // Denials are exactly the listed reasons.
                match expected_denial(org, user, kind) {
                    Some(denial) => {
                        assert_eq!(outcome, LoginOutcome::Denied(denial), "{ctx}");
                        checked += 1;
                        continue;
                    }
                    None => assert!(!matches!(outcome, LoginOutcome::Denied(_)), "{ctx}"),
                }

                // Org requires 2FA and the login is not SSO-exempt: never a session without
                // a second factor.
                if org.mfa_required && !exempt {
                    assert!(
                        !matches!(outcome, LoginOutcome::Authenticated { .. }),
                        "{ctx}"
                    );
                }
                // An exempt SSO login is always authenticated, with that reason.
                if exempt {
                    assert_eq!(
                        outcome,
                        LoginOutcome::Authenticated {
                            assurance: Assurance::One,
                            reason: NoSecondFactorReason::SsoExempt
                        },
                        "{ctx}"
                    );
                }
                // A pending re-enrollment always means enrollment (unless exempt).
                if user.must_reenroll && !exempt {
                    assert!(
                        matches!(
                            outcome,
                            LoginOutcome::EnrollmentRequired {
                                reason: EnrollmentReason::ReenrollmentPending,
                                ..
                            }
                        ),
                        "{ctx}"
                    );
                }

                let counted = if org.mfa_required {
                    user.factors.kinds() & org.allowed_methods
                } else {
                    user.factors.kinds()
                };
                match outcome {
                    LoginOutcome::Authenticated { assurance, reason } => {
                        assert_eq!(assurance, Assurance::One, "{ctx}");
                        if reason == NoSecondFactorReason::NotEnrolled {
                            // Only someone who has not set up 2FA, where it is not required.
                            assert!(!org.mfa_required && user.factors.total() == 0, "{ctx}");
                            assert!(!user.must_reenroll, "{ctx}");
                        }
                    }
                    LoginOutcome::SecondFactorRequired { methods } => {
                        assert!(!user.must_reenroll, "{ctx}");
                        let factor_methods: EnumSet<Method> =
                            counted.iter().map(Method::from).collect();
                        // Exactly the factors that count, plus recovery codes if any are left.
                        assert!(!factor_methods.is_empty(), "{ctx}");
                        let mut expected = factor_methods;
                        if user.recovery_codes_left > 0 {
                            expected |= Method::RecoveryCode;
                        }
                        assert_eq!(methods, expected, "{ctx}");
                    }
                    LoginOutcome::EnrollmentRequired { methods, reason } => {
                        assert!(!methods.is_empty(), "{ctx}");
                        if !org.allowed_methods.is_empty() {
                            assert_eq!(methods, org.allowed_methods, "{ctx}");
                        }
                        match reason {
                            EnrollmentReason::ReenrollmentPending => {
                                assert!(user.must_reenroll, "{ctx}");
                            }
                            EnrollmentReason::OrganizationRequires => {
                                assert!(org.mfa_required && counted.is_empty(), "{ctx}");
                                assert!(!user.must_reenroll, "{ctx}");
                            }
                        }
                    }
                    LoginOutcome::Denied(_) => unreachable!("handled above"),
                }
                // Someone with a factor that counts, and nothing pending, is always asked for it.
                if !exempt && !user.must_reenroll && !counted.is_empty() {
                    assert!(
                        matches!(outcome, LoginOutcome::SecondFactorRequired { .. }),
                        "{ctx}"
                    );
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, (policies.len() * users.len() * 2) as u64);
    assert!(
        checked > 100_000,
        "the space is really enumerated: {checked}"
    );
}

#[test]
fn policy_changes_keep_every_invariant() {
    let policies = all_policies();
    let mut accepted = 0;
    for role in ROLES {
        for has_password in [false, true] {
            for password_confirmed in [false, true] {
                let actor = Actor {
                    role,
                    has_password,
                    password_confirmed,
                };
                for current in &policies {
                    for new in &policies {
                        let result = update_mfa_policy(&actor, current, new);
                        let ctx = format!("{actor:?} {current:?} -> {new:?} => {result:?}");
                        // A member can never change the policy.
                        if role == Role::Member {
                            assert_eq!(result, Err(AdminRefusal::NotAnAdmin), "{ctx}");
                            continue;
                        }
                        if !has_password {
                            assert_eq!(result, Err(AdminRefusal::PasswordNotSet), "{ctx}");
                            continue;
                        }
                        if !password_confirmed {
                            assert_eq!(
                                result,
                                Err(AdminRefusal::PasswordConfirmationRequired),
                                "{ctx}"
                            );
                            continue;
                        }
                        let exempting = new.sso_enabled && new.sso_mode == SsoMode::Exempt;
                        match result {
                            Ok(change) => {
                                accepted += 1;
                                // Never 2FA required while SSO exempts, never without a method.
                                assert!(!(new.mfa_required && exempting), "{ctx}");
                                assert!(
                                    !(new.mfa_required && new.allowed_methods.is_empty()),
                                    "{ctx}"
                                );
                                let on = new.mfa_required && !current.mfa_required;
                                assert_eq!(change.enforcement_turned_on, on, "{ctx}");
                                assert_eq!(
                                    change.revoke_sessions_below,
                                    on.then_some(Assurance::Two),
                                    "{ctx}"
                                );
                            }
                            Err(AdminRefusal::SsoExempts) => {
                                assert!(new.mfa_required && exempting, "{ctx}");
                            }
                            Err(AdminRefusal::NoMethodAllowed) => {
                                assert!(
                                    new.mfa_required && new.allowed_methods.is_empty(),
                                    "{ctx}"
                                );
                            }
                            Err(other) => panic!("unexpected {other:?}: {ctx}"),
                        }
                    }
                }
            }
        }
    }
    assert!(accepted > 0);
}

#[test]
fn member_resets_follow_the_role_rules() {
    for actor in ROLES {
        for target in ROLES {
            for is_self in [false, true] {
                let result = reset_member_mfa(actor, target, is_self);
                let expected = match (actor, target, is_self) {
                    (Role::Member, _, _) => Err(AdminRefusal::NotAnAdmin),
                    (_, _, true) => Err(AdminRefusal::CannotResetSelf),
                    (Role::Admin, Role::Owner, _) => Err(AdminRefusal::CannotResetOwner),
                    _ => Ok(()),
                };
                assert_eq!(
                    result, expected,
                    "{actor:?} resets {target:?} (self: {is_self})"
                );
            }
        }
    }
}

#[test]
fn factor_removal_keeps_every_invariant() {
    let policies = all_policies();
    // Every single organization, none, and pairs of the policies that differ in what counts.
    let mut org_lists: Vec<Vec<OrgPolicy>> = vec![vec![]];
    org_lists.extend(policies.iter().map(|p| vec![*p]));
    let distinct: Vec<OrgPolicy> = policies
        .iter()
        .filter(|p| !p.sso_enabled && p.sso_mode == SsoMode::Exempt)
        .copied()
        .collect();
    for a in &distinct {
        for b in &distinct {
            org_lists.push(vec![*a, *b]);
        }
    }
    let mut outcomes = [0u32; 4];
    for factors in all_factors() {
        for recovery_codes_left in [0, 3] {
            let user = UserState {
                has_password: true,
                factors,
                recovery_codes_left,
                ..UserState::default()
            };
            for kind in KINDS {
                for proof in [Proof::None, Proof::FactorCode, Proof::RecoveryCode] {
                    for orgs in &org_lists {
                        let result = remove_factor(&user, kind, proof, orgs);
                        let ctx = format!("{user:?} {kind:?} {proof:?} {orgs:?} => {result:?}");
                        let after = factors.without_one(kind);
                        match result {
                            Ok(removal) => {
                                outcomes[0] += 1;
                                assert!(proof.is_present(), "never without proof: {ctx}");
                                assert!(factors.count(kind) > 0, "{ctx}");
                                assert_eq!(
                                    removal.delete_recovery_codes,
                                    after.total() == 0,
                                    "{ctx}"
                                );
                                // No requiring organization loses the user's last factor it allows.
                                for org in orgs.iter().filter(|o| o.mfa_required) {
                                    let before = factors.count_in(org.allowed_methods);
                                    assert!(
                                        before == 0 || after.count_in(org.allowed_methods) > 0,
                                        "{ctx}"
                                    );
                                }
                            }
                            Err(FactorRefusal::NoSuchFactor) => {
                                outcomes[1] += 1;
                                assert_eq!(factors.count(kind), 0, "{ctx}");
                            }
                            Err(FactorRefusal::ProofRequired) => {
                                outcomes[2] += 1;
                                assert!(!proof.is_present(), "{ctx}");
                            }
                            Err(FactorRefusal::LastRequiredFactor) => {
                                outcomes[3] += 1;
                                assert!(
                                    orgs.iter().any(|o| o.mfa_required
                                        && factors.count_in(o.allowed_methods) > 0
                                        && after.count_in(o.allowed_methods) == 0),
                                    "{ctx}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(
        outcomes.iter().all(|&n| n > 0),
        "every outcome is reached: {outcomes:?}"
    );
}
