//! Dedicated catalog connections: change notifications for every node, and the mover's
//! leadership.
//!
//! The leader is whoever holds a session-level advisory lock on the catalog. The lock lives
//! as long as the session: when the leader's process dies (even by `kill -9`) or loses its
//! connection, PostgreSQL releases it and another node takes it. Every catalog change the
//! mover makes goes through that same session ([`LeaderSession`]), so a node that lost the
//! lock can no longer change a move.
//!
//! Each acquisition also takes the next term (`mezzanine.leader.term`, incremented in the
//! statement that records the new leader: [`LeaderSession::term`]). The backends are not
//! behind the catalog's lock: a leader whose session was cut without it noticing yet may
//! still reach them. So every change the mover makes on a backend carries its term, and a
//! backend refuses a change from a lower term than the one its shard's row holds
//! (`mezzanine_storage::transfer`, `StorageError::Superseded`).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use mezzanine_core::moves::ShardMoveState;
use mezzanine_core::Term;
use tokio::sync::{mpsc, watch};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{AsyncMessage, Client, Row};

use crate::{audit, corrupt, notify, scalar, CatalogError, Db, CHANNEL};

/// How often the leader checks that the catalog answers on its session.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// Key of the advisory lock whose holder leads the mover.
pub const LEADER_LOCK: i64 = 0x6d65_7a7a_0003;

/// Key of the advisory lock whose holder delivers plugin events (`mezzanine-triggers`).
pub const DELIVERY_LOCK: i64 = 0x6d65_7a7a_0004;

/// Tries to take the plugin deliverer's lock (`DELIVERY_LOCK`) on `session`: `true` when this
/// node delivers now. The lock lives as long as the session (released by PostgreSQL when the
/// node dies or its connection ends); the caller keeps the session's heartbeat
/// ([`Dedicated::keep_alive`]) so that a node cut off from the catalog stops within a bound.
pub async fn try_delivery_lock(session: &Dedicated) -> Result<bool, CatalogError> {
    scalar(
        session,
        "SELECT pg_try_advisory_lock($1)",
        &[(&DELIVERY_LOCK, Type::INT8)],
    )
    .await
}

/// Who leads the mover.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LeaderInfo {
    pub id: String,
    pub addr: String,
}

/// The mover's current leader, as [`current_leader`] finds it: who, and the term it holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CurrentLeader {
    pub id: String,
    pub addr: String,
    pub term: Term,
}

/// A connection of its own to the catalog (not from a pool), with its notifications.
pub struct Dedicated {
    client: Arc<Client>,
    /// Set to `false` when the session is found lost: by its connection's end, or by a
    /// heartbeat that got no answer in time ([`Dedicated::keep_alive`]).
    alive_tx: Arc<watch::Sender<bool>>,
    notifications: mpsc::UnboundedReceiver<String>,
    alive: watch::Receiver<bool>,
    timeout: Duration,
}

