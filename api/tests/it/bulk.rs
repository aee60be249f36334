//! Bulk work (issue 13): files, jobs from files and NDJSON bodies with per-line errors,
//! results filters and CSV, cancel (also racing the workers), retry, retention with an
//! injected clock, chained `moderate_translate` jobs, cross-tenant 404s.

use std::time::Duration;

use axum::{
    body::Body,
    http::{Method, Request, StatusCode},
};
use gatehouse_api::retention::Purger;
use gatehouse_common::{
    job::{
        result::{ItemError, StoredModeration, StoredOutcome},
        store::{self, ChunkEnd, Completion},
    },
    queue::QueueMessage,
};
use serde_json::{Value, json};

use crate::support::{BENIGN, Harness, REFERENCE, Reply, new_key, new_tenant};

const BOUNDARY: &str = "gatehouse-test-boundary";

/// `POST /v1/files` with one `file` part and a `purpose` part.
pub async fn upload(h: &Harness, key: &str, content: &[u8], purpose: &str) -> Reply {
    upload_as(h, Some(key), content, purpose).await
}

/// [`upload`] with any bearer (or none).
pub async fn upload_as(h: &Harness, bearer: Option<&str>, content: &[u8], purpose: &str) -> Reply {
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n{purpose}\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(
        format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\nContent-Type: application/jsonl\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(content);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    let mut request = Request::builder()
        .method(Method::POST)
        .uri("/v1/files")
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        );
    if let Some(bearer) = bearer {
        request = request.header("authorization", format!("Bearer {bearer}"));
    }
    h.send(request.body(Body::from(body)).expect("request"))
        .await
}

async fn ndjson(h: &Harness, key: &str, query: &str, body: &str) -> Reply {
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("/v1/jobs?{query}"))
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/x-ndjson")
        .body(Body::from(body.to_string()))
        .expect("request");
    h.send(request).await
}

async fn get(h: &Harness, key: &str, uri: &str) -> Reply {
    h.call(Method::GET, uri, Some(key), None).await
}

fn lines(reply: &Reply) -> Vec<Value> {
    std::str::from_utf8(&reply.body)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("ndjson line"))
        .collect()
}

fn body(reply: &Reply) -> String {
    String::from_utf8_lossy(&reply.body).into_owned()
}

