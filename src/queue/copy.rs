//! `deskbot db copy`: moves a deployment from its SQLite file to PostgreSQL, or back, with every
//! job (waiting, retrying, dead or done), the SLA clocks and timers, kept positions, console log
//! and rule counts.
//!
//! The source is read in one snapshot (a read transaction) and the target written in one
//! transaction (binary `COPY` into PostgreSQL): a copy that fails leaves the target as empty as
//! it was. Leases
//! are dropped (no instance holds a job once the old one is stopped); ids are kept, so the
//! console's links and the order of each ticket's jobs survive, and the id sequences continue after them.

use std::path::Path;

use rusqlite::types::Value;
use tokio::sync::mpsc;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

use super::store::{Store, StoreError};

/// Rows sent from the file's reader to the writer at a time.
const BATCH: usize = 1000;

/// One table to copy: its name, and its columns with their PostgreSQL types. A column named in
/// `cleared` is written as NULL whatever the file holds.
struct Table {
    name: &'static str,
    columns: &'static [(&'static str, Type)],
    cleared: &'static [&'static str],
}

const TABLES: &[Table] = &[
    Table {
        name: "events",
        columns: &[
            ("id", Type::INT8),
            ("dedup_key", Type::TEXT),
            ("invocation_key", Type::TEXT),
            ("ticket_id", Type::INT8),
            ("kind", Type::TEXT),
            ("payload", Type::TEXT),
            ("received_at", Type::INT8),
            ("state", Type::TEXT),
            ("attempts", Type::INT4),
            ("next_attempt_at", Type::INT8),
            ("locked_until", Type::INT8),
            ("leases", Type::INT4),
            ("last_error", Type::TEXT),
            ("outcome", Type::TEXT),
            ("finished_at", Type::INT8),
            ("lane", Type::INT2),
            ("result", Type::TEXT),
        ],
        cleared: &["locked_until"],
    },
    Table {
        name: "attempts",
        columns: &[
            ("event_id", Type::INT8),
            ("at", Type::INT8),
            ("error", Type::TEXT),
        ],
        cleared: &[],
    },
    Table {
        name: "sla_tickets",
        columns: &[
            ("ticket_id", Type::INT8),
            ("clocks", Type::TEXT),
            ("updated_at", Type::INT8),
        ],
        cleared: &[],
    },
    Table {
        name: "sla_clocks",
        columns: &[
            ("ticket_id", Type::INT8),
            ("metric", Type::TEXT),
            ("instance", Type::INT4),
            ("state", Type::TEXT),
            ("started_at", Type::INT8),
            ("target", Type::TEXT),
            ("consumed_secs", Type::INT8),
            ("at_risk_at", Type::INT8),
            ("due_at", Type::INT8),
            ("fulfilled_at", Type::INT8),
            ("zone", Type::TEXT),
        ],
        cleared: &[],
    },
    Table {
        name: "sla_timers",
        columns: &[
            ("ticket_id", Type::INT8),
            ("metric", Type::TEXT),
            ("instance", Type::INT4),
            ("kind", Type::TEXT),
            ("due_at", Type::INT8),
        ],
        cleared: &[],
    },
    Table {
        name: "cursors",
        columns: &[
            ("name", Type::TEXT),
            ("position", Type::TEXT),
            ("updated_at", Type::INT8),
        ],
        cleared: &[],
    },
    Table {
        name: "admin_actions",
        columns: &[
            ("id", Type::INT8),
            ("at", Type::INT8),
            ("source", Type::TEXT),
            ("action", Type::TEXT),
            ("detail", Type::TEXT),
        ],
        cleared: &[],
    },
    Table {
        name: "rule_matches",
        columns: &[
            ("hour", Type::INT8),
            ("rule", Type::TEXT),
            ("n", Type::INT8),
        ],
        cleared: &[],
    },
];

