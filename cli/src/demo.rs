//! `durable-status demo`: sample orchestrations that move through stages and
//! publish their progress, served by the HTTP API and the status page.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use durable_status::emulator::Azurite;
use durable_status::http::BASE_PATH;
use durable_status::{
    CustomStatus, InstanceStore, JsonText, NewInstance, RuntimeStatus, Secret, StorageConfig,
};
use serde_json::{json, Value};
use tokio::time::sleep;

use crate::commands::Serving;

/// How long the demo waits between rounds of sample orchestrations.
const BETWEEN_ROUNDS: Duration = Duration::from_secs(15);
/// Rounds kept visible; older ones are purged.
const ROUNDS_KEPT: u32 = 3;

pub async fn run(
    config: Option<StorageConfig>,
    task_hub: &str,
    addr: SocketAddr,
    keys: Vec<Secret>,
    serving: &Serving,
) -> Result<ExitCode> {
    durable_status::http::check_listen_address(&addr, !keys.is_empty())?;
    let api_has_keys = !keys.is_empty();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let bound = listener.local_addr()?;

    // The emulator lives as long as this value: dropping it stops it.
    let (azurite, config) = match config {
        Some(config) => (None, config),
        None => {
            let dir = Azurite::install_dir()?;
            println!("Starting the Azurite emulator in {} ...", dir.display());
            let azurite = tokio::task::spawn_blocking(Azurite::start).await??;
            let config = azurite.config();
            (Some(azurite), config)
        }
    };
    let store = InstanceStore::connect(&config, task_hub).await?;
    let api = serving.api(store.clone(), keys)?;
    let simulation = tokio::spawn(simulate(store));

    // Keys are never printed: a URL with its key ends up in scrollback and logs.
    let key_suffix = if api_has_keys { "?code=<key>" } else { "" };
    let url = |path: &str| serving.url(bound, path);
    println!();
    println!("durable-status demo is running (task hub {task_hub}).");
    // The page asks for the key, and keeps it out of its address.
    let page_note = if api_has_keys {
        "  (it asks for the key)"
    } else {
        ""
    };
    println!("  Status page:  {}{page_note}", url("/"));
    println!(
        "  Instances:    {}{key_suffix}",
        url(&format!("{BASE_PATH}/instances"))
    );
    println!(
        "  One instance: {}{key_suffix}",
        url(&format!("{BASE_PATH}/instances/demo-1-order"))
    );
    match &azurite {
        Some(_) => println!(
            "  Storage:      Azurite at {} (in memory)",
            config.table_endpoint
        ),
        None => println!("  Storage:      {}", config.table_endpoint),
    }
    println!("Press Ctrl-C to stop.");

    let code = crate::commands::serve_until_interrupted(listener, api).await?;

    simulation.abort();
    drop(azurite);
    println!("Stopped.");
    Ok(code)
}

/// Starts a round of sample orchestrations, waits for it to finish, and
/// starts the next, forever.
async fn simulate(store: InstanceStore) {
    let mut round = 1u32;
    loop {
        let runs = vec![
            tokio::spawn(order(store.clone(), format!("demo-{round}-order"))),
            tokio::spawn(encoding(store.clone(), format!("demo-{round}-video"))),
            tokio::spawn(import(store.clone(), format!("demo-{round}-import"))),
            tokio::spawn(payment(store.clone(), format!("demo-{round}-payment"))),
            tokio::spawn(approval(store.clone(), format!("demo-{round}-approval"))),
        ];
        for run in runs {
            match run.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "a sample orchestration stopped"),
                Err(e) => tracing::warn!(error = %e, "a sample orchestration panicked"),
            }
        }
        if round > ROUNDS_KEPT {
            let old = round - ROUNDS_KEPT;
            for name in ["order", "video", "import", "payment", "approval"] {
                let _ = store.purge_instance(&format!("demo-{old}-{name}")).await;
            }
        }
        sleep(BETWEEN_ROUNDS).await;
        round += 1;
    }
}

async fn begin(
    store: &InstanceStore,
    id: &str,
    name: &str,
    input: Value,
) -> durable_status::Result<()> {
    let new = NewInstance::new(id, name)
        .input_value(&input)?
        .overwrite_terminal(true);
    store.create(new).await?;
    sleep(Duration::from_secs(2)).await;
    store.start(id).await?;
    Ok(())
}

