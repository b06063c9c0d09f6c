//! Keeps a node's map and its copy of the plugins current: a committed catalog change reaches
//! it by `LISTEN/NOTIFY` (normally within milliseconds: `map`, `plugins`), a periodic re-read
//! of both versions catches anything a lost connection missed, and requests that meet a moved
//! shard ask for a re-read at once.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use mezzanine_catalog::Dedicated;

use crate::AppState;

/// Runs until aborted.
pub async fn run(state: Arc<AppState>) {
    let poll = state
        .config
        .catalog_poll_interval
        .max(Duration::from_millis(50));
    let timeout = state.config.pool_settings().query_timeout;
    let mut listener: Option<Dedicated> = None;
    loop {
        if listener.as_ref().is_none_or(|l| !l.is_alive()) {
            listener = match Dedicated::connect(state.catalog.url(), timeout).await {
                Ok(l) => match l.listen().await {
                    Ok(()) => Some(l),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot listen for catalog changes; re-reading periodically");
                        None
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "cannot connect to the catalog to listen; re-reading periodically");
                    None
                }
            };
            // Whatever happened while not listening (one cheap read of the versions; the map
            // and the plugins only if they changed).
            check_version(&state).await;
        }
        let notified = async {
            match listener.as_mut() {
                Some(l) => l.next_notification().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            n = notified => {
                match n {
                    Some(kind) if kind == "map" => {
                        if !state.hold_refresh.load(Ordering::Acquire) {
                            reload(&state).await;
                        }
                    }
                    Some(kind) if kind == mezzanine_catalog::plugins::NOTIFY_KIND => {
                        crate::plugins::reload(&state).await;
                    }
                    Some(_) => {}
                    None => listener = None,
                }
            }
            _ = tokio::time::sleep(poll) => {
                check_version(&state).await;
            }
            _ = state.reload_requested.notified() => {
                check_map_version(&state).await;
            }
        }
    }
}

/// The periodic look: the map (unless held by a test) and the plugins, each reloaded only if
/// its version changed.
async fn check_version(state: &AppState) {
    match state.catalog.versions().await {
        Ok((map, plugins)) => {
            if map > state.map_version() && !state.hold_refresh.load(Ordering::Acquire) {
                reload(state).await;
            }
            if plugins != state.plugins.version() {
                crate::plugins::reload(state).await;
            }
        }
        Err(e) => tracing::debug!(error = %e, "cannot read the catalog's versions"),
    }
}

/// A re-read of the map asked for by a request (held refreshes included).
async fn check_map_version(state: &AppState) {
    match state.catalog.version().await {
        Ok(v) if v > state.map_version() => reload(state).await,
        Ok(_) => {}
        Err(e) => tracing::debug!(error = %e, "cannot read the catalog's map version"),
    }
}

async fn reload(state: &AppState) {
    if let Err(e) = state.reload().await {
        tracing::warn!(error = %e, "cannot reload the shard map from the catalog; keeping the current one");
    }
}
