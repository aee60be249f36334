//! Translation through the queue and the workers, with the bundled zh→en model.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{Harness, new_key};

async fn translate_key(h: &Harness) -> String {
    let tenant = h.tenant_id().await;
    sqlx::query("UPDATE tenants SET scopes = '{moderate,translate}' WHERE tenant_id = $1")
        .bind(tenant)
        .execute(&h.env.pool)
        .await
        .expect("grant translate");
    new_key(&h.state, tenant, &["translate"]).await
}

fn job(texts: &[&str], source: &str, target: &str) -> Value {
    let items: Vec<Value> = texts.iter().map(|t| json!({"text": t})).collect();
    json!({"kind": "translate", "items": items, "options": {"source_lang": source, "target_lang": target}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_translate_job_keeps_layout_and_passes_unknown_text_through() {
    let h = Harness::new(&[], true).await;
    let key = translate_key(&h).await;
    let worker = h.start_worker().await;
    let texts = [
        "我不知道。",
        "我累了。\n\n  今天很冷。",
        "😀🎉",
        "再见！我们走吧。",
    ];
    let reply = h
        .call(
            Method::POST,
            "/v1/jobs",
            Some(&key),
            Some(job(&texts, "zh", "en")),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::ACCEPTED,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let id = reply.json()["id"].as_str().expect("id").to_string();
    let done = h.wait_done_as(&id, &key, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "completed", "{done}");
    let lines = h.results_as(&id, &key).await;
    assert_eq!(lines.len(), 4);
    let result = |i: usize| &lines[i]["result"];
    assert_eq!(result(0)["text"], "I don't know.");
    assert_eq!(result(0)["source_lang"], "zh");
    assert_eq!(result(0)["target_lang"], "en");
    assert!(
        result(0)["model"]
            .as_str()
            .expect("model")
            .starts_with("cn2en-gru@")
    );
    // Paragraph break and indentation survive; each sentence was translated on its own.
    let second = result(1)["text"].as_str().expect("text");
    assert!(second.contains("\n\n  "), "{second:?}");
    assert_eq!(result(1)["segments"].as_array().expect("segments").len(), 2);
    assert_eq!(result(1)["segments"][1]["source"], "今天很冷。");
    assert_eq!(result(1)["segments"][1]["text"], "It is very cold.");
    // Text the model knows nothing of comes back unchanged, never invented.
    assert_eq!(result(2)["text"], "😀🎉");
    assert_eq!(
        lines.iter().filter(|l| l["status"] == "succeeded").count(),
        4
    );
    worker.stop().await;
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_detects_the_source_and_bad_options_are_422() {
    let h = Harness::new(&[], true).await;
    let key = translate_key(&h).await;
    let worker = h.start_worker().await;
    let reply = h
        .call(
            Method::POST,
            "/v1/jobs",
            Some(&key),
            Some(job(&["我爱你。"], "auto", "en")),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    let id = reply.json()["id"].as_str().expect("id").to_string();
    let job_done = h.wait_done_as(&id, &key, Duration::from_secs(60)).await;
    assert_eq!(job_done["status"], "completed");
    let reply = h
        .call(
            Method::GET,
            &format!("/v1/jobs/{id}/results"),
            Some(&key),
            None,
        )
        .await;
    let line: Value =
        serde_json::from_slice(reply.body.split(|b| *b == b'\n').next().expect("line"))
            .expect("json");
    assert_eq!(
        line["result"]["source_lang"], "zh",
        "auto detected the source"
    );
    assert_eq!(line["result"]["text"], "I love you.");

    // The pairs come from the installed models: en→zh is not one of them.
    let reply = h
        .call(
            Method::POST,
            "/v1/jobs",
            Some(&key),
            Some(job(&["hello"], "en", "zh")),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.json()["code"], "unsupported_language_pair");
    assert!(
        reply.json()["detail"]
            .as_str()
            .expect("detail")
            .contains("zh→en")
    );
    for (body, field) in [
        (job(&["hi"], "fr", "en"), "options.source_lang"),
        (job(&["hi"], "zh", "de"), "options.target_lang"),
        (
            json!({"kind": "translate", "items": [{"text": "hi"}]}),
            "options",
        ),
    ] {
        let reply = h
            .call(Method::POST, "/v1/jobs", Some(&key), Some(body))
            .await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(reply.json()["field"], field);
    }
    let reply = h
        .call(
            Method::POST,
            "/v1/jobs",
            Some(&key),
            Some(job(&["   "], "zh", "en")),
        )
        .await;
    assert_eq!(reply.json()["code"], "empty_text");
    // A key without the translate scope may not submit translations.
    let reply = h
        .call(
            Method::POST,
            "/v1/jobs",
            Some(&h.key),
            Some(job(&["我爱你。"], "zh", "en")),
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    worker.stop().await;
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sync_endpoint_answers_with_the_translation() {
    let h = Harness::new(&[], true).await;
    let key = translate_key(&h).await;
    let worker = h.start_worker().await;
    let body = json!({"text": "我不知道。", "source_lang": "zh", "target_lang": "en"});
    let reply = h
        .call(Method::POST, "/v1/translations", Some(&key), Some(body))
        .await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let result = reply.json();
    assert_eq!(result["text"], "I don't know.");
    assert_eq!(result["source_lang"], "zh");
    assert!(
        result["model"]
            .as_str()
            .expect("model")
            .starts_with("cn2en-gru@")
    );

    let body = json!({"texts": ["我爱你。", "😀", "今天很冷。"], "target_lang": "en"});
    let reply = h
        .call(Method::POST, "/v1/translations", Some(&key), Some(body))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let results = reply.json()["results"].as_array().expect("results").clone();
    let texts: Vec<&str> = results
        .iter()
        .map(|r| r["text"].as_str().expect("text"))
        .collect();
    assert_eq!(texts, ["I love you.", "😀", "It is very cold."]);

    for (body, field) in [
        (json!({"text": "  ", "target_lang": "en"}), "text"),
        (
            json!({"texts": ["好", ""], "target_lang": "en"}),
            "texts[1]",
        ),
        (
            json!({"text": "好", "texts": ["好"], "target_lang": "en"}),
            "text",
        ),
        (
            json!({"text": "好", "target_lang": "fr"}),
            "options.target_lang",
        ),
    ] {
        let reply = h
            .call(Method::POST, "/v1/translations", Some(&key), Some(body))
            .await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(reply.json()["field"], field);
    }
    let reply = h
        .call(
            Method::POST,
            "/v1/translations",
            Some(&h.key),
            Some(json!({"text": "好", "target_lang": "en"})),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::FORBIDDEN,
        "the translate scope is needed"
    );
    worker.stop().await;
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_bound_the_sync_endpoint_answers_202_with_the_job() {
    let h = Harness::new(&[("GATEHOUSE_SYNC_WAIT_MS", "300")], true).await;
    let key = translate_key(&h).await;
    // No worker yet: the bound passes.
    let body = json!({"text": "我累了。", "source_lang": "zh", "target_lang": "en"});
    let reply = h
        .call(Method::POST, "/v1/translations", Some(&key), Some(body))
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    let id = reply.json()["id"].as_str().expect("id").to_string();
    assert_eq!(reply.headers["location"], format!("/v1/jobs/{id}").as_str());
    let worker = h.start_worker().await;
    let job = h.wait_done_as(&id, &key, Duration::from_secs(60)).await;
    assert_eq!(job["status"], "completed");
    worker.stop().await;
    h.teardown().await;
}
