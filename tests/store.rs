//! The instance store against a real table service (Azurite by default).

mod common;

use std::sync::Arc;

use anyhow::Result;
use durable_status::{
    CustomStatus, Error, InstanceStore, JsonText, NewInstance, ReadOptions, RuntimeStatus,
    SizeUnit, StateChange, StoreOptions, WriteCondition,
};
use serde_json::json;
use time::OffsetDateTime;

async fn created(store: &InstanceStore, id: &str) -> Result<()> {
    store.create(NewInstance::new(id, "Orchestrator")).await?;
    Ok(())
}

fn custom(value: serde_json::Value) -> CustomStatus {
    CustomStatus::from_value(&value).unwrap()
}

/// A JSON string value whose text is exactly `units` UTF-16 code units
/// (two of them are the quotes).
fn json_string_of_units(units: usize) -> CustomStatus {
    CustomStatus::from_json(format!("\"{}\"", "a".repeat(units - 2))).unwrap()
}

#[tokio::test]
async fn create_then_get_returns_every_field() -> Result<()> {
    let store = common::store().await;
    let before = OffsetDateTime::now_utc() - time::Duration::seconds(1);
    let created = store
        .create(
            NewInstance::new("order-1", "ProcessOrder")
                .version("2.0")
                .input_value(&json!({"order": 42}))?
                .tag("team", "payments")
                .execution_id("e1"),
        )
        .await?;
    let status = store.get("order-1").await?.expect("created");
    assert_eq!(status.instance_id, "order-1");
    assert_eq!(status.name, "ProcessOrder");
    assert_eq!(status.version, "2.0");
    assert_eq!(status.execution_id, "e1");
    assert_eq!(status.runtime_status, RuntimeStatus::Pending);
    assert_eq!(status.input.as_deref(), Some(r#"{"order":42}"#));
    assert_eq!(status.output, None);
    assert_eq!(status.custom_status, None);
    assert!(status.created_time >= before && status.created_time <= OffsetDateTime::now_utc());
    assert_eq!(status.last_updated_time, status.created_time);
    assert_eq!(status.completed_time, None);
    assert_eq!(status.generation, 0);
    assert_eq!(
        status.tags.get("team").map(String::as_str),
        Some("payments")
    );
    assert_eq!(status.etag, created.etag);
    assert_eq!(status.execution_id, created.execution_id);
    assert_eq!(status.created_time, created.created_time);
    Ok(())
}

#[tokio::test]
async fn rows_are_in_the_provider_format_with_typed_times() -> Result<()> {
    let store = common::store().await;
    store
        .create(NewInstance::new("a/b", "Orch").status(RuntimeStatus::Running))
        .await?;
    let row = common::raw_row(&store, "a^0b").await;
    assert_eq!(row["PartitionKey"], "a^0b");
    assert_eq!(row["RowKey"], "");
    assert_eq!(row["RuntimeStatus"], "Running");
    assert_eq!(row["CustomStatus"], "null");
    assert_eq!(row["TaskHubName"], store.task_hub());
    // The service kept the DateTime type: it annotates the values it returns.
    assert_eq!(row["CreatedTime@odata.type"], "Edm.DateTime");
    assert_eq!(row["LastUpdatedTime@odata.type"], "Edm.DateTime");
    assert!(row["CreatedTime"].as_str().unwrap().ends_with('Z'));
    Ok(())
}

#[tokio::test]
async fn creating_an_existing_id_is_already_exists() -> Result<()> {
    let store = common::store().await;
    created(&store, "dup").await?;
    let err = store
        .create(NewInstance::new("dup", "Other"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::AlreadyExists { ref instance_id, .. } if instance_id == "dup"),
        "{err}"
    );
    assert_eq!(
        store.get("dup").await?.unwrap().name,
        "Orchestrator",
        "the first one is untouched"
    );
    Ok(())
}

#[tokio::test]
async fn overwrite_replaces_only_a_terminal_instance() -> Result<()> {
    let store = common::store().await;
    created(&store, "again").await?;
    store.start("again").await?;

    let err = store
        .create(NewInstance::new("again", "Second").overwrite_terminal(true))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::AlreadyExists {
                status: Some(RuntimeStatus::Running),
                ..
            }
        ),
        "a running instance is not overwritten: {err}"
    );

    store
        .complete("again", Some(JsonText::from_value(&"done")?))
        .await?;
    store
        .create(NewInstance::new("again", "Second").overwrite_terminal(true))
        .await?;
    let status = store.get("again").await?.unwrap();
    assert_eq!(status.name, "Second");
    assert_eq!(status.runtime_status, RuntimeStatus::Pending);
    assert_eq!(
        status.output, None,
        "the replaced row kept nothing of the old one"
    );
    assert_eq!(status.completed_time, None);
    Ok(())
}