/// Why a copy did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The target already holds a deployment.
    #[error("the PostgreSQL database already holds {0} jobs: copy into an empty database (create one, or drop this one's tables after checking nothing there is needed)")]
    NotEmpty(i64),
    /// The target file already holds a deployment.
    #[error("{path} already holds {jobs} jobs: copy into a new file")]
    FileNotEmpty {
        /// The file.
        path: String,
        /// Jobs in it.
        jobs: i64,
    },
    /// A value in the file does not fit its column.
    #[error("{table}.{column}: {message}")]
    Value {
        /// Table.
        table: &'static str,
        /// Column.
        column: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Either database refused.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The file could not be read.
    #[error("reading the SQLite file: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

impl From<tokio_postgres::Error> for CopyError {
    fn from(e: tokio_postgres::Error) -> Self {
        CopyError::Store(e.into())
    }
}

/// What was copied: rows per table, and the jobs still to do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Copied {
    /// (table, rows), in copy order.
    pub tables: Vec<(&'static str, u64)>,
    /// Jobs waiting (or retrying) in the copy.
    pub pending: i64,
}

/// Copies the SQLite deployment at `from` into the empty PostgreSQL store `to`.
pub async fn sqlite_to_postgres(from: &Path, to: &Store) -> Result<Copied, CopyError> {
    let Some(pg) = to.pg() else {
        return Err(StoreError::Unsupported("copying into a SQLite file").into());
    };
    // Opening it as deskbot does brings an older file's schema up to date first.
    drop(Store::open(from)?);
    let mut client = pg.pool().get().await.map_err(StoreError::from)?;
    let tx = client.transaction().await?;
    let existing: i64 = tx
        .query_one("SELECT COUNT(*) FROM events", &[])
        .await?
        .get(0);
    if existing > 0 {
        return Err(CopyError::NotEmpty(existing));
    }
    let (rows_tx, mut rows_rx) = mpsc::channel::<Batch>(4);
    let path = from.to_path_buf();
    let reader = tokio::task::spawn_blocking(move || read_all(&path, &rows_tx));
    let mut copied = Copied::default();
    for (i, table) in TABLES.iter().enumerate() {
        let names: Vec<&str> = table.columns.iter().map(|(n, _)| *n).collect();
        let types: Vec<Type> = table.columns.iter().map(|(_, t)| t.clone()).collect();
        let sink = tx
            .copy_in(&format!(
                "COPY {} ({}) FROM STDIN BINARY",
                table.name,
                names.join(", ")
            ))
            .await?;
        let writer = BinaryCopyInWriter::new(sink, &types);
        futures_util::pin_mut!(writer);
        // Batches arrive table by table, in order; an empty batch ends a table.
        loop {
            let Some(batch) = rows_rx.recv().await else {
                break;
            };
            let (table_index, rows) = batch?;
            if table_index != i || rows.is_empty() {
                break;
            }
            for row in rows {
                let cells = cells(table, row)?;
                let refs: Vec<&(dyn ToSql + Sync)> = cells
                    .iter()
                    .map(|c| c.as_ref() as &(dyn ToSql + Sync))
                    .collect();
                writer.as_mut().write(&refs).await?;
            }
        }
        let n = writer.finish().await?;
        copied.tables.push((table.name, n));
    }
    reader
        .await
        .map_err(|e| StoreError::Write(format!("the file's reader stopped: {e}")))??;
    for (table, column) in [("events", "id"), ("admin_actions", "id")] {
        tx.execute(
            &format!(
                "SELECT setval(pg_get_serial_sequence('{table}', '{column}'),
                               COALESCE((SELECT MAX({column}) FROM {table}), 0) + 1, false)"
            ),
            &[],
        )
        .await?;
    }
    copied.pending = tx
        .query_one("SELECT COUNT(*) FROM events WHERE state = 'pending'", &[])
        .await?
        .get(0);
    tx.commit().await?;
    Ok(copied)
}

