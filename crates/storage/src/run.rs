//! Where repositories run their statements ([`Run`]), and the rows they read ([`Row`]):
//! sea-orm's pool or a transaction on it, or, on an SQLite file, the calling thread first
//! ([`crate::on_thread::OnThread`]). Repositories build statements with sea-orm and run them
//! through the extension traits here ([`SelectOn`], [`ChangeOn`], [`InsertOn`]), which work
//! on either.

use sea_orm::sea_query::ValueType;
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, FromQueryResult, Insert,
    QueryResult, QuerySelect as _, QueryTrait, Select, Statement, TryGetable, TryIntoModel,
};

use crate::on_thread::SqliteRow;

/// A row read by a statement.
#[derive(Debug)]
pub(crate) enum Row {
    /// Read by sqlx: on the pool or in a transaction (through sea-orm), or on a held
    /// PostgreSQL connection (`crate::held`).
    Pool(QueryResult),
    /// Read on the calling thread.
    Here(SqliteRow),
}

impl Row {
    /// The column `name` as a `T` (an `Option` for a column that may be NULL).
    pub(crate) fn get<T: TryGetable + ValueType>(&self, name: &str) -> Result<T, DbErr> {
        match self {
            Self::Pool(row) => Ok(row.try_get("", name)?),
            Self::Here(row) => row.get(name),
        }
    }

    /// The row as an `E`, each field from the column of its name after `prefix`.
    pub(crate) fn model<E: EntityTrait>(&self, prefix: &str) -> Result<E::Model, DbErr>
    where
        E::ActiveModel: TryIntoModel<E::Model>,
    {
        match self {
            Self::Pool(row) => E::Model::from_query_result(row, prefix),
            Self::Here(row) => row.model::<E>(prefix),
        }
    }
}

/// Runs statements: a sea-orm connection or transaction (any [`ConnectionTrait`]), or
/// [`crate::on_thread::OnThread`].
pub(crate) trait Run {
    /// The database's kind, for which statements are built.
    fn backend(&self) -> DbBackend;

    /// The first row `stmt` returns, if any.
    async fn row(&self, stmt: Statement) -> Result<Option<Row>, DbErr>;

    /// Every row `stmt` returns.
    async fn rows(&self, stmt: Statement) -> Result<Vec<Row>, DbErr>;

    /// Runs `stmt`, which returns no rows: the rows it changed.
    async fn change(&self, stmt: Statement) -> Result<u64, DbErr>;
}

impl<C: ConnectionTrait> Run for C {
    fn backend(&self) -> DbBackend {
        self.get_database_backend()
    }

    async fn row(&self, stmt: Statement) -> Result<Option<Row>, DbErr> {
        Ok(self.query_one_raw(stmt).await?.map(Row::Pool))
    }

    async fn rows(&self, stmt: Statement) -> Result<Vec<Row>, DbErr> {
        let rows = self.query_all_raw(stmt).await?;
        Ok(rows.into_iter().map(Row::Pool).collect())
    }

    async fn change(&self, stmt: Statement) -> Result<u64, DbErr> {
        Ok(self.execute_raw(stmt).await?.rows_affected())
    }
}

/// Reads an entity's rows on a [`Run`].
pub(crate) trait SelectOn<E: EntityTrait> {
    /// The one row a query on a unique key finds, if any. sea-orm's `one()` without its
    /// `LIMIT ?`: SQLite (3.51, as bundled) reads a bound LIMIT while it plans a statement,
    /// so binding it again marks the prepared statement expired, and each `one()` was
    /// parsed and planned anew every time it ran (`sqlite3Reprepare`, about 4% of the
    /// server's CPU beside the hashes during logins). Where at most one row can match, the
    /// limit adds nothing: both drivers stop at the first row.
    async fn one_by_key<C: Run>(self, db: &C) -> Result<Option<E::Model>, DbErr>;

    /// Every row the query finds.
    async fn all_on<C: Run>(self, db: &C) -> Result<Vec<E::Model>, DbErr>;

    /// How many rows the query finds.
    async fn count_on<C: Run>(self, db: &C) -> Result<u64, DbErr>;
}