#[tokio::test]
async fn a_missing_instance_reads_as_none() -> Result<()> {
    let store = common::store().await;
    assert!(store.get("nobody").await?.is_none());
    Ok(())
}

#[tokio::test]
async fn get_can_leave_input_and_output_out() -> Result<()> {
    let store = common::store().await;
    store
        .create(NewInstance::new("p", "Orch").input_value(&"big input")?)
        .await?;
    store
        .complete("p", Some(JsonText::from_value(&"big output")?))
        .await?;

    let slim = store
        .get_with("p", ReadOptions::without_payloads())
        .await?
        .unwrap();
    assert_eq!((slim.input, slim.output), (None, None));
    assert_eq!(slim.runtime_status, RuntimeStatus::Completed);
    assert_eq!(slim.name, "Orch");

    let only_output = ReadOptions::default().include_input(false);
    let status = store.get_with("p", only_output).await?.unwrap();
    assert_eq!(
        (status.input, status.output.as_deref()),
        (None, Some("\"big output\""))
    );
    Ok(())
}

#[tokio::test]
async fn custom_status_is_set_read_and_cleared() -> Result<()> {
    let store = common::store().await;
    created(&store, "cs").await?;
    let before = store.get("cs").await?.unwrap();

    let value = json!({"nextActions": ["A", "B", "C"], "foo": 2});
    store
        .set_custom_status("cs", Some(&custom(value.clone())))
        .await?;
    let status = store.get("cs").await?.unwrap();
    assert_eq!(status.custom_status.unwrap().to_value(), value);
    assert!(status.last_updated_time > before.last_updated_time);

    store.set_custom_status("cs", None).await?;
    assert_eq!(store.get("cs").await?.unwrap().custom_status, None);
    let row = common::raw_row(&store, "cs").await;
    assert_eq!(row["CustomStatus"], "null", "cleared as the provider does");
    Ok(())
}