fn items_file(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "{}\n",
                json!({"custom_id": format!("line-{i}"), "text": format!("text number {i}")})
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_upload_list_download_delete_and_stay_inside_their_tenant() {
    let h = Harness::new(&[], false).await;
    let content = items_file(3);
    let reply = upload(&h, &h.key, content.as_bytes(), "batch").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", body(&reply));
    let file = reply.json();
    assert_eq!(file["object"], "file");
    assert_eq!(file["purpose"], "batch");
    assert_eq!(file["bytes"], content.len());
    assert_eq!(file["lines"], 3);
    assert_eq!(file["filename"], "in.jsonl");
    let id = file["id"].as_str().expect("id").to_string();

    let shown = get(&h, &h.key, &format!("/v1/files/{id}")).await;
    assert_eq!(shown.status, StatusCode::OK);
    assert_eq!(shown.json()["id"], id.as_str());
    let listed = get(&h, &h.key, "/v1/files").await.json();
    assert_eq!(listed["object"], "list");
    assert_eq!(listed["data"][0]["id"], id.as_str());
    let downloaded = get(&h, &h.key, &format!("/v1/files/{id}/content")).await;
    assert_eq!(downloaded.status, StatusCode::OK);
    assert_eq!(downloaded.body, content.as_bytes());

    // Another tenant sees none of it.
    let (_, other) = new_tenant(&h.state, "globex").await;
    for uri in [format!("/v1/files/{id}"), format!("/v1/files/{id}/content")] {
        let reply = get(&h, &other, &uri).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{uri}");
    }
    assert_eq!(get(&h, &other, "/v1/files").await.json()["data"], json!([]));
    let reply = h
        .call(
            Method::DELETE,
            &format!("/v1/files/{id}"),
            Some(&other),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let reply = h
        .call(
            Method::POST,
            "/v1/jobs",
            Some(&other),
            Some(json!({"kind": "moderate", "input_file_id": id})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.json()["code"], "unknown_file");

    // Bad uploads.
    let reply = upload(&h, &h.key, b"{}", "fine-tune").await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.json()["field"], "purpose");
    let request = Request::builder()
        .method(Method::POST)
        .uri("/v1/files")
        .header("authorization", format!("Bearer {}", h.key))
        .header("content-type", "application/json")
        .body(Body::from("{}"))
        .expect("request");
    let reply = h.send(request).await;
    assert!(reply.status.is_client_error(), "{}", reply.status);
    assert!(reply.content_type().starts_with("application/problem+json"));

    // Deleted: gone from the list, 404 afterwards.
    let reply = h
        .call(
            Method::DELETE,
            &format!("/v1/files/{id}"),
            Some(&h.key),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["deleted"], true);
    assert_eq!(
        get(&h, &h.key, &format!("/v1/files/{id}/content"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(h.scalar("SELECT count(*) FROM file_parts").await, 0);
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_limits_are_explicit_and_configurable() {
    let h = Harness::new(
        &[
            ("GATEHOUSE_MAX_FILE_BYTES", "4096"),
            ("GATEHOUSE_MAX_FILE_LINES", "10"),
            ("GATEHOUSE_MAX_LINE_BYTES", "200"),
        ],
        false,
    )
    .await;
    let big = vec![b'x'; 5000];
    let reply = upload(&h, &h.key, &big, "batch").await;
    assert_eq!(
        reply.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        body(&reply)
    );
    let reply = upload(&h, &h.key, items_file(11).as_bytes(), "batch").await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        body(&reply)
    );
    assert_eq!(reply.json()["code"], "too_many_lines");
    assert_eq!(h.scalar("SELECT count(*) FROM file_parts").await, 0);

    // NDJSON bodies: the same limits.
    let reply = ndjson(&h, &h.key, "kind=moderate", &items_file(11)).await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        body(&reply)
    );
    assert_eq!(reply.json()["code"], "too_many_lines");
    let long = format!("{}\n", json!({"text": "y".repeat(300)}));
    let reply = ndjson(&h, &h.key, "kind=moderate", &long).await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        body(&reply)
    );
    assert_eq!(reply.json()["errors"][0]["code"], "line_too_long");
    let reply = ndjson(&h, &h.key, "kind=moderate", &"z".repeat(5000)).await;
    assert!(
        reply.status == StatusCode::PAYLOAD_TOO_LARGE
            || reply.status == StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.status
    );
    assert_eq!(h.scalar("SELECT count(*) FROM jobs").await, 0);
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lines_are_rejected_or_skipped_and_listed_with_line_field_and_reason() {
    let h = Harness::new(&[], true).await;
    let content = [
        r#"{"custom_id": "a", "text": "first"}"#,
        r#"not json"#,
        r#"{"custom_id": "c", "text": ""}"#,
        r#"{"custom_id": "d", "method": "POST", "url": "/v1/moderations", "body": {"input": "fourth"}}"#,
        r#"{"custom_id": "e", "txt": "typo"}"#,
        "",
        r#"{"custom_id": "g", "text": "seventh"}"#,
    ]
    .join("\n");
    let file = upload(&h, &h.key, content.as_bytes(), "jobs").await.json();
    let file_id = file["id"].as_str().expect("id");

    // reject (the default): nothing stored, the errors in the answer.
    let reply = h
        .call(
            Method::POST,
            "/v1/jobs",
            Some(&h.key),
            Some(json!({"kind": "moderate", "input_file_id": file_id})),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        body(&reply)
    );
    let problem = reply.json();
    assert_eq!(problem["code"], "invalid_lines");
    assert_eq!(problem["invalid_lines"], 3);
    let errors: Vec<(i64, Value, String)> = problem["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| {
            (
                e["line"].as_i64().expect("line"),
                e["field"].clone(),
                e["code"].as_str().expect("code").to_string(),
            )
        })
        .collect();
    assert_eq!(
        errors,
        vec![
            (2, Value::Null, "invalid_json".to_string()),
            (3, json!("text"), "empty_text".to_string()),
            (5, json!("txt"), "unknown_field".to_string()),
        ]
    );
    assert_eq!(h.scalar("SELECT count(*) FROM jobs").await, 0);
    assert_eq!(h.scalar("SELECT count(*) FROM job_items").await, 0);

    // skip: the good lines run, the bad ones are listed.
    let reply = h
        .call(
            Method::POST,
            "/v1/jobs",
            Some(&h.key),
            Some(json!({"kind": "moderate", "input_file_id": file_id, "on_invalid": "skip"})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", body(&reply));
    let job = reply.json();
    assert_eq!(job["counts"]["total"], 3);
    assert_eq!(job["invalid_lines"], 3);
    let id = job["id"].as_str().expect("id").to_string();
    let errors = get(&h, &h.key, &format!("/v1/jobs/{id}/errors")).await;
    assert_eq!(errors.status, StatusCode::OK);
    assert_eq!(errors.content_type(), "application/x-ndjson");
    let errors = lines(&errors);
    assert_eq!(errors.len(), 3);
    assert_eq!(errors[1]["line"], 3);
    assert_eq!(errors[1]["field"], "text");
    assert!(errors[1]["message"].as_str().is_some_and(|m| !m.is_empty()));

    let worker = h.start_worker().await;
    let done = h.wait_done(&id, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "completed");
    assert_eq!(done["progress"], 1.0);
    let results = h.results(&id).await;
    let ids: Vec<&str> = results
        .iter()
        .map(|r| r["custom_id"].as_str().expect("custom id"))
        .collect();
    assert_eq!(ids, ["a", "d", "g"]);
    worker.stop().await;

    // Another tenant: 404 for the job, its results and errors.
    let (_, other) = new_tenant(&h.state, "globex").await;
    for uri in [
        format!("/v1/jobs/{id}"),
        format!("/v1/jobs/{id}/results"),
        format!("/v1/jobs/{id}/errors"),
    ] {
        assert_eq!(
            get(&h, &other, &uri).await.status,
            StatusCode::NOT_FOUND,
            "{uri}"
        );
    }
    for action in ["cancel", "retry"] {
        let reply = h
            .call(
                Method::POST,
                &format!("/v1/jobs/{id}/{action}"),
                Some(&other),
                None,
            )
            .await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{action}");
    }
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ndjson_body_is_a_job_and_results_filter_page_and_render_as_csv() {
    let h = Harness::new(&[], true).await;
    let worker = h.start_worker().await;
    let mut body_text = items_file(5);
    body_text.push_str(&format!(
        "{}\n",
        json!({"custom_id": "bad", "text": REFERENCE})
    ));
    let reply = ndjson(&h, &h.key, "kind=moderate&on_invalid=skip", &body_text).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", body(&reply));
    let id = reply.json()["id"].as_str().expect("id").to_string();
    let done = h.wait_done(&id, Duration::from_secs(60)).await;
    assert_eq!(done["counts"]["total"], 6);

    // Force one failure to filter on.
    sqlx::query(
        "UPDATE job_results SET status = 'failed', result = NULL, \
         error = '{\"code\": \"broken\", \"message\": \"test\"}' \
         WHERE item_index = 2",
    )
    .execute(&h.env.pool)
    .await
    .expect("fail one");
    let failed = lines(&get(&h, &h.key, &format!("/v1/jobs/{id}/results?status=failed")).await);
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["custom_id"], "line-2");
    let succeeded = lines(
        &get(
            &h,
            &h.key,
            &format!("/v1/jobs/{id}/results?status=succeeded"),
        )
        .await,
    );
    assert_eq!(succeeded.len(), 5);
    let page = lines(
        &get(
            &h,
            &h.key,
            &format!("/v1/jobs/{id}/results?after=1&limit=2"),
        )
        .await,
    );
    let indexes: Vec<i64> = page
        .iter()
        .map(|l| l["index"].as_i64().expect("i"))
        .collect();
    assert_eq!(indexes, [2, 3]);
    let reply = get(&h, &h.key, &format!("/v1/jobs/{id}/results?status=weird")).await;
    assert!(reply.status.is_client_error());
    assert_eq!(reply.json()["field"], "status");

    let request = Request::builder()
        .uri(format!("/v1/jobs/{id}/results"))
        .header("authorization", format!("Bearer {}", h.key))
        .header("accept", "text/csv")
        .body(Body::empty())
        .expect("request");
    let csv = h.send(request).await;
    assert_eq!(csv.status, StatusCode::OK);
    assert!(
        csv.content_type().starts_with("text/csv"),
        "{}",
        csv.content_type()
    );
    let mut reader = csv::Reader::from_reader(&csv.body[..]);
    let headers = reader.headers().expect("header").clone();
    assert_eq!(&headers[0], "index");
    assert_eq!(&headers[1], "custom_id");
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.expect("row")).collect();
    assert_eq!(rows.len(), 6);
    assert_eq!(&rows[2][2], "failed");
    assert_eq!(&rows[5][1], "bad");
    assert_eq!(&rows[5][3], "true", "the insult is flagged: {:?}", rows[5]);
    worker.stop().await;
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_skips_pending_chunks_refunds_quota_and_keeps_finished_results() {
    let h = Harness::new(&[("GATEHOUSE_CHUNK_ITEMS", "10")], false).await;
    let texts: Vec<String> = (0..50).map(|i| format!("text {i}")).collect();
    let id = h.submit(&texts).await;
    let job = h.job(&id).await;
    assert_eq!(job["queue_position"], 0);
    assert!(job["expires_at"].is_string());
    let second = h.submit(&texts[..5]).await;
    assert_eq!(h.job(&second).await["queue_position"], 50);

    // One chunk finished by a "worker" before the cancel.
    let payload = h.chunk_messages().await.remove(0);
    let QueueMessage::ChunkV1(chunk) = serde_json::from_value(payload).expect("chunk");
    let claim = store::claim(&h.env.app_pool, &chunk, &[])
        .await
        .expect("claim")
        .expect("pending");
    let outcomes: Vec<(i32, StoredOutcome)> = claim
        .items
        .iter()
        .map(|(i, _)| {
            (
                *i,
                StoredOutcome::Moderated(StoredModeration {
                    scores: vec![],
                    rules: vec![],
                }),
            )
        })
        .collect();
    store::complete(
        &h.env.app_pool,
        Completion {
            chunk: &chunk,
            outcomes: &outcomes,
            end: ChunkEnd::Done,
            models: &[],
            actor: "worker:test",
            audit: json!({}),
            progress_interval: Duration::from_secs(10),
            default_retention_days: 30,
        },
    )
    .await
    .expect("complete")
    .expect("applied");

    // An endpoint takes the tenant's events: the cancel raises `job.cancelled`.
    let tenant = h.tenant_id().await;
    gatehouse_api::store::webhook_endpoints::create(
        &h.state.pool,
        gatehouse_api::store::webhook_endpoints::NewEndpoint {
            tenant,
            url: "https://hooks.example.com/in",
            description: "",
            event_types: &[],
            enabled: true,
            headers: json!({}),
            rate_limit_per_sec: None,
            max_endpoints: 1000,
        },
        &gatehouse_common::webhook::secret::SecretBox::new(None),
        gatehouse_api::store::webhook_endpoints::Actor {
            name: "test",
            client_ip: None,
        },
    )
    .await
    .expect("endpoint");
    let reply = h
        .call(
            Method::POST,
            &format!("/v1/jobs/{id}/cancel"),
            Some(&h.key),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", body(&reply));
    let job = reply.json();
    assert_eq!(job["status"], "cancelled");
    let events: Vec<(String, Value)> =
        sqlx::query_as("SELECT event_type, payload FROM webhook_messages")
            .fetch_all(&h.env.pool)
            .await
            .expect("messages");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].0, "job.cancelled");
    assert_eq!(events[0].1["data"], job, "the job object as GET shows it");
    assert_eq!(
        job["counts"],
        json!({"total": 50, "succeeded": 10, "failed": 0, "cancelled": 40})
    );
    assert_eq!(job["progress"], 1.0);
    assert_eq!(h.results(&id).await.len(), 10, "finished results are kept");
    // The quota counts what ran (and the other job), not what was cancelled.
    assert_eq!(
        h.scalar("SELECT items FROM quota_usage WHERE kind = 'moderate'")
            .await,
        15
    );
    assert_eq!(
        h.scalar("SELECT count(*) FROM audit_events WHERE action = 'job.cancelled'")
            .await,
        1
    );
    // A finished job cannot be cancelled; the second cancel of a cancelled job is harmless.
    let again = h
        .call(
            Method::POST,
            &format!("/v1/jobs/{id}/cancel"),
            Some(&h.key),
            None,
        )
        .await;
    assert_eq!(again.status, StatusCode::OK);
    // A late worker finds the cancelled chunks not pending.
    let late = h.chunk_messages().await.remove(1);
    let QueueMessage::ChunkV1(chunk) = serde_json::from_value(late).expect("chunk");
    assert!(
        store::claim(&h.env.app_pool, &chunk, &[])
            .await
            .expect("claim")
            .is_none()
    );
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_racing_the_workers_processes_nothing_twice_and_keeps_counts_consistent() {
    let h = Harness::new(&[("GATEHOUSE_CHUNK_ITEMS", "20")], true).await;
    let worker = h.start_worker().await;
    let texts: Vec<String> = (0..2000)
        .map(|i| format!("message {i} for the race"))
        .collect();
    let id = h.submit(&texts).await;
    // Let some chunks run, then cancel while others are in flight.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let job = h.job(&id).await;
        if job["counts"]["succeeded"].as_i64().unwrap_or(0) > 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "nothing ran: {job}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reply = h
        .call(
            Method::POST,
            &format!("/v1/jobs/{id}/cancel"),
            Some(&h.key),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", body(&reply));
    assert!(
        ["cancelling", "cancelled", "completed"]
            .contains(&reply.json()["status"].as_str().unwrap_or("")),
        "{}",
        body(&reply)
    );
    let done = h.wait_done(&id, Duration::from_secs(120)).await;
    let counts = &done["counts"];
    let succeeded = counts["succeeded"].as_i64().expect("s");
    let failed = counts["failed"].as_i64().expect("f");
    let cancelled = counts["cancelled"].as_i64().expect("c");
    assert_eq!(succeeded + failed + cancelled, 2000, "{done}");
    assert!(
        cancelled > 0,
        "the cancel came too late to test anything: {done}"
    );
    assert_eq!(
        h.scalar("SELECT count(*) FROM job_results").await,
        succeeded + failed,
        "one result per processed item"
    );
    // Every chunk is done or cancelled, and cancelled chunks hold no results.
    assert_eq!(
        h.scalar("SELECT count(*) FROM job_chunks WHERE status NOT IN ('done', 'cancelled')")
            .await,
        0
    );
    assert_eq!(
        h.scalar(
            "SELECT count(*) FROM job_results r JOIN job_chunks c ON c.job_id = r.job_id \
             AND r.item_index >= c.item_start AND r.item_index < c.item_end \
             WHERE c.status = 'cancelled'"
        )
        .await,
        0
    );
    assert_eq!(
        h.scalar("SELECT sum(item_end - item_start) FROM job_chunks WHERE status = 'cancelled'")
            .await,
        cancelled
    );
    assert_eq!(done["status"], "cancelled");
    worker.stop().await;
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_makes_a_child_job_of_the_failed_items() {
    let h = Harness::new(&[("GATEHOUSE_CHUNK_ITEMS", "10")], false).await;
    let texts: Vec<String> = (0..4).map(|i| format!("text {i}")).collect();
    let id = h.submit(&texts).await;
    let reply = h
        .call(
            Method::POST,
            &format!("/v1/jobs/{id}/retry"),
            Some(&h.key),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.json()["code"], "job_not_finished");

    let payload = h.chunk_messages().await.remove(0);
    let QueueMessage::ChunkV1(chunk) = serde_json::from_value(payload).expect("chunk");
    let claim = store::claim(&h.env.app_pool, &chunk, &[])
        .await
        .expect("claim")
        .expect("pending");
    let outcomes: Vec<(i32, StoredOutcome)> = claim
        .items
        .iter()
        .map(|(i, _)| {
            let outcome = if *i % 2 == 1 {
                StoredOutcome::Failed(ItemError::new("broken", "test"))
            } else {
                StoredOutcome::Moderated(StoredModeration {
                    scores: vec![],
                    rules: vec![],
                })
            };
            (*i, outcome)
        })
        .collect();
    store::complete(
        &h.env.app_pool,
        Completion {
            chunk: &chunk,
            outcomes: &outcomes,
            end: ChunkEnd::Done,
            models: &[],
            actor: "worker:test",
            audit: json!({}),
            progress_interval: Duration::from_secs(10),
            default_retention_days: 30,
        },
    )
    .await
    .expect("complete")
    .expect("applied");
    assert_eq!(h.job(&id).await["status"], "completed");

    let reply = h
        .call(
            Method::POST,
            &format!("/v1/jobs/{id}/retry"),
            Some(&h.key),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", body(&reply));
    let child = reply.json();
    assert_eq!(child["parent_job_id"], id.as_str());
    assert_eq!(child["counts"]["total"], 2);
    let child_id = child["id"].as_str().expect("id");
    assert_eq!(
        reply.headers.get("location").and_then(|v| v.to_str().ok()),
        Some(format!("/v1/jobs/{child_id}").as_str())
    );
    let custom: Vec<String> =
        sqlx::query_scalar("SELECT custom_id FROM job_items WHERE job_id = $1 ORDER BY item_index")
            .bind(uuid::Uuid::parse_str(child_id.trim_start_matches("job_")).expect("uuid"))
            .fetch_all(&h.env.pool)
            .await
            .expect("items");
    assert_eq!(custom, ["c1", "c3"]);
    assert_eq!(
        h.scalar(
            "SELECT count(*) FROM audit_events WHERE action = 'job.retried' AND outcome = 'success'"
        )
        .await,
        1
    );
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_purges_texts_results_and_files_of_expired_jobs_with_an_injected_clock() {
    let h = Harness::new(&[("GATEHOUSE_DEFAULT_RETENTION_DAYS", "30")], true).await;
    let worker = h.start_worker().await;
    let file = upload(&h, &h.key, items_file(3).as_bytes(), "jobs")
        .await
        .json();
    let reply = h
        .call(
            Method::POST,
            "/v1/jobs",
            Some(&h.key),
            Some(json!({"kind": "moderate", "input_file_id": file["id"]})),
        )
        .await;
    let id = reply.json()["id"].as_str().expect("id").to_string();
    h.wait_done(&id, Duration::from_secs(60)).await;
    worker.stop().await;

    // A second tenant keeps its data for 90 days.
    let (other_tenant, other) = new_tenant(&h.state, "globex").await;
    sqlx::query("UPDATE tenants SET retention_days = 90 WHERE tenant_id = $1")
        .bind(other_tenant)
        .execute(&h.env.pool)
        .await
        .expect("retention");
    let kept = h
        .call(
            Method::POST,
            "/v1/jobs",
            Some(&other),
            Some(json!({"kind": "moderate", "items": [{"text": "kept"}]})),
        )
        .await
        .json()["id"]
        .as_str()
        .expect("id")
        .to_string();
    sqlx::query("UPDATE jobs SET status = 'completed' WHERE tenant_id = $1")
        .bind(other_tenant)
        .execute(&h.env.pool)
        .await
        .expect("finish");

    let purger = Purger::new(&h.state);
    let now = chrono::Utc::now();
    h.state.clock.set(now + chrono::Duration::days(29));
    assert_eq!(purger.purge_now().await.expect("purge").jobs, 0);
    h.state.clock.set(now + chrono::Duration::days(31));
    let purged = purger.purge_now().await.expect("purge");
    assert_eq!((purged.jobs, purged.items, purged.files), (1, 3, 1));

    let job = h.job(&id).await;
    assert_eq!(job["expired"], true);
    assert_eq!(job["counts"]["succeeded"], 3, "the row and counts stay");
    let results = get(&h, &h.key, &format!("/v1/jobs/{id}/results")).await;
    assert_eq!(results.status, StatusCode::GONE);
    assert_eq!(results.json()["code"], "expired");
    let retry = h
        .call(
            Method::POST,
            &format!("/v1/jobs/{id}/retry"),
            Some(&h.key),
            None,
        )
        .await;
    assert_eq!(retry.status, StatusCode::GONE);
    assert_eq!(
        get(
            &h,
            &h.key,
            &format!("/v1/files/{}/content", file["id"].as_str().expect("id"))
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        h.scalar("SELECT count(*) FROM job_items").await,
        1,
        "globex keeps its item"
    );
    assert_eq!(h.scalar("SELECT count(*) FROM file_parts").await, 0);
    assert_eq!(
        h.scalar("SELECT count(*) FROM audit_events WHERE action = 'retention.purged'")
            .await,
        1
    );
    let other_job = h.job_as(&kept, &other).await;
    assert_eq!(other_job["expired"], false);
    // Purging again finds nothing new.
    assert_eq!(purger.purge_now().await.expect("purge").jobs, 0);
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chained_job_translates_only_what_moderation_lets_through() {
    let h = Harness::new(&[], true).await;
    let tenant = h.tenant_id().await;
    sqlx::query("UPDATE tenants SET scopes = '{moderate,translate}' WHERE tenant_id = $1")
        .bind(tenant)
        .execute(&h.env.pool)
        .await
        .expect("grant translate");
    let both = new_key(&h.state, tenant, &["moderate", "translate"]).await;
    let only_translate = new_key(&h.state, tenant, &["translate"]).await;
    let request = |key: &str, body: Value| {
        let key = key.to_string();
        let h = &h;
        async move {
            h.call(Method::POST, "/v1/jobs", Some(&key), Some(body))
                .await
        }
    };
    let items = json!([
        {"custom_id": "zh", "text": "我不知道。"},
        {"custom_id": "insult", "text": REFERENCE},
        {"custom_id": "en", "text": BENIGN},
    ]);
    let reply = request(
        &only_translate,
        json!({"kind": "moderate_translate", "items": items, "options": {"target_lang": "en"}}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let reply = request(&both, json!({"kind": "moderate_translate", "items": items})).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.json()["code"], "missing_options");

    let worker = h.start_worker().await;
    let reply = request(
        &both,
        json!({"pipeline": ["moderate", "translate"], "items": items,
               "options": {"source_lang": "auto", "target_lang": "en"}}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", body(&reply));
    let job = reply.json();
    assert_eq!(job["kind"], "moderate_translate");
    let id = job["id"].as_str().expect("id").to_string();
    let done = h.wait_done_as(&id, &both, Duration::from_secs(90)).await;
    assert_eq!(done["status"], "completed", "{done}");
    let results = h.results_as(&id, &both).await;
    let result = |i: usize| &results[i]["result"];
    assert_eq!(result(0)["moderation"]["level"], "safe", "{}", result(0));
    assert_eq!(result(0)["translated"], true);
    assert_eq!(result(0)["translation"]["text"], "I don't know.");
    assert_ne!(result(1)["moderation"]["level"], "safe", "{}", result(1));
    assert_eq!(result(1)["translated"], false);
    assert!(result(1)["translation"].is_null());
    assert!(
        result(1)["not_translated_reason"]
            .as_str()
            .is_some_and(|r| r.contains("max_level")),
        "{}",
        result(1)
    );
    assert_eq!(result(2)["translated"], true);
    assert_eq!(result(2)["translation"]["text"], BENIGN, "already English");

    // max_level: unsafe translates everything (English to English passes through).
    let reply = request(
        &both,
        json!({"kind": "moderate_translate", "items": [{"text": REFERENCE}],
               "options": {"target_lang": "en", "max_level": "unsafe"}}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", body(&reply));
    let id = reply.json()["id"].as_str().expect("id").to_string();
    h.wait_done_as(&id, &both, Duration::from_secs(90)).await;
    let results = h.results_as(&id, &both).await;
    assert_eq!(results[0]["result"]["translated"], true, "{}", results[0]);
    // A pair no model translates is refused at submission.
    let reply = request(
        &both,
        json!({"kind": "moderate_translate", "items": [{"text": BENIGN}],
               "options": {"source_lang": "en", "target_lang": "zh"}}),
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        body(&reply)
    );
    worker.stop().await;
    h.teardown().await;
}

fn batch_lines(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "{}\n",
                json!({"custom_id": format!("req-{i}"), "method": "POST", "url": "/v1/moderations",
                       "body": {"input": format!("batch text {i}")}})
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_validate_expose_partial_output_cancel_and_stay_inside_their_tenant() {
    let h = Harness::new(&[("GATEHOUSE_CHUNK_ITEMS", "2")], false).await;
    let file = upload(&h, &h.key, batch_lines(6).as_bytes(), "batch")
        .await
        .json();
    let create = |body: Value| {
        let h = &h;
        async move {
            h.call(Method::POST, "/v1/batches", Some(&h.key), Some(body))
                .await
        }
    };
    // Bad requests.
    for (request, field) in [
        (
            json!({"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}),
            "endpoint",
        ),
        (
            json!({"input_file_id": file["id"], "endpoint": "/v1/moderations", "completion_window": "1h"}),
            "completion_window",
        ),
        (
            json!({"input_file_id": "file_00000000000000000000000000000000", "endpoint": "/v1/moderations", "completion_window": "24h"}),
            "input_file_id",
        ),
    ] {
        let reply = create(request).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            body(&reply)
        );
        assert_eq!(reply.json()["field"], field);
    }

    let reply = create(
        json!({"input_file_id": file["id"], "endpoint": "/v1/moderations",
                              "completion_window": "24h", "metadata": {"team": "t"}}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", body(&reply));
    let batch = reply.json();
    assert_eq!(batch["object"], "batch");
    assert_eq!(batch["status"], "in_progress");
    assert_eq!(
        batch["request_counts"],
        json!({"total": 6, "completed": 0, "failed": 0})
    );
    assert_eq!(batch["metadata"], json!({"team": "t"}));
    let id = batch["id"].as_str().expect("id").to_string();
    let output = batch["output_file_id"]
        .as_str()
        .expect("output")
        .to_string();

    // Partial output: one chunk done → its two lines are readable while the batch runs.
    let payload = h.chunk_messages().await.remove(0);
    let QueueMessage::ChunkV1(chunk) = serde_json::from_value(payload).expect("chunk");
    let claim = store::claim(&h.env.app_pool, &chunk, &[])
        .await
        .expect("claim")
        .expect("pending");
    let outcomes: Vec<(i32, StoredOutcome)> = claim
        .items
        .iter()
        .map(|(i, _)| {
            (
                *i,
                StoredOutcome::Moderated(StoredModeration {
                    scores: vec![],
                    rules: vec![],
                }),
            )
        })
        .collect();
    store::complete(
        &h.env.app_pool,
        Completion {
            chunk: &chunk,
            outcomes: &outcomes,
            end: ChunkEnd::Done,
            models: &[],
            actor: "worker:test",
            audit: json!({}),
            progress_interval: Duration::from_secs(10),
            default_retention_days: 30,
        },
    )
    .await
    .expect("complete")
    .expect("applied");
    let partial = get(&h, &h.key, &format!("/v1/files/{output}/content")).await;
    assert_eq!(partial.status, StatusCode::OK);
    let partial = lines(&partial);
    assert_eq!(partial.len(), 2);
    assert_eq!(partial[0]["custom_id"], "req-0");
    assert_eq!(partial[0]["response"]["status_code"], 200);
    assert!(partial[0]["response"]["body"]["results"][0]["flagged"].is_boolean());
    let shown = get(&h, &h.key, &format!("/v1/batches/{id}")).await.json();
    assert_eq!(shown["request_counts"]["completed"], 2);

    // Another tenant sees nothing.
    let (_, other) = new_tenant(&h.state, "globex").await;
    assert_eq!(
        get(&h, &other, &format!("/v1/batches/{id}")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&h, &other, "/v1/batches").await.json()["data"],
        json!([])
    );
    assert_eq!(
        get(&h, &other, &format!("/v1/files/{output}/content"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let reply = h
        .call(
            Method::POST,
            &format!("/v1/batches/{id}/cancel"),
            Some(&other),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);

    // Cancel: nothing in flight, so cancelled at once; the finished lines stay readable.
    let reply = h
        .call(
            Method::POST,
            &format!("/v1/batches/{id}/cancel"),
            Some(&h.key),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", body(&reply));
    let cancelled = reply.json();
    assert_eq!(cancelled["status"], "cancelled");
    assert!(cancelled["cancelled_at"].is_i64());
    let listed = get(&h, &h.key, "/v1/batches").await.json();
    assert_eq!(listed["object"], "list");
    assert_eq!(listed["data"][0]["id"], id.as_str());
    assert_eq!(
        lines(&get(&h, &h.key, &format!("/v1/files/{output}/content")).await).len(),
        2
    );

    // A file that fails validation: a failed batch with OpenAI's error list, no job.
    let mut bad = batch_lines(2);
    bad.push_str(
        "{\"custom_id\": \"z\", \"method\": \"GET\", \"url\": \"/v1/moderations\", \"body\": {}}\n",
    );
    let bad = upload(&h, &h.key, bad.as_bytes(), "batch").await.json();
    let reply = create(
        json!({"input_file_id": bad["id"], "endpoint": "/v1/moderations",
                              "completion_window": "24h"}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", body(&reply));
    let failed = reply.json();
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["errors"]["data"][0]["line"], 3);
    assert_eq!(failed["errors"]["data"][0]["param"], "method");
    assert!(failed["output_file_id"].is_null());
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_job_is_readable_but_not_managed_and_files_are_their_uploaders() {
    let h = Harness::new(&[], false).await;
    let tenant = h.tenant_id().await;
    let colleague = new_key(&h.state, tenant, &["moderate"]).await;
    let id = h.submit(&["hello".to_string()]).await;
    let shared = h
        .call(
            Method::POST,
            &format!("/v1/jobs/{id}/share"),
            Some(&h.key),
            Some(json!({"shared": true})),
        )
        .await;
    assert_eq!(shared.status, StatusCode::OK);
    assert_eq!(
        get(&h, &colleague, &format!("/v1/jobs/{id}")).await.status,
        StatusCode::OK
    );
    let cancel = h
        .call(
            Method::POST,
            &format!("/v1/jobs/{id}/cancel"),
            Some(&colleague),
            None,
        )
        .await;
    assert_eq!(cancel.status, StatusCode::NOT_FOUND, "{}", body(&cancel));
    let unshare = h
        .call(
            Method::POST,
            &format!("/v1/jobs/{id}/share"),
            Some(&colleague),
            Some(json!({"shared": false})),
        )
        .await;
    assert_eq!(unshare.status, StatusCode::NOT_FOUND);

    let file = upload(&h, &h.key, items_file(1).as_bytes(), "batch")
        .await
        .json();
    let file_id = file["id"].as_str().expect("id");
    assert_eq!(
        get(&h, &colleague, &format!("/v1/files/{file_id}/content"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let reply = h
        .call(
            Method::POST,
            "/v1/batches",
            Some(&colleague),
            Some(json!({"input_file_id": file_id, "endpoint": "/v1/moderations", "completion_window": "24h"})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.json()["code"], "unknown_file");
    h.teardown().await;
}
