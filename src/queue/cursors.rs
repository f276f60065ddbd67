//! Positions kept in Zendesk's exports, by name, so a backfill interrupted at any point resumes
//! where it stopped.

use chrono::Utc;
use rusqlite::OptionalExtension;

use super::store::{Store, StoreError};

impl Store {
    /// When the newest job was queued: the last moment deskbot is known to have been listening.
    /// Read from the last row by key (ids grow with time), not `MAX(received_at)`, which scans
    /// every job: the catch-up asks this every minute.
    pub async fn newest_received(&self) -> Result<Option<chrono::DateTime<Utc>>, StoreError> {
        if let Some(pg) = self.pg() {
            return pg.newest_received().await;
        }
        self.call(|c| {
            let millis: Option<i64> = c
                .prepare_cached("SELECT received_at FROM events ORDER BY id DESC LIMIT 1")?
                .query_row([], |r| r.get(0))
                .optional()?;
            Ok(millis.and_then(chrono::DateTime::from_timestamp_millis))
        })
        .await
    }

    /// When a job of each ticket was last queued, for those of `tickets` deskbot has heard of.
    pub async fn last_heard(
        &self,
        tickets: Vec<u64>,
    ) -> Result<std::collections::HashMap<u64, chrono::DateTime<Utc>>, StoreError> {
        if let Some(pg) = self.pg() {
            return pg.last_heard(tickets).await;
        }
        self.call(move |c| {
            let mut stmt =
                c.prepare_cached("SELECT MAX(received_at) FROM events WHERE ticket_id = ?1")?;
            let mut out = std::collections::HashMap::new();
            for t in tickets {
                let millis: Option<i64> = stmt.query_row([t as i64], |r| r.get(0))?;
                if let Some(at) = millis.and_then(chrono::DateTime::from_timestamp_millis) {
                    out.insert(t, at);
                }
            }
            Ok(out)
        })
        .await
    }

    /// The position kept under `name`, if any.
    pub async fn cursor(&self, name: &str) -> Result<Option<String>, StoreError> {
        if let Some(pg) = self.pg() {
            return pg.cursor(name).await;
        }
        let name = name.to_string();
        self.call(move |c| {
            Ok(c.query_row(
                "SELECT position FROM cursors WHERE name = ?1",
                [&name],
                |r| r.get(0),
            )
            .optional()?)
        })
        .await
    }

    /// Keeps `position` under `name`, or forgets the name (`None`: the export was read to its end).
    pub async fn set_cursor(&self, name: &str, position: Option<&str>) -> Result<(), StoreError> {
        if let Some(pg) = self.pg() {
            return pg.set_cursor(name, position).await;
        }
        let (name, position) = (name.to_string(), position.map(str::to_string));
        self.call(move |c| {
            match position {
                Some(p) => c.execute(
                    "INSERT INTO cursors (name, position, updated_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (name) DO UPDATE SET position = ?2, updated_at = ?3",
                    rusqlite::params![name, p, Utc::now().timestamp()],
                )?,
                None => c.execute("DELETE FROM cursors WHERE name = ?1", [name])?,
            };
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_position_is_kept_replaced_and_forgotten() {
        for (_, store, _) in crate::queue::postgres::testing::backends().await.pairs {
            kept_replaced_forgotten(store).await;
        }
    }

    async fn kept_replaced_forgotten(store: Store) {
        assert_eq!(store.cursor("backfill a").await.unwrap(), None);
        assert_eq!(store.newest_received().await.unwrap(), None);
        store.set_cursor("backfill a", Some("c1")).await.unwrap();
        store.set_cursor("backfill a", Some("c2")).await.unwrap();
        store.set_cursor("backfill b", Some("x")).await.unwrap();
        assert_eq!(
            store.cursor("backfill a").await.unwrap().as_deref(),
            Some("c2")
        );
        store.set_cursor("backfill a", None).await.unwrap();
        assert_eq!(store.cursor("backfill a").await.unwrap(), None);
        assert_eq!(
            store.cursor("backfill b").await.unwrap().as_deref(),
            Some("x")
        );
    }
}