#[tokio::test]
async fn custom_status_limit_is_exact_at_16_kib() -> Result<()> {
    let store = common::store().await;
    created(&store, "limit").await?;

    // 8,192 UTF-16 units = 16,384 bytes: accepted.
    let at_limit = json_string_of_units(8_192);
    assert_eq!(at_limit.utf16_size(), 16_384);
    store.set_custom_status("limit", Some(&at_limit)).await?;

    // One unit more: refused, naming the size and the limit.
    let over = json_string_of_units(8_193);
    let err = store
        .set_custom_status("limit", Some(&over))
        .await
        .unwrap_err();
    match &err {
        Error::TooLarge {
            field,
            actual,
            limit,
            unit,
        } => {
            assert_eq!(
                (*field, *actual, *limit, *unit),
                ("custom status", 16_386, 16_384, SizeUnit::Utf16Bytes)
            );
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "custom status is too large: 16386 bytes of UTF-16, the limit is 16384 bytes of UTF-16 (16 KiB)"
    );

    // Nothing stored changed.
    assert_eq!(
        store.get("limit").await?.unwrap().custom_status,
        Some(at_limit)
    );
    Ok(())
}

#[tokio::test]
async fn characters_outside_the_bmp_count_four_bytes() -> Result<()> {
    let store = common::store().await;
    created(&store, "emoji").await?;
    // Quotes (4 bytes) + 4,095 emoji (16,380 bytes) = 16,384: at the limit.
    let fits = CustomStatus::from_value(&"😀".repeat(4_095))?;
    assert_eq!(fits.utf16_size(), 16_384);
    store.set_custom_status("emoji", Some(&fits)).await?;
    let over = CustomStatus::from_value(&"😀".repeat(4_096))?;
    assert!(matches!(
        store.set_custom_status("emoji", Some(&over)).await,
        Err(Error::TooLarge { actual: 16_388, .. })
    ));
    Ok(())
}

#[tokio::test]
async fn a_store_may_raise_the_limit_up_to_64_kib() -> Result<()> {
    let store = common::store_with(StoreOptions::default().custom_status_limit(65_536)).await;
    created(&store, "wide").await?;
    let at_limit = json_string_of_units(32_768);
    store.set_custom_status("wide", Some(&at_limit)).await?;
    assert_eq!(
        store.get("wide").await?.unwrap().custom_status,
        Some(at_limit)
    );
    assert!(store
        .set_custom_status("wide", Some(&json_string_of_units(32_769)))
        .await
        .is_err());

    let too_high = StoreOptions::default().custom_status_limit(65_537);
    let err = InstanceStore::connect_with(&common::storage(), &common::unique_hub(), too_high)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Invalid {
                field: "custom status limit",
                ..
            }
        ),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn reading_never_applies_the_limit() -> Result<()> {
    let store = common::store().await;
    let large = format!("\"{}\"", "x".repeat(20_000)); // 40 KB of UTF-16
    common::write_raw_row(
        &store,
        json!({
            "PartitionKey": "written-elsewhere",
            "RowKey": "",
            "Name": "Legacy",
            "RuntimeStatus": "Running",
            "CustomStatus": large,
            "CreatedTime": "2024-05-01T10:00:00.0000000Z",
            "CreatedTime@odata.type": "Edm.DateTime",
        }),
    )
    .await;
    let status = store.get("written-elsewhere").await?.unwrap();
    assert_eq!(status.custom_status.unwrap().as_str(), large);
    assert_eq!(status.runtime_status, RuntimeStatus::Running);
    Ok(())
}

#[tokio::test]
async fn rows_with_unknown_status_text_still_read() -> Result<()> {
    let store = common::store().await;
    common::write_raw_row(
        &store,
        json!({"PartitionKey": "future", "RowKey": "", "Name": "N", "RuntimeStatus": "Hibernating"}),
    )
    .await;
    assert_eq!(
        store.get("future").await?.unwrap().runtime_status,
        RuntimeStatus::Unknown
    );
    Ok(())
}

#[tokio::test]
async fn conditional_custom_status_write_loses_to_a_newer_write() -> Result<()> {
    let store = common::store().await;
    let first = store.create(NewInstance::new("etag", "Orch")).await?.etag;
    let second = store
        .set_custom_status_if_match("etag", Some(&custom(json!(1))), &first)
        .await?;
    assert_ne!(first, second);

    let err = store
        .set_custom_status_if_match("etag", Some(&custom(json!(2))), &first)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    assert_eq!(
        store.get("etag").await?.unwrap().custom_status,
        Some(custom(json!(1)))
    );

    let third = store
        .set_custom_status_if_match("etag", Some(&custom(json!(3))), &second)
        .await?;
    assert_eq!(
        store.get("etag").await?.unwrap().etag,
        third,
        "each write returns the new ETag"
    );
    Ok(())
}

#[tokio::test]
async fn writes_to_a_missing_instance_are_not_found() -> Result<()> {
    let store = common::store().await;
    let err = store
        .set_custom_status("ghost", Some(&custom(json!(1))))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::NotFound { ref instance_id } if instance_id == "ghost"),
        "{err}"
    );
    assert!(matches!(
        store.terminate("ghost", "why").await,
        Err(Error::NotFound { .. })
    ));
    assert!(
        store.get("ghost").await?.is_none(),
        "a merge never creates a row"
    );
    Ok(())
}

