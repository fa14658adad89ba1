//! Writes retried after their response was lost: the service carried out the
//! first attempt, and the retry must not be mistaken for someone else's
//! write (nor applied twice). The proxy in front of the real service loses
//! one response; the client's retry policy sends the request again.

mod common;

use anyhow::Result;
use durable_status::{
    CustomStatus, JsonText, NewInstance, RuntimeStatus, StateChange, StoreOptions,
};

/// Asserts that the proxy saw `method` at least twice since the last call:
/// the lost response really made the client send the request again.
fn sent_twice(proxy: &common::proxy::Proxy, method: &str) {
    let lines = proxy.take_lines();
    let sent = lines
        .iter()
        .filter(|l| l.starts_with(&format!("{method} ")))
        .count();
    assert!(sent >= 2, "{method} was sent {sent} times: {lines:?}");
}
use serde_json::json;

#[tokio::test]
async fn a_create_whose_response_was_lost_is_not_already_exists() -> Result<()> {
    let (store, proxy) = common::proxied_store(StoreOptions::default()).await;
    proxy.lose_response_to("POST");
    store
        .create(NewInstance::new("lost-create", "Orch"))
        .await?;
    let lines = proxy.take_lines();
    let posts = lines.iter().filter(|l| l.starts_with("POST")).count();
    assert!(posts >= 2, "the insert was sent twice: {lines:?}");
    assert_eq!(
        store.get("lost-create").await?.unwrap().runtime_status,
        RuntimeStatus::Pending
    );
    // A real duplicate is still one.
    assert!(matches!(
        store.create(NewInstance::new("lost-create", "Orch")).await,
        Err(durable_status::Error::AlreadyExists {
            status: Some(RuntimeStatus::Pending),
            ..
        })
    ));
    Ok(())
}

#[tokio::test]
async fn a_conditional_write_whose_response_was_lost_is_not_a_conflict() -> Result<()> {
    let (store, proxy) = common::proxied_store(StoreOptions::default()).await;
    let etag = store.create(NewInstance::new("lost-merge", "Orch")).await?;
    proxy.lose_response_to("MERGE");
    let status = CustomStatus::from_value(&json!({"step": 1}))?;
    let new_etag = store
        .set_custom_status_if_match("lost-merge", Some(&status), &etag)
        .await?;
    sent_twice(&proxy, "MERGE");
    assert_eq!(store.get("lost-merge").await?.unwrap().etag, new_etag);

    // A write that really lost still is a conflict.
    let err = store
        .set_custom_status_if_match("lost-merge", Some(&status), &etag)
        .await
        .unwrap_err();
    assert!(
        matches!(err, durable_status::Error::Conflict { .. }),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn read_modify_write_applies_once_when_a_response_is_lost() -> Result<()> {
    let (store, proxy) = common::proxied_store(StoreOptions::default()).await;
    store.create(NewInstance::new("counter", "Orch")).await?;
    let increment = |current: Option<&CustomStatus>| {
        let count = current.map_or(0, |c| c.to_value()["count"].as_u64().unwrap_or(0));
        CustomStatus::from_value(&json!({"count": count + 1})).map(Some)
    };
    store.update_custom_status("counter", increment).await?;
    proxy.take_lines();
    proxy.lose_response_to("MERGE");
    store.update_custom_status("counter", increment).await?;
    sent_twice(&proxy, "MERGE");
    let count = store
        .get("counter")
        .await?
        .unwrap()
        .custom_status
        .unwrap()
        .to_value()["count"]
        .clone();
    assert_eq!(count, 2, "incremented once per call");
    Ok(())
}

#[tokio::test]
async fn a_guarded_terminate_whose_response_was_lost_succeeds() -> Result<()> {
    let (store, proxy) = common::proxied_store(StoreOptions::default()).await;
    store
        .create(NewInstance::new("t", "Orch").status(RuntimeStatus::Running))
        .await?;
    proxy.lose_response_to("MERGE");
    let terminate = StateChange::Terminate {
        reason: "stop".into(),
    };
    store.change_state_unless_terminal("t", &terminate).await?;
    sent_twice(&proxy, "MERGE");
    assert_eq!(
        store.get("t").await?.unwrap().runtime_status,
        RuntimeStatus::Terminated
    );
    Ok(())
}

#[tokio::test]
async fn a_replace_whose_response_was_lost_is_not_a_conflict() -> Result<()> {
    let (store, proxy) = common::proxied_store(StoreOptions::default()).await;
    store.create(NewInstance::new("again", "Orch")).await?;
    store
        .complete("again", Some(JsonText::from_value(&1)?))
        .await?;
    proxy.take_lines();
    proxy.lose_response_to("PUT");
    store
        .create(NewInstance::new("again", "Second").overwrite_terminal(true))
        .await?;
    sent_twice(&proxy, "PUT");
    let status = store.get("again").await?.unwrap();
    assert_eq!(
        (status.name.as_str(), status.runtime_status),
        ("Second", RuntimeStatus::Pending)
    );
    Ok(())
}
