//! The append-only event log. Appends project inline, in the caller's transaction, so a
//! committed event always has its read models (and, for requests, its job) with it.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, Row};

use crate::error::{Error, Result};
use crate::event::{Event, Metadata, RecordedEvent};
use crate::projection;

const STREAM_VERSION_UNIQUE: &str = "events_stream_version_unique";

/// What the caller believes the stream's version to be before appending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ExpectedVersion {
    Any,
    NoStream,
    Exactly(i64),
}

/// Appends `events` to `stream` and updates the projections, inside the caller's transaction.
pub async fn append(
    tx: &mut PgConnection,
    stream: &str,
    expected: ExpectedVersion,
    events: &[Event],
    metadata: &Metadata,
) -> Result<Vec<RecordedEvent>> {
    let current = stream_version(&mut *tx, stream).await?;
    let ok = match expected {
        ExpectedVersion::Any => true,
        ExpectedVersion::NoStream => current == 0,
        ExpectedVersion::Exactly(v) => current == v,
    };
    if !ok {
        return Err(Error::Conflict {
            stream: stream.to_owned(),
            expected,
            actual: current,
        });
    }

    let meta_json = serde_json::to_value(metadata)?;
    let mut recorded = Vec::with_capacity(events.len());
    for (i, event) in events.iter().enumerate() {
        let version = current + 1 + i as i64;
        let (event_type, data) = event.to_stored();
        // A concurrent appender may have taken `version` since we read `current`; the unique
        // constraint catches that. The savepoint keeps the caller's transaction usable.
        sqlx::query("SAVEPOINT shiplog_append")
            .execute(&mut *tx)
            .await?;
        let inserted = sqlx::query(
            "INSERT INTO events (stream_id, stream_version, event_type, event_version, data, metadata)
             VALUES ($1, $2, $3, $4, $5, $6)
             RETURNING global_position, recorded_at",
        )
        .bind(stream)
        .bind(version)
        .bind(event_type)
        .bind(event.event_version())
        .bind(&data)
        .bind(&meta_json)
        .fetch_one(&mut *tx)
        .await;
        let row = match inserted {
            Ok(row) => row,
            Err(sqlx::Error::Database(db)) if db.constraint() == Some(STREAM_VERSION_UNIQUE) => {
                sqlx::query("ROLLBACK TO SAVEPOINT shiplog_append")
                    .execute(&mut *tx)
                    .await?;
                let actual = stream_version(&mut *tx, stream).await?;
                return Err(Error::Conflict {
                    stream: stream.to_owned(),
                    expected,
                    actual,
                });
            }
            Err(e) => return Err(e.into()),
        };
        sqlx::query("RELEASE SAVEPOINT shiplog_append")
            .execute(&mut *tx)
            .await?;
        let event = RecordedEvent {
            global_position: row.get("global_position"),
            stream_id: stream.to_owned(),
            stream_version: version,
            event: event.clone(),
            metadata: metadata.clone(),
            recorded_at: row.get::<DateTime<Utc>, _>("recorded_at"),
        };
        projection::apply(&mut *tx, &event).await?;
        recorded.push(event);
    }
    Ok(recorded)
}

/// The stream's current version; 0 when it has no events.
pub async fn stream_version(conn: &mut PgConnection, stream: &str) -> Result<i64> {
    let version: Option<i64> =
        sqlx::query_scalar("SELECT max(stream_version) FROM events WHERE stream_id = $1")
            .bind(stream)
            .fetch_one(conn)
            .await?;
    Ok(version.unwrap_or(0))
}

pub async fn read_stream(conn: &mut PgConnection, stream: &str) -> Result<Vec<RecordedEvent>> {
    read_stream_after(conn, stream, 0).await
}

/// The stream's events with a version above `after`, in order (a follower's next page).
pub async fn read_stream_after(
    conn: &mut PgConnection,
    stream: &str,
    after: i64,
) -> Result<Vec<RecordedEvent>> {
    let rows = sqlx::query(
        "SELECT global_position, stream_id, stream_version, event_type, event_version, data,
                metadata, recorded_at
         FROM events WHERE stream_id = $1 AND stream_version > $2 ORDER BY stream_version",
    )
    .bind(stream)
    .bind(after)
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(decode_row).collect()
}

/// The stream's events recorded at or before `until`, in order (what was known then).
pub async fn read_stream_until(
    conn: &mut PgConnection,
    stream: &str,
    until: DateTime<Utc>,
) -> Result<Vec<RecordedEvent>> {
    let rows = sqlx::query(
        "SELECT global_position, stream_id, stream_version, event_type, event_version, data,
                metadata, recorded_at
         FROM events WHERE stream_id = $1 AND recorded_at <= $2 ORDER BY stream_version",
    )
    .bind(stream)
    .bind(until)
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(decode_row).collect()
}

/// The stream's first event (a deployment's request), without reading the rest.
pub async fn read_first(conn: &mut PgConnection, stream: &str) -> Result<Option<RecordedEvent>> {
    let row = sqlx::query(
        "SELECT global_position, stream_id, stream_version, event_type, event_version, data,
                metadata, recorded_at
         FROM events WHERE stream_id = $1 AND stream_version = 1",
    )
    .bind(stream)
    .fetch_optional(conn)
    .await?;
    row.map(decode_row).transpose()
}

/// Events after `after` in `global_position` order, at most `limit`.
pub async fn read_all(
    conn: &mut PgConnection,
    after: i64,
    limit: i64,
) -> Result<Vec<RecordedEvent>> {
    let rows = sqlx::query(
        "SELECT global_position, stream_id, stream_version, event_type, event_version, data,
                metadata, recorded_at
         FROM events WHERE global_position > $1 ORDER BY global_position LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(decode_row).collect()
}

fn decode_row(row: sqlx::postgres::PgRow) -> Result<RecordedEvent> {
    let event_type: String = row.get("event_type");
    let event_version: i32 = row.get("event_version");
    let data: serde_json::Value = row.get("data");
    let metadata: serde_json::Value = row.get("metadata");
    Ok(RecordedEvent {
        global_position: row.get("global_position"),
        stream_id: row.get("stream_id"),
        stream_version: row.get("stream_version"),
        event: Event::from_stored(&event_type, event_version, data)?,
        metadata: serde_json::from_value(metadata)?,
        recorded_at: row.get("recorded_at"),
    })
}