#[tokio::test]
async fn lifecycle_keeps_times_right() -> Result<()> {
    let store = common::store().await;
    created(&store, "life").await?;
    let created_at = store.get("life").await?.unwrap();

    store.start("life").await?;
    let running = store.get("life").await?.unwrap();
    assert_eq!(running.runtime_status, RuntimeStatus::Running);
    assert!(running.last_updated_time > created_at.last_updated_time);
    assert_eq!(running.created_time, created_at.created_time);

    store.suspend("life").await?;
    assert_eq!(
        store.get("life").await?.unwrap().runtime_status,
        RuntimeStatus::Suspended
    );
    store.resume("life").await?;
    assert_eq!(
        store.get("life").await?.unwrap().runtime_status,
        RuntimeStatus::Running
    );
    assert_eq!(store.get("life").await?.unwrap().completed_time, None);

    store
        .complete("life", Some(JsonText::from_value(&json!({"total": 3}))?))
        .await?;
    let done = store.get("life").await?.unwrap();
    assert_eq!(done.runtime_status, RuntimeStatus::Completed);
    assert_eq!(done.output.as_deref(), Some(r#"{"total":3}"#));
    let completed = done.completed_time.expect("CompletedTime is set");
    assert_eq!(completed, done.last_updated_time);
    assert!(completed > running.last_updated_time);
    Ok(())
}

#[tokio::test]
async fn fail_and_terminate_record_why() -> Result<()> {
    let store = common::store().await;
    created(&store, "f").await?;
    created(&store, "t").await?;
    store
        .fail("f", "Activity 'Charge' failed: card declined")
        .await?;
    store.terminate("t", "cancelled by user").await?;

    let failed = store.get("f").await?.unwrap();
    assert_eq!(failed.runtime_status, RuntimeStatus::Failed);
    assert_eq!(
        failed.output.as_deref(),
        Some("\"Activity 'Charge' failed: card declined\"")
    );
    assert!(failed.completed_time.is_some());

    let terminated = store.get("t").await?.unwrap();
    assert_eq!(terminated.runtime_status, RuntimeStatus::Terminated);
    assert_eq!(terminated.output.as_deref(), Some("\"cancelled by user\""));
    assert!(terminated.runtime_status.is_terminal() && terminated.completed_time.is_some());
    Ok(())
}

#[tokio::test]
async fn continue_as_new_starts_a_new_execution() -> Result<()> {
    let store = common::store().await;
    store
        .create(
            NewInstance::new("loop", "Orch")
                .input_value(&1)?
                .status(RuntimeStatus::Running),
        )
        .await?;
    let first = store.get("loop").await?.unwrap();

    store
        .continue_as_new("loop", Some(JsonText::from_value(&2)?))
        .await?;
    let continued = store.get("loop").await?.unwrap();
    assert_eq!(continued.runtime_status, RuntimeStatus::ContinuedAsNew);
    assert_eq!(continued.input.as_deref(), Some("2"));
    assert_ne!(continued.execution_id, first.execution_id);
    assert_eq!(continued.execution_id.len(), 32);

    let change = StateChange::ContinueAsNew {
        input: None,
        generation: Some(5),
    };
    store.change_state_unchecked("loop", &change).await?;
    assert_eq!(store.get("loop").await?.unwrap().generation, 5);
    store.start("loop").await?;
    assert_eq!(
        store.get("loop").await?.unwrap().runtime_status,
        RuntimeStatus::Running
    );
    Ok(())
}

#[tokio::test]
async fn conditional_state_change_detects_a_race() -> Result<()> {
    let store = common::store().await;
    let etag = store.create(NewInstance::new("race", "Orch")).await?.etag;
    store.start("race").await?; // another writer moved on
    let terminate = StateChange::Terminate {
        reason: "stop".into(),
    };
    let err = store
        .change_state_if_match("race", &terminate, &etag)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    assert_eq!(
        store.get("race").await?.unwrap().runtime_status,
        RuntimeStatus::Running
    );
    Ok(())
}

#[tokio::test]
async fn delete_removes_the_row_once() -> Result<()> {
    let store = common::store().await;
    created(&store, "gone").await?;
    assert!(store.delete("gone").await?);
    assert!(store.get("gone").await?.is_none());
    assert!(
        !store.delete("gone").await?,
        "a second delete finds nothing"
    );

    let etag = store
        .create(NewInstance::new("guarded", "Orch"))
        .await?
        .etag;
    store.start("guarded").await?;
    let err = store
        .delete_with("guarded", &WriteCondition::IfMatch(etag))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    assert!(
        store.get("guarded").await?.is_some(),
        "a stale conditional delete keeps the row"
    );
    Ok(())
}

#[tokio::test]
async fn ids_with_reserved_characters_and_quotes_round_trip() -> Result<()> {
    let store = common::store().await;
    let ids = [
        "a/b\\c#d?e^f",
        "tab\there\u{0}nul\u{7F}del\u{9F}",
        "it's",
        "it",
        "''",
        "spaces and ünïcödé 😀",
        "percent%20+plus&amp=eq",
        "^0",
    ];
    for (i, id) in ids.iter().enumerate() {
        store
            .create(NewInstance::new(*id, format!("Orch{i}")))
            .await?;
    }
    for (i, id) in ids.iter().enumerate() {
        let status = store
            .get(id)
            .await?
            .unwrap_or_else(|| panic!("{id:?} was stored"));
        assert_eq!(status.instance_id, *id);
        assert_eq!(
            status.name,
            format!("Orch{i}"),
            "{id:?} addresses its own row"
        );
        store.set_custom_status(id, Some(&custom(json!(i)))).await?;
    }
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            store.get(id).await?.unwrap().custom_status,
            Some(custom(json!(i))),
            "{id:?}"
        );
    }
    // The row of "it's" is keyed it's, not "it" (the client crate's defect).
    assert_eq!(common::raw_row(&store, "it's").await["Name"], "Orch2");
    assert!(store.delete("it's").await?);
    assert!(
        store.get("it").await?.is_some(),
        "deleting it's left it alone"
    );
    Ok(())
}

