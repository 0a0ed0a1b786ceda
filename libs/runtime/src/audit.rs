//! `lab.v1.Audit/Snapshot` answers built from SQL: named counters and, on request, id sets.
//! Each service lists its queries; this module turns rows into the response.

use std::collections::HashMap;

use lab_proto::lab::v1::{IdList, SnapshotResponse};
use lab_store::Db;
use tonic::Status;

use crate::errors;

/// An Audit snapshot being assembled.
pub struct Snapshot<'a> {
    db: &'a Db,
    include_ids: bool,
    counters: HashMap<String, i64>,
    ids: HashMap<String, IdList>,
}

impl<'a> Snapshot<'a> {
    pub fn new(db: &'a Db, include_ids: bool) -> Self {
        Self {
            db,
            include_ids,
            counters: HashMap::new(),
            ids: HashMap::new(),
        }
    }

    /// Each of `names` is a BIGINT column of the one row `sql` returns; each becomes a
    /// counter of the same name.
    pub async fn columns(
        &mut self,
        sql: &'static str,
        names: &[&str],
    ) -> Result<&mut Self, Status> {
        self.columns_with(sql, &[], names).await
    }

    /// [`Snapshot::columns`] of a query with `$1, $2, …` bound to `binds` (a time bound,
    /// say).
    pub async fn columns_with(
        &mut self,
        sql: &'static str,
        binds: &[i64],
        names: &[&str],
    ) -> Result<&mut Self, Status> {
        let mut query = lab_store::query(sql);
        for bind in binds {
            query = query.bind(*bind);
        }
        let row = query.fetch_one(self.db).await.map_err(errors::db)?;
        for name in names {
            let value = row.try_get::<i64, _>(*name).map_err(errors::db)?;
            self.counters.insert(name.to_string(), value);
        }
        Ok(self)
    }

    /// `sql` returns rows `(status, n)`: counters `<status>_<noun>` (lower case; 0 for each of
    /// `statuses` that has no row) and `<noun>_total`.
    pub async fn by_status(
        &mut self,
        sql: &'static str,
        noun: &str,
        statuses: &[&str],
    ) -> Result<&mut Self, Status> {
        for status in statuses {
            self.counters
                .insert(format!("{}_{noun}", status.to_lowercase()), 0);
        }
        let mut total = 0;
        for row in lab_store::query(sql)
            .fetch_all(self.db)
            .await
            .map_err(errors::db)?
        {
            let status: String = row.try_get("status").map_err(errors::db)?;
            let n: i64 = row.try_get("n").map_err(errors::db)?;
            total += n;
            self.counters
                .insert(format!("{}_{noun}", status.to_lowercase()), n);
        }
        self.counters.insert(format!("{noun}_total"), total);
        Ok(self)
    }

    /// When ids were asked for: the first column of every row of `sql`, as the id set `name`.
    pub async fn ids(&mut self, name: &str, sql: &'static str) -> Result<&mut Self, Status> {
        if self.include_ids {
            let ids = lab_store::query(sql)
                .fetch_all(self.db)
                .await
                .map_err(errors::db)?
                .iter()
                .map(|r| r.try_get::<String, _>(0usize))
                .collect::<Result<Vec<_>, _>>()
                .map_err(errors::db)?;
            self.ids.insert(name.to_string(), IdList { ids });
        }
        Ok(self)
    }

    /// A counter computed from others.
    pub fn set(&mut self, name: &str, value: i64) -> &mut Self {
        self.counters.insert(name.to_string(), value);
        self
    }

    /// A counter read so far (0 when absent).
    pub fn get(&self, name: &str) -> i64 {
        self.counters.get(name).copied().unwrap_or(0)
    }

    pub fn finish(self, service: &str) -> SnapshotResponse {
        SnapshotResponse {
            service: service.to_string(),
            counters: self.counters,
            ids: self.ids,
        }
    }
}