impl Dedicated {
    /// Connects within `timeout`; statements on it are bounded by `timeout` too. A catalog
    /// that vanishes without a word (a silent partition) ends the session within
    /// [`mezzanine_storage::keepalive::DEAD_PEER_BOUND`], on this side and on the catalog's
    /// (which then releases the session's advisory lock: the mover's leadership).
    pub async fn connect(url: &str, timeout: Duration) -> Result<Dedicated, CatalogError> {
        use mezzanine_storage::keepalive;
        let lost = |m: String| CatalogError::Session(m);
        let (mut config, tls) = mezzanine_storage::conninfo::config(url).map_err(lost)?;
        config.connect_timeout(timeout);
        keepalive::apply(&mut config);
        let options = keepalive::with_server_options(config.get_options());
        config.options(options);
        config.application_name("mezzanine-catalog");
        let (client, mut conn) = tokio::time::timeout(timeout, config.connect(tls.clone()))
            .await
            .map_err(|_| lost(format!("no connection within {timeout:?}")))?
            .map_err(|e| lost(mezzanine_storage::tls::cause(&e, &tls)))?;
        let (tx, notifications) = mpsc::unbounded_channel();
        let (alive_tx, alive) = watch::channel(true);
        let alive_tx = Arc::new(alive_tx);
        let conn_alive = alive_tx.clone();
        tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
            while let Some(m) = messages.next().await {
                match m {
                    Ok(AsyncMessage::Notification(n)) => {
                        let _ = tx.send(n.payload().to_owned());
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %mezzanine_storage::pg_cause(&e), "catalog session lost");
                        break;
                    }
                }
            }
            conn_alive.send_replace(false);
        });
        // PostgreSQL 12 and later: the catalog's side also gives up on unacknowledged data.
        // An older server refuses the setting; its keepalives (the options above) remain.
        if let Ok(Err(e)) = tokio::time::timeout(
            timeout,
            client.batch_execute(keepalive::SERVER_USER_TIMEOUT),
        )
        .await
        {
            tracing::debug!(error = %mezzanine_storage::pg_cause(&e), "the catalog keeps its default tcp_user_timeout");
        }
        Ok(Dedicated {
            client: Arc::new(client),
            alive_tx,
            notifications,
            alive,
            timeout,
        })
    }

    /// Whether the session is still connected.
    pub fn is_alive(&self) -> bool {
        *self.alive.borrow() && !self.client.is_closed()
    }

    /// Checks, every `every`, that the catalog answers on this session within its timeout;
    /// the first time it does not, the session counts as lost ([`Dedicated::lost`] resolves).
    /// A connection to a peer that acknowledges and never answers (a hung pooler or proxy on
    /// the way, a catalog that stopped) is never closed by TCP keepalives: this is what makes
    /// the mover's leader notice it, within `every` + the timeout. The heartbeat ends with
    /// the session.
    pub fn keep_alive(&self, every: Duration) {
        let client = Arc::downgrade(&self.client);
        let alive = self.alive_tx.clone();
        let timeout = self.timeout;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(c) = client.upgrade() else { return };
                if !*alive.borrow() || c.is_closed() {
                    return;
                }
                let answered = tokio::time::timeout(timeout, c.simple_query("SELECT 1")).await;
                drop(c);
                if !matches!(answered, Ok(Ok(_))) {
                    tracing::warn!(?timeout, "the catalog did not answer the session's heartbeat in time: the session counts as lost");
                    alive.send_replace(false);
                    return;
                }
            }
        });
    }

    /// Resolves when the session is lost.
    pub async fn lost(&self) {
        let mut alive = self.alive.clone();
        while *alive.borrow_and_update() {
            if alive.changed().await.is_err() {
                return;
            }
        }
    }

    /// One statement, bounded by the session's timeout.
    pub async fn query(
        &self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Vec<Row>, CatalogError> {
        match tokio::time::timeout(self.timeout, self.client.query_typed(sql, params)).await {
            Ok(Ok(rows)) => Ok(rows),
            Ok(Err(e)) => Err(CatalogError::Session(mezzanine_storage::pg_cause(&e))),
            Err(_) => Err(CatalogError::Session(format!(
                "the catalog did not answer within {:?}",
                self.timeout
            ))),
        }
    }

    /// Subscribes to catalog change notifications.
    pub async fn listen(&self) -> Result<(), CatalogError> {
        match tokio::time::timeout(
            self.timeout,
            self.client.batch_execute(&format!("LISTEN {CHANNEL}")),
        )
        .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(CatalogError::Session(mezzanine_storage::pg_cause(&e))),
            Err(_) => Err(CatalogError::Session("LISTEN timed out".into())),
        }
    }

    /// The next notification's payload; `None` once the session is lost.
    pub async fn next_notification(&mut self) -> Option<String> {
        self.notifications.recv().await
    }

    /// Drops the notifications received and not read yet (for a reader that re-reads
    /// everything on any of them).
    pub fn discard_pending(&mut self) {
        while self.notifications.try_recv().is_ok() {}
    }
}

impl Db for Dedicated {
    async fn rows(
        &self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Vec<Row>, CatalogError> {
        self.query(sql, params).await
    }
}

/// A node's candidacy for the mover's leadership.
pub struct Leader {
    url: String,
    timeout: Duration,
    pub info: LeaderInfo,
    /// The session of the last attempt, kept for the next one while it is alive.
    candidate: Option<Dedicated>,
}

impl Leader {
    pub fn new(url: &str, timeout: Duration, info: LeaderInfo) -> Leader {
        Leader {
            url: url.to_owned(),
            timeout,
            info,
            candidate: None,
        }
    }