#[tokio::test]
async fn bad_input_is_refused_before_any_request() -> Result<()> {
    let store = common::store().await;

    let err = store
        .create(NewInstance::new("", "Orch"))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "invalid instance id: must not be empty");

    let long = "/".repeat(300); // 600 units once escaped
    let err = store
        .create(NewInstance::new(long.clone(), "Orch"))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "instance id is too large: 600 UTF-16 code units, the limit is 512 UTF-16 code units"
    );
    assert!(matches!(
        store.get(&long).await,
        Err(Error::TooLarge { .. })
    ));

    // Payloads over 60 KiB go to blobs, up to the store's limit.
    let limited = common::store_with(StoreOptions::default().large_payload_limit(100_000)).await;
    let big_input = JsonText::from_value(&"i".repeat(50_000))?; // 50,002 units with quotes
    let err = limited
        .create(NewInstance::new("big", "Orch").input(big_input))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "input is too large: 100004 bytes of UTF-16, the limit is 100000 bytes of UTF-16"
    );
    assert!(limited.get("big").await?.is_none(), "nothing was written");

    created(&limited, "small").await?;
    let big_output = JsonText::from_value(&"o".repeat(60_000))?;
    let err = limited
        .complete("small", Some(big_output))
        .await
        .unwrap_err();
    assert!(
        err.to_string().starts_with("output is too large: 120004"),
        "{err}"
    );
    assert_eq!(
        limited.get("small").await?.unwrap().runtime_status,
        RuntimeStatus::Pending
    );

    let err = CustomStatus::from_json("{not json").unwrap_err();
    assert!(
        matches!(
            err,
            Error::Invalid {
                field: "custom status",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("not JSON"), "{err}");

    let err = store
        .create(NewInstance::new("x", "Orch").status(RuntimeStatus::Completed))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Invalid {
                field: "runtime status",
                ..
            }
        ),
        "{err}"
    );

    for bad_hub in ["ab", "1hub", "my-hub"] {
        let err = InstanceStore::connect(&common::storage(), bad_hub)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Invalid {
                    field: "task hub",
                    ..
                }
            ),
            "{bad_hub}: {err}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn connecting_to_an_existing_hub_is_fine() -> Result<()> {
    let store = common::store().await;
    created(&store, "kept").await?;
    let again = InstanceStore::connect(&common::storage(), store.task_hub()).await?;
    assert!(again.get("kept").await?.is_some());
    Ok(())
}

#[tokio::test]
async fn read_modify_write_survives_32_concurrent_writers() -> Result<()> {
    let store = Arc::new(common::store().await);
    created(&store, "counter").await?;
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for _ in 0..50 {
                    store
                        .update_custom_status("counter", |current| {
                            let count =
                                current.map_or(0, |c| c.to_value()["count"].as_u64().unwrap_or(0));
                            CustomStatus::from_value(&json!({"count": count + 1})).map(Some)
                        })
                        .await?;
                }
                Ok::<_, Error>(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let status = store.get("counter").await?.unwrap();
    assert_eq!(
        status.custom_status.unwrap().to_value(),
        json!({"count": 1600})
    );
    Ok(())
}

#[tokio::test]
async fn read_modify_write_passes_errors_through() -> Result<()> {
    let store = common::store().await;
    let err = store
        .update_custom_status("absent", |_| Ok(None))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");

    created(&store, "rmw").await?;
    let err = store
        .update_custom_status("rmw", |_| Ok(Some(json_string_of_units(9_000))))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::TooLarge { .. }),
        "the limit applies: {err}"
    );
    Ok(())
}

