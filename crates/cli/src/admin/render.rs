//! The human output of the admin commands: each answer as a few lines and a table.

use super::table::{millis, or_dash, rows_progress, shard_range, table, weight_label};
use super::types::{Backend, BackendList, Job, MoveList, Reloaded, ShardMap, Status, VerifyReport};

/// `mezzanine shards`.
pub fn shard_map(map: &ShardMap) -> String {
    let mut out = format!(
        "num_shards {}, map version {}\n",
        or_dash(map.num_shards),
        or_dash(map.version)
    );
    let rows: Vec<Vec<String>> = map
        .ranges
        .iter()
        .map(|r| {
            vec![
                shard_range(r.start, r.end),
                r.backend.clone(),
                r.state.clone(),
            ]
        })
        .collect();
    out.push_str(&table(&["SHARDS", "BACKEND", "STATE"], &rows));
    out
}

/// `mezzanine backend list`; an `ERROR` column only when some backend has an error.
pub fn backends(list: &BackendList) -> String {
    let with_errors = list.backends.iter().any(|b| b.error.is_some());
    let mut header = vec!["NAME", "URL", "SHARDS", "WEIGHT", "UP", "LATENCY"];
    if with_errors {
        header.push("ERROR");
    }
    let rows: Vec<Vec<String>> = list
        .backends
        .iter()
        .map(|b| {
            let mut row = vec![
                b.name.clone(),
                b.url.clone(),
                or_dash(b.shards),
                weight(b),
                up(b.up).to_owned(),
                b.latency_ms.map_or_else(|| "-".to_owned(), millis),
            ];
            if with_errors {
                row.push(b.error.clone().unwrap_or_default());
            }
            row
        })
        .collect();
    table(&header, &rows)
}

fn up(up: Option<bool>) -> &'static str {
    match up {
        Some(true) => "yes",
        Some(false) => "no",
        None => "-",
    }
}

/// A backend's weight, and whether it drains: `1`, `2.5 draining`.
fn weight(b: &Backend) -> String {
    match b.weight {
        Some(w) => weight_label(w, b.draining),
        None => "-".to_owned(),
    }
}

/// `mezzanine backend set`: the backend as it is now.
pub fn backend_line(b: &Backend) -> String {
    format!(
        "backend {}: weight {}, {} shards\n",
        b.name,
        weight(b),
        or_dash(b.shards)
    )
}

/// `mezzanine backend add`: the backend the server registered.
pub fn backend_added(b: &Backend) -> String {
    let mut out = format!(
        "added backend {} ({}): {} shards, up {}",
        b.name,
        b.url,
        or_dash(b.shards),
        up(b.up)
    );
    if let Some(ms) = b.latency_ms {
        out.push_str(&format!(", latency {}", millis(ms)));
    }
    if let Some(e) = &b.error {
        out.push_str(&format!(", error: {e}"));
    }
    out.push('\n');
    out
}

/// The backends a job's shards come from, in order of first appearance.
fn sources(job: &Job) -> String {
    let mut from: Vec<&str> = Vec::new();
    for s in &job.shards {
        if let Some(f) = s.from.as_deref() {
            if !from.contains(&f) {
                from.push(f);
            }
        }
    }
    if from.is_empty() {
        "-".to_owned()
    } else {
        from.join(",")
    }
}

/// Rows copied of rows total over a job's shards.
fn job_rows(job: &Job) -> String {
    if job.shards.is_empty() {
        return "-".to_owned();
    }
    let p = super::progress::JobProgress::of(job);
    rows_progress(Some(p.copied), Some(p.total))
}

/// `mezzanine move list`.
pub fn moves(list: &MoveList) -> String {
    if list.moves.is_empty() {
        return "no moves\n".to_owned();
    }
    let rows: Vec<Vec<String>> = list
        .moves
        .iter()
        .map(|j| {
            vec![
                j.id.to_string(),
                j.state.clone(),
                or_dash(j.shards_spec.as_deref()),
                sources(j),
                or_dash(j.to.as_deref()),
                job_rows(j),
                or_dash(j.updated_at.as_deref().or(j.created_at.as_deref())),
            ]
        })
        .collect();
    table(
        &["ID", "STATE", "SHARDS", "FROM", "TO", "ROWS", "UPDATED"],
        &rows,
    )
}

/// A state, and the request the mover has yet to carry out: `running (abort requested)`.
pub fn state(state: &str, requested: Option<&str>) -> String {
    match requested {
        Some(r) => format!("{state} ({r} requested)"),
        None => state.to_owned(),
    }
}

