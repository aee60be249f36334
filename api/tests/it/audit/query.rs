//! `GET /v1/audit` filters and pages; `GET /v1/audit/export` streams NDJSON or CSV and is
//! itself audited; admins read their tenant's, operators any tenant's.

use axum::http::{Method, StatusCode};
use gatehouse_common::types::Role;
use serde_json::Value;

use crate::support::{Harness, new_tenant, new_user};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_pages_and_exports() {
    let h = Harness::new(&[], false).await;
    let acme = h.tenant_id().await;
    new_user(&h.state, Some(acme), "alice", Role::Admin).await;
    new_user(&h.state, None, "root", Role::Superadmin).await;
    let (globex, _) = new_tenant(&h.state, "globex").await;
    new_user(&h.state, Some(globex), "oscar", Role::Admin).await;
    let admin = h.login(Some("acme"), "alice").await;
    let operator = h.login(None, "root").await;
    let other = h.login(Some("globex"), "oscar").await;
    for _ in 0..3 {
        h.submit(&["hello".to_string()]).await;
    }
    let get = |uri: String, bearer: String| {
        let h = &h;
        async move { h.call(Method::GET, &uri, Some(&bearer), None).await }
    };

    // Filters: action, outcome, actor, target, time range.
    let jobs = get("/v1/audit?action=job.created".into(), admin.clone())
        .await
        .json();
    let data = jobs["data"].as_array().expect("data");
    assert_eq!(data.len(), 3);
    assert!(
        data.iter()
            .all(|r| r["action"] == "job.created" && r["seq"].as_i64().is_some())
    );
    let job_id = data[0]["target_id"].as_str().expect("target").to_string();
    let actor = data[0]["actor"].as_str().expect("actor").to_string();
    let by_target = get(
        format!("/v1/audit?target_type=job&target_id={job_id}"),
        admin.clone(),
    )
    .await
    .json();
    assert_eq!(by_target["data"].as_array().map(Vec::len), Some(1));
    let by_actor = get(
        format!("/v1/audit?actor={actor}&outcome=success"),
        admin.clone(),
    )
    .await
    .json();
    assert!(
        by_actor["data"]
            .as_array()
            .expect("data")
            .iter()
            .all(|r| r["actor"] == actor.as_str())
    );
    let future = get("/v1/audit?from=2999-01-01T00:00:00Z".into(), admin.clone())
        .await
        .json();
    assert_eq!(future["data"].as_array().map(Vec::len), Some(0));
    let past = get("/v1/audit?to=2000-01-01T00:00:00Z".into(), admin.clone())
        .await
        .json();
    assert_eq!(past["data"].as_array().map(Vec::len), Some(0));
    assert_eq!(
        get("/v1/audit?action=no.such".into(), admin.clone())
            .await
            .status,
        StatusCode::UNPROCESSABLE_ENTITY
    );

    // Cursor pages: disjoint, newest first, together everything.
    let all = get("/v1/audit?limit=200".into(), admin.clone())
        .await
        .json();
    let total = all["data"].as_array().map(Vec::len).unwrap_or(0);
    let mut seen = Vec::new();
    let mut uri = "/v1/audit?limit=2".to_string();
    loop {
        let page = get(uri.clone(), admin.clone()).await.json();
        seen.extend(
            page["data"]
                .as_array()
                .expect("data")
                .iter()
                .map(|r| r["id"].as_i64().expect("id")),
        );
        match page["next_after"].as_str() {
            Some(next) => uri = format!("/v1/audit?limit=2&after={next}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), total);
    assert!(seen.windows(2).all(|w| w[0] > w[1]));

    // Export: NDJSON, oldest first, every record; CSV with a header; itself audited.
    let ndjson = get("/v1/audit/export?format=ndjson".into(), admin.clone()).await;
    assert_eq!(ndjson.status, StatusCode::OK);
    assert_eq!(ndjson.content_type(), "application/x-ndjson");
    let lines: Vec<Value> = std::str::from_utf8(&ndjson.body)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(
        lines.len(),
        total + 1,
        "everything listed, and the export's own record"
    );
    assert_eq!(lines.last().expect("last")["action"], "audit.exported");
    assert!(
        lines
            .windows(2)
            .all(|w| w[0]["seq"].as_i64() < w[1]["seq"].as_i64())
    );
    let csv = get(
        "/v1/audit/export?format=csv&action=job.created".into(),
        admin.clone(),
    )
    .await;
    assert_eq!(csv.status, StatusCode::OK);
    let text = String::from_utf8_lossy(&csv.body).to_string();
    assert!(
        text.starts_with("id,seq,created_at,actor,actor_kind,action,outcome"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 4);
    assert_eq!(
        get("/v1/audit/export?format=xml".into(), admin.clone())
            .await
            .status,
        StatusCode::UNPROCESSABLE_ENTITY
    );

    // Operators read any tenant's (naming it); another tenant's admin gets a 404.
    let by_operator = get(
        format!("/v1/audit?tenant={acme}&action=job.created"),
        operator.clone(),
    )
    .await;
    assert_eq!(by_operator.status, StatusCode::OK);
    assert_eq!(by_operator.json()["data"].as_array().map(Vec::len), Some(3));
    assert_eq!(
        get("/v1/audit".into(), operator.clone()).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        get(format!("/v1/audit?tenant={acme}"), other.clone())
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let theirs = get("/v1/audit?limit=200".into(), other.clone())
        .await
        .json();
    assert!(
        theirs["data"]
            .as_array()
            .expect("data")
            .iter()
            .all(|r| r["action"] != "job.created")
    );
    let verified = super::verify(&h, &admin).await;
    assert_eq!(verified["ok"], true, "{verified}");
    h.teardown().await;
}
