//! `backend add` without forgery, and the map's export without secrets.
//!
//! A URL is checked before any connection: a PostgreSQL URL naming a host and a database
//! (`mezzanine_storage::conninfo::backend_targets`), every host it would connect to allowed
//! by `BACKEND_HOSTS_ALLOWED` (`mezzanine_core::hosts`). A refusal is a 422 naming
//! `body.url`: the request is understood but its value is not acceptable here, as any other
//! bad field (403 would read as "your token may not do this", which is the authentication's
//! answer). Every attempt is audited: `backend_add` by the catalog when it succeeds,
//! `backend_add_failed` here otherwise, with the URL masked and the error scrubbed of the
//! password (a server may echo it).

use mezzanine_core::conninfo::scrub;
use mezzanine_core::shardmap::valid_backend_name;
use mezzanine_core::{FieldError, ShardMap, ShardsFile};
use mezzanine_storage::conninfo::backend_targets;
use mezzanine_storage::mask_url;
use serde_json::{json, Value};

use crate::problem::Problem;
use crate::AppState;

/// Registers an empty backend (see [`AppState::add_backend`]), auditing a failed attempt.
pub(crate) async fn add(st: &AppState, name: &str, url: &str, weight: f64) -> Result<(), Problem> {
    let masked = mask_url(url);
    let result = try_add(st, name, url, weight, &masked).await;
    if let Err(p) = &result {
        let detail = json!({
            "name": name,
            "url": masked,
            "weight": weight,
            "status": p.status,
            "error": scrub(&p.detail, url),
        });
        if let Err(e) = st.catalog.record("backend_add_failed", &detail).await {
            tracing::warn!(backend = %name, error = %e, "a failed backend add could not be audited");
        }
    }
    result
}

async fn try_add(
    st: &AppState,
    name: &str,
    url: &str,
    weight: f64,
    masked: &str,
) -> Result<(), Problem> {
    if !valid_backend_name(name) {
        return Err(Problem::field(FieldError::new(
            "body.name",
            "must be 1 to 63 characters of letters, digits, '_', '-' or '.'",
            Some(Value::String(name.to_owned())),
        )));
    }
    let field = |message: String| {
        Problem::field(FieldError::new(
            "body.url",
            scrub(&message, url),
            Some(Value::String(masked.to_owned())),
        ))
    };
    // Nothing is connected to before these checks pass.
    let targets = backend_targets(url).map_err(field)?;
    let allowed = st.config.backend_hosts_allowed.clone().unwrap_or_default();
    for t in &targets {
        allowed.check(t).map_err(|e| field(e.to_string()))?;
    }
    let backend = mezzanine_storage::Backend::new(name, url, st.config.pool_settings())
        .map_err(|e| field(e.to_string()))?;
    let cluster = st.catalog.tag();
    mezzanine_storage::schema::prepare_member(
        &backend,
        st.num_shards(),
        &[],
        false,
        cluster.as_ref(),
    )
    .await
    .map_err(|e| field(format!("the backend cannot be used: {e}")))?;
    st.catalog.add_backend(name, url, weight).await?;
    if let Err(e) = st.reload().await {
        tracing::warn!(error = %e, "backend added, but the map could not be reloaded yet");
    }
    Ok(())
}

/// The `query.with_secrets` of `GET /admin/v1/shards/export`: `true` or `false` (default).
pub(crate) fn with_secrets(q: Option<&str>) -> Result<bool, Problem> {
    let given = url::form_urlencoded::parse(q.unwrap_or("").as_bytes())
        .find(|(k, _)| k == "with_secrets")
        .map(|(_, v)| v.into_owned());
    match given.as_deref() {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(Problem::field(FieldError::new(
            "query.with_secrets",
            "must be true or false",
            Some(Value::String(other.to_owned())),
        ))),
    }
}

/// The map in `shards.json` form, every password masked unless `with_secrets`.
pub(crate) fn export_file(map: &ShardMap, with_secrets: bool) -> ShardsFile {
    let mut file = map.to_file();
    if !with_secrets {
        for b in &mut file.backends {
            b.database_url = mask_url(&b.database_url);
        }
        for b in &mut file.spare_backends {
            b.database_url = mask_url(&b.database_url);
        }
    }
    file
}