    /// Tries to become the leader: `Some` session holding the lock, or `None` when another
    /// node leads. A waiting node keeps its session between attempts. Each success takes the
    /// next term ([`LeaderSession::term`]), in the statement that records this node as the
    /// leader.
    pub async fn try_acquire(&mut self) -> Result<Option<LeaderSession>, CatalogError> {
        let session = match self.candidate.take() {
            Some(s) if s.is_alive() => s,
            _ => Dedicated::connect(&self.url, self.timeout).await?,
        };
        let got: bool = scalar(
            &session,
            "SELECT pg_try_advisory_lock($1)",
            &[(&LEADER_LOCK, Type::INT8)],
        )
        .await?;
        if !got {
            self.candidate = Some(session);
            return Ok(None);
        }
        let term: i64 = scalar(
            &session,
            "INSERT INTO mezzanine.leader (id, node_id, addr, pid, since, term) \
             VALUES (1, $1, $2, pg_backend_pid(), now(), 1) \
             ON CONFLICT (id) DO UPDATE SET node_id = EXCLUDED.node_id, addr = EXCLUDED.addr, \
               pid = EXCLUDED.pid, since = EXCLUDED.since, term = mezzanine.leader.term + 1 \
             RETURNING term",
            &[(&self.info.id, Type::TEXT), (&self.info.addr, Type::TEXT)],
        )
        .await?;
        // Leadership that cannot reach the catalog any more ends within a bound, whatever the
        // connection does.
        session.keep_alive(HEARTBEAT);
        let s = LeaderSession {
            session,
            node: self.info.id.clone(),
            term: Term(term),
        };
        s.audit(
            "leader",
            &serde_json::json!({"node": self.info.id, "addr": self.info.addr, "term": term}),
        )
        .await?;
        Ok(Some(s))
    }
}

/// The current leader, if any node holds the lock, with its term.
pub async fn current_leader(
    catalog: &crate::Catalog,
) -> Result<Option<CurrentLeader>, CatalogError> {
    let rows = crate::query(
        catalog,
        "SELECT l.node_id, l.addr, l.term FROM mezzanine.leader l \
         WHERE EXISTS (SELECT 1 FROM pg_locks k WHERE k.pid = l.pid AND k.locktype = 'advisory' \
                       AND k.granted AND k.objid::bigint = ($1::bigint & 4294967295))",
        &[(&LEADER_LOCK, Type::INT8)],
    )
    .await?;
    rows.first()
        .map(|r| {
            Ok(CurrentLeader {
                id: r.try_get(0).map_err(corrupt)?,
                addr: r.try_get(1).map_err(corrupt)?,
                term: Term(r.try_get(2).map_err(corrupt)?),
            })
        })
        .transpose()
}

/// The leader's session: it holds the lock, and carries every catalog change of the mover.
/// A target copy to fence: what [`LeaderSession::pending_fences`] lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub move_id: i64,
    pub shard: u32,
    /// The move's target backend.
    pub target: String,
    /// The map names the target now (another move brought the shard there): nothing to do.
    pub owned_by_target: bool,
}

pub struct LeaderSession {
    session: Dedicated,
    node: String,
    term: Term,
}

impl LeaderSession {
    /// This leadership's term: higher than every earlier leader's. Every change the mover
    /// makes on a backend carries it.
    pub fn term(&self) -> Term {
        self.term
    }

    pub fn is_alive(&self) -> bool {
        self.session.is_alive()
    }

    /// Resolves when the leadership is lost (the session ended).
    pub async fn lost(&self) {
        self.session.lost().await
    }

    pub async fn audit(&self, kind: &str, detail: &serde_json::Value) -> Result<(), CatalogError> {
        audit(&self.session, &self.node, kind, detail).await
    }