/// Reads every table of the file in one read transaction, sending its rows in batches, each
/// table ended by an empty batch.
fn read_all(path: &Path, out: &mpsc::Sender<Batch>) -> Result<(), CopyError> {
    let mut conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let tx = conn.transaction()?;
    for (i, table) in TABLES.iter().enumerate() {
        let names: Vec<&str> = table.columns.iter().map(|(n, _)| *n).collect();
        let mut stmt = tx.prepare(&format!("SELECT {} FROM {}", names.join(", "), table.name))?;
        let mut rows = stmt.query([])?;
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            let row = match rows.next() {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => {
                    let _ = out.blocking_send(Err(e.into()));
                    return Ok(());
                }
            };
            let values = (0..names.len())
                .map(|c| row.get::<_, Value>(c))
                .collect::<Result<Vec<_>, _>>()?;
            batch.push(values);
            if batch.len() == BATCH
                && out
                    .blocking_send(Ok((i, std::mem::take(&mut batch))))
                    .is_err()
            {
                return Ok(());
            }
        }
        if !batch.is_empty() && out.blocking_send(Ok((i, batch))).is_err() {
            return Ok(());
        }
        if out.blocking_send(Ok((i, Vec::new()))).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// Rows of the table at an index in [`TABLES`] (empty: the table's end), or why reading stopped.
type Batch = Result<(usize, Vec<Vec<Value>>), CopyError>;

type Cell = Box<dyn ToSql + Sync + Send>;

/// One row's values typed for their PostgreSQL columns.
fn cells(table: &Table, row: Vec<Value>) -> Result<Vec<Cell>, CopyError> {
    table
        .columns
        .iter()
        .zip(row)
        .map(|((name, ty), v)| {
            let bad = |message: String| CopyError::Value {
                table: table.name,
                column: name,
                message,
            };
            let v = if table.cleared.contains(name) {
                Value::Null
            } else {
                v
            };
            let int = |v: &Value| match v {
                Value::Null => Ok(None),
                Value::Integer(i) => Ok(Some(*i)),
                other => Err(bad(format!("expected a whole number, found {other:?}"))),
            };
            Ok(match *ty {
                Type::INT8 => Box::new(int(&v)?) as Cell,
                Type::INT4 => Box::new(
                    int(&v)?
                        .map(i32::try_from)
                        .transpose()
                        .map_err(|e| bad(e.to_string()))?,
                ),
                Type::INT2 => Box::new(
                    int(&v)?
                        .map(i16::try_from)
                        .transpose()
                        .map_err(|e| bad(e.to_string()))?,
                ),
                _ => Box::new(match v {
                    Value::Null => None,
                    Value::Text(s) => Some(s),
                    other => return Err(bad(format!("expected text, found {other:?}"))),
                }),
            })
        })
        .collect()
}

/// Copies the PostgreSQL deployment in `from` into the SQLite file `to` (new, or holding no job):
/// the way back to one Machine.
pub async fn postgres_to_sqlite(from: &Store, to: &Path) -> Result<Copied, CopyError> {
    let Some(pg) = from.pg() else {
        return Err(StoreError::Unsupported("copying from a SQLite file into one").into());
    };
    // Opening it as deskbot does creates the file with the current schema.
    drop(Store::open(to)?);
    let path = to.to_path_buf();
    let (rows_tx, rows_rx) = mpsc::channel::<Batch>(4);
    let writer = tokio::task::spawn_blocking(move || write_all(&path, rows_rx));
    let mut client = pg.pool().get().await.map_err(StoreError::from)?;
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let mut pending = 0;
    for (i, table) in TABLES.iter().enumerate() {
        let names: Vec<&str> = table.columns.iter().map(|(n, _)| *n).collect();
        let rows = tx
            .query_raw(
                &format!("SELECT {} FROM {}", names.join(", "), table.name),
                std::iter::empty::<i32>(),
            )
            .await?;
        futures_util::pin_mut!(rows);
        let mut batch = Vec::with_capacity(BATCH);
        while let Some(row) = futures_util::StreamExt::next(&mut rows).await {
            let row = row?;
            let values = table
                .columns
                .iter()
                .enumerate()
                .map(|(c, (name, ty))| {
                    if table.cleared.contains(name) {
                        return Value::Null;
                    }
                    match *ty {
                        Type::INT8 => row
                            .get::<_, Option<i64>>(c)
                            .map_or(Value::Null, Value::Integer),
                        Type::INT4 => row
                            .get::<_, Option<i32>>(c)
                            .map_or(Value::Null, |v| Value::Integer(v.into())),
                        Type::INT2 => row
                            .get::<_, Option<i16>>(c)
                            .map_or(Value::Null, |v| Value::Integer(v.into())),
                        _ => row
                            .get::<_, Option<String>>(c)
                            .map_or(Value::Null, Value::Text),
                    }
                })
                .collect::<Vec<_>>();
            if table.name == "events" && values.get(7) == Some(&Value::Text("pending".into())) {
                pending += 1;
            }
            batch.push(values);
            if batch.len() == BATCH
                && rows_tx
                    .send(Ok((i, std::mem::take(&mut batch))))
                    .await
                    .is_err()
            {
                break;
            }
        }
        let _ = rows_tx.send(Ok((i, batch))).await;
        let _ = rows_tx.send(Ok((i, Vec::new()))).await;
    }
    // The end marker: without it (a read failed above) the writer commits nothing.
    let _ = rows_tx.send(Ok((TABLES.len(), Vec::new()))).await;
    drop(rows_tx);
    tx.commit().await?;
    let tables = writer
        .await
        .map_err(|e| StoreError::Write(format!("the file's writer stopped: {e}")))??;
    Ok(Copied { tables, pending })
}

/// Writes the batches into the file at `path` in one transaction, refusing a file that already
/// holds jobs.
fn write_all(
    path: &Path,
    mut rows: mpsc::Receiver<Batch>,
) -> Result<Vec<(&'static str, u64)>, CopyError> {
    let mut conn = rusqlite::Connection::open(path)?;
    let tx = conn.transaction()?;
    let jobs: i64 = tx.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))?;
    if jobs > 0 {
        return Err(CopyError::FileNotEmpty {
            path: path.display().to_string(),
            jobs,
        });
    }
    let mut counts: Vec<(&'static str, u64)> = TABLES.iter().map(|t| (t.name, 0)).collect();
    let mut complete = false;
    while let Some(batch) = rows.blocking_recv() {
        let (i, batch) = batch?;
        let Some(table) = TABLES.get(i) else {
            complete = true;
            continue;
        };
        let names: Vec<&str> = table.columns.iter().map(|(n, _)| *n).collect();
        let marks: Vec<String> = (1..=names.len()).map(|n| format!("?{n}")).collect();
        let mut insert = tx.prepare_cached(&format!(
            "INSERT INTO {} ({}) VALUES ({})",
            table.name,
            names.join(", "),
            marks.join(", ")
        ))?;
        for row in batch {
            insert.execute(rusqlite::params_from_iter(row))?;
            counts[i].1 += 1;
        }
    }
    if !complete {
        return Err(StoreError::Write(
            "the copy stopped before its end; the file was left as it was".into(),
        )
        .into());
    }
    tx.commit()?;
    Ok(counts)
}
