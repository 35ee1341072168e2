//! Organizations and their 2FA policy.

use sea_orm::{ActiveModelTrait, ActiveValue::Set, EntityTrait};
use uuid::Uuid;

use crate::entity::enums::SsoMode;
use crate::entity::organization::{ActiveModel, Entity, Model};
use crate::{Result, Storage, StorageError};

/// The policy fields of an organization.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyUpdate {
    /// 2FA required for every member.
    pub mfa_required: bool,
    /// Allowed kinds: bit 0 TOTP, bit 1 HOTP, bit 2 SMS.
    pub allowed_methods: i32,
    /// SSO enabled.
    pub sso_enabled: bool,
    /// SSO exempt or enforce.
    pub sso_mode: SsoMode,
}

/// Organizations.
#[derive(Debug)]
pub struct Organizations<'a> {
    storage: &'a Storage,
}

impl<'a> Organizations<'a> {
    pub(crate) fn new(storage: &'a Storage) -> Self {
        Self { storage }
    }

    /// Creates an organization with the default policy: nothing required, every method
    /// allowed, SSO off (exempt mode when turned on).
    pub async fn create(&self, name: &str, now: i64) -> Result<Model> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 200 {
            return Err(StorageError::Invalid {
                field: "name",
                reason: "must be 1 to 200 characters",
            });
        }
        let model = ActiveModel {
            id: Set(Uuid::now_v7()),
            name: Set(name.to_owned()),
            mfa_required: Set(false),
            mfa_required_since: Set(None),
            allowed_methods: Set(0b111),
            sso_enabled: Set(false),
            sso_mode: Set(SsoMode::Exempt),
            created_at: Set(now),
        };
        model
            .insert(self.storage.db())
            .await
            .map_err(|e| StorageError::from_insert(e, "organization"))
    }

    /// The organization, if it exists.
    pub async fn get(&self, id: Uuid) -> Result<Option<Model>> {
        Ok(Entity::find_by_id(id).one(self.storage.db()).await?)
    }

    /// Replaces the policy. `mfa_required_since` is set when 2FA becomes required and cleared
    /// when it stops being required.
    pub async fn update_policy(&self, id: Uuid, policy: PolicyUpdate, now: i64) -> Result<Model> {
        if !(0..=0b111).contains(&policy.allowed_methods) {
            return Err(StorageError::Invalid {
                field: "allowed_methods",
                reason: "unknown method bits",
            });
        }
        let current = self
            .get(id)
            .await?
            .ok_or(StorageError::NotFound("organization"))?;
        let since = match (current.mfa_required, policy.mfa_required) {
            (false, true) => Some(now),
            (true, true) => current.mfa_required_since,
            (_, false) => None,
        };
        let mut model: ActiveModel = current.into();
        model.mfa_required = Set(policy.mfa_required);
        model.mfa_required_since = Set(since);
        model.allowed_methods = Set(policy.allowed_methods);
        model.sso_enabled = Set(policy.sso_enabled);
        model.sso_mode = Set(policy.sso_mode);
        Ok(model.update(self.storage.db()).await?)
    }
}