    /// Moves a shard of a job from state `from` to `to` (only if it is in `from`), with an
    /// error message for `failed`. Returns whether it changed. The job's `updated_at` follows
    /// (in the same statement): it is the time of the job's last change of state.
    pub async fn set_state(
        &self,
        move_id: i64,
        shard: u32,
        from: ShardMoveState,
        to: ShardMoveState,
        error: Option<&str>,
    ) -> Result<bool, CatalogError> {
        let s = shard as i32;
        let rows = self
            .session
            .query(
                "WITH s AS (UPDATE mezzanine.move_shards SET state = $4, error = coalesce($5, error), updated_at = now(), \
                        started_at = CASE WHEN $4 = 'copying' THEN coalesce(started_at, now()) ELSE started_at END \
                 WHERE move_id = $1 AND shard = $2 AND state = $3 RETURNING shard), \
                      j AS (UPDATE mezzanine.moves SET updated_at = greatest(updated_at, now()) \
                            WHERE id = $1 AND EXISTS (SELECT 1 FROM s)) \
                 SELECT shard FROM s",
                &[
                    (&move_id, Type::INT8),
                    (&s, Type::INT4),
                    (&from.as_str(), Type::TEXT),
                    (&to.as_str(), Type::TEXT),
                    (&error, Type::TEXT),
                ],
            )
            .await?;
        if rows.is_empty() {
            return Ok(false);
        }
        self.audit(
            "move_shard",
            &serde_json::json!({"move": move_id, "shard": shard, "from": from.as_str(), "to": to.as_str(), "error": error}),
        )
        .await?;
        notify(&self.session, "moves").await?;
        Ok(true)
    }

    /// Records copy progress.
    pub async fn progress(
        &self,
        move_id: i64,
        shard: u32,
        high_water: i64,
        rows_copied: i64,
        rows_total: i64,
        lag: Option<i64>,
    ) -> Result<(), CatalogError> {
        let s = shard as i32;
        self.session
            .query(
                "UPDATE mezzanine.move_shards SET high_water = $3, rows_copied = $4, rows_total = $5, \
                        lag = $6, updated_at = now() WHERE move_id = $1 AND shard = $2",
                &[
                    (&move_id, Type::INT8),
                    (&s, Type::INT4),
                    (&high_water, Type::INT8),
                    (&rows_copied, Type::INT8),
                    (&rows_total, Type::INT8),
                    (&lag, Type::INT8),
                ],
            )
            .await?;
        Ok(())
    }

    /// Records that the copied prefix up to `upto` was verified (a leader resuming a cutover
    /// then verifies only the tail, so the pause does not grow with the shard's size).
    pub async fn set_verified(
        &self,
        move_id: i64,
        shard: u32,
        upto: i64,
    ) -> Result<(), CatalogError> {
        let s = shard as i32;
        self.session
            .query(
                "UPDATE mezzanine.move_shards SET verified = $3, updated_at = now() WHERE move_id = $1 AND shard = $2",
                &[(&move_id, Type::INT8), (&s, Type::INT4), (&upto, Type::INT8)],
            )
            .await?;
        Ok(())
    }

    /// Records when the source is frozen (kept if set already: a resumed cutover), so that the
    /// pause reported at the switch covers the whole freeze, across a change of leader.
    pub async fn mark_frozen(&self, move_id: i64, shard: u32) -> Result<(), CatalogError> {
        let s = shard as i32;
        self.session
            .query(
                "UPDATE mezzanine.move_shards SET frozen_at = coalesce(frozen_at, clock_timestamp()) \
                 WHERE move_id = $1 AND shard = $2",
                &[(&move_id, Type::INT8), (&s, Type::INT4)],
            )
            .await?;
        Ok(())
    }

    /// The epoch the shard will have on its target after the switch.
    pub async fn next_epoch(&self, shard: u32) -> Result<i64, CatalogError> {
        let s = shard as i32;
        scalar(
            &self.session,
            "SELECT epoch + 1 FROM mezzanine.shards WHERE shard = $1",
            &[(&s, Type::INT4)],
        )
        .await
    }

