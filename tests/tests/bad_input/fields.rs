//! Bodies: malformed JSON, wrong types, missing fields, keys, column names, ref_keys, several faults, NUL characters.

use super::*;

#[tokio::test]
async fn malformed_json_is_400_naming_the_body() {
    let srv = server().await;
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let bodies: Vec<Vec<u8>> = [
        "",
        " ",
        "{",
        "{\"row_key\": }",
        "{'row_key': 'x'}",
        "{\"cells\": [1,]}",
        "{\"a\": 1} trailing",
        "{\"a\": 1}{\"b\": 2}",
        "NaN",
        "{\"ref_key\": 01}",
        "\"unterminated",
        deep.as_str(),
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .chain([
        vec![0xff, 0xfe, b'{', b'}'],
        b"{\"body\": \"\xc3\x28\"}".to_vec(),
    ])
    .collect();
    for path in ["/v1/cells", "/v1/cells/batch"] {
        for b in &bodies {
            let a = post(&srv, path, Some("application/json"), b.clone()).await;
            expect_problem(&a, 400, &["body"]);
        }
    }
}

#[tokio::test]
async fn wrong_types_are_422_naming_each_field() {
    let srv = server().await;
    for (field, value) in [
        ("row_key", json!(5)),
        ("row_key", json!(null)),
        ("row_key", json!({"uuid": ROW})),
        ("column_name", json!([])),
        ("column_name", json!(7)),
        ("column_name", json!(null)),
        ("ref_key", json!("x")),
        ("ref_key", json!("1")),
        ("ref_key", json!(true)),
        ("ref_key", json!(null)),
        ("ref_key", json!([1])),
    ] {
        let mut item = good(&Uuid::new_v4().to_string(), "c", 1);
        item[field] = value;
        refused_everywhere(&srv, item, &[&format!(".{field}")]).await;
    }
    // The document itself of the wrong type.
    for doc in ["[1]", "\"x\"", "null", "42", "true", "[]"] {
        expect_problem(&post_text(&srv, "/v1/cells", doc).await, 422, &["body"]);
        expect_problem(
            &post_text(&srv, "/v1/cells/batch", doc).await,
            422,
            &["body"],
        );
    }
}

#[tokio::test]
async fn missing_fields_are_422_naming_each() {
    let srv = server().await;
    let all = [".row_key", ".column_name", ".ref_key", ".body"];
    refused_everywhere(&srv, json!({}), &all).await;
    for (i, field) in ["row_key", "column_name", "ref_key", "body"]
        .iter()
        .enumerate()
    {
        let mut item = good(&Uuid::new_v4().to_string(), "c", 1);
        item.as_object_mut().unwrap().remove(*field);
        refused_everywhere(&srv, item, &[all[i]]).await;
    }
    // A null body is a JSON value like any other: stored, not missing.
    let v = json!({"row_key": Uuid::new_v4().to_string(), "column_name": "c", "ref_key": 1, "body": null});
    expect_status(&post_text(&srv, "/v1/cells", &v.to_string()).await, 201);
}

#[tokio::test]
async fn non_uuid_keys_are_422() {
    let srv = server().await;
    for bad in [
        "nope",
        "",
        " ",
        "550e8400-e29b-41d4-a716-44665544000",
        "550e8400-e29b-41d4-a716-4466554400000",
        "g50e8400-e29b-41d4-a716-446655440000",
        "550e8400-e29b-41d4-a716-446655440000x",
        "12345",
    ] {
        refused_everywhere(
            &srv,
            json!({"row_key": bad, "column_name": "c", "ref_key": 1, "body": 1}),
            &[".row_key"],
        )
        .await;
    }
    for bad in [
        "nope",
        "12345",
        "550e8400-e29b-41d4-a716-44665544000",
        "550e8400e29b41d4a716446655440000zz",
    ] {
        for path in [
            format!("/v1/cells/{bad}"),
            format!("/v1/cells/{bad}/c"),
            format!("/v1/cells/{bad}/c/1"),
        ] {
            expect_problem(&get(&srv, &path).await, 422, &["path.row_key"]);
        }
    }
}

#[tokio::test]
async fn empty_column_names_are_422() {
    let srv = server().await;
    refused_everywhere(&srv, good(ROW, "", 1), &[".column_name"]).await;
    // In the path: an empty segment in the column position is named; a trailing slash is
    // another (unknown) route.
    let a = get(&srv, &format!("/v1/cells/{ROW}//1")).await;
    expect_problem(&a, 422, &["path.column_name"]);
    expect_4xx(&get(&srv, &format!("/v1/cells/{ROW}/")).await);
}

#[tokio::test]
async fn overlong_column_names_are_422_counted_in_bytes() {
    let srv = server().await;
    let c = client();
    let ascii255 = "x".repeat(255);
    let euro255 = "€".repeat(85); // 3 bytes each
    let mixed255 = format!("{}x", "é".repeat(127)); // 2 bytes each
    for (i, ok) in [&ascii255, &euro255, &mixed255].into_iter().enumerate() {
        assert_eq!(ok.len(), 255);
        let row = Uuid::new_v4();
        let (s, v) = post_json(
            &c,
            &srv.url("/v1/cells"),
            &cell(&row, ok, i as i64, json!(i)),
        )
        .await;
        assert_eq!(s, 201, "{v}");
        assert_eq!(v["column_name"], ok.as_str());
        let (s, v) = get_json(&c, &srv.url(&format!("/v1/cells/{row}/{ok}/{i}"))).await;
        assert_eq!((s, v["column_name"].as_str()), (200, Some(ok.as_str())));
        let (s, _) = get_json(&c, &srv.url(&format!("/v1/cells/{row}/{ok}"))).await;
        assert_eq!(s, 200);
    }
    for bad in [
        "x".repeat(256),
        "é".repeat(128), // 128 characters, 256 bytes
        "€".repeat(86),  // 86 characters, 258 bytes
        "x".repeat(10_000),
    ] {
        assert!(bad.len() > 255);
        refused_everywhere(&srv, good(ROW, &bad, 1), &[".column_name"]).await;
        expect_problem(
            &get(&srv, &format!("/v1/cells/{ROW}/{bad}")).await,
            422,
            &["path.column_name"],
        );
        expect_problem(
            &get(&srv, &format!("/v1/cells/{ROW}/{bad}/1")).await,
            422,
            &["path.column_name"],
        );
    }
}

#[tokio::test]
async fn bad_ref_keys_are_422_in_body_and_path() {
    let srv = server().await;
    for bad in [
        "1.5",
        "-0.5",
        "1e30",
        "9223372036854775808",
        "-9223372036854775809",
        "18446744073709551615",
        BIG,
    ] {
        let doc = format!(
            r#"{{"row_key": "{}", "column_name": "c", "ref_key": {bad}, "body": 1}}"#,
            Uuid::new_v4()
        );
        let item: Value = serde_json::from_str(&doc).unwrap();
        refused_everywhere(&srv, item, &[".ref_key"]).await;
    }
    for bad in [
        "abc",
        "1.5",
        "1e3",
        "9223372036854775808",
        "-9223372036854775809",
        BIG,
        "0x10",
        "%20",
        "1%00",
    ] {
        expect_problem(
            &get(&srv, &format!("/v1/cells/{ROW}/c/{bad}")).await,
            422,
            &["path.ref_key"],
        );
    }
    // The extremes of i64 are valid, in the body and in the path.
    let row = Uuid::new_v4();
    for rk in [i64::MAX, i64::MIN] {
        let a = post_text(
            &srv,
            "/v1/cells",
            &good(&row.to_string(), "c", rk).to_string(),
        )
        .await;
        assert_eq!(expect_status(&a, 201)["ref_key"], rk);
        let v = expect_status(&get(&srv, &format!("/v1/cells/{row}/c/{rk}")).await, 200);
        assert_eq!(v["ref_key"], rk);
    }
}

#[tokio::test]
async fn several_faults_are_all_reported() {
    let srv = server().await;
    let item = json!({"row_key": "nope", "column_name": "", "ref_key": 1.5, "extra": 1});
    refused_everywhere(
        &srv,
        item,
        &[".row_key", ".column_name", ".ref_key", ".body", ".extra"],
    )
    .await;
    let item = json!({"row_key": 1, "column_name": "x".repeat(300), "ref_key": "1", "body": {"a": "\u{0}"}});
    refused_everywhere(
        &srv,
        item,
        &[".row_key", ".column_name", ".ref_key", ".body.a"],
    )
    .await;
    // Several bad items of one batch, each with its own faults.
    let batch = json!({"cells": [{"row_key": "a"}, good(ROW, "", 1), 7]});
    let a = post_text(&srv, "/v1/cells/batch", &batch.to_string()).await;
    let v = expect_status(&a, 200);
    let locs = [
        vec![
            "body.cells[0].row_key",
            "body.cells[0].column_name",
            "body.cells[0].ref_key",
            "body.cells[0].body",
        ],
        vec!["body.cells[1].column_name"],
        vec!["body.cells[2]"],
    ];
    for (i, l) in locs.iter().enumerate() {
        assert_eq!(v["results"][i]["status"], 422, "{v}");
        check_problem(&v["results"][i]["error"], 422, l, "batch");
    }
    // Path and query.
    let long = "x".repeat(256);
    let a = get(&srv, &format!("/v1/cells/nope/{long}/abc")).await;
    expect_problem(
        &a,
        422,
        &["path.row_key", "path.column_name", "path.ref_key"],
    );
    let a = get(&srv, &format!("/v1/cells/nope/{long}")).await;
    expect_problem(&a, 422, &["path.row_key", "path.column_name"]);
    let a = get(
        &srv,
        &pr("partition_number=x&read_type=9&limit=y&added_id=z&created_after=w"),
    )
    .await;
    expect_problem(
        &a,
        422,
        &[
            "query.partition_number",
            "query.read_type",
            "query.limit",
            "query.added_id",
            "query.created_after",
        ],
    );
    expect_problem(
        &get(&srv, &pr("")).await,
        422,
        &["query.partition_number", "query.read_type"],
    );
}

#[tokio::test]
async fn nul_characters_are_422_naming_their_path() {
    let srv = server().await;
    let row = || Uuid::new_v4().to_string();
    for (body, loc) in [
        (json!("a\u{0}b"), ".body"),
        (json!({"a": [1, "x\u{0}"]}), ".body.a[1]"),
        (json!({"a": {"b": "\u{0}"}}), ".body.a.b"),
        (json!(["\u{0}"]), ".body[0]"),
        (json!({"k\u{0}": 1}), ".body.k\u{0}"),
    ] {
        let item = json!({"row_key": row(), "column_name": "c", "ref_key": 1, "body": body});
        refused_everywhere(&srv, item, &[loc]).await;
    }
    refused_everywhere(&srv, good(&row(), "c\u{0}", 1), &[".column_name"]).await;
    refused_everywhere(&srv, good(&format!("{ROW}\u{0}"), "c", 1), &[".row_key"]).await;
    // Escaped in the text of the body, too (what most clients send).
    let text = format!(
        r#"{{"row_key": "{}", "column_name": "c", "ref_key": 1, "body": {{"s": "\u0000"}}}}"#,
        row()
    );
    expect_problem(
        &post_text(&srv, "/v1/cells", &text).await,
        422,
        &["body.body.s"],
    );
    // In the path.
    expect_problem(
        &get(&srv, &format!("/v1/cells/{ROW}/c%00")).await,
        422,
        &["path.column_name"],
    );
    expect_problem(
        &get(&srv, &format!("/v1/cells/{ROW}/c%00/1")).await,
        422,
        &["path.column_name"],
    );
    expect_problem(&get(&srv, "/v1/cells/%00").await, 422, &["path.row_key"]);
}