/// One line about a job: `move 7: running, shards 8-15 from db1 to db3`.
pub fn job_line(job: &Job) -> String {
    let mut line = format!(
        "move {}: {}, shards {} from {} to {}",
        job.id,
        state(&job.state, job.requested.as_deref()),
        or_dash(job.shards_spec.as_deref()),
        sources(job),
        or_dash(job.to.as_deref())
    );
    if let Some(r) = job.reverts {
        line.push_str(&format!(" (reverts move {r})"));
    }
    line.push('\n');
    line
}

/// `mezzanine move status`: the job, then one row per shard.
pub fn job(job: &Job) -> String {
    let mut out = job_line(job);
    let limits = format!(
        "parallel {}, {}",
        or_dash(job.parallel),
        match job.max_rows_per_sec {
            Some(n) => format!("at most {n} rows/s"),
            None => "no rate limit".to_owned(),
        }
    );
    out.push_str(&format!("  {limits}\n"));
    if job.created_at.is_some() || job.updated_at.is_some() {
        out.push_str(&format!(
            "  created {}, updated {}\n",
            or_dash(job.created_at.as_deref()),
            or_dash(job.updated_at.as_deref())
        ));
    }
    if !job.shards.is_empty() {
        let p = super::progress::JobProgress::of(job);
        out.push_str(&format!(
            "  rows {}, lag {}\n",
            rows_progress(Some(p.copied), Some(p.total)),
            p.lag
        ));
    }
    if let Some(e) = &job.error {
        out.push_str(&format!("  error: {e}\n"));
    }
    if job.shards.is_empty() {
        return out;
    }
    let with_errors = job.shards.iter().any(|s| s.error.is_some());
    let mut header = vec!["SHARD", "FROM", "TO", "STATE", "ROWS", "LAG", "PAUSE"];
    if with_errors {
        header.push("ERROR");
    }
    let rows: Vec<Vec<String>> = job
        .shards
        .iter()
        .map(|s| {
            let mut row = vec![
                s.shard.to_string(),
                or_dash(s.from.as_deref()),
                or_dash(s.to.as_deref().or(job.to.as_deref())),
                if s.fence_pending {
                    format!("{} (target fence pending)", s.state)
                } else {
                    s.state.clone()
                },
                rows_progress(s.rows_copied, s.rows_total),
                or_dash(s.lag),
                s.pause_ms.map_or_else(|| "-".to_owned(), millis),
            ];
            if with_errors {
                row.push(s.error.clone().unwrap_or_default());
            }
            row
        })
        .collect();
    out.push_str(&table(&header, &rows));
    out
}

/// `mezzanine verify`: a table of the shards, then what differs.
pub fn verify(report: &VerifyReport) -> String {
    let rows: Vec<Vec<String>> = report
        .shards
        .iter()
        .map(|s| {
            let copies: Vec<String> = s
                .copies
                .iter()
                .map(|c| {
                    format!(
                        "{} {} {} rows",
                        c.backend,
                        c.state.as_deref().unwrap_or("?"),
                        or_dash(c.rows)
                    )
                })
                .collect();
            vec![
                s.shard.to_string(),
                or_dash(s.owner.as_deref()),
                if s.ok { "ok" } else { "DIFFERS" }.to_owned(),
                copies.join("; "),
            ]
        })
        .collect();
    let mut out = table(&["SHARD", "OWNER", "RESULT", "COPIES"], &rows);
    for s in report
        .shards
        .iter()
        .filter(|s| !s.ok || !s.problems.is_empty())
    {
        out.push_str(&format!("\nshard {}:\n", s.shard));
        for d in &s.differences {
            let id = or_dash(d.added_id);
            let line = match d.kind.as_str() {
                "missing" => format!(
                    "missing on {}: added_id {id}",
                    d.backend.as_deref().unwrap_or("?")
                ),
                "changed" if !d.columns.is_empty() => {
                    format!("changed: added_id {id} ({})", d.columns.join(", "))
                }
                kind => format!("{kind}: added_id {id}"),
            };
            out.push_str(&format!("  {line}\n"));
        }
        if s.more {
            out.push_str("  ... more differences not listed\n");
        }
        for p in &s.problems {
            out.push_str(&format!("  problem: {p}\n"));
        }
    }
    out.push_str(if report.ok {
        "\nall copies match\n"
    } else {
        "\ncopies differ\n"
    });
    out
}

/// The shards a verify found different, for the error message.
pub fn differing_shards(report: &VerifyReport) -> String {
    let bad: Vec<String> = report
        .shards
        .iter()
        .filter(|s| !s.ok)
        .map(|s| s.shard.to_string())
        .collect();
    bad.join(", ")
}