#[tokio::test]
async fn secrets_stay_out_of_debug_output() -> Result<()> {
    let config = common::storage();
    let store = common::store().await;
    let secret = match &config.credentials {
        durable_status::Credentials::AccountKey { key, .. } => key.expose().to_owned(),
        durable_status::Credentials::SharedAccessSignature(sas) => sas.expose().to_owned(),
        _ => unreachable!(),
    };
    for debug in [
        format!("{:?}", *store),
        format!("{config:?}"),
        format!("{:#?}", config.credentials),
    ] {
        assert!(!debug.contains(&secret), "{debug}");
    }
    Ok(())
}

#[tokio::test]
async fn guarded_state_changes_refuse_terminal_instances() -> Result<()> {
    let store = common::store().await;
    created(&store, "g").await?;
    let terminate = StateChange::Terminate { reason: "r".into() };
    store.change_state("g", &StateChange::Suspend).await?;
    assert_eq!(
        store.get("g").await?.unwrap().runtime_status,
        RuntimeStatus::Suspended
    );
    store.change_state("g", &terminate).await?;
    let err = store
        .change_state("g", &StateChange::Resume)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Terminal {
                status: RuntimeStatus::Terminated,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.to_string(), "instance 'g' is already Terminated");
    assert_eq!(
        store.get("g").await?.unwrap().runtime_status,
        RuntimeStatus::Terminated
    );
    let err = store.change_state("nope", &terminate).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    Ok(())
}

#[tokio::test]
async fn opening_a_hub_sends_nothing_and_finds_nothing() -> Result<()> {
    let store = InstanceStore::open(
        &common::storage(),
        &common::unique_hub(),
        StoreOptions::default(),
    )?;
    assert!(
        store.get("x").await?.is_none(),
        "the table does not exist, and that reads as absent"
    );
    for err in [
        store.start("x").await.unwrap_err(),
        store.terminate("x", "r").await.unwrap_err(),
        store
            .update_custom_status("x", |_| Ok(None))
            .await
            .unwrap_err(),
        store.set_custom_status("x", None).await.unwrap_err(),
    ] {
        assert!(
            matches!(err, Error::TableNotFound { .. }),
            "the table is missing, not the instance: {err}"
        );
    }
    assert!(
        !store.purge_terminal_instance("x").await?,
        "nothing to purge"
    );
    Ok(())
}

#[tokio::test]
async fn state_changes_never_change_a_completed_instance() -> Result<()> {
    let store = common::store().await;
    created(&store, "done").await?;
    store.start("done").await?;
    store
        .complete("done", Some(JsonText::from_value(&"result")?))
        .await?;
    let before = store.get("done").await?.unwrap();

    let suspend = store.suspend("done").await.unwrap_err();
    let terminate = store.terminate("done", "too late").await.unwrap_err();
    let fail = store.fail("done", "boom").await.unwrap_err();
    let start = store.start("done").await.unwrap_err();
    let again = store.continue_as_new("done", None).await.unwrap_err();
    for err in [suspend, terminate, fail, start, again] {
        assert!(
            matches!(
                err,
                Error::Terminal {
                    status: RuntimeStatus::Completed,
                    ..
                }
            ),
            "{err}"
        );
    }
    let after = store.get("done").await?.unwrap();
    assert_eq!(after, before, "the row is unchanged, ETag included");
    assert_eq!(after.output.as_deref(), Some("\"result\""));
    Ok(())
}

