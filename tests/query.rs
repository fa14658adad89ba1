//! Listing, paging and counting instances against a real table service.

mod common;

use std::collections::BTreeSet;

use anyhow::Result;
use durable_status::{
    Error, InstanceQuery, InstanceStore, JsonText, NewInstance, RuntimeStatus, StoreOptions,
};
use futures::{StreamExt, TryStreamExt};
use serde_json::json;
use time::macros::datetime;

async fn create_many(store: &InstanceStore, ids: impl IntoIterator<Item = String>) -> Result<()> {
    futures::stream::iter(ids)
        .map(|id| async move { store.create(NewInstance::new(id, "Orch")).await })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// A row as the Durable Task provider writes it, with a chosen creation time.
async fn provider_row(store: &InstanceStore, id: &str, status: &str, created: &str) {
    common::write_raw_row(
        store,
        json!({
            "PartitionKey": durable_status::format::keys::escape_key(id),
            "RowKey": "",
            "Name": "Orch",
            "RuntimeStatus": status,
            "CustomStatus": "null",
            "CreatedTime": created,
            "CreatedTime@odata.type": "Edm.DateTime",
            "LastUpdatedTime": created,
            "LastUpdatedTime@odata.type": "Edm.DateTime",
            "TaskHubName": store.task_hub(),
        }),
    )
    .await;
}

async fn ids(store: &InstanceStore, query: InstanceQuery) -> Result<Vec<String>> {
    let mut ids: Vec<String> = store
        .query(&query)
        .map_ok(|i| i.instance_id)
        .try_collect()
        .await?;
    ids.sort();
    Ok(ids)
}

fn set(ids: &[&str]) -> Vec<String> {
    let mut ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn paging_returns_each_instance_exactly_once() -> Result<()> {
    let store = common::store().await;
    let expected: BTreeSet<String> = (0..2_600).map(|i| format!("inst-{i:05}")).collect();
    create_many(&store, expected.iter().cloned()).await?;

    for page_size in [1, 7, 1000] {
        let query = InstanceQuery::new()
            .page_size(page_size)
            .include_input(false)
            .include_output(false);
        let mut seen = Vec::new();
        let mut token: Option<String> = None;
        let mut pages = 0;
        loop {
            let page = store.query_page(&query, token.as_deref()).await?;
            assert!(page.instances.len() <= page_size as usize);
            seen.extend(page.instances.into_iter().map(|i| i.instance_id));
            pages += 1;
            match page.continuation_token {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        let unique: BTreeSet<String> = seen.iter().cloned().collect();
        assert_eq!(
            unique.len(),
            seen.len(),
            "page size {page_size}: no instance twice"
        );
        assert_eq!(
            unique, expected,
            "page size {page_size}: every instance once"
        );
        assert!(
            pages >= 2_600 / page_size as usize,
            "page size {page_size}: {pages} pages"
        );
    }

    let streamed: Vec<String> = store
        .query(&InstanceQuery::new().page_size(7))
        .map_ok(|i| i.instance_id)
        .try_collect()
        .await?;
    assert_eq!(streamed.len(), 2_600);
    assert_eq!(streamed.into_iter().collect::<BTreeSet<_>>(), expected);
    Ok(())
}

#[tokio::test]
async fn a_token_always_resumes_at_the_same_place() -> Result<()> {
    let store = common::store().await;
    create_many(&store, (0..10).map(|i| format!("i{i}"))).await?;
    let query = InstanceQuery::new().page_size(3);
    let first = store.query_page(&query, None).await?;
    let token = first.continuation_token.expect("more pages");
    let again = store.query_page(&query, Some(&token)).await?;
    let once_more = store.query_page(&query, Some(&token)).await?;
    assert_eq!(again, once_more);
    assert_eq!(again.instances[0].instance_id, "i3");

    for bad in ["garbage", "1.", "null", "1.Zm9v.YmFy.eHl6"] {
        let err = store.query_page(&query, Some(bad)).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::Invalid {
                    field: "continuation token",
                    ..
                }
            ),
            "{bad}: {err}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn the_last_page_has_no_token() -> Result<()> {
    let store = common::store().await;
    let empty = store.query_page(&InstanceQuery::new(), None).await?;
    assert!(empty.instances.is_empty() && empty.continuation_token.is_none());
    create_many(&store, (0..4).map(|i| format!("i{i}"))).await?;
    let page = store
        .query_page(&InstanceQuery::new().page_size(4), None)
        .await?;
    assert_eq!(page.instances.len(), 4);
    if let Some(token) = page.continuation_token {
        // The service may hand back a continuation after a full page; it
        // must then lead to an empty, final page, never loop.
        let last = store
            .query_page(&InstanceQuery::new().page_size(4), Some(&token))
            .await?;
        assert!(last.instances.is_empty() && last.continuation_token.is_none());
    }
    Ok(())
}

#[tokio::test]
async fn filters_by_a_set_of_statuses() -> Result<()> {
    let store = common::store().await;
    for (id, status) in [
        ("p", "Pending"),
        ("r", "Running"),
        ("c", "Completed"),
        ("f", "Failed"),
        ("t", "Terminated"),
    ] {
        provider_row(&store, id, status, "2024-01-01T00:00:00Z").await;
    }
    let query =
        |statuses: &[RuntimeStatus]| InstanceQuery::new().statuses(statuses.iter().copied());
    assert_eq!(
        ids(&store, query(&[RuntimeStatus::Running])).await?,
        set(&["r"])
    );
    assert_eq!(
        ids(
            &store,
            query(&[
                RuntimeStatus::Completed,
                RuntimeStatus::Failed,
                RuntimeStatus::Terminated
            ])
        )
        .await?,
        set(&["c", "f", "t"])
    );
    assert_eq!(
        ids(&store, query(&[RuntimeStatus::Suspended])).await?,
        set(&[])
    );
    assert_eq!(
        ids(&store, query(&[])).await?,
        set(&["c", "f", "p", "r", "t"]),
        "an empty set means any status"
    );
    Ok(())
}

#[tokio::test]
async fn filters_by_created_time_in_any_offset() -> Result<()> {
    let store = common::store().await;
    for hour in 0..6 {
        provider_row(
            &store,
            &format!("h{hour}"),
            "Completed",
            &format!("2024-01-01T0{hour}:00:00.0000000Z"),
        )
        .await;
    }
    // 03:00 at +02:00 is 01:00 UTC; 05:30 at +02:00 is 03:30 UTC.
    let query = InstanceQuery::new()
        .created_from(datetime!(2024-01-01 03:00 +2))
        .created_to(datetime!(2024-01-01 05:30 +2));
    assert_eq!(ids(&store, query).await?, set(&["h1", "h2", "h3"]));
    let from = InstanceQuery::new().created_from(datetime!(2024-01-01 04:00 UTC));
    assert_eq!(ids(&store, from).await?, set(&["h4", "h5"]));
    let to = InstanceQuery::new().created_to(datetime!(2024-01-01 00:00 UTC));
    assert_eq!(
        ids(&store, to).await?,
        set(&["h0"]),
        "both ends are inclusive"
    );
    Ok(())
}

#[tokio::test]
async fn prefixes_use_the_escaped_key_range() -> Result<()> {
    let store = common::store().await;
    let all = [
        "ord",
        "ord/1",
        "ord/2",
        "ord^x",
        "ord^0",
        "ord0",
        "orc",
        "ore",
        "or",
        "ordé",
        "ordë",
        "z\u{FFFF}",
        "z\u{FFFF}a",
        "z\u{FFFF}\u{FFFF}",
        "{",
        "z~",
        "z\u{7F}",
        "x\u{D7FF}",
        "x\u{D7FF}1",
        "x\u{10000}",
        "x\u{E000}",
        "y\u{10FFFF}",
        "y\u{10FFFF}b",
        "y\u{E000}",
        "é",
        "éa",
        "ê",
        "😀",
        "😀x",
        "😁",
    ];
    create_many(&store, all.iter().map(|s| s.to_string())).await?;
    for prefix in [
        "ord",
        "ord/",
        "ord^",
        "ord^0",
        "ordé",
        "or",
        "z\u{FFFF}",
        "z~",
        "x\u{D7FF}",
        "y\u{10FFFF}",
        "é",
        "😀",
        "nothing",
    ] {
        let expected: Vec<String> = set(&all
            .iter()
            .copied()
            .filter(|id| id.starts_with(prefix))
            .collect::<Vec<_>>());
        let query = InstanceQuery::new().instance_id_prefix(prefix);
        assert_eq!(
            ids(&store, query.clone()).await?,
            expected,
            "prefix {prefix:?}"
        );
        // One page of the key range holds them all.
        let page = store.query_page(&query.page_size(1000), None).await?;
        assert_eq!(page.instances.len(), expected.len(), "prefix {prefix:?}");
    }
    Ok(())
}

#[tokio::test]
async fn filter_values_cannot_inject() -> Result<()> {
    let store = common::store().await;
    let tricky = ["a' or PartitionKey ne '", "x') or (RowKey eq '", "b'", "'"];
    create_many(
        &store,
        tricky
            .iter()
            .map(|s| s.to_string())
            .chain(["plain".to_string()]),
    )
    .await?;
    for id in tricky {
        assert_eq!(
            ids(&store, InstanceQuery::new().instance_id_prefix(id)).await?,
            set(&[id]),
            "{id:?}"
        );
    }
    let hub = InstanceQuery::new().task_hub_name("x' or TaskHubName ne 'x");
    assert!(ids(&store, hub).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn filters_by_task_hub_name() -> Result<()> {
    let store = common::store().await;
    store.create(NewInstance::new("ours", "Orch")).await?;
    common::write_raw_row(
        &store,
        json!({"PartitionKey": "legacy", "RowKey": "", "RuntimeStatus": "Running"}),
    )
    .await;
    let query = InstanceQuery::new().task_hub_name(store.task_hub());
    assert_eq!(ids(&store, query).await?, set(&["ours"]));
    assert_eq!(
        ids(&store, InstanceQuery::new()).await?,
        set(&["legacy", "ours"])
    );
    Ok(())
}

#[tokio::test]
async fn filters_combine() -> Result<()> {
    let store = common::store().await;
    for (id, status, created) in [
        ("job-1", "Completed", "2024-03-01T10:00:00Z"),
        ("job-2", "Failed", "2024-03-01T11:00:00Z"),
        ("job-3", "Completed", "2024-03-02T10:00:00Z"),
        ("job-4", "Running", "2024-03-01T10:30:00Z"),
        ("other-1", "Completed", "2024-03-01T10:00:00Z"),
    ] {
        provider_row(&store, id, status, created).await;
    }
    let query = InstanceQuery::new()
        .instance_id_prefix("job-")
        .statuses([RuntimeStatus::Completed, RuntimeStatus::Failed])
        .created_from(datetime!(2024-03-01 00:00 UTC))
        .created_to(datetime!(2024-03-01 23:59 UTC))
        .task_hub_name(store.task_hub());
    assert_eq!(ids(&store, query).await?, set(&["job-1", "job-2"]));
    Ok(())
}

#[tokio::test]
async fn listings_can_leave_payloads_out() -> Result<()> {
    let store = common::store().await;
    store
        .create(NewInstance::new("i", "Orch").input_value(&"in")?)
        .await?;
    store
        .complete("i", Some(JsonText::from_value(&"out")?))
        .await?;
    let read = |query: InstanceQuery| {
        let store = store.clone();
        async move { store.query(&query).try_collect::<Vec<_>>().await }
    };
    let full = read(InstanceQuery::new()).await?;
    assert_eq!(
        (full[0].input.as_deref(), full[0].output.as_deref()),
        (Some("\"in\""), Some("\"out\""))
    );
    let no_input = read(InstanceQuery::new().include_input(false)).await?;
    assert_eq!(
        (no_input[0].input.as_deref(), no_input[0].output.as_deref()),
        (None, Some("\"out\""))
    );
    let slim = read(
        InstanceQuery::new()
            .include_input(false)
            .include_output(false),
    )
    .await?;
    assert_eq!(
        (slim[0].input.as_deref(), slim[0].output.as_deref()),
        (None, None)
    );
    assert_eq!(slim[0].runtime_status, RuntimeStatus::Completed);
    Ok(())
}

#[tokio::test]
async fn odd_rows_from_other_tools_do_not_fail_a_page() -> Result<()> {
    let store = common::store().await;
    store.create(NewInstance::new("good", "Orch")).await?;
    common::write_raw_row(
        &store,
        json!({"PartitionKey": "odd1", "RowKey": "", "RuntimeStatus": 42, "Name": true}),
    )
    .await;
    common::write_raw_row(
        &store,
        json!({"PartitionKey": "odd2", "RowKey": "", "CreatedTime": "yesterday"}),
    )
    .await;
    let all: Vec<_> = store.query(&InstanceQuery::new()).try_collect().await?;
    assert_eq!(all.len(), 3);
    let odd1 = all.iter().find(|i| i.instance_id == "odd1").unwrap();
    assert_eq!(
        (odd1.runtime_status, odd1.name.as_str()),
        (RuntimeStatus::Unknown, "")
    );
    Ok(())
}

#[tokio::test]
async fn bad_queries_are_refused_before_any_request() -> Result<()> {
    let (store, proxy) = common::proxied_store(StoreOptions::default()).await;
    for query in [
        InstanceQuery::new().page_size(0),
        InstanceQuery::new().page_size(1001),
        InstanceQuery::new()
            .created_from(datetime!(2024-02-01 0:00 UTC))
            .created_to(datetime!(2024-01-01 0:00 UTC)),
        InstanceQuery::new().instance_id_prefix("/".repeat(300)),
    ] {
        assert!(store
            .query_page(&query, None)
            .await
            .unwrap_err()
            .is_invalid_input());
        let first = store.query(&query).next().await.expect("one item");
        assert!(first.unwrap_err().is_invalid_input());
        assert!(store
            .count_by_status(&query)
            .await
            .unwrap_err()
            .is_invalid_input());
    }
    assert_eq!(proxy.take_requests(), 0);
    Ok(())
}

#[tokio::test]
async fn the_stream_fetches_a_page_only_when_needed() -> Result<()> {
    let (store, proxy) = common::proxied_store(StoreOptions::default()).await;
    create_many(&store, (0..250).map(|i| format!("i{i:03}"))).await?;
    proxy.take_requests();

    let query = InstanceQuery::new().page_size(100);
    let stream = store.query(&query);
    assert_eq!(
        proxy.take_requests(),
        0,
        "nothing is fetched before the first poll"
    );
    let mut stream = std::pin::pin!(stream);
    for _ in 0..100 {
        stream.next().await.unwrap()?;
    }
    assert_eq!(proxy.take_requests(), 1);
    stream.next().await.unwrap()?;
    assert_eq!(
        proxy.take_requests(),
        1,
        "the second page on the 101st item"
    );
    let rest: Vec<_> = stream.try_collect().await?;
    assert_eq!(rest.len(), 149);
    assert_eq!(proxy.take_requests(), 1);
    Ok(())
}

#[tokio::test]
async fn counts_per_status_read_only_the_status_column() -> Result<()> {
    // One sequential scan: the parallel one is pinned in tests/scan.rs.
    let (store, proxy) = common::proxied_store(StoreOptions::default().scan_concurrency(1)).await;
    let plan = [
        ("Running", 7),
        ("Completed", 1_203),
        ("Failed", 3),
        ("Pending", 0),
        ("Weird", 2),
    ];
    let mut rows = Vec::new();
    for (status, n) in plan {
        for i in 0..n {
            rows.push((format!("{status}-{i}"), status));
        }
    }
    futures::stream::iter(rows)
        .for_each_concurrent(32, |(id, status)| {
            let store = &store;
            async move { provider_row(store, &id, status, "2024-01-01T00:00:00Z").await }
        })
        .await;
    proxy.take_lines();

    let counts = store.count_by_status(&InstanceQuery::new()).await?;
    assert_eq!(counts.get(RuntimeStatus::Running), 7);
    assert_eq!(counts.get(RuntimeStatus::Completed), 1_203);
    assert_eq!(counts.get(RuntimeStatus::Failed), 3);
    assert_eq!(counts.get(RuntimeStatus::Pending), 0);
    assert_eq!(counts.get(RuntimeStatus::Unknown), 2);
    assert_eq!(counts.total(), 1_215);
    let lines = proxy.take_lines();
    assert_eq!(lines.len(), 2, "1,215 rows in pages of 1,000: {lines:?}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains("$select=RuntimeStatus&") || l.contains("$select=RuntimeStatus ")),
        "{lines:?}"
    );

    let filtered = store
        .count_by_status(
            &InstanceQuery::new()
                .statuses([RuntimeStatus::Running, RuntimeStatus::Failed])
                .instance_id_prefix("Running-"),
        )
        .await?;
    assert_eq!(
        (filtered.get(RuntimeStatus::Running), filtered.total()),
        (7, 7)
    );
    Ok(())
}

/// A row as the Durable Task provider writes it, of a chosen orchestrator.
async fn named_row(store: &InstanceStore, id: &str, name: &str, status: &str, created: &str) {
    common::write_raw_row(
        store,
        json!({
            "PartitionKey": durable_status::format::keys::escape_key(id),
            "RowKey": "",
            "Name": name,
            "RuntimeStatus": status,
            "CustomStatus": "null",
            "CreatedTime": created,
            "CreatedTime@odata.type": "Edm.DateTime",
            "LastUpdatedTime": created,
            "LastUpdatedTime@odata.type": "Edm.DateTime",
            "TaskHubName": store.task_hub(),
        }),
    )
    .await;
}

#[tokio::test]
async fn filters_by_orchestrator_name_exactly() -> Result<()> {
    let store = common::store().await;
    for (id, name) in [
        ("a", "Orch"),
        ("b", "Orch"),
        ("c", "OrchSuffix"),
        ("d", "Orc"),
        ("e", "orch"),
        ("f", "Other"),
    ] {
        named_row(&store, id, name, "Running", "2024-01-01T00:00:00Z").await;
    }
    common::write_raw_row(&store, json!({"PartitionKey": "no-name", "RowKey": ""})).await;
    assert_eq!(
        ids(&store, InstanceQuery::new().name("Orch")).await?,
        set(&["a", "b"]),
        "exact and case-sensitive: no prefixes, no other case"
    );
    assert_eq!(
        ids(&store, InstanceQuery::new().names(["Orch", "Other"])).await?,
        set(&["a", "b", "f"]),
        "a set of names, or-ed"
    );
    assert_eq!(
        ids(&store, InstanceQuery::new().name("Orch").name("Orc")).await?,
        set(&["a", "b", "d"])
    );
    assert_eq!(
        ids(&store, InstanceQuery::new().name("Missing")).await?,
        set(&[])
    );
    let counts = store
        .count_by_status(&InstanceQuery::new().name("Orch"))
        .await?;
    assert_eq!((counts.get(RuntimeStatus::Running), counts.total()), (2, 2));
    Ok(())
}

#[tokio::test]
async fn the_name_filter_combines_with_the_others() -> Result<()> {
    let store = common::store().await;
    for (id, name, status, created) in [
        ("job-1", "Ship", "Completed", "2024-03-01T10:00:00Z"),
        ("job-2", "Ship", "Failed", "2024-03-01T11:00:00Z"),
        ("job-3", "Ship", "Completed", "2024-03-02T10:00:00Z"),
        ("job-4", "Ship", "Running", "2024-03-01T10:30:00Z"),
        ("job-5", "Bill", "Completed", "2024-03-01T10:00:00Z"),
        ("other-1", "Ship", "Completed", "2024-03-01T10:00:00Z"),
    ] {
        named_row(&store, id, name, status, created).await;
    }
    let query = InstanceQuery::new()
        .name("Ship")
        .instance_id_prefix("job-")
        .statuses([RuntimeStatus::Completed, RuntimeStatus::Failed])
        .created_from(datetime!(2024-03-01 00:00 UTC))
        .created_to(datetime!(2024-03-01 23:59 UTC))
        .task_hub_name(store.task_hub());
    assert_eq!(ids(&store, query.clone()).await?, set(&["job-1", "job-2"]));
    assert_eq!(
        ids(&store, query.names(["Ship", "Bill"])).await?,
        set(&["job-1", "job-2", "job-5"])
    );
    Ok(())
}

#[tokio::test]
async fn name_values_cannot_inject() -> Result<()> {
    let store = common::store().await;
    let tricky = ["a' or Name ne 'a", "x') or (RowKey eq '", "'", "b''"];
    for (i, name) in tricky.iter().enumerate() {
        named_row(
            &store,
            &format!("t{i}"),
            name,
            "Running",
            "2024-01-01T00:00:00Z",
        )
        .await;
    }
    named_row(&store, "plain", "a", "Running", "2024-01-01T00:00:00Z").await;
    for (i, name) in tricky.iter().enumerate() {
        assert_eq!(
            ids(&store, InstanceQuery::new().name(*name)).await?,
            set(&[&format!("t{i}")]),
            "{name:?}"
        );
    }
    assert!(ids(&store, InstanceQuery::new().name("z' or Name ne 'z"))
        .await?
        .is_empty());
    Ok(())
}

#[tokio::test]
async fn bad_name_filters_are_refused_before_any_request() -> Result<()> {
    let (store, proxy) = common::proxied_store(StoreOptions::default()).await;
    for query in [
        InstanceQuery::new().name(""),
        InstanceQuery::new().names(["A", ""]),
        // 8 statuses, 2 for the prefix, 6 names: 16 comparisons.
        InstanceQuery::new()
            .statuses(RuntimeStatus::ALL)
            .instance_id_prefix("p")
            .names((0..6).map(|i| format!("n{i}"))),
    ] {
        let err = store.query_page(&query, None).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::Invalid {
                    field: "orchestrator name",
                    ..
                }
            ),
            "{err}"
        );
        assert!(store
            .count_by_status(&query)
            .await
            .unwrap_err()
            .is_invalid_input());
    }
    assert_eq!(proxy.take_requests(), 0);
    Ok(())
}

#[tokio::test]
async fn get_many_answers_in_the_order_asked_with_none_for_missing() -> Result<()> {
    let (store, proxy) = common::proxied_store(StoreOptions::default()).await;
    for id in ["a", "b", "c/d"] {
        store
            .create(NewInstance::new(id, "Orch").input_value(&id)?)
            .await?;
    }
    proxy.take_requests();
    let asked = ["c/d", "missing", "a", "c/d", "b"];
    let found = store
        .get_many(asked, durable_status::ReadOptions::default())
        .await?;
    let got: Vec<Option<&str>> = found
        .iter()
        .map(|s| s.as_ref().map(|s| s.instance_id.as_str()))
        .collect();
    assert_eq!(got, [Some("c/d"), None, Some("a"), Some("c/d"), Some("b")]);
    assert_eq!(found[2].as_ref().unwrap().input.as_deref(), Some("\"a\""));
    assert_eq!(proxy.take_requests(), 4, "a duplicate is read once");

    let slim = store
        .get_many(["a"], durable_status::ReadOptions::without_payloads())
        .await?;
    assert_eq!(slim[0].as_ref().unwrap().input, None);
    assert!(store
        .get_many(Vec::<String>::new(), Default::default())
        .await?
        .is_empty());
    assert_eq!(proxy.take_requests(), 1);

    let elsewhere = store.task_hub_store("NoSuchHubHere")?;
    assert_eq!(
        elsewhere.get_many(["a", "b"], Default::default()).await?,
        [None, None],
        "a task hub without a table has no instances"
    );
    Ok(())
}

#[tokio::test]
async fn get_many_refuses_a_bad_id_before_any_request() -> Result<()> {
    let (store, proxy) = common::proxied_store(StoreOptions::default()).await;
    let long = "x".repeat(600);
    for (asked, position) in [
        (vec!["ok", "", "fine"], 1),
        (vec!["ok", "fine", long.as_str()], 2),
    ] {
        let err = store.get_many(asked, Default::default()).await.unwrap_err();
        assert!(err.is_invalid_input(), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("instance id") && text.contains(&format!("at position {position}")),
            "{text}"
        );
    }
    assert_eq!(proxy.take_requests(), 0);
    Ok(())
}

#[tokio::test]
async fn get_many_keeps_at_most_32_reads_in_flight() -> Result<()> {
    let (store, proxy) = common::proxied_store(StoreOptions::default()).await;
    let asked: Vec<String> = (0..100).map(|i| format!("m{i:03}")).collect();
    create_many(&store, asked.iter().cloned()).await?;
    proxy.take_requests();
    let connections = proxy.connections();
    // The first id's read waits at the proxy: the answers come in order,
    // so no read past the 32nd may start until it is released.
    let mut gate = proxy.hold_request_matching("GET", "'m000'");
    let reading = tokio::spawn({
        let store = store.clone();
        let asked = asked.clone();
        async move { store.get_many(&asked, Default::default()).await }
    });
    gate.reached().await;
    let mut started = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while started < durable_status::GET_MANY_CONCURRENCY && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        started += proxy.take_requests();
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    started += proxy.take_requests();
    assert_eq!(
        started,
        durable_status::GET_MANY_CONCURRENCY,
        "32 in flight, no more"
    );
    assert!(proxy.connections() - connections <= durable_status::GET_MANY_CONCURRENCY);
    gate.release();
    let found = reading.await??;
    assert_eq!(
        proxy.take_requests(),
        100 - durable_status::GET_MANY_CONCURRENCY
    );
    let got: Vec<String> = found
        .into_iter()
        .map(|s| s.expect("every instance exists").instance_id)
        .collect();
    assert_eq!(got, asked);
    Ok(())
}

#[tokio::test]
async fn a_payload_free_stream_reads_1000_rows_a_page() -> Result<()> {
    let (store, proxy) = common::proxied_store(StoreOptions::default()).await;
    create_many(&store, (0..250).map(|i| format!("i{i:03}"))).await?;
    proxy.take_requests();
    proxy.take_lines();
    let slim = InstanceQuery::new()
        .include_input(false)
        .include_output(false);
    let all: Vec<_> = store.query(&slim).try_collect().await?;
    assert_eq!(all.len(), 250);
    let lines = proxy.take_lines();
    assert_eq!(lines.len(), 1, "one page of up to 1,000: {lines:?}");
    assert!(lines[0].contains("$top=1000"), "{lines:?}");
    proxy.take_requests();

    // With payloads a page holds 100 rows, so that memory stays bounded.
    let all: Vec<_> = store.query(&InstanceQuery::new()).try_collect().await?;
    assert_eq!(all.len(), 250);
    assert_eq!(proxy.take_requests(), 3);
    Ok(())
}
