//! Stored Responses API answers, in the store (SQLite or Postgres). A caller sees only what it
//! created: each record belongs to the key (or master) that made it.

use serde_json::Value;
use sqlx::Row;

use crate::error::{Error, ErrorKind, Result};
use crate::store::{Store, db_error};

/// One stored response.
#[derive(Debug, Clone)]
pub struct StoredResponse {
    pub id: String,
    pub response: Value,
    /// This request's own input items.
    pub input_items: Vec<Value>,
    /// The whole conversation: earlier turns, this input, this output.
    pub context: Vec<Value>,
}

fn not_found(id: &str) -> Error {
    let mut e = Error::new(
        ErrorKind::NotFound,
        format!("No response with id '{id}' was found."),
    )
    .with_code("response_not_found");
    e.param = Some("response_id".into());
    e
}

pub async fn put(store: &Store, owner: &str, r: &StoredResponse, created_at: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO responses (id, owner, created_at, response, input_items, context) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
    )
    .bind(r.id.clone())
    .bind(owner.to_string())
    .bind(created_at)
    .bind(r.response.to_string())
    .bind(Value::Array(r.input_items.clone()).to_string())
    .bind(Value::Array(r.context.clone()).to_string())
    .execute(&store.pool)
    .await
    .map_err(db_error)?;
    Ok(())
}

/// The response `id`, if `owner` made it (another owner's is "not found", as if it did not exist).
pub async fn get(store: &Store, owner: &str, id: &str) -> Result<StoredResponse> {
    let row =
        sqlx::query("SELECT response, input_items, context FROM responses WHERE id = $1 AND owner = $2")
            .bind(id.to_string())
            .bind(owner.to_string())
            .fetch_optional(&store.pool)
            .await
            .map_err(db_error)?
            .ok_or_else(|| not_found(id))?;
    let parse = |k: &str| -> Result<Value> {
        let s: String = row.try_get(k).map_err(db_error)?;
        serde_json::from_str(&s).map_err(|e| Error::internal(format!("stored response {id}: {e}")))
    };
    let list = |v: Value| match v {
        Value::Array(a) => a,
        _ => Vec::new(),
    };
    Ok(StoredResponse {
        id: id.to_string(),
        response: parse("response")?,
        input_items: list(parse("input_items")?),
        context: list(parse("context")?),
    })
}

pub async fn delete(store: &Store, owner: &str, id: &str) -> Result<()> {
    let r = sqlx::query("DELETE FROM responses WHERE id = $1 AND owner = $2")
        .bind(id.to_string())
        .bind(owner.to_string())
        .execute(&store.pool)
        .await
        .map_err(db_error)?;
    if r.rows_affected() == 0 {
        return Err(not_found(id));
    }
    Ok(())
}