    /// Switches the map: the shard's owner becomes `to` (only if it is `from`), its epoch is
    /// bumped, the map version too, the move's shard becomes `switched`; all in one statement,
    /// with an audit row and a notification (the job's `updated_at` becomes its `switched_at`), and only while the move's shard is `cutover`
    /// and the map names `from` or `to` (when it names `to` already, it only marks the shard
    /// switched). Idempotent: a shard switched to `to` already is a success. Anything else is
    /// refused, nothing changed ([`CatalogError::Conflict`], saying what was expected and
    /// found): a map that names a third backend, or a move's shard in another state, was
    /// changed behind the mover's back. The pause is measured by the catalog's clock from
    /// [`LeaderSession::mark_frozen`]. Returns the map version and the pause in ms.
    pub async fn switch(
        &self,
        move_id: i64,
        shard: u32,
        from: &str,
        to: &str,
    ) -> Result<(i64, Option<f64>), CatalogError> {
        let s = shard as i32;
        let detail = serde_json::json!({"move": move_id, "shard": shard, "from": from, "to": to});
        let rows = self
            .session
            .query(
                "WITH cur AS (SELECT sh.backend AS owner, ms.state AS state FROM mezzanine.shards sh \
                              LEFT JOIN mezzanine.move_shards ms ON ms.move_id = $1 AND ms.shard = sh.shard \
                              WHERE sh.shard = $2), \
                      ok AS (SELECT 1 FROM cur WHERE state = 'cutover' AND owner IN ($3, $4)), \
                      sh AS (UPDATE mezzanine.shards SET backend = $4, epoch = epoch + 1 \
                             WHERE shard = $2 AND backend = $3 AND EXISTS (SELECT 1 FROM ok) RETURNING epoch), \
                      v AS (UPDATE mezzanine.meta SET map_version = map_version + 1 \
                            WHERE EXISTS (SELECT 1 FROM sh) RETURNING map_version), \
                      ms AS (UPDATE mezzanine.move_shards SET state = 'switched', switched_at = clock_timestamp(), \
                                    pause_ms = extract(epoch FROM clock_timestamp() - frozen_at)::float8 * 1000, \
                                    updated_at = now() \
                             WHERE move_id = $1 AND shard = $2 AND state = 'cutover' AND EXISTS (SELECT 1 FROM ok) \
                             RETURNING pause_ms, switched_at), \
                      j AS (UPDATE mezzanine.moves SET updated_at = greatest(updated_at, (SELECT switched_at FROM ms)) \
                            WHERE id = $1 AND EXISTS (SELECT 1 FROM ms)), \
                      a AS (INSERT INTO mezzanine.audit (node, kind, detail) \
                            SELECT $5, 'switch', $6 || jsonb_build_object('pause_ms', (SELECT pause_ms FROM ms)) FROM v) \
                 SELECT coalesce((SELECT map_version FROM v), (SELECT map_version FROM mezzanine.meta)), \
                        (SELECT pause_ms FROM ms), EXISTS (SELECT 1 FROM ms), \
                        (SELECT owner FROM cur), (SELECT state FROM cur), pg_notify($7, 'map')::text",
                &[
                    (&move_id, Type::INT8),
                    (&s, Type::INT4),
                    (&from, Type::TEXT),
                    (&to, Type::TEXT),
                    (&self.node, Type::TEXT),
                    (&detail, Type::JSONB),
                    (&CHANNEL, Type::TEXT),
                ],
            )
            .await?;
        let row = rows
            .first()
            .ok_or_else(|| CatalogError::Corrupt("no row".into()))?;
        let version: i64 = row.try_get(0).map_err(corrupt)?;
        let pause_ms: Option<f64> = row.try_get(1).map_err(corrupt)?;
        let switched: bool = row.try_get(2).map_err(corrupt)?;
        let owner: Option<String> = row.try_get(3).map_err(corrupt)?;
        let state: Option<String> = row.try_get(4).map_err(corrupt)?;
        switch_outcome(switched, owner.as_deref(), state.as_deref(), to)
            .map(|()| (version, pause_ms))
            .map_err(|found| {
                CatalogError::Conflict(format!(
                    "cannot switch shard {shard} of move {move_id} from {from} to {to}: expected \
                     the map to name {from} (or {to}) and the move's shard to be cutover, found \
                     {found}; nothing changed"
                ))
            })
    }

    /// Who owns `shard` in the catalog now.
    pub async fn owner(&self, shard: u32) -> Result<String, CatalogError> {
        let s = shard as i32;
        scalar(
            &self.session,
            "SELECT backend FROM mezzanine.shards WHERE shard = $1",
            &[(&s, Type::INT4)],
        )
        .await
    }

