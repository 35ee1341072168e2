//! What sea-orm reads through sqlx, the calling thread reads alike: every entity, every
//! projection, every written row; and a write SQLite refuses is reported as sqlx reports it.

use rusqlite::types::Value as Sql;
use sea_orm::sea_query::Value;
use sea_orm::{
    EntityTrait, IdenStatic as _, Iterable as _, PaginatorTrait as _, QueryOrder as _, TryIntoModel,
};

use super::populated;
use crate::entity;
use crate::on_thread::SqliteRow;
use crate::on_thread::values::to_sql;
use crate::repo::OrganizationsToRead;
use crate::run::SelectOn as _;
use crate::testing::NOW;

/// Every row of `E` as sea-orm reads it from the pool and as the calling thread does.
async fn both<E: EntityTrait>(storage: &crate::Storage) -> (Vec<E::Model>, Vec<E::Model>)
where
    E::ActiveModel: TryIntoModel<E::Model>,
{
    let order = E::Column::iter().next().unwrap();
    let pool = E::find()
        .order_by_asc(order)
        .all(storage.db())
        .await
        .unwrap();
    let here = E::find()
        .order_by_asc(order)
        .all_on(&storage.reads())
        .await
        .unwrap();
    (pool, here)
}

macro_rules! same_rows {
    ($storage:expr, $($entity:ident),+ $(,)?) => {$(
        let (pool, here) = both::<entity::$entity::Entity>($storage).await;
        assert!(!pool.is_empty(), "no {} row to compare", stringify!($entity));
        assert!(pool == here, "{} differs", stringify!($entity));
    )+};
}

#[tokio::test]
async fn the_calling_thread_reads_every_entity_as_the_pool_does() {
    let db = populated().await;
    assert!(
        db.storage.reads().here.is_some(),
        "an SQLite file reads here"
    );
    same_rows!(
        &db.storage,
        user,
        organization,
        membership,
        factor,
        recovery_code,
        attempt_counter,
        session,
        login_challenge,
        audit_event,
        sms_code,
        sms_counter,
        sms_send,
        webauthn_ceremony,
        trusted_device,
    );
}

#[tokio::test]
async fn the_calling_thread_reads_every_projection_as_the_pool_does() {
    let db = populated().await;
    let here = &db.storage;
    assert!(here.reads().here.is_some());
    // The same database, read through the pool only.
    let pool = crate::Storage::new(
        here.db().clone(),
        crate::testing::keyring(1, &[1]),
        crate::testing::hasher(),
    );
    assert!(pool.reads().here.is_none());
    let alice = here.users().find_by_email("alice@example.com").await;
    let alice = alice.unwrap().unwrap().id;
    for storage in [here, &pool] {
        let (factors, counter) = storage
            .factors()
            .active_with_counter(alice, "user:x")
            .await
            .unwrap();
        assert_eq!(factors.len(), 1);
        let counter = counter.expect("the counter rides on the factor row");
        assert_eq!(
            (counter.failures, counter.locked_until),
            (1, Some(NOW + 30))
        );
        let count = storage.recovery_codes().remaining(alice).await.unwrap();
        assert_eq!(count, 1, "a count");
    }
    let users = entity::user::Entity::find();
    let counted = users.clone().count_on(&here.reads()).await.unwrap();
    assert_eq!(counted, users.count(here.db()).await.unwrap());
    let both = |which: OrganizationsToRead| {
        let (here, pool) = (here.users(), pool.users());
        async move {
            let a = here.get_with_mfa(alice, which).await.unwrap().unwrap();
            let b = pool.get_with_mfa(alice, which).await.unwrap().unwrap();
            assert!(a == b, "get_with_mfa({which:?}) differs");
            a
        }
    };
    let (_, mfa, orgs) = both(OrganizationsToRead::Memberships).await;
    assert_eq!((mfa.totp, mfa.recovery_codes_left, orgs.len()), (1, 1, 1));
    let (_, _, orgs) = both(OrganizationsToRead::Only(crate::Uuid::nil())).await;
    assert!(
        orgs.is_empty(),
        "no such organization: the LEFT JOIN's NULLs"
    );
    both(OrganizationsToRead::None).await;
}

