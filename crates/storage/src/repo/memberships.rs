//! Memberships of organizations.

use sea_orm::sea_query::{Query, SelectStatement};
use sea_orm::{
    ActiveEnum, ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect,
};
use uuid::Uuid;

use super::audit::{AuditOf, append_with};
use super::{Page, page};
use crate::entity::enums::Role;
use crate::entity::membership::{ActiveModel, Column, Entity, Model};
use crate::entity::organization;
use crate::run::SelectOn as _;
use crate::{Result, Storage, StorageError};

/// The ids of the organizations the user belongs to, as a subquery: what
/// [`Memberships::organizations_of`] and a login's read of the user select.
pub(crate) fn organization_ids_of(user_id: Uuid) -> SelectStatement {
    Query::select()
        .column(Column::OrgId)
        .from(Entity)
        .and_where(Column::UserId.eq(user_id))
        .to_owned()
}

/// Memberships.
#[derive(Debug)]
pub struct Memberships<'a> {
    storage: &'a Storage,
}

impl<'a> Memberships<'a> {
    pub(crate) fn new(storage: &'a Storage) -> Self {
        Self { storage }
    }

    /// Adds a user to an organization, with the audit event that records it (`audit`, about
    /// the organization and the user, its details the role granted), in one transaction. A
    /// second membership of the same pair is a [`StorageError::Conflict`]; an unknown
    /// organization or user is [`StorageError::NotFound`]; either, or an event the log
    /// refuses, adds nothing.
    pub async fn add(
        &self,
        org_id: Uuid,
        user_id: Uuid,
        role: Role,
        now: i64,
        audit: AuditOf<'_>,
    ) -> Result<Model> {
        let model = ActiveModel {
            org_id: Set(org_id),
            user_id: Set(user_id),
            role: Set(role),
            created_at: Set(now),
        };
        let (_writing, txn) = self.storage.begin_write().await?;
        let model = model.insert(&txn).await.map_err(|e| match e.sql_err() {
            Some(sea_orm::SqlErr::ForeignKeyConstraintViolation(_)) => {
                StorageError::NotFound("organization or user")
            }
            _ => StorageError::from_insert(e, "membership"),
        })?;
        let details = format!(r#"{{"role":"{}"}}"#, role.to_value());
        append_with(
            &txn,
            audit.event(now, Some(org_id), Some(user_id), &details),
        )
        .await?;
        txn.commit().await?;
        Ok(model)
    }

    /// The membership of `user_id` in `org_id`, if any.
    pub async fn get(&self, org_id: Uuid, user_id: Uuid) -> Result<Option<Model>> {
        Ok(Entity::find_by_id((org_id, user_id))
            .one_by_key(&self.storage.reads())
            .await?)
    }

    /// The organizations a user belongs to, themselves (not the memberships), by id, in one
    /// query: a login chooses among them and applies the chosen one's policy.
    pub async fn organizations_of(&self, user_id: Uuid) -> Result<Vec<organization::Model>> {
        Ok(organization::Entity::find()
            .filter(organization::Column::Id.in_subquery(organization_ids_of(user_id)))
            .order_by_asc(organization::Column::Id)
            .all_on(&self.storage.reads())
            .await?)
    }

    /// The organizations a user belongs to.
    pub async fn of_user(&self, user_id: Uuid) -> Result<Vec<Model>> {
        Ok(Entity::find()
            .filter(Column::UserId.eq(user_id))
            .order_by_asc(Column::OrgId)
            .all_on(&self.storage.reads())
            .await?)
    }

    /// A page of an organization's members, ordered by user id, after the cursor `after`.
    pub async fn list(
        &self,
        org_id: Uuid,
        after: Option<Uuid>,
        limit: u64,
    ) -> Result<Page<Model, Uuid>> {
        let mut query = Entity::find().filter(Column::OrgId.eq(org_id));
        if let Some(after) = after {
            query = query.filter(Column::UserId.gt(after));
        }
        let limit = super::clamp_limit(limit);
        let rows = query
            .order_by_asc(Column::UserId)
            .limit(limit.saturating_add(1))
            .all(self.storage.db())
            .await?;
        Ok(page(rows, limit, |m| m.user_id))
    }
}
