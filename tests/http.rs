//! The HTTP status API against a real table service, through real HTTP.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::Result;
use durable_status::http::{HttpApi, BASE_PATH, LEGACY_BASE_PATH, MAX_BATCH_IDS};
use durable_status::{CustomStatus, JsonText, NewInstance, RuntimeStatus, Secret};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Server {
    base: String,
    addr: std::net::SocketAddr,
    store: common::TestStore,
    client: reqwest::Client,
}

async fn server_with_keys(keys: &[&str]) -> Server {
    server_with(keys, |api| api).await
}

/// A server of a new task hub, configured by `configure`.
async fn server_with(keys: &[&str], configure: impl FnOnce(HttpApi) -> HttpApi) -> Server {
    let store = common::store().await;
    let api = configure(HttpApi::new(
        store.clone(),
        keys.iter().map(|k| Secret::new(*k)).collect(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(durable_status::http::serve(
        listener,
        api,
        std::future::pending(),
    ));
    Server {
        base: format!("http://{addr}"),
        addr,
        store,
        client: reqwest::Client::new(),
    }
}

async fn server() -> Server {
    server_with_keys(&[]).await
}

struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Server {
    async fn send(&self, method: Method, path: &str, headers: &[(&str, &str)]) -> Answer {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("the server answers");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, &format!("{BASE_PATH}{path}"), &[])
            .await
    }

    async fn post(&self, path: &str) -> Answer {
        self.send(Method::POST, &format!("{BASE_PATH}{path}"), &[])
            .await
    }

    async fn delete(&self, path: &str) -> Answer {
        self.send(Method::DELETE, &format!("{BASE_PATH}{path}"), &[])
            .await
    }

    async fn instance(&self, id: &str, status: RuntimeStatus) {
        self.store
            .create(NewInstance::new(id, "ProcessOrder"))
            .await
            .unwrap();
        let store = &self.store;
        match status {
            RuntimeStatus::Pending => {}
            RuntimeStatus::Running => drop(store.start(id).await.unwrap()),
            RuntimeStatus::Suspended => drop(store.suspend(id).await.unwrap()),
            RuntimeStatus::ContinuedAsNew => drop(store.continue_as_new(id, None).await.unwrap()),
            RuntimeStatus::Completed => drop(
                store
                    .complete(id, Some(JsonText::from_value(&"done").unwrap()))
                    .await
                    .unwrap(),
            ),
            RuntimeStatus::Failed => drop(store.fail(id, "boom").await.unwrap()),
            RuntimeStatus::Terminated => drop(store.terminate(id, "stop").await.unwrap()),
            other => panic!("not planned: {other}"),
        }
    }
}

fn message(answer: &Answer) -> &str {
    answer.body["Message"]
        .as_str()
        .unwrap_or_else(|| panic!("an error message: {}", answer.body))
}

#[tokio::test]
async fn a_running_instance_answers_202_with_the_contract_body() -> Result<()> {
    let server = server().await;
    server.instance("instance123", RuntimeStatus::Running).await;
    let custom = CustomStatus::from_json(r#"{"nextActions":["A","B","C"],"foo":2}"#)?;
    server
        .store
        .set_custom_status("instance123", Some(&custom))
        .await?;

    let answer = server
        .get("/instances/instance123?showInput=true&x=1")
        .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    // Relative: no public URL is configured, and the request's Host is
    // never trusted.
    assert_eq!(
        answer.headers["location"],
        format!("{BASE_PATH}/instances/instance123?showInput=true&x=1").as_str()
    );
    assert_eq!(answer.headers["retry-after"], "5");

    // Field by field against the contract's example.
    let body = answer.body.as_object().unwrap();
    let names: Vec<&str> = body.keys().map(String::as_str).collect();
    let mut expected_names = vec![
        "name",
        "instanceId",
        "runtimeStatus",
        "input",
        "customStatus",
        "output",
        "createdTime",
        "lastUpdatedTime",
    ];
    expected_names.sort();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(sorted, expected_names, "exactly the contract's names");
    assert_eq!(body["name"], "ProcessOrder");
    assert_eq!(body["instanceId"], "instance123");
    assert_eq!(body["runtimeStatus"], "Running");
    assert_eq!(body["input"], Value::Null);
    assert_eq!(
        body["customStatus"],
        json!({"nextActions": ["A", "B", "C"], "foo": 2})
    );
    assert_eq!(body["output"], Value::Null);
    for time in ["createdTime", "lastUpdatedTime"] {
        let text = body[time].as_str().unwrap();
        assert_eq!(text.len(), "2017-10-06T18:30:24Z".len(), "{time}: {text}");
        assert!(text.ends_with('Z') && !text.contains('.'), "{time}: {text}");
    }
    Ok(())
}

#[tokio::test]
async fn status_codes_follow_the_runtime_status() -> Result<()> {
    let server = server().await;
    for (id, status, code) in [
        ("pending", RuntimeStatus::Pending, StatusCode::ACCEPTED),
        ("suspended", RuntimeStatus::Suspended, StatusCode::ACCEPTED),
        (
            "continued",
            RuntimeStatus::ContinuedAsNew,
            StatusCode::ACCEPTED,
        ),
        ("completed", RuntimeStatus::Completed, StatusCode::OK),
        ("failed", RuntimeStatus::Failed, StatusCode::OK),
        ("terminated", RuntimeStatus::Terminated, StatusCode::OK),
    ] {
        server.instance(id, status).await;
        let answer = server.get(&format!("/instances/{id}")).await;
        assert_eq!(answer.status, code, "{id}");
        assert_eq!(
            answer.headers.contains_key("location"),
            code == StatusCode::ACCEPTED,
            "{id}"
        );
        assert_eq!(answer.body["runtimeStatus"], status.name());
    }
    let failed = server
        .get("/instances/failed?returnInternalServerErrorOnFailure=true")
        .await;
    assert_eq!(failed.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(failed.body["output"], "boom");
    assert_eq!(
        server
            .get("/instances/completed?returnInternalServerErrorOnFailure=true")
            .await
            .status,
        StatusCode::OK
    );

    common::write_raw_row(
        &server.store,
        json!({"PartitionKey": "canceled", "RowKey": "", "RuntimeStatus": "Canceled"}),
    )
    .await;
    assert_eq!(
        server.get("/instances/canceled").await.status,
        StatusCode::OK
    );
    common::write_raw_row(
        &server.store,
        json!({"PartitionKey": "odd", "RowKey": "", "RuntimeStatus": "Whatever"}),
    )
    .await;
    assert_eq!(
        server.get("/instances/odd").await.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "as the original"
    );

    let missing = server.get("/instances/nobody").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(message(&missing).contains("nobody"));
    Ok(())
}

#[tokio::test]
async fn input_output_and_history_flags() -> Result<()> {
    let server = server().await;
    server
        .store
        .create(NewInstance::new("io", "Orch").input_value(&json!({"order": 7}))?)
        .await?;
    server
        .store
        .complete("io", Some(JsonText::parse("output", "[1,2]")?))
        .await?;
    let shown = server.get("/instances/io").await;
    assert_eq!(
        (shown.body["input"].clone(), shown.body["output"].clone()),
        (json!({"order": 7}), json!([1, 2]))
    );
    let hidden = server.get("/instances/io?showInput=false").await;
    assert_eq!(hidden.body["input"], Value::Null);
    let history = server
        .get("/instances/io?showHistory=true&showHistoryOutput=true")
        .await;
    assert_eq!(history.status, StatusCode::OK);
    assert!(
        history.body.get("historyEvents").is_none(),
        "no history is kept"
    );
    let bad = server.get("/instances/io?showInput=perhaps").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(message(&bad).starts_with("showInput:"), "{}", message(&bad));
    Ok(())
}

#[tokio::test]
async fn the_legacy_base_path_routes_to_the_same_handlers() -> Result<()> {
    let server = server().await;
    server.instance("old", RuntimeStatus::Running).await;
    let legacy = server
        .send(
            Method::GET,
            &format!("{LEGACY_BASE_PATH}/instances/old"),
            &[],
        )
        .await;
    assert_eq!(legacy.status, StatusCode::ACCEPTED);
    assert_eq!(legacy.body["instanceId"], "old");
    let list = server
        .send(Method::GET, &format!("{LEGACY_BASE_PATH}/instances"), &[])
        .await;
    assert_eq!(list.body.as_array().unwrap().len(), 1);
    let terminate = server
        .send(
            Method::POST,
            &format!("{LEGACY_BASE_PATH}/instances/old/terminate?reason=x"),
            &[],
        )
        .await;
    assert_eq!(terminate.status, StatusCode::ACCEPTED);
    Ok(())
}

#[tokio::test]
async fn listing_pages_through_250_instances_with_the_header() -> Result<()> {
    let server = server().await;
    futures::future::try_join_all((0..250).map(|i| {
        server
            .store
            .create(NewInstance::new(format!("i{i:03}"), "Orch"))
    }))
    .await?;
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    let mut sizes = Vec::new();
    loop {
        let headers: Vec<(&str, &str)> = token
            .iter()
            .map(|t| ("x-ms-continuation-token", t.as_str()))
            .collect();
        let page = server
            .send(
                Method::GET,
                &format!("{BASE_PATH}/instances?top=100"),
                &headers,
            )
            .await;
        assert_eq!(page.status, StatusCode::OK);
        let items = page.body.as_array().unwrap();
        sizes.push(items.len());
        seen.extend(
            items
                .iter()
                .map(|i| i["instanceId"].as_str().unwrap().to_owned()),
        );
        match page.headers.get("x-ms-continuation-token") {
            Some(next) => token = Some(next.to_str()?.to_owned()),
            None => break,
        }
    }
    assert_eq!(sizes, [100, 100, 50], "no token header on the last page");
    let unique: BTreeSet<_> = seen.iter().collect();
    assert_eq!((seen.len(), unique.len()), (250, 250));
    Ok(())
}

#[tokio::test]
async fn listing_filters_and_their_errors() -> Result<()> {
    let server = server().await;
    for (id, status) in [
        ("a-run", RuntimeStatus::Running),
        ("a-done", RuntimeStatus::Completed),
        ("b-fail", RuntimeStatus::Failed),
        ("b-pend", RuntimeStatus::Pending),
    ] {
        server.instance(id, status).await;
    }
    let ids = |answer: Answer| -> Vec<String> {
        let mut ids: Vec<String> = answer
            .body
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["instanceId"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(
        ids(server.get("/instances?runtimeStatus=Running,Failed").await),
        ["a-run", "b-fail"]
    );
    assert_eq!(
        ids(server
            .get("/instances?runtimeStatus=Running&runtimeStatus=Pending")
            .await),
        ["a-run", "b-pend"]
    );
    assert_eq!(
        ids(server.get("/instances?instanceIdPrefix=b-").await),
        ["b-fail", "b-pend"]
    );
    assert_eq!(
        ids(server
            .get("/instances?createdTimeFrom=2000-01-01T00:00:00Z&createdTimeTo=2001-01-01")
            .await)
        .len(),
        0
    );
    assert_eq!(
        ids(server
            .get("/instances?createdTimeFrom=2000-01-01T00:00:00Z")
            .await)
        .len(),
        4
    );

    let bad_status = server
        .get("/instances?runtimeStatus=Running,Finished")
        .await;
    assert_eq!(bad_status.status, StatusCode::BAD_REQUEST);
    assert!(
        message(&bad_status).contains("'Finished'") && message(&bad_status).contains("Completed"),
        "{}",
        message(&bad_status)
    );
    for top in ["0", "1001", "x"] {
        let answer = server.get(&format!("/instances?top={top}")).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST);
        assert!(message(&answer).starts_with("top:"), "{}", message(&answer));
    }
    let bad_date = server.get("/instances?createdTimeFrom=last-week").await;
    assert_eq!(bad_date.status, StatusCode::BAD_REQUEST);
    assert!(message(&bad_date).starts_with("createdTimeFrom:"));
    let long_prefix = server
        .get(&format!("/instances?instanceIdPrefix={}", "p".repeat(600)))
        .await;
    assert_eq!(long_prefix.status, StatusCode::BAD_REQUEST);
    assert!(
        message(&long_prefix).contains("instance id prefix"),
        "{}",
        message(&long_prefix)
    );

    let bad_token = server
        .send(
            Method::GET,
            &format!("{BASE_PATH}/instances"),
            &[("x-ms-continuation-token", "garbage")],
        )
        .await;
    assert_eq!(bad_token.status, StatusCode::BAD_REQUEST);
    assert!(message(&bad_token).starts_with("x-ms-continuation-token:"));
    let null_token = server
        .send(
            Method::GET,
            &format!("{BASE_PATH}/instances"),
            &[("x-ms-continuation-token", "null")],
        )
        .await;
    assert_eq!(
        (null_token.status, null_token.body.clone()),
        (StatusCode::OK, json!([])),
        "the end, not the start"
    );

    server
        .store
        .create(NewInstance::new("with-input", "Orch").input_value(&5)?)
        .await?;
    let list = server.get("/instances?instanceIdPrefix=with").await;
    assert_eq!(
        list.body[0]["input"],
        Value::Null,
        "lists leave the input out by default"
    );
    let list = server
        .get("/instances?instanceIdPrefix=with&showInput=true")
        .await;
    assert_eq!(list.body[0]["input"], 5);

    // Pages that carry inputs hold at most 100 rows; the header brings the rest.
    let many = (0..120).map(|i| {
        server
            .store
            .create(NewInstance::new(format!("w{i:03}"), "O"))
    });
    futures::future::try_join_all(many).await?;
    let page = server
        .get("/instances?instanceIdPrefix=w&showInput=true&top=1000")
        .await;
    assert_eq!(page.body.as_array().unwrap().len(), 100);
    assert!(page.headers.contains_key("x-ms-continuation-token"));
    let page = server.get("/instances?instanceIdPrefix=w&top=1000").await;
    assert_eq!(
        page.body.as_array().unwrap().len(),
        121,
        "w000..w119 and with-input"
    );
    Ok(())
}

#[tokio::test]
async fn listing_by_orchestrator_name() -> Result<()> {
    let server = server().await;
    for (id, name) in [
        ("a-1", "Ship"),
        ("a-2", "Ship"),
        ("a-3", "ShipFast"),
        ("b-1", "Bill"),
        ("b-2", "Ship"),
        ("q-1", "x' or Name ne 'x"),
    ] {
        server.store.create(NewInstance::new(id, name)).await?;
    }
    server.store.start("a-2").await?;
    let ids = |answer: Answer| -> Vec<String> {
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
        let mut ids: Vec<String> = answer
            .body
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["instanceId"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(
        ids(server.get("/instances?name=Ship").await),
        ["a-1", "a-2", "b-2"],
        "exact: not ShipFast"
    );
    assert_eq!(
        ids(server.get("/instances?name=Ship,Bill").await),
        ["a-1", "a-2", "b-1", "b-2"]
    );
    assert_eq!(
        ids(server.get("/instances?NAME=Bill&name=ShipFast").await),
        ["a-3", "b-1"],
        "repeated, and the parameter's case is ignored"
    );
    assert_eq!(
        ids(server
            .get("/instances?name=Ship&instanceIdPrefix=a-&runtimeStatus=Pending&createdTimeFrom=2000-01-01T00:00:00Z")
            .await),
        ["a-1"]
    );
    assert_eq!(
        ids(server
            .get("/instances?name=x%27%20or%20Name%20ne%20%27x")
            .await),
        ["q-1"],
        "quoted: the name is matched as text"
    );
    assert!(ids(server
        .get("/instances?name=y%27%20or%20Name%20ne%20%27y")
        .await)
    .is_empty());
    let too_many = (0..16)
        .map(|i| format!("n{i}"))
        .collect::<Vec<_>>()
        .join(",");
    let answer = server.get(&format!("/instances?name={too_many}")).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(
        message(&answer).starts_with("name:") && message(&answer).contains("15"),
        "{}",
        message(&answer)
    );
    Ok(())
}

/// `POST /instances` with a JSON array of ids reads them all: status
/// objects in the order asked, `null` for a missing one.
#[tokio::test]
async fn many_instances_in_one_call() -> Result<()> {
    let server = server().await;
    server.instance("b/1", RuntimeStatus::Completed).await;
    server.instance("a#2", RuntimeStatus::Running).await;
    let post = |body: String, query: &str| {
        let request = server
            .client
            .post(format!("{}{BASE_PATH}/instances{query}", server.base))
            .header("content-type", "application/json")
            .body(body);
        async move {
            let response = request.send().await.expect("the server answers");
            let status = response.status();
            let bytes = response.bytes().await.unwrap();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            (status, body)
        }
    };
    let (status, body) = post(json!(["a#2", "missing", "b/1", "a#2"]).to_string(), "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let answers = body.as_array().unwrap();
    assert_eq!(answers.len(), 4);
    assert_eq!(answers[0]["instanceId"], "a#2");
    assert_eq!(answers[0]["runtimeStatus"], "Running");
    assert!(answers[1].is_null());
    assert_eq!(answers[2]["instanceId"], "b/1");
    assert_eq!(answers[2]["output"], "done");
    assert_eq!(answers[3], answers[0]);
    let (_, without) = post(json!(["b/1"]).to_string(), "?showInput=false").await;
    assert!(
        without[0].get("input").is_none_or(Value::is_null),
        "{without}"
    );

    for (body, expected) in [
        ("{\"ids\":[]}".to_owned(), "body: must be a JSON array"),
        ("[1]".to_owned(), "body: must be a JSON array"),
        (json!([""]).to_string(), "position 0"),
        (
            json!(vec!["x"; MAX_BATCH_IDS + 1]).to_string(),
            "at most 100",
        ),
    ] {
        let (status, answer) = post(body.clone(), "").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        let text = answer["Message"].as_str().unwrap();
        assert!(text.contains(expected), "{body}: {text}");
    }
    let (status, empty) = post("[]".into(), "").await;
    assert_eq!((status, empty), (StatusCode::OK, json!([])));
    Ok(())
}

#[tokio::test]
async fn deleting_one_instance() -> Result<()> {
    let server = server().await;
    server.instance("done", RuntimeStatus::Completed).await;
    server.instance("busy", RuntimeStatus::Running).await;
    let deleted = server.delete("/instances/done").await;
    assert_eq!(
        (deleted.status, deleted.body.clone()),
        (StatusCode::OK, json!({"instancesDeleted": 1}))
    );
    assert_eq!(
        server.delete("/instances/done").await.status,
        StatusCode::NOT_FOUND
    );
    let busy = server.delete("/instances/busy").await;
    assert_eq!(
        busy.status,
        StatusCode::PRECONDITION_FAILED,
        "a running instance is not purged"
    );
    assert!(server.store.get("busy").await?.is_some());
    Ok(())
}

#[tokio::test]
async fn purging_by_filter() -> Result<()> {
    let server = server().await;
    for (id, status) in [
        ("c1", RuntimeStatus::Completed),
        ("f1", RuntimeStatus::Failed),
        ("r1", RuntimeStatus::Running),
    ] {
        server.instance(id, status).await;
    }
    let missing = server.delete("/instances").await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert!(message(&missing).starts_with("createdTimeFrom:"));

    let running = server
        .delete("/instances?createdTimeFrom=2000-01-01T00:00:00Z&runtimeStatus=Running")
        .await;
    assert_eq!(running.status, StatusCode::BAD_REQUEST);
    assert!(
        message(&running).contains("not terminal"),
        "{}",
        message(&running)
    );

    let old = server
        .delete(
            "/instances?createdTimeFrom=2000-01-01T00:00:00Z&createdTimeTo=2001-01-01T00:00:00Z",
        )
        .await;
    assert_eq!(old.status, StatusCode::NOT_FOUND, "nothing matched");

    let purged = server
        .delete("/instances?createdTimeFrom=2000-01-01T00:00:00Z")
        .await;
    assert_eq!(
        (purged.status, purged.body.clone()),
        (StatusCode::OK, json!({"instancesDeleted": 2}))
    );
    assert!(
        server.store.get("r1").await?.is_some(),
        "terminal statuses by default"
    );

    let forced = server
        .delete("/instances?createdTimeFrom=2000-01-01T00:00:00Z&runtimeStatus=Running&allowNonTerminal=true")
        .await;
    assert_eq!(forced.body, json!({"instancesDeleted": 1}));
    Ok(())
}

#[tokio::test]
async fn terminate_suspend_and_resume() -> Result<()> {
    let server = server().await;
    server.instance("job", RuntimeStatus::Running).await;
    let suspend = server.post("/instances/job/suspend?reason=pause").await;
    assert_eq!(suspend.status, StatusCode::ACCEPTED);
    assert_eq!(
        server.store.get("job").await?.unwrap().runtime_status,
        RuntimeStatus::Suspended
    );
    assert_eq!(
        server.post("/instances/job/resume").await.status,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        server.store.get("job").await?.unwrap().runtime_status,
        RuntimeStatus::Running
    );
    assert_eq!(
        server
            .post("/instances/job/terminate?reason=no%20longer%20needed")
            .await
            .status,
        StatusCode::ACCEPTED
    );
    let status = server.store.get("job").await?.unwrap();
    assert_eq!(
        (status.runtime_status, status.output.as_deref()),
        (RuntimeStatus::Terminated, Some("\"no longer needed\""))
    );
    for operation in ["terminate", "suspend", "resume"] {
        assert_eq!(
            server
                .post(&format!("/instances/job/{operation}"))
                .await
                .status,
            StatusCode::GONE,
            "{operation}"
        );
        assert_eq!(
            server
                .post(&format!("/instances/ghost/{operation}"))
                .await
                .status,
            StatusCode::NOT_FOUND
        );
    }
    assert_eq!(
        server.post("/instances/job/Terminate").await.status,
        StatusCode::GONE,
        "names ignore case"
    );
    assert_eq!(
        server.post("/instances/job/explode").await.status,
        StatusCode::NOT_FOUND
    );
    Ok(())
}

#[tokio::test]
async fn engine_operations_answer_501() -> Result<()> {
    let server = server().await;
    server.instance("e", RuntimeStatus::Running).await;
    for path in [
        "/instances/e/raiseEvent/Approval",
        "/instances/e/rewind?reason=x",
        "/instances/e/restart",
        "/orchestrators/ProcessOrder",
        "/orchestrators/ProcessOrder/new-id",
    ] {
        let answer = server.post(path).await;
        assert_eq!(answer.status, StatusCode::NOT_IMPLEMENTED, "{path}");
        assert!(
            message(&answer).contains("runs no orchestrations"),
            "{path}: {}",
            message(&answer)
        );
    }
    Ok(())
}

#[tokio::test]
async fn keys_are_required_when_configured() -> Result<()> {
    let server = server_with_keys(&["first-key", "second-key"]).await;
    server.instance("k", RuntimeStatus::Completed).await;
    let path = format!("{BASE_PATH}/instances/k");
    let none = server.send(Method::GET, &path, &[]).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert!(message(&none).contains("x-functions-key"));
    assert_eq!(
        server
            .send(Method::GET, &format!("{path}?code=wrong"), &[])
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        server
            .send(Method::GET, &path, &[("x-functions-key", "first-key2")])
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        server
            .send(Method::GET, &format!("{path}?code=first-key"), &[])
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        server
            .send(Method::GET, &path, &[("x-functions-key", "second-key")])
            .await
            .status,
        StatusCode::OK
    );
    let legacy = server
        .send(
            Method::DELETE,
            &format!("{LEGACY_BASE_PATH}/instances/k"),
            &[],
        )
        .await;
    assert_eq!(
        legacy.status,
        StatusCode::UNAUTHORIZED,
        "every API route needs the key"
    );
    let page = server
        .client
        .get(format!("{}/", server.base))
        .send()
        .await?;
    assert_eq!(page.status(), StatusCode::OK, "the page itself is static");
    Ok(())
}

#[tokio::test]
async fn serving_without_a_key_off_loopback_is_refused() -> Result<()> {
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await?;
    let store = common::store().await;
    let api = HttpApi::new(store.clone(), vec![]);
    let err = durable_status::http::serve(listener, api, std::future::pending())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("without a key"), "{err}");
    Ok(())
}

#[tokio::test]
async fn request_bodies_are_limited() -> Result<()> {
    let server = server().await;
    server.instance("b", RuntimeStatus::Running).await;
    let big = vec![b'x'; 100 * 1024];
    let answer = server
        .client
        .post(format!(
            "{}{BASE_PATH}/instances/b/raiseEvent/E",
            server.base
        ))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await?;
    assert_eq!(answer.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = serde_json::from_slice(&answer.bytes().await?)?;
    assert!(
        body["Message"]
            .as_str()
            .unwrap()
            .contains("the limit is 65536 bytes"),
        "{body}"
    );
    Ok(())
}

#[tokio::test]
async fn other_task_hubs_by_parameter() -> Result<()> {
    let server = server().await;
    let other = common::store().await;
    other.create(NewInstance::new("elsewhere", "Orch")).await?;
    let found = server
        .get(&format!(
            "/instances/elsewhere?taskHub={}",
            other.task_hub()
        ))
        .await;
    assert_eq!(found.status, StatusCode::ACCEPTED);
    assert_eq!(
        server.get("/instances/elsewhere").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        server
            .get("/instances/elsewhere?taskHub=NoSuchHub")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let bad = server.get("/instances/x?taskHub=bad-name").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(message(&bad).contains("task hub"));
    Ok(())
}

#[tokio::test]
async fn the_page_and_its_assets_are_served() -> Result<()> {
    let server = server().await;
    for (path, kind, needle) in [
        ("/", "text/html", "durable-status"),
        ("/app.js", "text/javascript", "progressOf"),
        ("/api.js", "text/javascript", "x-functions-key"),
        (
            "/format.js",
            "text/javascript",
            "export function progressOf",
        ),
        ("/sse.js", "text/javascript", "export class SseParser"),
        ("/app.css", "text/css", ".bar"),
    ] {
        let response = server
            .client
            .get(format!("{}{path}", server.base))
            .send()
            .await?;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers()["content-type"]
            .to_str()?
            .starts_with(kind));
        assert!(response.headers()["content-security-policy"]
            .to_str()?
            .contains("default-src 'self'"));
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
        let text = response.text().await?;
        assert!(text.contains(needle), "{path}");
        // Nothing is fetched from elsewhere: no CDN, no absolute URL.
        assert!(
            !text.contains("http://") && !text.contains("https://"),
            "{path} names another origin"
        );
    }
    let unknown = server.get("/nowhere").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    Ok(())
}

#[tokio::test]
async fn without_a_key_other_sites_are_refused() -> Result<()> {
    let server = server().await;
    server.instance("victim", RuntimeStatus::Running).await;
    let path = format!("{BASE_PATH}/instances/victim/terminate");
    let forged = server
        .send(Method::POST, &path, &[("origin", "https://evil.example")])
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let rebound = server
        .send(
            Method::GET,
            &format!("{BASE_PATH}/instances"),
            &[("host", "evil.example:7071")],
        )
        .await;
    assert_eq!(rebound.status, StatusCode::FORBIDDEN);
    assert!(message(&rebound).contains("loopback host names"));
    assert_eq!(
        server.store.get("victim").await?.unwrap().runtime_status,
        RuntimeStatus::Running
    );
    let host = server.base.trim_start_matches("http://").to_owned();
    let same = server
        .send(
            Method::POST,
            &path,
            &[("origin", &format!("http://{host}"))],
        )
        .await;
    assert_eq!(
        same.status,
        StatusCode::ACCEPTED,
        "the page's own origin is fine"
    );
    Ok(())
}

#[tokio::test]
async fn unknown_task_hubs_and_odd_times_are_answered_not_crashed() -> Result<()> {
    let server = server().await;
    let list = server.get("/instances?taskHub=NoSuchHub").await;
    assert_eq!(
        (list.status, list.body.clone()),
        (StatusCode::OK, json!([])),
        "a missing table lists nothing"
    );
    let purge = server
        .delete("/instances?taskHub=NoSuchHub&createdTimeFrom=2000-01-01")
        .await;
    assert_eq!(purge.status, StatusCode::NOT_FOUND);
    let far = server
        .get("/instances?createdTimeFrom=9999-12-31T23:30:00-01:00")
        .await;
    assert_eq!(far.status, StatusCode::BAD_REQUEST);
    assert!(
        message(&far).contains("created time from"),
        "{}",
        message(&far)
    );
    Ok(())
}

/// One answer read off a raw connection.
struct RawAnswer {
    status: u16,
    /// Names in lower case.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawAnswer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Checks the JSON error shape and returns its message.
    fn json_error(&self, status: u16, what: &str) -> String {
        self.check_json_error(status, what)
            .unwrap_or_else(|problem| panic!("{problem}"))
    }

    fn check_json_error(&self, status: u16, what: &str) -> Result<String, String> {
        let body = String::from_utf8_lossy(&self.body);
        if self.status != status {
            return Err(format!(
                "{what}: status {} (not {status}): {body}",
                self.status
            ));
        }
        if !self
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/json"))
        {
            return Err(format!(
                "{what}: content-type {:?}, body {body:?}",
                self.header("content-type")
            ));
        }
        let json: Value = serde_json::from_slice(&self.body)
            .map_err(|e| format!("{what}: not JSON ({e}): {body}"))?;
        match json.as_object().map(|o| (o.len(), o.get("Message"))) {
            Some((1, Some(Value::String(message)))) if !message.is_empty() => Ok(message.clone()),
            _ => Err(format!("{what}: not {{\"Message\": \"...\"}}: {body}")),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Reads one answer: its head, then Content-Length bytes (or up to the
/// end). Panics if none comes within 20 s (a guard, not a measure).
async fn read_answer(stream: &mut (impl AsyncRead + Unpin)) -> RawAnswer {
    tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            let n = match stream.read(&mut chunk).await {
                Ok(n) => n,
                Err(e) => panic!("{e} before an answer: {:?}", String::from_utf8_lossy(&buf)),
            };
            assert!(
                n > 0,
                "closed before an answer: {:?}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("a status line: {head}"));
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let length = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map(|(_, v)| v.parse::<usize>().unwrap());
        let mut body = buf[head_end..].to_vec();
        while length.is_none_or(|l| body.len() < l) {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => body.extend_from_slice(&chunk[..n]),
            }
        }
        if let Some(length) = length {
            body.truncate(length);
        }
        RawAnswer {
            status,
            headers,
            body,
        }
    })
    .await
    .expect("an answer within 20 s")
}

/// Sends `request` as is on a new connection and reads the answer.
async fn raw(addr: std::net::SocketAddr, request: &[u8]) -> RawAnswer {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_answer(&mut stream).await
}

/// Waits (at most 10 s, a guard) for the server to close `stream`; true if it did.
async fn closed_by_server(stream: &mut (impl AsyncRead + Unpin)) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn a_chunked_body_is_limited_too() -> Result<()> {
    let server = server().await;
    server.instance("chunky", RuntimeStatus::Running).await;
    let head = format!(
        "POST {BASE_PATH}/instances/chunky/suspend HTTP/1.1\r\nHost: {}\r\n\
         Transfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n",
        server.addr
    );
    let (mut reader, mut writer) = TcpStream::connect(server.addr).await?.into_split();
    // 10 MiB in 64 KiB chunks, while the answer is read.
    let sending = tokio::spawn(async move {
        writer.write_all(head.as_bytes()).await?;
        let chunk = vec![b'x'; 64 * 1024];
        let frame = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
        for _ in 0..160 {
            writer.write_all(&frame).await?;
        }
        writer.write_all(b"0\r\n\r\n").await?;
        Ok::<_, std::io::Error>(writer)
    });
    let answer = read_answer(&mut reader).await;
    sending.abort();
    let message = answer.json_error(413, "10 MiB chunked");
    assert!(message.contains("the limit is 65536 bytes"), "{message}");
    assert_eq!(
        server.store.get("chunky").await?.unwrap().runtime_status,
        RuntimeStatus::Running,
        "nothing was done"
    );

    // A chunked body within the limit is read, and the request served.
    let small = format!(
        "POST {BASE_PATH}/instances/chunky/suspend HTTP/1.1\r\nHost: {}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        server.addr
    );
    assert_eq!(raw(server.addr, small.as_bytes()).await.status, 202);
    assert_eq!(
        server.store.get("chunky").await?.unwrap().runtime_status,
        RuntimeStatus::Suspended
    );
    Ok(())
}

#[tokio::test]
async fn every_error_is_json() -> Result<()> {
    let server = server().await;
    server.instance("there", RuntimeStatus::Running).await;
    let host = server.addr;
    let request = |line: &[u8]| -> Vec<u8> {
        [
            line,
            format!(" HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        ]
        .concat()
    };
    let base = BASE_PATH.as_bytes();
    let cases: Vec<(Vec<u8>, u16, &str, &str)> = vec![
        (
            request(&[b"GET ", base, b"/instances/%ff%fe"].concat()),
            400,
            "invalid UTF-8 in the path",
            "UTF-8",
        ),
        (
            request(&[b"POST ", base, b"/instances/%ff%fe/terminate"].concat()),
            400,
            "invalid UTF-8 in an operation's path",
            "UTF-8",
        ),
        (
            request(&[b"DELETE ", base, b"/instances/%c3%28"].concat()),
            400,
            "invalid UTF-8 in a delete's path",
            "UTF-8",
        ),
        (
            request(&[b"GET ", base, b"/instances?runtimeStatus=\xff\xfe"].concat()),
            400,
            "raw bytes in the query",
            "UTF-8",
        ),
        (
            request(&[b"GET ", base, b"/instances/\xff\xfe"].concat()),
            400,
            "raw bytes in the path",
            "UTF-8",
        ),
        (
            request(&[b"PUT ", base, b"/instances/there"].concat()),
            405,
            "a wrong method",
            "PUT is not allowed",
        ),
        (
            request(&[b"PATCH ", base, b"/instances"].concat()),
            405,
            "a wrong method on the listing",
            "PATCH is not allowed",
        ),
        (
            request(b"POST /"),
            405,
            "a wrong method on the page",
            "POST is not allowed",
        ),
        (
            request(b"GET /nowhere"),
            404,
            "an unknown route",
            "no such route",
        ),
        (
            request(&[b"GET ", base, b"/nowhere"].concat()),
            404,
            "an unknown route under the base path",
            "no such route",
        ),
        (
            request(&[b"POST ", base, b"/instances//terminate"].concat()),
            400,
            "a missing instance id",
            "instance id",
        ),
        (
            request(&[b"POST ", base, b"/instances/there/terminate/x/y"].concat()),
            404,
            "too many segments",
            "",
        ),
        (
            [
                b"GET ",
                base,
                b"/instances HTTP/1.1\r\nHost: x\r\nNot a header\r\n\r\n",
            ]
            .concat(),
            400,
            "a header line that is not a header",
            "not valid HTTP",
        ),
        (
            [
                &[b"GET ", base, b"/instances HTTP/1.1\r\n"].concat()[..],
                &(0..200)
                    .flat_map(|i| format!("X-Many-{i}: {i}\r\n").into_bytes())
                    .collect::<Vec<u8>>(),
                b"\r\n",
            ]
            .concat(),
            431,
            "too many headers",
            "headers are too many",
        ),
    ];
    let mut problems = Vec::new();
    for (request, status, what, needle) in cases {
        let mut stream = TcpStream::connect(server.addr).await?;
        stream.write_all(&request).await?;
        let answer = read_answer(&mut stream).await;
        match answer.check_json_error(status, what) {
            Err(problem) => problems.push(problem),
            Ok(message) if !message.contains(needle) => {
                problems.push(format!("{what}: {message:?} does not say {needle:?}"))
            }
            Ok(_) if status == 405 && answer.header("allow").is_none() => {
                problems.push(format!("{what}: no Allow header"))
            }
            Ok(_) => {}
        }
        // Nothing follows the one answer: the connection closes.
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
        if !rest.is_empty() {
            problems.push(format!(
                "{what}: more after the answer: {}",
                String::from_utf8_lossy(&rest)
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert_eq!(
        server.store.get("there").await?.unwrap().runtime_status,
        RuntimeStatus::Running
    );
    Ok(())
}

#[tokio::test]
async fn the_location_never_trusts_the_client_nor_repeats_the_key() -> Result<()> {
    let hostile = [
        ("host", "evil.example"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "evil.example"),
        ("forwarded", "host=evil.example;proto=https"),
    ];
    let query = "?code=the-key&showInput=false&CODE=x&c%6Fde=y&x=%20";
    let relative = server_with_keys(&["the-key"]).await;
    relative.instance("loc", RuntimeStatus::Running).await;
    let answer = relative
        .send(
            Method::GET,
            &format!("{BASE_PATH}/instances/loc{query}"),
            &hostile,
        )
        .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    assert_eq!(
        answer.headers["location"].to_str()?,
        format!("{BASE_PATH}/instances/loc?showInput=false&x=%20"),
        "relative, without the key"
    );

    let public = server_with(&["the-key"], |api| {
        api.public_url("https://status.example.com/").unwrap()
    })
    .await;
    public.instance("loc", RuntimeStatus::Pending).await;
    let answer = public
        .send(
            Method::GET,
            &format!("{LEGACY_BASE_PATH}/instances/loc{query}"),
            &hostile,
        )
        .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    assert_eq!(
        answer.headers["location"].to_str()?,
        format!("https://status.example.com{LEGACY_BASE_PATH}/instances/loc?showInput=false&x=%20")
    );
    let answer = public
        .send(
            Method::GET,
            &format!("{BASE_PATH}/instances/loc?code=the-key"),
            &hostile,
        )
        .await;
    assert_eq!(
        answer.headers["location"].to_str()?,
        format!("https://status.example.com{BASE_PATH}/instances/loc"),
        "no key, no empty query"
    );
    Ok(())
}

#[tokio::test]
async fn a_present_key_header_decides_over_code() -> Result<()> {
    // The Functions host's rule: the x-functions-key header when the request
    // has one, else the `code` parameter.
    let server = server_with_keys(&["right"]).await;
    server.instance("k", RuntimeStatus::Completed).await;
    let path = format!("{BASE_PATH}/instances/k");
    for (code, header, expected, case) in [
        (
            "wrong",
            "right",
            StatusCode::OK,
            "a right header, a wrong code",
        ),
        (
            "right",
            "wrong",
            StatusCode::UNAUTHORIZED,
            "a wrong header, a right code",
        ),
        (
            "right",
            "",
            StatusCode::UNAUTHORIZED,
            "an empty header is a wrong key",
        ),
    ] {
        let answer = server
            .send(
                Method::GET,
                &format!("{path}?code={code}"),
                &[("x-functions-key", header)],
            )
            .await;
        assert_eq!(answer.status, expected, "{case}");
    }
    // A header that is not text is still the header: no falling back to `code`.
    let response = server
        .client
        .get(format!("{}{path}?code=right", server.base))
        .header(
            "x-functions-key",
            reqwest::header::HeaderValue::from_bytes(b"r\xffght")?,
        )
        .send()
        .await?;
    assert_eq!(
        response.status(),
        StatusCode::UNAUTHORIZED,
        "a non-text header"
    );
    let answer = server
        .send(Method::GET, &format!("{path}?code=right"), &[])
        .await;
    assert_eq!(answer.status, StatusCode::OK, "no header: the code");
    Ok(())
}

#[tokio::test]
async fn a_slow_header_is_cut_off_while_others_are_answered() -> Result<()> {
    let server = server_with(&[], |api| {
        api.header_read_timeout(Duration::from_millis(300))
    })
    .await;
    let started = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(server.addr).await?;
        stream
            .write_all(
                format!(
                    "GET {BASE_PATH}/instances HTTP/1.1\r\nHost: {}\r\n",
                    server.addr
                )
                .as_bytes(),
            )
            .await?;
        slow.push(stream);
    }
    // Each trickles a header line every 100 ms, for at most 10 s.
    let tricklers: Vec<_> = slow
        .into_iter()
        .map(|stream| {
            tokio::spawn(async move {
                let (mut reader, mut writer) = stream.into_split();
                let trickle = async move {
                    for i in 0..100 {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        if writer
                            .write_all(format!("X-Slow-{i}: 1\r\n").as_bytes())
                            .await
                            .is_err()
                        {
                            std::future::pending::<()>().await;
                        }
                    }
                };
                tokio::select! {
                    closed = closed_by_server(&mut reader) => closed,
                    () = trickle => false,
                }
            })
        })
        .collect();
    let normal = server.get("/instances").await;
    assert_eq!(normal.status, StatusCode::OK, "a normal client is answered");
    for trickler in tricklers {
        assert!(trickler.await?, "a slow client was not disconnected");
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(300),
        "cut off before the timeout: {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(9), "{elapsed:?}");
    // And the server still answers.
    assert_eq!(server.get("/instances").await.status, StatusCode::OK);
    Ok(())
}

#[tokio::test]
async fn connections_past_the_cap_are_answered_503_and_closed() -> Result<()> {
    let server = server_with(&[], |api| {
        api.max_connections(2)
            .header_read_timeout(Duration::from_secs(30))
    })
    .await;
    let request = format!(
        "GET {BASE_PATH}/instances HTTP/1.1\r\nHost: {}\r\n\r\n",
        server.addr
    );
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(server.addr).await?;
        stream.write_all(request.as_bytes()).await?;
        assert_eq!(read_answer(&mut stream).await.status, 200);
        held.push(stream);
    }
    let mut third = TcpStream::connect(server.addr).await?;
    third.write_all(request.as_bytes()).await?;
    let answer = read_answer(&mut third).await;
    let message = answer.json_error(503, "past the cap");
    assert!(message.contains("too many connections"), "{message}");
    assert!(answer.header("retry-after").is_some());
    assert!(closed_by_server(&mut third).await, "and closed");

    // The held connections are still served.
    held[0].write_all(request.as_bytes()).await?;
    assert_eq!(read_answer(&mut held[0]).await.status, 200);

    // A connection that ends frees its place.
    held.clear();
    let mut served = false;
    for _ in 0..100 {
        let answer = raw(server.addr, request.as_bytes()).await;
        if answer.status == 200 {
            served = true;
            break;
        }
        assert_eq!(answer.status, 503);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served, "a place freed up");
    Ok(())
}

#[tokio::test]
async fn a_slow_body_is_answered_408() -> Result<()> {
    let server = server_with(&[], |api| api.body_read_timeout(Duration::from_millis(300))).await;
    server.instance("slow", RuntimeStatus::Running).await;
    let mut stream = TcpStream::connect(server.addr).await?;
    let started = Instant::now();
    stream
        .write_all(
            format!(
                "POST {BASE_PATH}/instances/slow/suspend HTTP/1.1\r\nHost: {}\r\n\
                 Content-Length: 10\r\n\r\nab",
                server.addr
            )
            .as_bytes(),
        )
        .await?;
    let answer = read_answer(&mut stream).await;
    let message = answer.json_error(408, "a body that never comes");
    assert!(message.contains("request body"), "{message}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        server.store.get("slow").await?.unwrap().runtime_status,
        RuntimeStatus::Running
    );
    Ok(())
}

fn script_request(addr: std::net::SocketAddr) -> String {
    format!("GET /app.js HTTP/1.1\r\nHost: {addr}\r\n\r\n")
}

/// A connection with a small receive buffer that sends 3,000 requests for
/// the script (about 18 MiB of answers, more than any socket buffers) and
/// never reads: its read half, unread, and the task that writes.
async fn never_reading_client(
    addr: std::net::SocketAddr,
) -> Result<(tokio::net::tcp::OwnedReadHalf, tokio::task::JoinHandle<()>)> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    let (reader, mut writer) = socket.connect(addr).await?.into_split();
    let requests = script_request(addr).repeat(3000);
    // (The server stops reading once its writes are stuck: this write
    // waits, and fails when the server closes.)
    let writing = tokio::spawn(async move {
        let _ = writer.write_all(requests.as_bytes()).await;
        // Kept open: never closes its side.
        std::future::pending::<()>().await;
    });
    Ok((reader, writing))
}

/// Asks for the script on new connections until one is answered 200 (the
/// others must be 503), for at most 10 s (a guard, not a measure). How long
/// it took, if one was.
async fn first_200(addr: std::net::SocketAddr) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        let answer = raw(addr, script_request(addr).as_bytes()).await;
        if answer.status == 200 {
            return Some(started.elapsed());
        }
        assert_eq!(answer.status, 503);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

#[tokio::test]
async fn a_client_that_never_reads_its_answers_is_disconnected() -> Result<()> {
    let server = server_with(&[], |api| {
        api.max_connections(1)
            .write_timeout(Duration::from_millis(300))
            .header_read_timeout(Duration::from_secs(30))
    })
    .await;
    let (mut reader, writing) = never_reading_client(server.addr).await?;
    // It holds the one place...
    let first = raw(server.addr, script_request(server.addr).as_bytes()).await;
    first.json_error(503, "while the client that never reads is served");
    // ... until its answers have waited for the write timeout.
    let waited = first_200(server.addr).await;
    assert!(
        waited.is_some(),
        "a client that never reads holds its connection (503 for 10 s)"
    );
    assert!(
        closed_by_server(&mut reader).await,
        "the client that never reads is disconnected"
    );
    writing.abort();
    Ok(())
}

#[tokio::test]
async fn a_connection_past_its_max_age_is_closed() -> Result<()> {
    let server = server_with(&[], |api| {
        api.max_connections(1)
            .max_connection_age(Duration::from_millis(500))
            .shutdown_grace(Duration::from_millis(1000))
            .header_read_timeout(Duration::from_secs(30))
            .write_timeout(Duration::from_secs(30))
    })
    .await;
    // An idle kept-alive connection is closed at its age (the header-read
    // timeout would keep it 30 s).
    let started = Instant::now();
    let mut idle = TcpStream::connect(server.addr).await?;
    idle.write_all(script_request(server.addr).as_bytes())
        .await?;
    assert_eq!(read_answer(&mut idle).await.status, 200);
    assert!(closed_by_server(&mut idle).await, "idle past its age");
    let age = started.elapsed();
    assert!(age >= Duration::from_millis(500), "closed at {age:?}");

    // One with a request in flight at its age (its head half sent, on a
    // new connection): answered, `connection: close`, and closed.
    let mut busy = TcpStream::connect(server.addr).await?;
    let head = script_request(server.addr);
    let (start, rest) = head.split_at(20);
    busy.write_all(start.as_bytes()).await?;
    // Past the age, within the grace.
    tokio::time::sleep(Duration::from_millis(800)).await;
    busy.write_all(rest.as_bytes()).await?;
    let answer = read_answer(&mut busy).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("connection"), Some("close"));
    assert!(closed_by_server(&mut busy).await, "closed after its answer");

    // A client that reads nothing, whose writes the write timeout would
    // let wait 30 s: dropped once past its age and the grace.
    let (_reader, writing) = never_reading_client(server.addr).await?;
    let first = raw(server.addr, script_request(server.addr).as_bytes()).await;
    first.json_error(503, "while the client that never reads is served");
    assert!(
        first_200(server.addr).await.is_some(),
        "the client that never reads holds its connection past its age (503 for 10 s)"
    );
    writing.abort();
    Ok(())
}

#[tokio::test]
async fn serve_returns_within_the_shutdown_grace() -> Result<()> {
    let store = common::store().await;
    let api = HttpApi::new(store.clone(), Vec::new())
        .header_read_timeout(Duration::from_secs(30))
        .shutdown_grace(Duration::from_millis(300));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(durable_status::http::serve(listener, api, async {
        let _ = stopped.await;
    }));
    // A client that sends half a head, then a header line every 100 ms
    // (for at most 20 s): the header-read timeout would let it go on 30 s.
    let (mut reader, mut writer) = TcpStream::connect(addr).await?.into_split();
    writer
        .write_all(format!("GET /app.js HTTP/1.1\r\nHost: {addr}\r\n").as_bytes())
        .await?;
    // Accepted after it: the slow client is being served.
    assert_eq!(raw(addr, script_request(addr).as_bytes()).await.status, 200);
    let trickling = tokio::spawn(async move {
        for i in 0..200 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if writer
                .write_all(format!("X-Slow-{i}: 1\r\n").as_bytes())
                .await
                .is_err()
            {
                break;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = Instant::now();
    stop.send(()).unwrap();
    let returned = tokio::time::timeout(Duration::from_secs(10), serving).await;
    let elapsed = started.elapsed();
    let served = returned.expect("serve returns within 10 s of the stop (a guard)");
    served??;
    assert!(
        elapsed >= Duration::from_millis(300),
        "the connection in flight had its grace: {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    assert!(
        closed_by_server(&mut reader).await,
        "the slow client is disconnected"
    );
    trickling.abort();
    Ok(())
}