async fn publish(store: &InstanceStore, id: &str, value: Value) -> durable_status::Result<()> {
    store
        .set_custom_status(id, Some(&CustomStatus::from_value(&value)?))
        .await?;
    Ok(())
}

/// Works through next actions, as the Durable Functions docs' example does.
async fn order(store: InstanceStore, id: String) -> durable_status::Result<()> {
    begin(
        &store,
        &id,
        "ProcessOrder",
        json!({"orderId": 1042, "items": 3}),
    )
    .await?;
    for (actions, weight) in [
        (vec!["A", "B", "C"], 2),
        (vec!["B", "C"], 2),
        (vec!["C"], 3),
    ] {
        publish(&store, &id, json!({"nextActions": actions, "foo": weight})).await?;
        sleep(Duration::from_secs(6)).await;
    }
    store
        .complete(
            &id,
            Some(JsonText::from_value(
                &json!({"shipped": true, "carrier": "contoso"}),
            )?),
        )
        .await?;
    Ok(())
}

/// A progress fraction from 0 to 1.
async fn encoding(store: InstanceStore, id: String) -> durable_status::Result<()> {
    begin(&store, &id, "EncodeVideo", json!({"file": "keynote.mp4"})).await?;
    for step in 0..=20 {
        let stage = if step < 20 { "encoding" } else { "publishing" };
        publish(
            &store,
            &id,
            json!({"progress": f64::from(step) / 20.0, "stage": stage}),
        )
        .await?;
        sleep(Duration::from_millis(1200)).await;
    }
    store
        .complete(
            &id,
            Some(JsonText::from_value(
                &json!({"url": "https://media.example/keynote"}),
            )?),
        )
        .await?;
    Ok(())
}

/// Done of total.
/// Its input, 2,000 customers, is over 60 KiB: it is kept in a blob, as
/// Durable Functions keeps it (or left small when no blob endpoint is known).
async fn import(store: InstanceStore, id: String) -> durable_status::Result<()> {
    let customers: Vec<Value> = (1..=2000)
        .map(|n| json!({"id": n, "name": format!("Customer {n}"), "email": format!("customer{n}@example.com")}))
        .collect();
    let large = json!({"source": "customers.csv", "customers": customers});
    match begin(&store, &id, "ImportCustomers", large).await {
        Err(durable_status::Error::TooLarge { .. }) => {
            begin(
                &store,
                &id,
                "ImportCustomers",
                json!({"source": "customers.csv"}),
            )
            .await?
        }
        other => other?,
    }
    let total = 40;
    for done in (0..=total).step_by(4) {
        publish(&store, &id, json!({"done": done, "total": total})).await?;
        sleep(Duration::from_secs(2)).await;
    }
    store
        .complete(
            &id,
            Some(JsonText::from_value(&json!({"imported": total}))?),
        )
        .await?;
    Ok(())
}

/// Fails partway.
async fn payment(store: InstanceStore, id: String) -> durable_status::Result<()> {
    begin(
        &store,
        &id,
        "ChargePayment",
        json!({"amount": 129.9, "currency": "EUR"}),
    )
    .await?;
    for progress in [0.1, 0.3, 0.6] {
        publish(
            &store,
            &id,
            json!({"progress": progress, "stage": "authorizing"}),
        )
        .await?;
        sleep(Duration::from_secs(3)).await;
    }
    store
        .fail(
            &id,
            "Payment provider declined the charge (code 51: insufficient funds)",
        )
        .await?;
    Ok(())
}

/// Waits for an approval that never comes, and is terminated.
async fn approval(store: InstanceStore, id: String) -> durable_status::Result<()> {
    begin(
        &store,
        &id,
        "ApproveExpense",
        json!({"amount": 2400, "requester": "sam"}),
    )
    .await?;
    publish(
        &store,
        &id,
        json!({"stage": "waiting for approval", "approver": "finance"}),
    )
    .await?;
    sleep(Duration::from_secs(8)).await;
    store.suspend(&id).await?;
    sleep(Duration::from_secs(4)).await;
    store.resume(&id).await?;
    sleep(Duration::from_secs(4)).await;
    if store
        .get(&id)
        .await?
        .is_some_and(|s| s.runtime_status == RuntimeStatus::Running)
    {
        store.terminate(&id, "Approval window closed").await?;
    }
    Ok(())
}