    /// Records (or clears) that the shard's target copy of this move must be fenced, demoted
    /// from `active` and dropped, once the target answers: set by the undo of a cutover that
    /// gave the shard back to its source without reaching the target.
    pub async fn set_fence(&self, move_id: i64, shard: u32, on: bool) -> Result<(), CatalogError> {
        let s = shard as i32;
        self.session
            .query(
                "UPDATE mezzanine.move_shards SET fence_target = $3 WHERE move_id = $1 AND shard = $2",
                &[(&move_id, Type::INT8), (&s, Type::INT4), (&on, Type::BOOL)],
            )
            .await?;
        Ok(())
    }

    /// The target copies still to fence, of moves that ended (`failed` or `aborted`), for
    /// shards that no move is moving now (a move in flight handles its own target), with
    /// whether the map names the target now.
    pub async fn pending_fences(&self) -> Result<Vec<Fence>, CatalogError> {
        let rows = self
            .session
            .query(
                "SELECT ms.move_id, ms.shard, ms.to_backend, sh.backend = ms.to_backend \
                 FROM mezzanine.move_shards ms JOIN mezzanine.shards sh ON sh.shard = ms.shard \
                 WHERE ms.fence_target AND ms.state IN ('failed', 'aborted') \
                   AND NOT EXISTS (SELECT 1 FROM mezzanine.move_shards o WHERE o.shard = ms.shard \
                                   AND o.state IN ('pending', 'copying', 'catching_up', 'cutover')) \
                 ORDER BY ms.move_id, ms.shard",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let shard: i32 = r.try_get(1).map_err(corrupt)?;
                Ok(Fence {
                    move_id: r.try_get(0).map_err(corrupt)?,
                    shard: u32::try_from(shard).map_err(|_| {
                        CatalogError::Corrupt(format!("shard {shard} in move_shards"))
                    })?,
                    target: r.try_get(2).map_err(corrupt)?,
                    owned_by_target: r.try_get(3).map_err(corrupt)?,
                })
            })
            .collect()
    }

    /// Forgets when the source was frozen: the freeze was given up (the source is `active`
    /// again), and the next freeze's pause counts from its own start.
    pub async fn thawed(&self, move_id: i64, shard: u32) -> Result<(), CatalogError> {
        let s = shard as i32;
        self.session
            .query(
                "UPDATE mezzanine.move_shards SET frozen_at = NULL WHERE move_id = $1 AND shard = $2",
                &[(&move_id, Type::INT8), (&s, Type::INT4)],
            )
            .await?;
        Ok(())
    }

    /// Clears a job's handled request.
    pub async fn clear_request(&self, move_id: i64) -> Result<(), CatalogError> {
        self.session
            .query(
                "UPDATE mezzanine.moves SET requested = NULL, updated_at = now() WHERE id = $1",
                &[(&move_id, Type::INT8)],
            )
            .await?;
        notify(&self.session, "moves").await
    }
}

/// Whether a switch succeeded: it switched the move's shard now, or the shard was switched
/// to `to` before (a repeated switch). Otherwise what was found, in words.
fn switch_outcome(
    switched: bool,
    owner: Option<&str>,
    state: Option<&str>,
    to: &str,
) -> Result<(), String> {
    if switched || (owner == Some(to) && state == Some("switched")) {
        return Ok(());
    }
    let owner = owner.map_or_else(
        || "no such shard in the map".to_owned(),
        |o| format!("the map naming {o}"),
    );
    let state = state.map_or_else(
        || "no such shard in the move".to_owned(),
        |s| format!("the move's shard {s}"),
    );
    Err(format!("{owner} and {state}"))
}

#[cfg(test)]
mod tests {
    use super::switch_outcome;

    #[test]
    fn a_switch_that_changed_nothing_is_refused_unless_done_before() {
        assert_eq!(
            switch_outcome(true, Some("db1"), Some("cutover"), "db3"),
            Ok(())
        );
        assert_eq!(
            switch_outcome(false, Some("db3"), Some("switched"), "db3"),
            Ok(())
        );
        assert_eq!(
            switch_outcome(false, Some("db2"), Some("cutover"), "db3"),
            Err("the map naming db2 and the move's shard cutover".to_owned())
        );
        assert_eq!(
            switch_outcome(false, Some("db1"), Some("aborted"), "db3"),
            Err("the map naming db1 and the move's shard aborted".to_owned())
        );
        assert_eq!(
            switch_outcome(false, Some("db1"), None, "db3"),
            Err("the map naming db1 and no such shard in the move".to_owned())
        );
    }
}