impl<E: EntityTrait> SelectOn<E> for Select<E>
where
    E::ActiveModel: TryIntoModel<E::Model>,
{
    async fn one_by_key<C: Run>(self, db: &C) -> Result<Option<E::Model>, DbErr> {
        match db.row(self.build(db.backend())).await? {
            Some(row) => Ok(Some(row.model::<E>("")?)),
            None => Ok(None),
        }
    }

    async fn all_on<C: Run>(self, db: &C) -> Result<Vec<E::Model>, DbErr> {
        let rows = db.rows(self.build(db.backend())).await?;
        rows.iter().map(|row| row.model::<E>("")).collect()
    }

    async fn count_on<C: Run>(self, db: &C) -> Result<u64, DbErr> {
        let count = self
            .select_only()
            .column_as(sea_orm::sea_query::Expr::cust("COUNT(*)"), "n");
        let row = db.row(count.build(db.backend())).await?;
        let n = row.map(|row| row.get::<i64>("n")).transpose()?;
        Ok(n.map_or(0, |n| n.try_into().unwrap_or(0)))
    }
}

/// Runs a statement that changes rows (an update, a delete, an insert without `RETURNING`)
/// on a [`Run`].
pub(crate) trait ChangeOn {
    /// The rows it changed.
    async fn change_on<C: Run>(self, db: &C) -> Result<u64, DbErr>;
}

impl<Q: QueryTrait> ChangeOn for Q {
    async fn change_on<C: Run>(self, db: &C) -> Result<u64, DbErr> {
        db.change(self.build(db.backend())).await
    }
}

/// Inserts rows on a [`Run`] and reads them back.
pub(crate) trait InsertOn<E: EntityTrait> {
    /// The rows written (with an `ON CONFLICT … UPDATE`, also the rows updated), as
    /// `RETURNING *` gives them.
    async fn returning_on<C: Run>(self, db: &C) -> Result<Vec<E::Model>, DbErr>;

    /// The one row written; [`DbErr::RecordNotInserted`] when none was.
    async fn insert_on<C: Run>(self, db: &C) -> Result<E::Model, DbErr>
    where
        Self: Sized,
    {
        self.returning_on(db)
            .await?
            .into_iter()
            .next()
            .ok_or(DbErr::RecordNotInserted)
    }
}

impl<A> InsertOn<A::Entity> for Insert<A>
where
    A: ActiveModelTrait + TryIntoModel<<A::Entity as EntityTrait>::Model>,
    A::Entity: EntityTrait<ActiveModel = A>,
{
    async fn returning_on<C: Run>(
        self,
        db: &C,
    ) -> Result<Vec<<A::Entity as EntityTrait>::Model>, DbErr> {
        let mut query = self.into_query();
        query.returning_all();
        let rows = db.rows(db.backend().build(&query)).await?;
        rows.iter().map(|row| row.model::<A::Entity>("")).collect()
    }
}

/// Updates rows on a [`Run`] and reads them back.
pub(crate) trait UpdateOn<E: EntityTrait> {
    /// The rows changed, as `RETURNING *` gives them.
    async fn returning_on<C: Run>(self, db: &C) -> Result<Vec<E::Model>, DbErr>;
}

impl<E> UpdateOn<E> for sea_orm::UpdateMany<E>
where
    E: EntityTrait,
    E::ActiveModel: TryIntoModel<E::Model>,
{
    async fn returning_on<C: Run>(self, db: &C) -> Result<Vec<E::Model>, DbErr> {
        let mut query = self.into_query();
        query.returning_all();
        let rows = db.rows(db.backend().build(&query)).await?;
        rows.iter().map(|row| row.model::<E>("")).collect()
    }
}

/// The span of a statement this crate runs itself (on the calling thread, or on a held
/// PostgreSQL connection), named and shaped as sea-orm's own (`tracing-spans`) for the
/// pool's statements: the SQL with its placeholders (never a bound value). `system` is
/// OpenTelemetry's `db.system`: `sqlite` or `postgresql`.
pub(crate) fn statement_span(name: &'static str, system: &'static str, sql: &str) -> tracing::Span {
    tracing::info_span!(
        "sea_orm.statement",
        otel.name = name,
        otel.kind = "client",
        db.system = system,
        db.statement = sql,
        // How many chains a transaction of a group committed (OpenTelemetry's attribute).
        db.operation.batch.size = tracing::field::Empty,
    )
}