#[tokio::test]
async fn a_refused_write_is_reported_as_sqlx_reports_it() {
    let db = populated().await;
    let err = db
        .storage
        .users()
        .create("ALICE@example.com", None, NOW)
        .await;
    assert!(
        matches!(err, Err(crate::StorageError::Conflict("user"))),
        "{err:?}"
    );
}

#[test]
fn values_bind_as_sqlx_binds_them() {
    let id = uuid::Uuid::now_v7();
    assert_eq!(
        to_sql(&Value::Uuid(Some(id))).unwrap(),
        Sql::Blob(id.as_bytes().to_vec())
    );
    assert_eq!(to_sql(&Value::Bool(Some(true))).unwrap(), Sql::Integer(1));
    assert_eq!(to_sql(&Value::BigInt(None)).unwrap(), Sql::Null);
    assert_eq!(to_sql(&Value::BigUnsigned(Some(u64::MAX))).ok(), None);
}

/// A row of these columns and values.
fn row(columns: &[&str], values: Vec<Sql>) -> SqliteRow {
    SqliteRow {
        columns: columns.iter().map(|c| (*c).to_owned()).collect(),
        values,
    }
}

#[test]
fn columns_read_as_the_type_they_go_to() {
    let id = uuid::Uuid::now_v7();
    let r = row(
        &["n", "n", "id", "none", "flag"],
        vec![
            Sql::Integer(70_000),
            Sql::Integer(7),
            Sql::Blob(id.as_bytes().to_vec()),
            Sql::Null,
            Sql::Integer(1),
        ],
    );
    assert_eq!(r.get::<i16>("n").unwrap(), 7, "the last of two columns");
    assert_eq!(r.get::<uuid::Uuid>("id").unwrap(), id);
    assert_eq!(r.get::<Option<uuid::Uuid>>("none").unwrap(), None);
    assert!(r.get::<bool>("flag").unwrap());
    assert!(r.get::<i64>("none").is_err(), "NULL is not a number");
    assert!(r.get::<i64>("missing").is_err());
    let wide = row(&["n"], vec![Sql::Integer(70_000)]);
    assert!(
        wide.get::<i16>("n").is_err(),
        "out of range is an error, not a wrapped number"
    );
}

#[test]
fn an_entity_reads_each_field_as_its_type_and_refuses_a_wrong_one() {
    use entity::attempt_counter::{Column, Entity};
    let columns: Vec<&str> = Column::iter().map(|c| c.as_str()).collect();
    let value = |c: &str| match c {
        "key" => Sql::Text("user:x".into()),
        "failures" => Sql::Integer(3),
        "locked_until" => Sql::Null,
        _ => Sql::Integer(NOW),
    };
    let good = row(&columns, columns.iter().map(|c| value(c)).collect());
    let model = good.model::<Entity>("").unwrap();
    assert_eq!(
        (model.key.as_str(), model.failures, model.locked_until),
        ("user:x", 3, None)
    );
    // A text where a number goes is an error, never a NULL read as None.
    let bad = row(
        &columns,
        columns
            .iter()
            .map(|c| match *c {
                "locked_until" => Sql::Text("soon".into()),
                c => value(c),
            })
            .collect(),
    );
    assert!(bad.model::<Entity>("").is_err());
    let prefixed: Vec<String> = columns.iter().map(|c| format!("p_{c}")).collect();
    let prefixed: Vec<&str> = prefixed.iter().map(String::as_str).collect();
    let with_prefix = row(&prefixed, columns.iter().map(|c| value(c)).collect());
    assert_eq!(with_prefix.model::<Entity>("p_").unwrap(), model);
}