/// `mezzanine status`.
pub fn status(s: &Status) -> String {
    let node = match &s.node {
        Some(n) => {
            let mover = match n.mover {
                Some(true) => " (mover enabled)",
                Some(false) => " (mover disabled)",
                None => "",
            };
            format!("{} at {}{mover}", n.id, n.addr)
        }
        None => "-".to_owned(),
    };
    let leader = match &s.leader {
        Some(l) => match l.term {
            Some(t) => format!("{} at {} (term {t})", l.id, l.addr),
            None => format!("{} at {}", l.id, l.addr),
        },
        None => "none (no node leads moves)".to_owned(),
    };
    let mut rows = vec![
        vec!["leader".into(), leader],
        vec!["map".into(), format!("version {}", or_dash(s.map_version))],
    ];
    if let Some(id) = &s.cluster_id {
        rows.push(vec!["cluster".into(), id.clone()]);
    }
    if let Some(a) = &s.auth {
        if let Some(admin) = &a.admin_api {
            rows.push(vec!["admin API".into(), admin.clone()]);
        }
        if let Some(data) = &a.data_api {
            rows.push(vec!["data API".into(), data.clone()]);
        }
        let names = match a.tokens.as_slice() {
            [] => "none".to_owned(),
            n => n.join(", "),
        };
        rows.push(vec!["tokens".into(), names]);
    }
    if let Some(t) = &s.tls {
        let tls = match (t.enabled, t.client_certificates.as_deref()) {
            (false, _) => "off: plain HTTP".to_owned(),
            (true, Some("required")) => "HTTPS, client certificates required".to_owned(),
            (true, _) => "HTTPS".to_owned(),
        };
        rows.push(vec!["TLS".into(), tls]);
    }
    let mut out = table(&["node", &node], &rows);
    for w in &s.warnings {
        out.push_str(&format!("WARNING: {w}\n"));
    }
    out
}

