//! The inputs of every decision: roles, methods, organization policy, user state.

use enumset::{EnumSet, EnumSetType};

/// A member's role in an organization.
#[derive(Debug, EnumSetType, Hash)]
pub enum Role {
    /// Created the organization or was made owner; can do everything, including reset admins.
    Owner,
    /// Manages members and the 2FA policy; cannot reset an owner.
    Admin,
    /// An ordinary member.
    Member,
}

impl Role {
    /// Whether this role may administer the organization (its policy and its members).
    pub const fn is_admin(self) -> bool {
        matches!(self, Self::Owner | Self::Admin)
    }
}

/// A kind of second factor a user can enroll.
#[derive(Debug, EnumSetType, Hash)]
pub enum FactorKind {
    /// An authenticator app (RFC 6238).
    Totp,
    /// A counter-based token (RFC 4226), such as a hardware OATH token.
    Hotp,
    /// A phone that receives codes by SMS.
    Sms,
    /// A passkey or security key (WebAuthn).
    WebAuthn,
}

/// A way to pass the second-factor step of a login.
#[derive(Debug, EnumSetType, Hash)]
pub enum Method {
    /// A code from an authenticator app.
    Totp,
    /// A code from a counter-based token.
    Hotp,
    /// A code received by SMS.
    Sms,
    /// One of the user's single-use recovery codes.
    RecoveryCode,
    /// A passkey or security key (WebAuthn).
    WebAuthn,
}

impl From<FactorKind> for Method {
    fn from(kind: FactorKind) -> Self {
        match kind {
            FactorKind::Totp => Self::Totp,
            FactorKind::Hotp => Self::Hotp,
            FactorKind::Sms => Self::Sms,
            FactorKind::WebAuthn => Self::WebAuthn,
        }
    }
}

/// How SSO logins relate to 2FA in an organization.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SsoMode {
    /// SSO logins skip Tollgate's second factor (the identity provider is trusted to have
    /// done it). Org-wide 2FA cannot be turned on while SSO is enabled in this mode.
    #[default]
    Exempt,
    /// 2FA is layered on top of SSO: an SSO login still needs a second factor when one is
    /// required.
    Enforce,
}

/// An organization's 2FA policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OrgPolicy {
    /// Every member must use a second factor.
    pub mfa_required: bool,
    /// The factor kinds that satisfy the requirement and that members may enroll. Factors
    /// of other kinds do not count while 2FA is required.
    pub allowed_methods: EnumSet<FactorKind>,
    /// Members may log in through the organization's identity provider.
    pub sso_enabled: bool,
    /// Whether SSO logins skip 2FA or not.
    pub sso_mode: SsoMode,
}

impl Default for OrgPolicy {
    /// No requirement, every method allowed, SSO off.
    fn default() -> Self {
        Self {
            mfa_required: false,
            allowed_methods: EnumSet::all(),
            sso_enabled: false,
            sso_mode: SsoMode::Exempt,
        }
    }
}

impl OrgPolicy {
    /// Whether a login of this kind is exempt from 2FA in this organization.
    pub fn exempts(&self, kind: LoginKind) -> bool {
        kind == LoginKind::Sso && self.sso_enabled && self.sso_mode == SsoMode::Exempt
    }
}

/// How many active factors of each kind a user has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Factors {
    /// Active authenticator apps.
    pub totp: u32,
    /// Active counter-based tokens.
    pub hotp: u32,
    /// Active SMS phones.
    pub sms: u32,
    /// Active passkeys and security keys.
    pub webauthn: u32,
}

impl Factors {
    /// The number of active factors of `kind`.
    pub const fn count(&self, kind: FactorKind) -> u32 {
        match kind {
            FactorKind::Totp => self.totp,
            FactorKind::Hotp => self.hotp,
            FactorKind::Sms => self.sms,
            FactorKind::WebAuthn => self.webauthn,
        }
    }

    /// The kinds of which the user has at least one active factor.
    pub fn kinds(&self) -> EnumSet<FactorKind> {
        EnumSet::all()
            .iter()
            .filter(|&kind| self.count(kind) > 0)
            .collect()
    }

    /// The number of active factors whose kind is in `kinds` (saturating: never panics).
    pub fn count_in(&self, kinds: EnumSet<FactorKind>) -> u32 {
        kinds
            .iter()
            .fold(0u32, |sum, kind| sum.saturating_add(self.count(kind)))
    }

    /// The total number of active factors.
    pub fn total(&self) -> u32 {
        self.count_in(EnumSet::all())
    }

    /// These factors and one more of `kind` (saturating).
    pub fn with_one(mut self, kind: FactorKind) -> Self {
        let slot = match kind {
            FactorKind::Totp => &mut self.totp,
            FactorKind::Hotp => &mut self.hotp,
            FactorKind::Sms => &mut self.sms,
            FactorKind::WebAuthn => &mut self.webauthn,
        };
        *slot = slot.saturating_add(1);
        self
    }

    /// These factors with one of `kind` removed (saturating at zero).
    pub fn without_one(mut self, kind: FactorKind) -> Self {
        let slot = match kind {
            FactorKind::Totp => &mut self.totp,
            FactorKind::Hotp => &mut self.hotp,
            FactorKind::Sms => &mut self.sms,
            FactorKind::WebAuthn => &mut self.webauthn,
        };
        *slot = slot.saturating_sub(1);
        self
    }
}

/// Whether an account may log in at all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AccountStatus {
    /// The account can log in.
    #[default]
    Active,
    /// The account was disabled by an operator.
    Disabled,
}

/// What the decisions need to know about a user.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct UserState {
    /// Active or disabled.
    pub status: AccountStatus,
    /// The user has a password (SSO and magic-link users may not).
    pub has_password: bool,
    /// The user's active (confirmed) factors.
    pub factors: Factors,
    /// Unused recovery codes.
    pub recovery_codes_left: u32,
    /// 2FA must be set up again before the next session: set when the last recovery code
    /// was used, or after an own or admin reset. Existing factors do not count until then.
    pub must_reenroll: bool,
    /// The user is locked out until this Unix time (seconds), after too many failures.
    pub locked_until: Option<u64>,
}

/// How the user proved who they are in the first step of a login.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LoginKind {
    /// Email and password.
    Password,
    /// A login through the organization's identity provider, passed on by a trusted caller.
    Sso,
}

/// How strongly a session was established.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Assurance {
    /// Password or SSO only.
    One = 1,
    /// With a second factor.
    Two = 2,
}

/// What the caller proved, beyond holding a session, before a sensitive change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proof {
    /// Nothing.
    None,
    /// A current code from one of the user's active factors, verified by the server.
    FactorCode,
    /// One of the user's recovery codes, verified (and consumed) by the server.
    RecoveryCode,
}

impl Proof {
    /// Whether this is a proof of possession at all.
    pub const fn is_present(self) -> bool {
        !matches!(self, Self::None)
    }
}