#[tokio::test]
async fn continue_as_new_counts_generations() -> Result<()> {
    let store = common::store().await;
    store
        .create(NewInstance::new("gen", "Orch").status(RuntimeStatus::Running))
        .await?;
    let mut executions = std::collections::HashSet::new();
    for expected in 1..=3 {
        store
            .continue_as_new("gen", Some(JsonText::from_value(&expected)?))
            .await?;
        let status = store.get("gen").await?.unwrap();
        assert_eq!(status.generation, expected);
        assert!(executions.insert(status.execution_id), "a new execution id");
        store.start("gen").await?;
    }
    // In one request, the generation must be given.
    let unknown = StateChange::ContinueAsNew {
        input: None,
        generation: None,
    };
    let err = store
        .change_state_unchecked("gen", &unknown)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Invalid {
                field: "generation",
                ..
            }
        ),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn a_custom_status_is_measured_and_stored_in_its_compact_form() -> Result<()> {
    let store = common::store().await;
    created(&store, "compact").await?;
    // Python's json.dumps(..., indent=2) escapes every non-ASCII character:
    // "é" is six characters of text, one of value.
    let value = "é".repeat(8_000);
    let escaped: String = "\\u00e9".repeat(8_000);
    let text = format!("{{\n  \"stage\": \"{escaped}\",\n  \"done\": 123456789012345678901\n}}");
    assert!(
        2 * text.len() > 16_384 * 5,
        "as written, far over the limit"
    );
    let status = CustomStatus::from_json(text)?;
    let compact = format!("{{\"stage\":\"{value}\",\"done\":123456789012345678901}}");
    assert_eq!(status.as_str(), compact);
    assert!(status.utf16_size() <= 16_384, "{}", status.utf16_size());
    store.set_custom_status("compact", Some(&status)).await?;
    let stored = store.get("compact").await?.unwrap().custom_status.unwrap();
    assert_eq!(stored.as_str(), compact, "stored compact, the number exact");

    // The limit applies to the compact form: one character over is refused.
    let over = format!("{{\"stage\":\"{}\"}}", "é".repeat(8_181));
    let err = store
        .set_custom_status("compact", Some(&CustomStatus::from_json(over)?))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::TooLarge {
                actual: 16_386,
                limit: 16_384,
                ..
            }
        ),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn a_store_without_its_table_says_so() -> Result<()> {
    let store = InstanceStore::open(
        &common::storage(),
        &common::unique_hub(),
        StoreOptions::default(),
    )?;
    assert!(store.get("x").await?.is_none(), "reads find nothing");
    let err = store
        .create(NewInstance::new("x", "Orch"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::TableNotFound { table } if table.ends_with("Instances")),
        "not 'instance not found': {err}"
    );
    Ok(())
}

#[tokio::test]
async fn the_suite_can_delete_the_tables_it_created() -> Result<()> {
    // What every test store does when dropped on a real account.
    let store = common::store().await;
    created(&store, "x").await?;
    let history = common::provider_history(&store, &[("x", 2)]).await;
    common::delete_tables(store.task_hub());
    let err = store
        .create(NewInstance::new("y", "Orch"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TableNotFound { .. }), "{err}");
    assert!(
        history.create().await.is_ok(),
        "the History table was gone, so it could be created again"
    );
    Ok(())
}

/// Arrays nested `depth` deep around a number.
fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

#[tokio::test]
async fn what_is_accepted_reads_back_as_the_same_json() -> Result<()> {
    let store = common::store().await;
    created(&store, "json").await?;
    // Refused up front, naming the problem: nothing a reader would refuse.
    for (text, problem) in [
        (nested(200), "deeper"),
        (nested(4_000), "deeper"),
        (r#""\ud800""#.to_owned(), "surrogate"),
        (r#"{"a":"\udc00x"}"#.to_owned(), "surrogate"),
    ] {
        let err = CustomStatus::from_json(text.clone()).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Invalid {
                    field: "custom status",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains(problem), "{problem}: {err}");
        let err = JsonText::parse("input", text).unwrap_err();
        assert!(
            matches!(err, Error::Invalid { field: "input", .. }),
            "{err}"
        );
    }
    // The deepest accepted value is served as JSON, not as a string of text.
    let deepest = nested(durable_status::MAX_JSON_DEPTH);
    store
        .set_custom_status("json", Some(&CustomStatus::from_json(deepest.clone())?))
        .await?;
    store
        .complete("json", Some(JsonText::parse("output", deepest.clone())?))
        .await?;
    let status = store.get("json").await?.unwrap();
    let served = serde_json::to_value(durable_status::StatusPayload::new(&status, true))?;
    let expected: serde_json::Value = serde_json::from_str(&deepest)?;
    assert_eq!(served["customStatus"], expected);
    assert_eq!(served["output"], expected);
    Ok(())
}