/// `mezzanine reload`.
pub fn reloaded(r: &Reloaded) -> String {
    format!("map reloaded, version {}\n", or_dash(r.map_version))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode<T: serde::de::DeserializeOwned>(json: &str) -> T {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn the_shard_map() {
        let map: ShardMap = decode(
            r#"{"num_shards": 64, "version": 3, "ranges": [
                {"start": 0, "end": 7, "backend": "db1", "state": "active"},
                {"start": 8, "end": 8, "backend": "db1", "state": "copying"},
                {"start": 9, "end": 63, "backend": "db2", "state": "active"}]}"#,
        );
        assert_eq!(
            shard_map(&map),
            "num_shards 64, map version 3\n\
             SHARDS  BACKEND  STATE\n\
             0-7     db1      active\n\
             8       db1      copying\n\
             9-63    db2      active\n"
        );
    }

    #[test]
    fn backends_show_errors_only_when_there_are_some() {
        let ok: BackendList = decode(
            r#"{"backends": [{"name": "db1", "url": "postgres://u:***@h:5432/db", "shards": 32,
                "weight": 1, "draining": false, "up": true, "latency_ms": 0.4, "error": null}]}"#,
        );
        assert_eq!(
            backends(&ok),
            "NAME  URL                         SHARDS  WEIGHT  UP   LATENCY\n\
             db1   postgres://u:***@h:5432/db  32      1       yes  0.40 ms\n"
        );
        let down: BackendList = decode(
            r#"{"backends": [{"name": "db2", "url": "u", "shards": 0, "weight": 2.5,
                "draining": true, "up": false, "latency_ms": null, "error": "connection refused"}]}"#,
        );
        let text = backends(&down);
        assert!(
            text.starts_with("NAME  URL  SHARDS  WEIGHT        UP  LATENCY  ERROR\n"),
            "{text}"
        );
        assert!(
            text.contains("db2   u    0       2.5 draining  no  -        connection refused"),
            "{text}"
        );
    }

    const JOB: &str = r#"{"id": 7, "state": "running", "to": "db3", "shards_spec": "8-9",
        "parallel": 4, "max_rows_per_sec": null, "created_at": "t0", "updated_at": "t1",
        "error": null, "reverts": null, "shards": [
        {"shard": 8, "from": "db1", "to": "db3", "state": "copying", "rows_copied": 1200,
         "rows_total": 5000, "lag": 30, "pause_ms": null, "error": null},
        {"shard": 9, "from": "db1", "to": "db3", "state": "switched", "rows_copied": 10,
         "rows_total": 10, "lag": 0, "pause_ms": 12.5, "error": null}]}"#;

    #[test]
    fn a_job() {
        let j: Job = decode(JOB);
        assert_eq!(
            job(&j),
            "move 7: running, shards 8-9 from db1 to db3\n  \
             parallel 4, no rate limit\n  \
             created t0, updated t1\n  \
             rows 1210/5010 (24%), lag 30\n\
             SHARD  FROM  TO   STATE     ROWS             LAG  PAUSE\n\
             8      db1   db3  copying   1200/5000 (24%)  30   -\n\
             9      db1   db3  switched  10/10 (100%)     0    12.5 ms\n"
        );
    }

    #[test]
    fn a_pending_request_shows_next_to_the_state() {
        let j: Job = decode(r#"{"id": 7, "state": "switched", "requested": "complete"}"#);
        assert!(
            job_line(&j).starts_with("move 7: switched (complete requested), shards"),
            "{}",
            job_line(&j)
        );
    }

    #[test]
    fn a_failed_job_shows_its_errors() {
        let j: Job = decode(
            r#"{"id": 8, "state": "failed", "to": "db1", "reverts": 7, "max_rows_per_sec": 500,
                "error": "target full", "shards": [{"shard": 8, "state": "failed",
                "error": "disk full", "fence_pending": true}]}"#,
        );
        let text = job(&j);
        assert!(text.contains("failed (target fence pending)"), "{text}");
        assert!(text.starts_with("move 8: failed, shards - from - to db1 (reverts move 7)\n"));
        assert!(text.contains("at most 500 rows/s"));
        assert!(text.contains("  error: target full\n"));
        assert!(text.contains("ERROR"));
        assert!(text.contains("disk full"));
    }

    #[test]
    fn the_move_list() {
        let list: MoveList = decode(&format!(
            r#"{{"moves": [{JOB}, {{"id": 3, "state": "completed"}}]}}"#
        ));
        assert_eq!(
            moves(&list),
            "ID  STATE      SHARDS  FROM  TO   ROWS             UPDATED\n\
             7   running    8-9     db1   db3  1210/5010 (24%)  t1\n\
             3   completed  -       -     -    -                -\n"
        );
        assert_eq!(moves(&MoveList::default()), "no moves\n");
    }

    #[test]
    fn a_verify_report() {
        let r: VerifyReport = decode(
            r#"{"ok": false, "shards": [
                {"shard": 8, "owner": "db3", "ok": false,
                 "copies": [{"backend": "db1", "state": "retired", "rows": 10, "checksum": "a"},
                            {"backend": "db3", "state": "active", "rows": 9, "checksum": "b"}],
                 "differences": [{"kind": "missing", "backend": "db3", "added_id": 42},
                                 {"kind": "changed", "added_id": 43, "columns": ["body"]}],
                 "more": true, "problems": ["checksums differ"]},
                {"shard": 9, "owner": "db3", "ok": true, "copies": [], "differences": [],
                 "more": false, "problems": []}]}"#,
        );
        assert_eq!(
            verify(&r),
            "SHARD  OWNER  RESULT   COPIES\n\
             8      db3    DIFFERS  db1 retired 10 rows; db3 active 9 rows\n\
             9      db3    ok\n\
             \n\
             shard 8:\n  \
             missing on db3: added_id 42\n  \
             changed: added_id 43 (body)\n  \
             ... more differences not listed\n  \
             problem: checksums differ\n\
             \n\
             copies differ\n"
        );
        assert_eq!(differing_shards(&r), "8");
    }

    #[test]
    fn the_status() {
        let s: Status = decode(
            r#"{"node": {"id": "n1", "addr": "127.0.0.1:8080", "mover": true},
                "leader": null, "map_version": 3}"#,
        );
        assert_eq!(
            status(&s),
            "node    n1 at 127.0.0.1:8080 (mover enabled)\n\
             leader  none (no node leads moves)\n\
             map     version 3\n"
        );
        let s: Status = decode(
            r#"{"node": {"id": "n1", "addr": "h:1", "mover": false}, "leader": null,
                "map_version": 3, "cluster_id": "5f0c6f3e-7a51-4c55-9d43-8f5c1f1b2a9e"}"#,
        );
        assert!(
            status(&s).ends_with("cluster  5f0c6f3e-7a51-4c55-9d43-8f5c1f1b2a9e\n"),
            "{}",
            status(&s)
        );
        let s: Status = decode(
            r#"{"node": null, "leader": {"id": "n2", "addr": "h:2", "term": 7}, "map_version": 3}"#,
        );
        assert!(
            status(&s).contains("leader  n2 at h:2 (term 7)\n"),
            "{}",
            status(&s)
        );
    }
}
