//! partitionRead's query parameters.

use super::*;

#[tokio::test]
async fn bad_partition_numbers_are_422() {
    let srv = server().await;
    for bad in [
        "abc",
        "-1",
        "16",
        "17",
        "4096",
        BIG,
        "-99999999999999999999",
        "1.5",
        "",
        "1e1",
    ] {
        let a = get(&srv, &pr(&format!("partition_number={bad}&read_type=2"))).await;
        expect_problem(&a, 422, &["query.partition_number"]);
    }
    expect_problem(
        &get(&srv, &pr("read_type=2")).await,
        422,
        &["query.partition_number"],
    );
    expect_status(
        &get(&srv, &pr("partition_number=15&read_type=2")).await,
        200,
    );
}

#[tokio::test]
async fn bad_read_types_are_422() {
    let srv = server().await;
    for bad in ["0", "3", "-1", "two", BIG, "1.0", ""] {
        let a = get(&srv, &pr(&format!("partition_number=0&read_type={bad}"))).await;
        expect_problem(&a, 422, &["query.read_type"]);
    }
    expect_problem(
        &get(&srv, &pr("partition_number=0")).await,
        422,
        &["query.read_type"],
    );
}

#[tokio::test]
async fn bad_limits_are_422() {
    let srv = server().await;
    for bad in ["ten", BIG, "-99999999999999999999", "1.5", "1e3", ""] {
        let a = get(
            &srv,
            &pr(&format!("partition_number=0&read_type=2&limit={bad}")),
        )
        .await;
        expect_problem(&a, 422, &["query.limit"]);
    }
    // In range but outside 1..=1000: clamped, as in go-mezzanine.
    for ok in [
        "-1",
        "0",
        "1001",
        "9223372036854775807",
        "-9223372036854775808",
    ] {
        let a = get(
            &srv,
            &pr(&format!("partition_number=0&read_type=2&limit={ok}")),
        )
        .await;
        expect_status(&a, 200);
    }
}

#[tokio::test]
async fn bad_added_ids_are_422() {
    let srv = server().await;
    for bad in [
        "first",
        BIG,
        "-99999999999999999999",
        "9223372036854775808",
        "1.5",
        "",
    ] {
        let a = get(
            &srv,
            &pr(&format!("partition_number=0&read_type=2&added_id={bad}")),
        )
        .await;
        expect_problem(&a, 422, &["query.added_id"]);
    }
    for ok in ["-1", "9223372036854775807"] {
        expect_status(
            &get(
                &srv,
                &pr(&format!("partition_number=0&read_type=2&added_id={ok}")),
            )
            .await,
            200,
        );
    }
}

#[tokio::test]
async fn bad_created_after_is_422() {
    let srv = server().await;
    for bad in [
        "yesterday",
        "2024-01-31",
        "2024-01-31T12:00:00",
        "2024-13-01T00:00:00Z",
        "2024-01-31T25:00:00Z",
        "1706702400",
        "",
    ] {
        let a = get(
            &srv,
            &pr(&format!(
                "partition_number=0&read_type=1&created_after={bad}"
            )),
        )
        .await;
        expect_problem(&a, 422, &["query.created_after"]);
    }
    for ok in [
        "2024-01-31T12:00:00Z",
        "2024-01-31T12:00:00.123456%2B02:00",
        "2024-01-31T12:00:00-05:00",
    ] {
        expect_status(
            &get(
                &srv,
                &pr(&format!(
                    "partition_number=0&read_type=1&created_after={ok}"
                )),
            )
            .await,
            200,
        );
    }
}
